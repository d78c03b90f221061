//! The WebSocket opening handshake (RFC 6455 §4), both sides.
//!
//! The server (`serve`'s `--ws-listen`) upgrades only `GET <path>` with a
//! complete, valid upgrade and answers anything else like a static site
//! would; the client (`wss://` links) sends a browser's upgrade request and
//! accepts only a `101` that proves the front read our key.

use super::{has_token, header, syntax, HeadError, MAX_HEADERS};
use base64::Engine;
use std::net::IpAddr;

/// The GUID of RFC 6455 §1.3, hashed with the client's key.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The answer to every request that is not our upgrade: nginx's 404.
pub const NOT_FOUND: &[u8] = b"HTTP/1.1 404 Not Found\r\n\
Content-Type: text/html\r\n\
Content-Length: 146\r\n\
Connection: close\r\n\
\r\n\
<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n<center><h1>404 Not Found</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";

/// The answer to a head that is too long or not HTTP.
pub const BAD_REQUEST: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
Content-Length: 0\r\n\
Connection: close\r\n\r\n";

/// The `Sec-WebSocket-Accept` value for a `Sec-WebSocket-Key`:
/// base64(SHA-1(key ‖ GUID)).
pub fn accept_key(key: &str) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key.trim().as_bytes());
    ctx.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(ctx.finish().as_ref())
}

/// What a complete request head asks the WebSocket listener for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpgradeRequest {
    /// A valid WebSocket upgrade of our path.
    Upgrade {
        /// The `Sec-WebSocket-Accept` value to answer with.
        accept: String,
        /// The client address the request reported in the configured
        /// header; whether to believe it is the caller's decision.
        real_ip: Option<IpAddr>,
    },
    /// Anything else that parsed: answer [`NOT_FOUND`].
    NotFound,
    /// Not HTTP/1.x: answer [`BAD_REQUEST`].
    Bad,
}

/// Decides what a complete request head asks for. `path` is ours (a query
/// is ignored); `client_header` names the header that may carry the
/// client's address (`X-Real-IP` behind nginx).
///
/// An upgrade needs `GET`, HTTP/1.1, `Upgrade: websocket`, a `Connection`
/// listing `upgrade`, `Sec-WebSocket-Version: 13` and a key that is the
/// base64 of 16 bytes (RFC 6455 §4.2.1).
pub fn upgrade_request(head: &[u8], path: &str, client_header: &str) -> UpgradeRequest {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return UpgradeRequest::Bad,
    }
    let target = req.path.unwrap_or("");
    let target = target.split_once('?').map_or(target, |(p, _)| p);
    if req.method != Some("GET") || target != path || req.version != Some(1) {
        return UpgradeRequest::NotFound;
    }
    let header = |name: &str| header(req.headers, name);
    let upgrade = header("upgrade").is_some_and(|v| has_token(v, "websocket"));
    let connection = header("connection").is_some_and(|v| has_token(v, "upgrade"));
    let version = header("sec-websocket-version").is_some_and(|v| v.trim_ascii() == b"13");
    let key = header("sec-websocket-key")
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::trim)
        .filter(|k| {
            base64::engine::general_purpose::STANDARD
                .decode(k)
                .is_ok_and(|b| b.len() == 16)
        });
    let (true, true, true, Some(key)) = (upgrade, connection, version, key) else {
        return UpgradeRequest::NotFound;
    };
    let real_ip = header(client_header)
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.trim().parse().ok());
    UpgradeRequest::Upgrade {
        accept: accept_key(key),
        real_ip,
    }
}

/// The `101 Switching Protocols` answer carrying `accept`.
pub fn switching_protocols(accept: &str) -> String {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    )
}

/// The client's upgrade request with a browser's header set and order
/// (Chrome's; Firefox's differs in ways no front checks). `host` is the
/// `Host` value (with the port when not 443), `key` the base64 of 16
/// fresh random bytes.
pub fn client_request(host: &str, path: &str, user_agent: &str, key: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\n\
         Host: {host}\r\n\
         Connection: Upgrade\r\n\
         Pragma: no-cache\r\n\
         Cache-Control: no-cache\r\n\
         User-Agent: {user_agent}\r\n\
         Upgrade: websocket\r\n\
         Origin: https://{host}\r\n\
         Sec-WebSocket-Version: 13\r\n\
         Accept-Encoding: gzip, deflate, br, zstd\r\n\
         Accept-Language: en-US,en;q=0.9\r\n\
         Sec-WebSocket-Key: {key}\r\n\r\n"
    )
}

/// Why the front did not upgrade the client's request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UpgradeRefused {
    /// The answer is not an HTTP/1.x response head.
    #[error("the answer is not HTTP/1.1 ({0})")]
    NotHttp(HeadError),
    /// Another status than 101.
    #[error("the front answered HTTP {code} {reason}")]
    Status {
        /// The status code.
        code: u16,
        /// The reason phrase as sent.
        reason: String,
    },
    /// A 101 without `Upgrade: websocket` or with the wrong accept value:
    /// whatever answered did not read our key.
    #[error("the front answered 101 without a valid WebSocket accept")]
    BadAccept,
}

/// Checks the front's answer head to the upgrade request sent with `key`.
pub fn check_upgrade_response(head: &[u8], key: &str) -> Result<(), UpgradeRefused> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => {
            return Err(UpgradeRefused::NotHttp(HeadError::Incomplete))
        }
        Err(e) => return Err(UpgradeRefused::NotHttp(syntax(e))),
    }
    let code = resp.code.unwrap_or(0);
    if code != 101 {
        return Err(UpgradeRefused::Status {
            code,
            reason: resp.reason.unwrap_or("").to_string(),
        });
    }
    let upgraded = header(resp.headers, "upgrade").is_some_and(|v| has_token(v, "websocket"));
    let accepted = header(resp.headers, "sec-websocket-accept")
        .is_some_and(|v| v.trim_ascii() == accept_key(key).as_bytes());
    if !upgraded || !accepted {
        return Err(UpgradeRefused::BadAccept);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn upgrade(path: &str, extra: &str) -> Vec<u8> {
        format!(
            "GET {path} HTTP/1.1\r\nHost: a.example\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n{extra}\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn accept_key_is_rfc6455s_example() {
        // RFC 6455 section 1.3.
        assert_eq!(accept_key(KEY), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn only_a_valid_upgrade_of_our_path_is_upgraded() {
        assert_eq!(
            upgrade_request(
                &upgrade("/p", "X-Real-IP: 192.0.2.7\r\n"),
                "/p",
                "X-Real-IP"
            ),
            UpgradeRequest::Upgrade {
                accept: "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".into(),
                real_ip: Some("192.0.2.7".parse().unwrap()),
            }
        );
        assert!(matches!(
            upgrade_request(&upgrade("/p?x=1", ""), "/p", "X-Real-IP"),
            UpgradeRequest::Upgrade { real_ip: None, .. }
        ));
        let not_found = |head: &[u8]| upgrade_request(head, "/p", "X-Real-IP");
        assert_eq!(not_found(&upgrade("/q", "")), UpgradeRequest::NotFound);
        assert_eq!(not_found(&upgrade("/p/", "")), UpgradeRequest::NotFound);
        let plain = b"GET /p HTTP/1.1\r\nHost: a.example\r\n\r\n";
        assert_eq!(not_found(plain), UpgradeRequest::NotFound);
        let text = String::from_utf8(upgrade("/p", "")).unwrap();
        for wrong in [
            text.replacen("GET", "POST", 1),
            text.replace(KEY, "short"),
            text.replace("HTTP/1.1", "HTTP/1.0"),
            text.replace("Version: 13", "Version: 8"),
            text.replace("Upgrade: websocket", "Upgrade: h2c"),
            text.replace("keep-alive, Upgrade", "keep-alive"),
        ] {
            assert_eq!(
                not_found(wrong.as_bytes()),
                UpgradeRequest::NotFound,
                "{wrong}"
            );
        }
        assert_eq!(
            not_found(b"\x16\x03\x01\x00\x05hello\r\n\r\n"),
            UpgradeRequest::Bad
        );
        assert_eq!(not_found(b"GET /p HTTP/1.1\r\n"), UpgradeRequest::Bad);
        let crowded = format!(
            "GET /p HTTP/1.1\r\n{}\r\n",
            "A: b\r\n".repeat(MAX_HEADERS + 1)
        );
        assert_eq!(not_found(crowded.as_bytes()), UpgradeRequest::Bad);
    }

    #[test]
    fn the_configured_client_header_is_read() {
        let head = upgrade(
            "/p",
            "CF-Connecting-IP: 192.0.2.7\r\nX-Real-IP: 198.51.100.1\r\n",
        );
        let UpgradeRequest::Upgrade { real_ip, .. } =
            upgrade_request(&head, "/p", "cf-connecting-ip")
        else {
            panic!("an upgrade");
        };
        assert_eq!(real_ip, Some("192.0.2.7".parse().unwrap()));
        let head = upgrade("/p", "X-Real-IP: not an address\r\n");
        assert!(matches!(
            upgrade_request(&head, "/p", "X-Real-IP"),
            UpgradeRequest::Upgrade { real_ip: None, .. }
        ));
    }

    #[test]
    fn not_found_length_is_right() {
        let text = std::str::from_utf8(NOT_FOUND).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
    }

    #[test]
    fn our_request_and_answer_pass_our_own_checks() {
        let req = client_request("a.example:8443", "/p", "UA", KEY);
        assert!(req.contains("Origin: https://a.example:8443\r\n"));
        let UpgradeRequest::Upgrade { accept, .. } = upgrade_request(req.as_bytes(), "/p", "x")
        else {
            panic!("our own request is an upgrade");
        };
        let answer = switching_protocols(&accept);
        assert_eq!(check_upgrade_response(answer.as_bytes(), KEY), Ok(()));
        // Someone else's key: not our answer.
        assert_eq!(
            check_upgrade_response(answer.as_bytes(), "AAAAAAAAAAAAAAAAAAAAAA=="),
            Err(UpgradeRefused::BadAccept)
        );
    }

    #[test]
    fn refusals_say_what_the_front_answered() {
        assert_eq!(
            check_upgrade_response(NOT_FOUND, KEY),
            Err(UpgradeRefused::Status {
                code: 404,
                reason: "Not Found".into()
            })
        );
        assert!(matches!(
            check_upgrade_response(b"SSH-2.0-OpenSSH\r\n\r\n", KEY),
            Err(UpgradeRefused::NotHttp(HeadError::Syntax(_)))
        ));
        assert_eq!(
            check_upgrade_response(b"HTTP/1.1 101 Switching", KEY),
            Err(UpgradeRefused::NotHttp(HeadError::Incomplete))
        );
        let no_upgrade = format!(
            "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: {}\r\n\r\n",
            accept_key(KEY)
        );
        assert_eq!(
            check_upgrade_response(no_upgrade.as_bytes(), KEY),
            Err(UpgradeRefused::BadAccept)
        );
    }
}
