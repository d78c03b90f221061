//! `--ws-listen`: samizdat clients inside WebSockets, behind a reverse
//! proxy or CDN that terminates TLS (`docs/fronting.md`).
//!
//! The listener speaks plain HTTP/1.1. Only `GET <ws_path>` with a valid
//! WebSocket upgrade is upgraded; anything else gets the 404 a static site
//! would give. Inside the WebSocket runs exactly the transport of the TCP
//! listener: the client's hello record, the same check, replay admission
//! and user limits ([`super::auth::tunnel`], [`super::transport::run`]), our
//! flight, then the session. A hello that fails simply closes the
//! WebSocket: the front is the cover here, there is nothing to splice to.
//!
//! Limits and logs apply to the client the front saw: the address in
//! `ws_client_header` (`X-Real-IP` by default), but only on connections
//! from `ws_trusted_proxies` (loopback by default). Anyone else could write
//! any address there, to dodge `max_ips` or to fill logs with chosen ones.

use super::ServeShared;
use crate::transport::ws::{self, HeadError};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use wire::classify::{CoverReason, Verdict, MAX_FIRST_FLIGHT};

/// The answer to every request that is not our upgrade.
const NOT_FOUND: &[u8] = b"HTTP/1.1 404 Not Found\r\n\
Content-Type: text/html\r\n\
Content-Length: 146\r\n\
Connection: close\r\n\
\r\n\
<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n<center><h1>404 Not Found</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";

/// The answer to a head that is too long or not HTTP.
const BAD_REQUEST: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
Content-Length: 0\r\n\
Connection: close\r\n\r\n";

/// What an HTTP request asked for.
#[derive(Debug, PartialEq, Eq)]
enum Request {
    /// A valid WebSocket upgrade of our path: the accept value to send,
    /// and the client address the request reported in `client_header`.
    Upgrade {
        accept: String,
        real_ip: Option<IpAddr>,
    },
    /// Anything else that parsed.
    NotFound,
    /// Not HTTP/1.x.
    Bad,
}

/// Decides what a complete request head asks for; `client_header` names
/// the header that may carry the client's address.
fn classify(head: &[u8], path: &str, client_header: &str) -> Request {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Request::Bad,
    }
    let target = req.path.unwrap_or("");
    let target = target.split_once('?').map_or(target, |(p, _)| p);
    if req.method != Some("GET") || target != path || req.version != Some(1) {
        return Request::NotFound;
    }
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let upgrade = header("upgrade").is_some_and(|v| ws::has_token(v, "websocket"));
    let connection = header("connection").is_some_and(|v| ws::has_token(v, "upgrade"));
    let version = header("sec-websocket-version").is_some_and(|v| v.trim_ascii() == b"13");
    let key = header("sec-websocket-key")
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::trim)
        .filter(|k| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(k)
                .is_ok_and(|b| b.len() == 16)
        });
    let (true, true, true, Some(key)) = (upgrade, connection, version, key) else {
        return Request::NotFound;
    };
    let real_ip = header(client_header)
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.trim().parse().ok());
    Request::Upgrade {
        accept: ws::accept_key(key),
        real_ip,
    }
}

/// Serves one connection to the WebSocket listener.
pub(super) async fn handle(
    mut client: TcpStream,
    peer: SocketAddr,
    shared: Arc<ServeShared>,
    path: Arc<str>,
) {
    let _ = client.set_nodelay(true);
    let snap = shared.snapshot();
    let deadline = Instant::now() + snap.config.handshake_timeout;
    let head = tokio::time::timeout_at(deadline, ws::read_head(&mut client)).await;
    let (head, rest) = match head {
        Ok(Ok(x)) => x,
        Ok(Err(HeadError::TooLong)) => {
            answer_and_close(client, BAD_REQUEST, deadline).await;
            return;
        }
        Ok(Err(HeadError::Io(_))) | Err(_) => return,
    };
    let config = &snap.config;
    let (accept, real_ip) = match classify(&head, &path, &config.ws_client_header) {
        Request::Upgrade { accept, real_ip } => (accept, real_ip),
        other => {
            let answer = if other == Request::Bad {
                BAD_REQUEST
            } else {
                NOT_FOUND
            };
            answer_and_close(client, answer, deadline).await;
            return;
        }
    };
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    match tokio::time::timeout_at(deadline, client.write_all(answer.as_bytes())).await {
        Ok(Ok(())) => {}
        _ => return,
    }
    // Limits apply to the client the front saw, not to the front.
    let peer = client_address(peer, real_ip, &config.ws_trusted_proxies);
    let mut carrier = ws::carry(
        ws::Prefixed::new(rest, client),
        fastwebsockets::Role::Server,
    );
    let hello = tokio::time::timeout_at(deadline, read_record(&mut carrier)).await;
    let Ok(Some((record, leftover))) = hello else {
        tracing::debug!("WebSocket client sent no hello record in time");
        return;
    };
    let verdict = super::admit::transport_hello(&record, &shared, &snap, peer.ip()).await;
    match verdict {
        Verdict::Tunnel(acc) => {
            drop(record);
            super::transport::run(carrier, *acc, leftover, peer, &shared, &snap).await;
        }
        other => refuse(&shared, other),
    }
}

/// The address a connection is accounted to: the one the request reported,
/// if the connection comes from a trusted front; else its own.
fn client_address(
    peer: SocketAddr,
    reported: Option<IpAddr>,
    trusted: &[ipnet::IpNet],
) -> SocketAddr {
    let from = peer.ip().to_canonical();
    match reported {
        Some(ip) if trusted.iter().any(|net| net.contains(&from)) => {
            SocketAddr::new(ip, peer.port())
        }
        _ => peer,
    }
}

/// Most bytes read and dropped after a refusal, so that the close is a FIN
/// (as from a web server's lingering close) rather than a reset that
/// destroys the answer.
const LINGER_BYTES: usize = 64 * 1024;
/// Longest wait for those bytes.
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// Sends `answer`, then closes the way a web server does: FIN first, then
/// whatever the client still sends is read and dropped for a moment.
async fn answer_and_close(mut client: TcpStream, answer: &[u8], deadline: Instant) {
    let sent = tokio::time::timeout_at(deadline, async {
        client.write_all(answer).await?;
        client.shutdown().await
    })
    .await;
    if !matches!(sent, Ok(Ok(()))) {
        return;
    }
    let _ = tokio::time::timeout(LINGER_TIME, async {
        let mut sink = [0u8; 4096];
        let mut left = LINGER_BYTES;
        while left > 0 {
            match client.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

/// Counts and logs a hello that did not authenticate; the caller closes.
fn refuse(shared: &ServeShared, verdict: Verdict) {
    let reason = match verdict {
        Verdict::Cover(reason) => reason,
        _ => CoverReason::Unrecognised,
    };
    super::admit::to_cover(shared, reason);
    tracing::debug!(reason = reason.name(), "WebSocket hello refused; closing");
}

/// Reads one TLS handshake record (the client's hello) from the carrier:
/// the record and any bytes after it. `None` if the stream ends first or
/// it is not a handshake record of a plausible size.
async fn read_record<S: tokio::io::AsyncRead + Unpin>(io: &mut S) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    loop {
        if buf.len() >= 5 {
            if buf[0] != 0x16 || buf[1] != 0x03 {
                return None;
            }
            let len = 5 + usize::from(u16::from_be_bytes([buf[3], buf[4]]));
            if len > MAX_FIRST_FLIGHT {
                return None;
            }
            if buf.len() >= len {
                let rest = buf.split_off(len);
                return Some((buf, rest));
            }
        }
        let n = io.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
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
    fn only_a_valid_upgrade_of_our_path_is_upgraded() {
        assert_eq!(
            classify(
                &upgrade("/p", "X-Real-IP: 192.0.2.7\r\n"),
                "/p",
                "X-Real-IP"
            ),
            Request::Upgrade {
                accept: "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".into(),
                real_ip: Some("192.0.2.7".parse().unwrap()),
            }
        );
        assert!(matches!(
            classify(&upgrade("/p?x=1", ""), "/p", "X-Real-IP"),
            Request::Upgrade { real_ip: None, .. }
        ));
        assert_eq!(
            classify(&upgrade("/q", ""), "/p", "X-Real-IP"),
            Request::NotFound
        );
        assert_eq!(
            classify(&upgrade("/p/", ""), "/p", "X-Real-IP"),
            Request::NotFound
        );
        let plain = b"GET /p HTTP/1.1\r\nHost: a.example\r\n\r\n";
        assert_eq!(classify(plain, "/p", "X-Real-IP"), Request::NotFound);
        let post = String::from_utf8(upgrade("/p", ""))
            .unwrap()
            .replacen("GET", "POST", 1);
        assert_eq!(
            classify(post.as_bytes(), "/p", "X-Real-IP"),
            Request::NotFound
        );
        let bad_key = String::from_utf8(upgrade("/p", ""))
            .unwrap()
            .replace(KEY, "short");
        assert_eq!(
            classify(bad_key.as_bytes(), "/p", "X-Real-IP"),
            Request::NotFound
        );
        assert_eq!(
            classify(b"\x16\x03\x01\x00\x05hello\r\n\r\n", "/p", "X-Real-IP"),
            Request::Bad
        );
    }

    #[test]
    fn the_client_header_is_believed_only_from_a_trusted_front() {
        let loopback: Vec<ipnet::IpNet> =
            vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
        let forged: IpAddr = "192.0.2.7".parse().unwrap();
        let head = upgrade(
            "/p",
            "CF-Connecting-IP: 192.0.2.7\r\nX-Real-IP: 198.51.100.1\r\n",
        );
        // The configured header, not X-Real-IP, is read.
        let Request::Upgrade { real_ip, .. } = classify(&head, "/p", "cf-connecting-ip") else {
            panic!("an upgrade");
        };
        assert_eq!(real_ip, Some(forged));
        // From an untrusted peer: accounted to the peer's own address.
        let stranger: SocketAddr = "203.0.113.5:40000".parse().unwrap();
        assert_eq!(client_address(stranger, real_ip, &loopback), stranger);
        assert_eq!(client_address(stranger, real_ip, &[]), stranger);
        // From the front on loopback (also as a v4-mapped v6 peer): the header.
        for front in ["127.0.0.1:40000", "[::1]:40000", "[::ffff:127.0.0.1]:40000"] {
            let front: SocketAddr = front.parse().unwrap();
            assert_eq!(
                client_address(front, real_ip, &loopback).ip(),
                forged,
                "{front}"
            );
            // No header: the front's own address.
            assert_eq!(client_address(front, None, &loopback), front);
        }
        // A front on another network, once trusted.
        let cdn: Vec<ipnet::IpNet> = vec!["198.51.100.0/24".parse().unwrap()];
        let edge: SocketAddr = "198.51.100.9:443".parse().unwrap();
        assert_eq!(client_address(edge, real_ip, &cdn).ip(), forged);
        assert_eq!(client_address(edge, real_ip, &loopback), edge);
    }

    #[test]
    fn not_found_length_is_right() {
        let text = std::str::from_utf8(NOT_FOUND).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
    }

    #[tokio::test]
    async fn hello_record_is_read_whole_and_bounded() {
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        a.write_all(&[0x16, 0x03, 0x01, 0x00, 0x03, 1, 2, 3, 9])
            .await
            .unwrap();
        let (record, rest) = read_record(&mut b).await.unwrap();
        assert_eq!(record.len(), 8);
        assert_eq!(rest, [9]);
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        a.write_all(&[0x17, 0x03, 0x03, 0x00, 0x03]).await.unwrap();
        assert!(read_record(&mut b).await.is_none());
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        a.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff]).await.unwrap();
        assert!(read_record(&mut b).await.is_none());
    }
}
