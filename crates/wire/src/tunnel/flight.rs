//! The server's first flight: a ServerHello carrying Noise message 2, a
//! ChangeCipherSpec, and application-data records shaped like the cover
//! site's encrypted handshake flight.

use super::hello::{GROUP_X25519, GROUP_X25519_MLKEM768};
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
    /// Key-share group the cover picks for a Chrome hello: x25519
    /// (0x001d) or X25519MLKEM768 (0x11ec). The hybrid answer is used only
    /// when the client offered a hybrid share; anything else is x25519.
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

/// Length of the ML-KEM-768 ciphertext at the front of a hybrid server share.
pub const MLKEM768_CIPHERTEXT_LEN: usize = 1088;

/// The server's key share as it goes into the ServerHello.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ServerShare<'a> {
    /// An X25519 public key (group 0x001d).
    X25519(&'a [u8; 32]),
    /// X25519MLKEM768 (0x11ec): the ML-KEM-768 ciphertext, then the X25519
    /// public key (draft-ietf-tls-ecdhe-mlkem, as Chrome and OpenSSL send it).
    Hybrid {
        ciphertext: &'a [u8; MLKEM768_CIPHERTEXT_LEN],
        x25519: &'a [u8; 32],
    },
}

/// A real ML-KEM-768 encapsulation to the client's encapsulation key `ek`
/// (the first 1 184 bytes of its X25519MLKEM768 share): the ciphertext and
/// the shared secret. The transport does not use the secret (Noise's X25519
/// keys the session); the ciphertext is there so that the ServerHello is a
/// genuine hybrid answer of the cover's size. `None` if `ek` is not a valid
/// encapsulation key (a real browser's always is).
pub fn mlkem768_encapsulate(ek: &[u8]) -> Option<([u8; MLKEM768_CIPHERTEXT_LEN], [u8; 32])> {
    use aws_lc_rs::kem::{EncapsulationKey, ML_KEM_768};
    let key = EncapsulationKey::new(&ML_KEM_768, ek).ok()?;
    let (ct, ss) = key.encapsulate().ok()?;
    Some((ct.as_ref().try_into().ok()?, ss.as_ref().try_into().ok()?))
}

/// Writes a ServerHello record.
pub(crate) fn server_hello(
    out: &mut Vec<u8>,
    random: &[u8; 32],
    session_id: &[u8; 32],
    suite: u16,
    order: ExtOrder,
    share: ServerShare<'_>,
) {
    let versions = [0x00, 0x2b, 0x00, 0x02, 0x03, 0x04];
    let (group, parts): (u16, [&[u8]; 2]) = match share {
        ServerShare::X25519(x) => (GROUP_X25519, [&[], x]),
        ServerShare::Hybrid { ciphertext, x25519 } => (GROUP_X25519_MLKEM768, [ciphertext, x25519]),
    };
    let data_len = parts[0].len() + parts[1].len();
    let mut key_share = Vec::with_capacity(8 + data_len);
    key_share.extend_from_slice(&[0x00, 0x33]);
    key_share.extend_from_slice(&((4 + data_len) as u16).to_be_bytes());
    key_share.extend_from_slice(&group.to_be_bytes());
    key_share.extend_from_slice(&(data_len as u16).to_be_bytes());
    key_share.extend_from_slice(parts[0]);
    key_share.extend_from_slice(parts[1]);
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
    /// The key-share group: x25519 or X25519MLKEM768.
    pub(crate) group: u16,
    /// The X25519 public key (for the hybrid group, the share's tail).
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
    // 4 + 72 fixed + 6 + 8 + 1 088 + 32: a hybrid answer is the largest.
    if !(4..=1_300).contains(&len) {
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
    let (mut versions, mut share, mut group) = (false, None, GROUP_X25519);
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
                share = <[u8; 32]>::try_from(&data[4..]).ok()
            }
            0x0033
                if share.is_none()
                    && data.len() == 4 + MLKEM768_CIPHERTEXT_LEN + 32
                    && data[..4] == [0x11, 0xec, 0x04, 0x60] =>
            {
                group = GROUP_X25519_MLKEM768;
                share = <[u8; 32]>::try_from(&data[4 + MLKEM768_CIPHERTEXT_LEN..]).ok()
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
        group,
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
