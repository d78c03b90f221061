//! The server's first flight: a ServerHello carrying Noise message 2, a
//! ChangeCipherSpec, and application-data records shaped like the cover
//! site's encrypted handshake flight.

use super::hello::GROUP_X25519;
use crate::faketls::{is_grease, CCS_RECORD, HANDSHAKE, MAX_PLAINTEXT};

/// Order of the two ServerHello extensions (servers differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExtOrder {
    /// supported_versions, then key_share (OpenSSL, hence nginx).
    #[default]
    VersionsFirst,
    /// key_share, then supported_versions (BoringSSL, Go).
    KeyShareFirst,
}

/// What the server flight looks like on the wire; learn it from the cover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlightShape {
    /// Preferred cipher suite; used only if the client offered it.
    pub cipher_suite: u16,
    /// ServerHello extension order.
    pub ext_order: ExtOrder,
    /// Key-share group (only x25519, 0x001d, is supported).
    pub group: u16,
    /// Payload sizes of the application-data records after the CCS (the
    /// encrypted EncryptedExtensions…Finished), as the cover sends them.
    /// At most 255 records, each 17…16 400 bytes.
    pub records: Vec<u16>,
}

impl Default for FlightShape {
    /// nginx on OpenSSL 3 with an RSA-2048 Let's Encrypt certificate and
    /// ALPN h2: OpenSSL writes one record per handshake message, so the
    /// flight is EncryptedExtensions (15 + 17 = 32), Certificate (leaf and
    /// R1x intermediate, about 2 × 1 300 bytes DER, 2 615), CertificateVerify
    /// (RSA-PSS 2048: 264 + 17 = 281) and Finished (36 + 17 = 53). These are
    /// computed from message sizes, not captured; the server should measure
    /// its own cover and pass those.
    fn default() -> FlightShape {
        FlightShape {
            cipher_suite: 0x1301,
            ext_order: ExtOrder::VersionsFirst,
            group: GROUP_X25519,
            records: vec![32, 2615, 281, 53],
        }
    }
}

/// Smallest protected record: one byte of inner content type plus the tag.
pub const MIN_FLIGHT_RECORD: usize = 17;
/// Largest fake flight record payload we send or accept: a full record
/// plus its tag (real servers stay at 16 384 + 17).
pub const MAX_FLIGHT_RECORD: usize = MAX_PLAINTEXT + 16;

impl FlightShape {
    /// The record sizes actually used: at most 255, each clamped to
    /// [`MIN_FLIGHT_RECORD`]…[`MAX_FLIGHT_RECORD`].
    pub fn sizes(&self) -> impl Iterator<Item = usize> + '_ {
        self.records
            .iter()
            .take(255)
            .map(|&n| (n as usize).clamp(MIN_FLIGHT_RECORD, MAX_FLIGHT_RECORD))
    }
}

/// TLS 1.3 cipher suites a ServerHello may name.
pub fn is_tls13_suite(suite: u16) -> bool {
    (0x1301..=0x1305).contains(&suite)
}

/// The suite to answer with: the shape's if the client offered it, else
/// the client's first non-GREASE TLS 1.3 suite, else TLS_AES_128_GCM_SHA256.
pub fn choose_suite(preferred: u16, offered: &[u16]) -> u16 {
    if offered.contains(&preferred) && !is_grease(preferred) {
        return preferred;
    }
    offered
        .iter()
        .copied()
        .find(|&s| !is_grease(s) && is_tls13_suite(s))
        .unwrap_or(0x1301)
}

/// Payload length of the client's Finished record for `suite`: Finished
/// (4-byte header + hash length) + inner content type + 16-byte tag.
pub fn finished_record_len(suite: u16) -> usize {
    let hash = if suite == 0x1302 { 48 } else { 32 };
    4 + hash + 1 + 16
}

/// Writes a ServerHello record.
pub(crate) fn server_hello(
    out: &mut Vec<u8>,
    random: &[u8; 32],
    session_id: &[u8; 32],
    suite: u16,
    order: ExtOrder,
    share: &[u8; 32],
) {
    let versions = [0x00, 0x2b, 0x00, 0x02, 0x03, 0x04];
    let mut key_share = [0u8; 40];
    key_share[..8].copy_from_slice(&[0x00, 0x33, 0x00, 0x24, 0x00, 0x1d, 0x00, 0x20]);
    key_share[8..].copy_from_slice(share);
    let body_len = 2 + 32 + 1 + 32 + 2 + 1 + 2 + versions.len() + key_share.len();
    out.extend_from_slice(&[HANDSHAKE, 0x03, 0x03]);
    out.extend_from_slice(&((body_len + 4) as u16).to_be_bytes());
    out.push(0x02);
    out.extend_from_slice(&(body_len as u32).to_be_bytes()[1..]);
    out.extend_from_slice(&[0x03, 0x03]);
    out.extend_from_slice(random);
    out.push(32);
    out.extend_from_slice(session_id);
    out.extend_from_slice(&suite.to_be_bytes());
    out.push(0);
    out.extend_from_slice(&((versions.len() + key_share.len()) as u16).to_be_bytes());
    match order {
        ExtOrder::VersionsFirst => {
            out.extend_from_slice(&versions);
            out.extend_from_slice(&key_share);
        }
        ExtOrder::KeyShareFirst => {
            out.extend_from_slice(&key_share);
            out.extend_from_slice(&versions);
        }
    }
}

/// The ServerHello fields the client needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServerHello {
    pub(crate) random: [u8; 32],
    pub(crate) session_id: [u8; 32],
    pub(crate) suite: u16,
    pub(crate) share: [u8; 32],
    /// Bytes of the record, header included.
    pub(crate) len: usize,
}

/// Why the bytes are not the server flight we expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ServerFlightError {
    /// Not a well-formed TLS 1.3 ServerHello of the shape we send.
    #[error("malformed ServerHello: {0}")]
    Malformed(&'static str),
    /// The ServerHello names a suite we did not offer or echoes another
    /// session id.
    #[error("ServerHello does not match our ClientHello")]
    Mismatch,
    /// Noise message 2 did not authenticate: we reached the cover site or
    /// someone in the middle, not our server.
    #[error("server did not authenticate (cover site or interception)")]
    NotOurServer,
    /// The records after the ServerHello are not the announced flight.
    #[error("server flight records do not match what the server announced")]
    BadFlight,
    /// The handshake already finished or failed.
    #[error("handshake already finished")]
    Finished,
}

/// Parses the ServerHello record at the front of `buf`: `Ok(None)` if
/// incomplete.
pub(crate) fn parse_server_hello(buf: &[u8]) -> Result<Option<ServerHello>, ServerFlightError> {
    use ServerFlightError::Malformed;
    if buf.len() < 5 {
        return Ok(None);
    }
    if buf[..3] != [HANDSHAKE, 0x03, 0x03] {
        return Err(Malformed("not a handshake record"));
    }
    let len = u16::from_be_bytes([buf[3], buf[4]]) as usize;
    if !(4..=512).contains(&len) {
        return Err(Malformed("record length"));
    }
    let Some(body) = buf.get(5..5 + len) else {
        return Ok(None);
    };
    let hs_len = u32::from_be_bytes([0, body[1], body[2], body[3]]) as usize;
    if body[0] != 0x02 || hs_len != len - 4 {
        return Err(Malformed("not exactly one ServerHello"));
    }
    let b = &body[4..];
    // version(2) random(32) sid(1+32) suite(2) compression(1) ext_len(2)
    const FIXED: usize = 2 + 32 + 1 + 32 + 2 + 1 + 2;
    if b.len() < FIXED || b[..2] != [0x03, 0x03] || b[34] != 32 || b[69] != 0 {
        return Err(Malformed("fixed fields"));
    }
    let ext_len = u16::from_be_bytes([b[70], b[71]]) as usize;
    if ext_len != b.len() - FIXED {
        return Err(Malformed("extensions length"));
    }
    let mut exts = &b[FIXED..];
    let (mut versions, mut share) = (false, None);
    while !exts.is_empty() {
        if exts.len() < 4 {
            return Err(Malformed("extension header"));
        }
        let kind = u16::from_be_bytes([exts[0], exts[1]]);
        let n = u16::from_be_bytes([exts[2], exts[3]]) as usize;
        let data = exts.get(4..4 + n).ok_or(Malformed("extension length"))?;
        match kind {
            0x002b if !versions && data == [0x03, 0x04] => versions = true,
            0x0033 if share.is_none() && data.len() == 36 && data[..4] == [0, 0x1d, 0, 0x20] => {
                share = Some(<[u8; 32]>::try_from(&data[4..]).expect("32 bytes"))
            }
            _ => return Err(Malformed("unexpected extension")),
        }
        exts = &exts[4 + n..];
    }
    let share = share.ok_or(Malformed("no x25519 key share"))?;
    if !versions {
        return Err(Malformed("not TLS 1.3"));
    }
    Ok(Some(ServerHello {
        random: b[2..34].try_into().expect("32 bytes"),
        session_id: b[35..67].try_into().expect("32 bytes"),
        suite: u16::from_be_bytes([b[67], b[68]]),
        share,
        len: 5 + len,
    }))
}

/// Checks the CCS and `count` application-data records totalling `total`
/// bytes (headers included) at the front of `buf`: `Ok(None)` if
/// incomplete, else the bytes they take.
pub(crate) fn skip_flight(
    buf: &[u8],
    count: usize,
    total: usize,
) -> Result<Option<usize>, ServerFlightError> {
    let ccs = CCS_RECORD.len();
    if buf.len() < ccs {
        return if buf == &CCS_RECORD[..buf.len()] {
            Ok(None)
        } else {
            Err(ServerFlightError::BadFlight)
        };
    }
    if buf[..ccs] != CCS_RECORD {
        return Err(ServerFlightError::BadFlight);
    }
    let mut at = ccs;
    for _ in 0..count {
        let Some(h) = buf.get(at..at + 5) else {
            return Ok(None);
        };
        let len = u16::from_be_bytes([h[3], h[4]]) as usize;
        if h[..3] != [0x17, 0x03, 0x03] || !(MIN_FLIGHT_RECORD..=MAX_FLIGHT_RECORD).contains(&len) {
            return Err(ServerFlightError::BadFlight);
        }
        at += 5 + len;
        if at - ccs > total {
            return Err(ServerFlightError::BadFlight);
        }
    }
    if at - ccs != total {
        return Err(ServerFlightError::BadFlight);
    }
    Ok((buf.len() >= at).then_some(at))
}
