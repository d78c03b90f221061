//! HTTP/1.1, as much of it as samizdat speaks: the metrics endpoint's
//! request line, the WebSocket upgrade on both sides, a list fetch's
//! response body and the `Date` header `doctor` reads.
//!
//! Sans-io like the rest of `wire`: every function takes the bytes read so
//! far and answers "need more", a value, or an error; the drivers own the
//! sockets and the deadlines. Every buffer is bounded by a limit the caller
//! passes, so a peer cannot make us hold more than that. Header blocks are
//! parsed with `httparse`; what it does not do (the head's bound, request
//! lines without headers, chunked bodies, tokens, dates) is here.
//!
//! | part | job |
//! |---|---|
//! | [`find_head`] | where a head ends, within a limit |
//! | [`request_line`] | method, target and version of a request |
//! | [`status_line`] | version, code and reason of a response, even cut short |
//! | [`has_token`] | comma-separated header values (`Connection: keep-alive, Upgrade`) |
//! | [`websocket`] | the upgrade request and answer (RFC 6455 §4) |
//! | [`body`] | a response's status and body: `Content-Length`, chunked, or to the close |
//! | [`date`] | IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) |

pub mod body;
pub mod date;
pub mod websocket;

/// Most headers a head may carry; more is an error (httparse's
/// `TooManyHeaders`), never an allocation.
pub const MAX_HEADERS: usize = 64;

/// Where the head at the front of a buffer ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// No blank line yet and fewer than `limit` bytes: read more.
    NeedMore,
    /// The head is the first `len` bytes, blank line included; anything
    /// after it was sent after the head (a body, or the first WebSocket
    /// frames).
    Complete {
        /// Bytes of the head, `\r\n\r\n` included.
        len: usize,
    },
    /// `limit` bytes without a blank line: the peer is not sending a head
    /// we will take.
    TooLarge,
}

/// Finds the end of the head (`\r\n\r\n`) in `buf`, looking at no more than
/// `limit` bytes. A driver reads at most `limit - buf.len()` bytes more
/// while this answers [`Head::NeedMore`], so the buffer stays bounded.
pub fn find_head(buf: &[u8], limit: usize) -> Head {
    let window = &buf[..buf.len().min(limit)];
    match window.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(at) => Head::Complete { len: at + 4 },
        None if buf.len() >= limit => Head::TooLarge,
        None => Head::NeedMore,
    }
}

/// Why a head is not the HTTP/1.x message we expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeadError {
    /// The first line is not `METHOD SP target SP HTTP/1.x`.
    #[error("the request line is not `METHOD target HTTP/1.x`")]
    RequestLine,
    /// The first line is not `HTTP/1.x SP code SP reason`.
    #[error("the status line is not `HTTP/1.x code reason`")]
    StatusLine,
    /// httparse refused the head (bad header syntax, too many headers, not
    /// HTTP/1.x).
    #[error("not an HTTP/1.x head: {0}")]
    Syntax(&'static str),
    /// The head is cut short.
    #[error("the head is incomplete")]
    Incomplete,
}

/// The first line of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLine<'a> {
    /// The method as sent (`GET`, `HEAD`, …); methods are case-sensitive.
    pub method: &'a str,
    /// The request target as sent, query included.
    pub target: &'a str,
    /// The `x` of `HTTP/1.x`.
    pub minor_version: u8,
}

impl<'a> RequestLine<'a> {
    /// The target without its query (`/metrics?a=1` → `/metrics`).
    pub fn path(&self) -> &'a str {
        self.target.split_once('?').map_or(self.target, |(p, _)| p)
    }
}

/// Reads the request line at the front of `head`: three parts separated by
/// single spaces, a method of token characters, a target of visible ASCII
/// and `HTTP/1.` followed by one digit. The headers after it are not
/// looked at (the metrics endpoint ignores them).
pub fn request_line(head: &[u8]) -> Result<RequestLine<'_>, HeadError> {
    let end = head
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(head.len());
    let line = std::str::from_utf8(&head[..end]).map_err(|_| HeadError::RequestLine)?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::RequestLine);
    };
    let minor = match version.as_bytes() {
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', d] if d.is_ascii_digit() => d - b'0',
        _ => return Err(HeadError::RequestLine),
    };
    if method.is_empty() || !method.bytes().all(is_token_char) {
        return Err(HeadError::RequestLine);
    }
    if target.is_empty() || !target.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(HeadError::RequestLine);
    }
    Ok(RequestLine {
        method,
        target,
        minor_version: minor,
    })
}

/// The first line of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusLine<'a> {
    /// The `x` of `HTTP/1.x`.
    pub minor_version: u8,
    /// The three-digit status code.
    pub code: u16,
    /// The reason phrase as sent (may be empty).
    pub reason: &'a str,
}

/// Reads the status line at the front of `head` (`HTTP/1.x SP 3DIGIT SP
/// reason`); the rest of the head need not be there, so a driver can judge
/// an answer that was cut short.
pub fn status_line(head: &[u8]) -> Result<StatusLine<'_>, HeadError> {
    let end = head
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(head.len());
    let line = &head[..end];
    let (minor, code, reason) = match line {
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', m, b' ', c @ ..] if m.is_ascii_digit() => {
            let (code, reason) = match c {
                [a, b, c] => ([*a, *b, *c], &[][..]),
                [a, b, c, b' ', reason @ ..] => ([*a, *b, *c], reason),
                _ => return Err(HeadError::StatusLine),
            };
            (m - b'0', code, reason)
        }
        _ => return Err(HeadError::StatusLine),
    };
    if !code.iter().all(u8::is_ascii_digit) {
        return Err(HeadError::StatusLine);
    }
    let code = code.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    let reason = std::str::from_utf8(reason).map_err(|_| HeadError::StatusLine)?;
    Ok(StatusLine {
        minor_version: minor,
        code,
        reason,
    })
}

/// `tchar` of RFC 9110 §5.6.2.
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Whether a comma-separated header value lists `token`, in any case and
/// with any whitespace around the items (`keep-alive, Upgrade`).
pub fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// The value of the first header called `name` (any case).
pub(crate) fn header<'h>(headers: &[httparse::Header<'h>], name: &str) -> Option<&'h [u8]> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// The short name of an httparse error, for [`HeadError::Syntax`].
pub(crate) fn syntax(e: httparse::Error) -> HeadError {
    HeadError::Syntax(match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid new line",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid token",
        httparse::Error::TooManyHeaders => "too many headers",
        httparse::Error::Version => "invalid HTTP version",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_head_ends_at_the_blank_line_within_the_limit() {
        assert_eq!(find_head(b"", 16), Head::NeedMore);
        assert_eq!(find_head(b"GET / HTTP/1.1\r\n", 64), Head::NeedMore);
        assert_eq!(
            find_head(b"GET / HTTP/1.1\r\n\r\nxyz", 64),
            Head::Complete { len: 18 }
        );
        // A blank line exactly at the limit is taken, one byte later is not.
        assert_eq!(
            find_head(b"GET / HTTP/1.1\r\n\r\n", 18),
            Head::Complete { len: 18 }
        );
        assert_eq!(find_head(b"GET / HTTP/1.1\r\n\r\n", 17), Head::TooLarge);
        assert_eq!(find_head(&[b'a'; 100], 100), Head::TooLarge);
        assert_eq!(find_head(&[b'a'; 99], 100), Head::NeedMore);
    }

    #[test]
    fn request_lines() {
        let l = request_line(b"GET /metrics?a=1 HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(l.method, "GET");
        assert_eq!(l.target, "/metrics?a=1");
        assert_eq!(l.path(), "/metrics");
        assert_eq!(l.minor_version, 0);
        assert_eq!(request_line(b"POST / HTTP/1.1").unwrap().method, "POST");
        for bad in [
            &b"junk\r\n\r\n"[..],
            b"",
            b"GET / HTTP/1.1 extra\r\n",
            b"GET  / HTTP/1.1\r\n",
            b"GET / HTTP/2.0\r\n",
            b"GET / HTTP/1.12\r\n",
            b"GET / http/1.1\r\n",
            b" / HTTP/1.1\r\n",
            b"G(T / HTTP/1.1\r\n",
            b"GET /\x7f HTTP/1.1\r\n",
            b"GET \xff HTTP/1.1\r\n",
        ] {
            assert_eq!(
                request_line(bad),
                Err(HeadError::RequestLine),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn status_lines() {
        let s = status_line(b"HTTP/1.1 404 Not Found\r\nServer: x\r\n").unwrap();
        assert_eq!((s.minor_version, s.code, s.reason), (1, 404, "Not Found"));
        let s = status_line(b"HTTP/1.0 200").unwrap();
        assert_eq!((s.code, s.reason), (200, ""));
        assert_eq!(status_line(b"HTTP/1.1 200 \r\n").unwrap().reason, "");
        for bad in [
            &b""[..],
            b"HTTP/1.1",
            b"HTTP/1.1 20 OK",
            b"HTTP/1.1 2000 OK",
            b"HTTP/1.1 2x0 OK",
            b"HTTP/2 200 OK",
            b"SSH-2.0-OpenSSH_9.6\r\n",
            b"HTTP/1.1 200 \xff",
        ] {
            assert_eq!(
                status_line(bad),
                Err(HeadError::StatusLine),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn tokens_are_matched_whole_in_any_case() {
        assert!(has_token(b"keep-alive, Upgrade", "upgrade"));
        assert!(has_token(b"websocket", "WebSocket"));
        assert!(has_token(b" a ,\tb ", "b"));
        assert!(!has_token(b"upgrades", "upgrade"));
        assert!(!has_token(b"", "upgrade"));
        assert!(!has_token(b"\xff, up", "upgrade"));
    }

    /// Pieces [`the_fuzz_entry_takes_http_shaped_noise`] strings together.
    const NOISE: &[&[u8]] = &[
        b"HTTP/1.1 ",
        b"200 OK",
        b"101 ",
        b"GET /p ",
        b"\r\n",
        b"\r\n\r\n",
        b": ",
        b"Content-Length",
        b"Transfer-Encoding: chunked",
        b"Upgrade: websocket",
        b"Connection: upgrade",
        b"Sec-WebSocket-Key",
        b"0",
        b"ff",
        b"7fffffffffffffff",
        b";",
        b" GMT",
        b"\xff",
    ];

    proptest! {
        #[test]
        fn request_lines_round_trip(
            method in "[A-Z]{1,10}",
            target in "/[!-~]{0,40}",
            minor in 0u8..10,
        ) {
            let head = format!("{method} {target} HTTP/1.{minor}\r\n\r\n");
            let l = request_line(head.as_bytes()).unwrap();
            prop_assert_eq!(l.method, method.as_str());
            prop_assert_eq!(l.target, target.as_str());
            prop_assert_eq!(l.minor_version, minor);
        }

        /// The fuzz entry on HTTP-shaped noise: pieces of heads, numbers,
        /// separators and junk in any order, so the parsers get past their
        /// first checks more often than with uniform bytes.
        #[test]
        fn the_fuzz_entry_takes_http_shaped_noise(
            pieces in proptest::collection::vec(prop::sample::select(NOISE), 0..40),
        ) {
            crate::fuzzing::http1(&pieces.concat());
        }

        #[test]
        fn find_head_never_looks_past_the_limit(
            bytes in proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'a')], 0..64),
            limit in 0usize..64,
        ) {
            match find_head(&bytes, limit) {
                Head::Complete { len } => {
                    prop_assert!(len <= limit && len <= bytes.len());
                    prop_assert_eq!(&bytes[len - 4..len], b"\r\n\r\n");
                }
                Head::TooLarge => prop_assert!(bytes.len() >= limit),
                Head::NeedMore => prop_assert!(bytes.len() < limit),
            }
        }
    }
}
