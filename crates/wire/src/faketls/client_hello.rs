//! Parsing and verifying a client's ClientHello (spec §4.1–4.3).
//!
//! The parser is generic on purpose: Telegram apps changed their hello from
//! a 517-byte template to ~1.8 KB Chrome-like ones with post-quantum key
//! shares, and third-party clients differ again. Any well-formed ClientHello
//! in one record of at most 16 384 bytes is accepted for verification.

use super::{is_grease, HANDSHAKE, MAX_PLAINTEXT, RANDOM_LEN, RANDOM_OFFSET};
use crate::codec::Reader;
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

/// Parses one complete handshake record (header included).
pub fn parse(record: &[u8]) -> Result<ClientHello, HelloError> {
    use HelloError::Truncated;
    if record.len() < MIN_RECORD || record[0] != HANDSHAKE {
        return Err(HelloError::NotClientHello);
    }
    let mut hs = Reader::new(&record[5..]);
    if hs.u8() != Some(0x01) || hs.u24().map(|n| n as usize) != Some(hs.remaining()) {
        return Err(HelloError::NotClientHello);
    }
    let mut r = hs;
    r.skip(2).ok_or(Truncated("legacy_version"))?;
    let random = r.array::<RANDOM_LEN>().ok_or(Truncated("random"))?;
    let session_id = r.vec8().ok_or(Truncated("session_id"))?;
    if session_id.len() > 32 {
        return Err(Truncated("session_id"));
    }
    let suites = r.vec16().ok_or(Truncated("cipher_suites"))?;
    if suites.len() < 2 || suites.len() % 2 != 0 {
        return Err(Truncated("cipher_suites"));
    }
    let cipher_suite = suites
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .find(|&s| !is_grease(s))
        .ok_or(Truncated("cipher_suites"))?;
    let compression = r.vec8().ok_or(Truncated("compression_methods"))?;
    if compression.is_empty() {
        return Err(Truncated("compression_methods"));
    }
    let mut sni = None;
    if !r.is_empty() {
        let mut ext = r.sub16().ok_or(Truncated("extensions"))?;
        while !ext.is_empty() {
            let kind = ext.u16().ok_or(Truncated("extension type"))?;
            let data = ext.vec16().ok_or(Truncated("extension data"))?;
            if kind == 0x0000 && sni.is_none() {
                sni = parse_sni(data)?;
            }
        }
    }
    r.expect_end().map_err(|_| HelloError::TrailingData)?;
    Ok(ClientHello {
        random,
        session_id: session_id.to_vec(),
        cipher_suite,
        sni,
    })
}

fn parse_sni(data: &[u8]) -> Result<Option<String>, HelloError> {
    use HelloError::Truncated;
    let mut list = Reader::new(data)
        .sub16()
        .ok_or(Truncated("server_name list"))?;
    while !list.is_empty() {
        let kind = list.u8().ok_or(Truncated("server_name type"))?;
        let name = list.vec16().ok_or(Truncated("server_name"))?;
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
