//! The body of a `200` response to a `GET`, framed by `Content-Length`,
//! chunked transfer coding (RFC 9112 §7.1) or the end of the connection.
//! The list fetcher (`client::lists`) feeds it what it has read so far.

use super::{header, syntax, HeadError, MAX_HEADERS};

/// Why a response carries no body we take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// Not an HTTP/1.x response head.
    #[error("not an HTTP answer: {0}")]
    NotHttp(HeadError),
    /// Another status than 200.
    #[error("HTTP {code} {reason}")]
    Status {
        /// The status code.
        code: u16,
        /// The reason phrase as sent.
        reason: String,
    },
    /// A `Content-Length` that is not a decimal number.
    #[error("bad Content-Length")]
    ContentLength,
    /// A body larger than the caller's limit.
    #[error("the body is {0} bytes, more than the limit")]
    TooLarge(usize),
    /// A chunk-size line that is not hexadecimal, or chunk data not
    /// followed by CRLF.
    #[error("bad chunk framing")]
    Chunk,
}

/// The body of a complete `200` response at the front of `buf`, at most
/// `limit` bytes: `Ok(None)` while more is needed. `eof`: nothing more will
/// come, so a body framed by neither length nor chunks ends here.
pub fn response_body(buf: &[u8], eof: bool, limit: usize) -> Result<Option<Vec<u8>>, BodyError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let head = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(BodyError::NotHttp(syntax(e))),
    };
    let code = resp.code.unwrap_or(0);
    if code != 200 {
        return Err(BodyError::Status {
            code,
            reason: resp.reason.unwrap_or_default().to_string(),
        });
    }
    let value = |name: &str| {
        header(resp.headers, name).map(|v| String::from_utf8_lossy(v).trim().to_ascii_lowercase())
    };
    let rest = &buf[head..];
    if value("transfer-encoding").is_some_and(|v| v.ends_with("chunked")) {
        return dechunk(rest, limit);
    }
    if let Some(len) = value("content-length") {
        let len: usize = len.parse().map_err(|_| BodyError::ContentLength)?;
        if len > limit {
            return Err(BodyError::TooLarge(len));
        }
        return Ok(rest.get(..len).map(<[u8]>::to_vec));
    }
    if rest.len() > limit {
        return Err(BodyError::TooLarge(rest.len()));
    }
    Ok(eof.then(|| rest.to_vec()))
}

/// Decodes a chunked body of at most `limit` bytes: `Ok(None)` until the
/// last (zero-size) chunk has arrived. Chunk extensions are ignored, and so
/// are trailers (the body is complete at the last chunk's size line).
pub fn dechunk(mut rest: &[u8], limit: usize) -> Result<Option<Vec<u8>>, BodyError> {
    let mut body = Vec::new();
    loop {
        let Some(end) = rest.windows(2).position(|w| w == b"\r\n") else {
            // A size line longer than any sane one will not end well.
            return match rest.len() > 1024 {
                true => Err(BodyError::Chunk),
                false => Ok(None),
            };
        };
        let line = std::str::from_utf8(&rest[..end]).map_err(|_| BodyError::Chunk)?;
        let size = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| BodyError::Chunk)?;
        let total = body.len().saturating_add(size);
        if total > limit {
            return Err(BodyError::TooLarge(total));
        }
        rest = &rest[end + 2..];
        if size == 0 {
            return Ok(Some(body));
        }
        let Some(data) = rest.get(..size) else {
            return Ok(None);
        };
        match rest.get(size..size + 2) {
            None | Some(b"\r") => return Ok(None),
            Some(b"\r\n") => {}
            Some(_) => return Err(BodyError::Chunk),
        }
        body.extend_from_slice(data);
        rest = &rest[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIMIT: usize = 1 << 16;

    #[test]
    fn decodes_http_answers() {
        let head = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(
            response_body(&head.as_bytes()[..10], false, LIMIT),
            Ok(None)
        );
        let body = |text: &str, eof| response_body(text.as_bytes(), eof, LIMIT);
        assert_eq!(body(&format!("{head}hel"), false), Ok(None));
        assert_eq!(
            body(&format!("{head}hello"), false),
            Ok(Some(b"hello".to_vec()))
        );
        let chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2;x=1\r\nlo\r\n0\r\n\r\n";
        assert_eq!(body(chunked, false), Ok(Some(b"hello".to_vec())));
        assert_eq!(body(&chunked[..chunked.len() - 9], false), Ok(None));
        let close = "HTTP/1.1 200 OK\r\n\r\nhello";
        assert_eq!(body(close, false), Ok(None));
        assert_eq!(body(close, true), Ok(Some(b"hello".to_vec())));
        let missing = body("HTTP/1.1 404 Not Found\r\n\r\n", true).unwrap_err();
        assert_eq!(missing.to_string(), "HTTP 404 Not Found");
    }

    #[test]
    fn bad_or_oversized_bodies_are_errors() {
        let body = |text: &str| response_body(text.as_bytes(), true, 100);
        let huge = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", 1u64 << 30);
        assert_eq!(body(&huge), Err(BodyError::TooLarge(1 << 30)));
        let overflow = "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n";
        assert_eq!(body(overflow), Err(BodyError::ContentLength));
        assert_eq!(
            body("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"),
            Err(BodyError::ContentLength)
        );
        let long = format!("HTTP/1.1 200 OK\r\n\r\n{}", "x".repeat(101));
        assert_eq!(body(&long), Err(BodyError::TooLarge(101)));
        assert!(matches!(
            body("SSH-2.0-OpenSSH\r\n\r\n"),
            Err(BodyError::NotHttp(_))
        ));
        assert_eq!(dechunk(b"65\r\n", 100), Err(BodyError::TooLarge(101)));
        assert_eq!(
            dechunk(b"ffffffffffffffff\r\n", 100),
            Err(BodyError::TooLarge(usize::MAX))
        );
        assert_eq!(
            dechunk(b"fffffffffffffffff\r\n", 100),
            Err(BodyError::Chunk)
        );
        assert_eq!(dechunk(b"zz\r\n", 100), Err(BodyError::Chunk));
        assert_eq!(dechunk(b"2\r\nabXY0\r\n\r\n", 100), Err(BodyError::Chunk));
        assert_eq!(dechunk(b"2\r\nab\r", 100), Ok(None));
        assert_eq!(dechunk(&[b'1'; 2000], 100), Err(BodyError::Chunk));
        // Chunks that add up past the limit.
        let many = "32\r\n".to_string() + &"x".repeat(50) + "\r\n";
        assert_eq!(
            dechunk(many.repeat(3).as_bytes(), 100),
            Err(BodyError::TooLarge(150))
        );
    }

    fn chunk(body: &[u8], sizes: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = body;
        let mut i = 0;
        while !rest.is_empty() {
            let n = sizes[i % sizes.len()].clamp(1, rest.len());
            out.extend(format!("{n:x}\r\n").as_bytes());
            out.extend(&rest[..n]);
            out.extend(b"\r\n");
            rest = &rest[n..];
            i += 1;
        }
        out.extend(b"0\r\n\r\n");
        out
    }

    proptest! {
        #[test]
        fn chunked_bodies_round_trip_and_need_more_when_cut(
            body in proptest::collection::vec(any::<u8>(), 0..600),
            sizes in proptest::collection::vec(1usize..200, 1..5),
            cut in any::<prop::sample::Index>(),
        ) {
            let wire = chunk(&body, &sizes);
            prop_assert_eq!(dechunk(&wire, LIMIT), Ok(Some(body.clone())));
            // Cut anywhere before the last chunk's size line is whole.
            let cut = cut.index(wire.len() - 2);
            prop_assert_eq!(dechunk(&wire[..cut], LIMIT), Ok(None));
        }

        #[test]
        fn content_length_bodies_round_trip(
            body in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            let mut wire = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
            wire.extend(&body);
            prop_assert_eq!(response_body(&wire, false, LIMIT), Ok(Some(body)));
        }
    }
}
