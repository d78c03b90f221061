//! Parsing and verifying a client's ClientHello (spec §4.1–4.3).
//!
//! The parser is generic on purpose: Telegram apps changed their hello from
//! a 517-byte template to ~1.8 KB Chrome-like ones with post-quantum key
//! shares, and third-party clients differ again. Any well-formed ClientHello
//! in one record of at most 16 384 bytes is accepted for verification.

use super::{is_grease, HANDSHAKE, MAX_PLAINTEXT, RANDOM_LEN, RANDOM_OFFSET};
use crate::users::Users;
use subtle::ConstantTimeEq;

/// Smallest record a ClientHello can fit in (spec §4.3).
pub const MIN_RECORD: usize = 76;

/// What the first bytes of a connection say about TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Not enough bytes to decide.
    NeedMore,
    /// Not a TLS handshake record header.
    NotTls,
    /// A plausible handshake record header; the whole record is `len` bytes
    /// (header included).
    Record {
        /// Total record length including the 5-byte header.
        len: usize,
    },
}

/// Looks at the record header only (cheap, no allocation).
pub fn probe(buf: &[u8]) -> Probe {
    if buf.is_empty() {
        return Probe::NeedMore;
    }
    if buf[0] != HANDSHAKE {
        return Probe::NotTls;
    }
    if buf.len() >= 2 && buf[1] != 0x03 {
        return Probe::NotTls;
    }
    if buf.len() >= 3 && !(0x01..=0x03).contains(&buf[2]) {
        return Probe::NotTls;
    }
    if buf.len() < 5 {
        return Probe::NeedMore;
    }
    let body = u16::from_be_bytes([buf[3], buf[4]]) as usize;
    if !(MIN_RECORD - 5..=MAX_PLAINTEXT).contains(&body) {
        return Probe::NotTls;
    }
    Probe::Record { len: 5 + body }
}

/// Why a complete record is not a well-formed ClientHello.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HelloError {
    /// The handshake message is not a ClientHello, or its length disagrees
    /// with the record (a hello split over records is not supported).
    #[error("record does not hold exactly one ClientHello")]
    NotClientHello,
    /// A length field points past the end of its container.
    #[error("ClientHello field {0} overruns its container")]
    Truncated(&'static str),
    /// Bytes left after the last extension.
    #[error("trailing bytes after the ClientHello extensions")]
    TrailingData,
}

/// The fields of a ClientHello the proxy needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello {
    /// The 32-byte client random (HMAC and timestamp).
    pub random: [u8; RANDOM_LEN],
    /// The legacy session id, echoed in the ServerHello.
    pub session_id: Vec<u8>,
    /// First non-GREASE cipher suite, echoed in the ServerHello.
    pub cipher_suite: u16,
    /// The server_name host, if the hello carries one.
    pub sni: Option<String>,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], HelloError> {
        let end = self.pos.checked_add(n).ok_or(HelloError::Truncated(what))?;
        let out = self
            .buf
            .get(self.pos..end)
            .ok_or(HelloError::Truncated(what))?;
        self.pos = end;
        Ok(out)
    }
    fn u8(&mut self, what: &'static str) -> Result<usize, HelloError> {
        Ok(self.take(1, what)?[0] as usize)
    }
    fn u16(&mut self, what: &'static str) -> Result<usize, HelloError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]) as usize)
    }
    fn vec8(&mut self, what: &'static str) -> Result<&'a [u8], HelloError> {
        let n = self.u8(what)?;
        self.take(n, what)
    }
    fn vec16(&mut self, what: &'static str) -> Result<&'a [u8], HelloError> {
        let n = self.u16(what)?;
        self.take(n, what)
    }
    fn done(&self) -> bool {
        self.pos == self.buf.len()
    }
}

/// Parses one complete handshake record (header included).
pub fn parse(record: &[u8]) -> Result<ClientHello, HelloError> {
    if record.len() < MIN_RECORD || record[0] != HANDSHAKE {
        return Err(HelloError::NotClientHello);
    }
    let body = &record[5..];
    if body[0] != 0x01 {
        return Err(HelloError::NotClientHello);
    }
    let hs_len = u32::from_be_bytes([0, body[1], body[2], body[3]]) as usize;
    if hs_len != body.len() - 4 {
        return Err(HelloError::NotClientHello);
    }
    let mut r = Reader {
        buf: &body[4..],
        pos: 0,
    };
    r.take(2, "legacy_version")?;
    let mut random = [0u8; RANDOM_LEN];
    random.copy_from_slice(r.take(RANDOM_LEN, "random")?);
    let session_id = r.vec8("session_id")?;
    if session_id.len() > 32 {
        return Err(HelloError::Truncated("session_id"));
    }
    let suites = r.vec16("cipher_suites")?;
    if suites.len() < 2 || suites.len() % 2 != 0 {
        return Err(HelloError::Truncated("cipher_suites"));
    }
    let cipher_suite = suites
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .find(|&s| !is_grease(s))
        .ok_or(HelloError::Truncated("cipher_suites"))?;
    let compression = r.vec8("compression_methods")?;
    if compression.is_empty() {
        return Err(HelloError::Truncated("compression_methods"));
    }
    let mut sni = None;
    if !r.done() {
        let mut ext = Reader {
            buf: r.vec16("extensions")?,
            pos: 0,
        };
        while !ext.done() {
            let kind = ext.u16("extension type")?;
            let data = ext.vec16("extension data")?;
            if kind == 0x0000 && sni.is_none() {
                sni = parse_sni(data)?;
            }
        }
    }
    if !r.done() {
        return Err(HelloError::TrailingData);
    }
    Ok(ClientHello {
        random,
        session_id: session_id.to_vec(),
        cipher_suite,
        sni,
    })
}

fn parse_sni(data: &[u8]) -> Result<Option<String>, HelloError> {
    let mut r = Reader { buf: data, pos: 0 };
    let mut list = Reader {
        buf: r.vec16("server_name list")?,
        pos: 0,
    };
    while !list.done() {
        let kind = list.u8("server_name type")?;
        let name = list.vec16("server_name")?;
        if kind == 0 {
            return Ok(std::str::from_utf8(name).ok().map(str::to_ascii_lowercase));
        }
    }
    Ok(None)
}

/// A verified hello: which user's key matched and the client's timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// Index into [`Users`].
    pub user: usize,
    /// The unix time the client wrote (spec §4.2).
    pub timestamp: u32,
}

/// Finds the user whose key produced the hello's random (spec §4.3 step 5):
/// `HMAC(K, record with random zeroed) XOR random` must start with 28 zero
/// bytes, compared in constant time; the last four give the timestamp.
///
/// `candidates` lists user indexes in the order to try them.
pub fn verify(
    record: &[u8],
    random: &[u8; RANDOM_LEN],
    users: &Users,
    candidates: impl IntoIterator<Item = usize>,
) -> Option<Verified> {
    let head = &record[..RANDOM_OFFSET];
    let tail = &record[RANDOM_OFFSET + RANDOM_LEN..];
    for user in candidates {
        let Some(digest) = users.hmac(user, &[head, &[0u8; RANDOM_LEN], tail]) else {
            continue;
        };
        let mut x = [0u8; RANDOM_LEN];
        for i in 0..RANDOM_LEN {
            x[i] = digest[i] ^ random[i];
        }
        if bool::from(x[..28].ct_eq(&[0u8; 28])) {
            let timestamp = u32::from_le_bytes([x[28], x[29], x[30], x[31]]);
            return Some(Verified { user, timestamp });
        }
    }
    None
}
