//! HTTP proxy request heads (RFC 9110 §9.3.6, RFC 9112 §3.2): `CONNECT
//! host:port` opens a tunnel; an absolute-form request (`GET
//! http://host/path`) is rewritten to origin-form for the origin server.
//!
//! The rewritten request carries `Connection: close`: each proxied request
//! gets its own upstream connection, and the client opens a new one for
//! the next (the origin's answer says `close` too). Hop-by-hop and
//! `Proxy-*` headers are dropped; `Host` is set from the request target.
//! The body is not parsed: the front-end forwards bytes after the head as
//! they come.

use crate::socks5::host_destination;
use crate::tunnel::Destination;

/// Largest request head we read.
pub const MAX_HEAD: usize = 16 * 1024;
/// Most header fields in a head.
pub const MAX_HEADERS: usize = 64;

/// Why a request head was refused, with the status to answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HttpProxyError {
    /// Not parseable as an HTTP/1.x request head.
    #[error("malformed request head")]
    Malformed,
    /// More than [`MAX_HEAD`] bytes without the end of the head.
    #[error("request head larger than 16 KiB")]
    HeadTooLarge,
    /// More than [`MAX_HEADERS`] header fields.
    #[error("more than 64 header fields")]
    TooManyHeaders,
    /// The target is not `http://…` (an HTTPS client must use CONNECT).
    #[error("only http:// targets can be proxied; use CONNECT for others")]
    UnsupportedScheme,
    /// A target in origin form (`GET /`): this is a proxy, not a server.
    #[error("the request target must be an absolute http:// URI or CONNECT host:port")]
    NotAbsolute,
    /// The target's host or port is unusable.
    #[error("bad host or port in the request target")]
    BadTarget,
}

impl HttpProxyError {
    /// The status code to answer with.
    pub fn status(&self) -> u16 {
        match self {
            HttpProxyError::HeadTooLarge | HttpProxyError::TooManyHeaders => 431,
            _ => 400,
        }
    }
}

/// What the client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyRequest {
    /// `CONNECT`: answer `200`, then relay bytes as they are.
    Connect {
        /// The target.
        destination: Destination,
    },
    /// An absolute-form request: send `head` to the destination, then
    /// relay the rest.
    Forward {
        /// The target server.
        destination: Destination,
        /// The request head in origin form, ending with the blank line.
        head: Vec<u8>,
    },
}

/// Headers that describe one connection and never travel past a proxy.
const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
];

/// Parses a request head from the front of `buf`: `Ok(None)` means read
/// more (the head is incomplete and below [`MAX_HEAD`]); the `usize` is
/// the head's length (bytes after it belong to the body or the tunnel).
pub fn parse_request(buf: &[u8]) -> Result<Option<(ProxyRequest, usize)>, HttpProxyError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let used = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n <= MAX_HEAD => n,
        Ok(httparse::Status::Complete(_)) => return Err(HttpProxyError::HeadTooLarge),
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            return Err(HttpProxyError::HeadTooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HttpProxyError::TooManyHeaders),
        Err(_) => return Err(HttpProxyError::Malformed),
    };
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(HttpProxyError::Malformed);
    };
    if method.eq_ignore_ascii_case("CONNECT") {
        let destination = authority(target, None)?;
        return Ok(Some((ProxyRequest::Connect { destination }, used)));
    }
    let (scheme, rest) = target
        .split_once("://")
        .ok_or(HttpProxyError::NotAbsolute)?;
    if !scheme.eq_ignore_ascii_case("http") {
        return Err(if scheme.starts_with('/') {
            HttpProxyError::NotAbsolute
        } else {
            HttpProxyError::UnsupportedScheme
        });
    }
    let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (host_port, path) = rest.split_at(split);
    let path = match path.split_once('#') {
        Some((p, _)) => p,
        None => path,
    };
    if host_port.contains('@') {
        // Credentials in the URI: never forwarded in the clear.
        return Err(HttpProxyError::BadTarget);
    }
    let destination = authority(host_port, Some(80))?;

    let mut head = Vec::with_capacity(used + 32);
    head.extend_from_slice(method.as_bytes());
    head.push(b' ');
    if !path.starts_with('/') {
        head.push(b'/');
    }
    head.extend_from_slice(path.as_bytes());
    head.extend_from_slice(format!(" HTTP/1.{version}\r\nHost: {host_port}\r\n").as_bytes());
    // Headers the client's Connection field names are hop-by-hop too.
    let named: Vec<&[u8]> = req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .map(|t| t.trim_ascii())
        .collect();
    for h in req.headers.iter() {
        let drop = h.name.eq_ignore_ascii_case("host")
            || HOP_BY_HOP.iter().any(|n| h.name.eq_ignore_ascii_case(n))
            || h.name.len() >= 6 && h.name.as_bytes()[..6].eq_ignore_ascii_case(b"proxy-")
            || named
                .iter()
                .any(|n| n.eq_ignore_ascii_case(h.name.as_bytes()));
        if !drop {
            head.extend_from_slice(h.name.as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(h.value);
            head.extend_from_slice(b"\r\n");
        }
    }
    head.extend_from_slice(b"Connection: close\r\n\r\n");
    Ok(Some((ProxyRequest::Forward { destination, head }, used)))
}

/// `host:port` (or `[v6]:port`); the port may be left out only where a
/// default is given.
fn authority(text: &str, default_port: Option<u16>) -> Result<Destination, HttpProxyError> {
    let (host, port) = match text.rsplit_once(':') {
        // A colon inside brackets belongs to an IPv6 literal, not a port.
        Some((h, p)) if !p.contains(']') => (h, Some(p)),
        _ => (text, None),
    };
    let port = match port {
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            p.parse::<u16>().map_err(|_| HttpProxyError::BadTarget)?
        }
        Some(_) => return Err(HttpProxyError::BadTarget),
        None => default_port.ok_or(HttpProxyError::BadTarget)?,
    };
    if port == 0 || (host.contains(':') && !host.starts_with('[')) {
        return Err(HttpProxyError::BadTarget);
    }
    host_destination(host, port).ok_or(HttpProxyError::BadTarget)
}

/// A complete error response with a one-line text body.
pub fn error_response(status: u16, message: &str) -> Vec<u8> {
    let reason = match status {
        400 => "Bad Request",
        403 => "Forbidden",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    };
    let body = format!("{message}\n");
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The answer to a CONNECT once the tunnel is open.
pub const CONNECT_OK: &[u8] = b"HTTP/1.1 200 Connection established\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn forward(text: &str) -> (Destination, String, usize) {
        match parse_request(text.as_bytes()) {
            Ok(Some((ProxyRequest::Forward { destination, head }, used))) => {
                (destination, String::from_utf8(head).unwrap(), used)
            }
            other => panic!("{text:?}: {other:?}"),
        }
    }

    #[test]
    fn connect_targets() {
        let cases = [
            (
                "example.com:443",
                Destination::Host {
                    name: "example.com".into(),
                    port: 443,
                },
            ),
            (
                "127.0.0.1:8080",
                Destination::Addr("127.0.0.1:8080".parse().unwrap()),
            ),
            ("[::1]:22", Destination::Addr("[::1]:22".parse().unwrap())),
        ];
        for (target, want) in cases {
            let text = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\nTLS");
            let (req, used) = parse_request(text.as_bytes()).unwrap().unwrap();
            assert_eq!(req, ProxyRequest::Connect { destination: want });
            assert_eq!(&text.as_bytes()[used..], b"TLS");
        }
        for bad in [
            "example.com",
            "example.com:",
            "example.com:x",
            "h:70000",
            "::1:80",
            "h:0",
            "a b:1",
        ] {
            let text = format!("CONNECT {bad} HTTP/1.1\r\n\r\n");
            let got = parse_request(text.as_bytes());
            assert!(
                matches!(
                    got,
                    Err(HttpProxyError::BadTarget | HttpProxyError::Malformed)
                ),
                "{bad}: {got:?}"
            );
        }
    }

    #[test]
    fn absolute_form_is_rewritten() {
        let (dest, head, used) = forward(
            "GET http://Example.com:8080/a/b?q=1#frag HTTP/1.1\r\nHost: wrong\r\nUser-Agent: t\r\n\
             Proxy-Authorization: Basic eA==\r\nProxy-Connection: keep-alive\r\nConnection: keep-alive, X-Secret\r\n\
             X-Secret: 1\r\nKeep-Alive: 5\r\nAccept: */*\r\n\r\nBODY",
        );
        assert_eq!(
            dest,
            Destination::Host {
                name: "example.com".into(),
                port: 8080
            }
        );
        assert_eq!(
            head,
            "GET /a/b?q=1 HTTP/1.1\r\nHost: Example.com:8080\r\nUser-Agent: t\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        assert!(used > 0);

        let (dest, head, _) =
            forward("POST http://127.0.0.1?x HTTP/1.0\r\nContent-Length: 4\r\n\r\n");
        assert_eq!(dest, Destination::Addr("127.0.0.1:80".parse().unwrap()));
        assert_eq!(head, "POST /?x HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: 4\r\nConnection: close\r\n\r\n");

        let (dest, head, _) = forward("GET HTTP://[::1]:81 HTTP/1.1\r\n\r\n");
        assert_eq!(dest, Destination::Addr("[::1]:81".parse().unwrap()));
        assert!(
            head.starts_with("GET / HTTP/1.1\r\nHost: [::1]:81\r\n"),
            "{head}"
        );
    }

    #[test]
    fn refusals_have_statuses() {
        let cases: [(&[u8], HttpProxyError); 6] = [
            (
                b"GET https://example.com/ HTTP/1.1\r\n\r\n",
                HttpProxyError::UnsupportedScheme,
            ),
            (
                b"GET ftp://example.com/ HTTP/1.1\r\n\r\n",
                HttpProxyError::UnsupportedScheme,
            ),
            (
                b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                HttpProxyError::NotAbsolute,
            ),
            (
                b"GET http://user:pw@example.com/ HTTP/1.1\r\n\r\n",
                HttpProxyError::BadTarget,
            ),
            (b"\x05\x01\x00", HttpProxyError::Malformed),
            (
                b"GET http://x/ HTTP/1.1\r\nBad Header\r\n\r\n",
                HttpProxyError::Malformed,
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse_request(input),
                Err(want.clone()),
                "{:?}",
                String::from_utf8_lossy(input)
            );
            assert_eq!(want.status(), 400);
        }
        let mut many = b"GET http://x/ HTTP/1.1\r\n".to_vec();
        for i in 0..65 {
            many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(parse_request(&many), Err(HttpProxyError::TooManyHeaders));
        let mut big = b"GET http://x/ HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_HEAD, b'a');
        assert_eq!(parse_request(&big), Err(HttpProxyError::HeadTooLarge));
        assert_eq!(parse_request(&big[..MAX_HEAD - 1]), Ok(None));
        assert_eq!(HttpProxyError::HeadTooLarge.status(), 431);
    }

    #[test]
    fn incomplete_heads_wait() {
        let text = b"CONNECT a:1 HTTP/1.1\r\nHost: a:1\r\n\r\n";
        for n in 0..text.len() {
            assert_eq!(parse_request(&text[..n]), Ok(None), "prefix {n}");
        }
    }

    #[test]
    fn error_responses_are_complete() {
        let r = String::from_utf8(error_response(403, "destination not allowed")).unwrap();
        assert!(r.starts_with("HTTP/1.1 403 Forbidden\r\n"));
        assert!(r.ends_with("\r\n\r\ndestination not allowed\n"));
        assert!(r.contains("Content-Length: 24\r\n"));
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            if let Ok(Some((_, used))) = parse_request(&data) {
                prop_assert!(used <= data.len());
            }
        }

        #[test]
        fn rewritten_heads_parse_in_origin_form(path in "[a-z0-9/]{0,20}", host in "[a-z]{1,10}", port: u16) {
            let port = port.max(1);
            let text = format!("GET http://{host}:{port}/{path} HTTP/1.1\r\nA: b\r\n\r\n");
            let (dest, head, _) = forward(&text);
            prop_assert_eq!(dest, Destination::Host { name: host.clone(), port });
            let mut headers = [httparse::EMPTY_HEADER; 8];
            let mut req = httparse::Request::new(&mut headers);
            prop_assert!(req.parse(head.as_bytes()).unwrap().is_complete());
            let want = format!("/{}", path);
            prop_assert_eq!(req.path, Some(want.as_str()));
        }
    }
}
