//! Finding the slots of a ClientHello that carry the Noise handshake.
//!
//! [`locate`] parses one ClientHello record strictly and returns the byte
//! offsets of the fields that are random in real TLS (the `random`, the
//! 32-byte `legacy_session_id`, the X25519 key share and the X25519 tail of
//! an X25519MLKEM768 share) plus the cipher-suite list and the SNI. It never
//! panics and never allocates.

use crate::codec::Reader;
use crate::faketls::{HANDSHAKE, MAX_PLAINTEXT, RANDOM_LEN};
use std::ops::Range;

/// TLS named group x25519.
pub const GROUP_X25519: u16 = 0x001d;
/// TLS named group X25519MLKEM768 (ML-KEM-768 encapsulation key, then X25519).
pub const GROUP_X25519_MLKEM768: u16 = 0x11ec;
/// Length of an X25519MLKEM768 client share: 1184-byte ek || 32-byte X25519.
pub const HYBRID_SHARE_LEN: usize = 1216;
/// Length of the ML-KEM-768 encapsulation key at the front of that share.
pub const MLKEM768_KEY_LEN: usize = 1184;
/// Length of the legacy_session_id we require (Chrome sends 32 random bytes).
pub const SESSION_ID_LEN: usize = 32;

/// Byte offsets (from the start of the record, header included) of the
/// fields of a ClientHello the transport reads or writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// The 32-byte client random.
    pub random: usize,
    /// The 32-byte legacy_session_id (after its length byte).
    pub session_id: usize,
    /// The 32-byte X25519 key share.
    pub x25519: usize,
    /// The 32-byte X25519 tail of the X25519MLKEM768 share, if offered.
    pub hybrid_x25519: Option<usize>,
    /// The cipher-suite list (pairs of bytes).
    pub cipher_suites: Range<usize>,
    /// The host_name of the server_name extension, if any.
    pub sni: Option<Range<usize>>,
}

impl Located {
    /// The 32-byte slots the handshake writes: random, session id, X25519
    /// share and the hybrid's X25519 tail.
    pub fn slots(&self) -> impl Iterator<Item = Range<usize>> + '_ {
        [
            Some(self.random),
            Some(self.session_id),
            Some(self.x25519),
            self.hybrid_x25519,
        ]
        .into_iter()
        .flatten()
        .map(|at| at..at + 32)
    }

    /// The offered cipher suites, GREASE included, in order.
    pub fn suites<'a>(&self, record: &'a [u8]) -> impl Iterator<Item = u16> + 'a {
        record[self.cipher_suites.clone()]
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
    }
}

/// Why a record is not a ClientHello we can carry a handshake in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LocateError {
    /// Not a TLS handshake record holding exactly one ClientHello.
    #[error("not a record holding exactly one ClientHello")]
    NotClientHello,
    /// A length field points past the end of its container.
    #[error("ClientHello field {0} overruns its container")]
    Truncated(&'static str),
    /// Bytes after the last field.
    #[error("trailing bytes in {0}")]
    TrailingData(&'static str),
    /// The legacy_session_id is not 32 bytes.
    #[error("legacy_session_id is not 32 bytes")]
    SessionId,
    /// An extension or a key-share group appears twice.
    #[error("duplicate {0}")]
    Duplicate(&'static str),
    /// A key share has the wrong length for its group.
    #[error("key share for group 0x{0:04x} has the wrong length")]
    ShareLength(u16),
    /// No 32-byte X25519 key share.
    #[error("no X25519 key share")]
    NoX25519,
}

/// Parses one complete ClientHello record (5-byte header included) and
/// returns where its handshake slots are.
pub fn locate(record: &[u8]) -> Result<Located, LocateError> {
    use LocateError::Truncated;
    let [kind, major, minor, hi, lo, ..] = *record else {
        return Err(LocateError::NotClientHello);
    };
    let len = u16::from_be_bytes([hi, lo]) as usize;
    if kind != HANDSHAKE
        || major != 0x03
        || !(0x01..=0x03).contains(&minor)
        || len != record.len() - 5
        || len > MAX_PLAINTEXT
    {
        return Err(LocateError::NotClientHello);
    }
    let mut r = Reader::at(&record[5..], 5);
    if r.u8().ok_or(Truncated("handshake type"))? != 0x01 {
        return Err(LocateError::NotClientHello);
    }
    // The handshake message must fill the record exactly.
    let hs_len = r.u24().ok_or(Truncated("handshake length"))?;
    if hs_len as usize != r.remaining() {
        return Err(LocateError::NotClientHello);
    }
    r.skip(2).ok_or(Truncated("legacy_version"))?;
    let random = r.offset();
    r.skip(RANDOM_LEN).ok_or(Truncated("random"))?;
    let sid = r.sub8().ok_or(Truncated("legacy_session_id"))?;
    if sid.remaining() != SESSION_ID_LEN {
        return Err(LocateError::SessionId);
    }
    let suites = r.sub16().ok_or(Truncated("cipher_suites"))?;
    if suites.is_empty() || suites.remaining() % 2 != 0 {
        return Err(Truncated("cipher_suites"));
    }
    let compression = r.sub8().ok_or(Truncated("legacy_compression_methods"))?;
    if compression.is_empty() {
        return Err(Truncated("legacy_compression_methods"));
    }
    let mut exts = r.sub16().ok_or(Truncated("extensions"))?;
    r.expect_end()
        .map_err(|_| LocateError::TrailingData("ClientHello"))?;

    let mut seen = [0u16; 64];
    let mut n_seen = 0;
    let mut x25519 = None;
    let mut hybrid = None;
    let mut sni = None;
    while !exts.is_empty() {
        let kind = exts.u16().ok_or(Truncated("extension type"))?;
        let mut data = exts.sub16().ok_or(Truncated("extension data"))?;
        // Real stacks reject a repeated extension (RFC 8446 §4.2); GREASE
        // values may legitimately repeat.
        if !crate::faketls::is_grease(kind) {
            if seen[..n_seen].contains(&kind) {
                return Err(LocateError::Duplicate("extension"));
            }
            if n_seen < seen.len() {
                seen[n_seen] = kind;
                n_seen += 1;
            }
        }
        match kind {
            0x0000 => {
                let mut list = data.sub16().ok_or(Truncated("server_name list"))?;
                data.expect_end()
                    .map_err(|_| LocateError::TrailingData("server_name"))?;
                while !list.is_empty() {
                    let name_type = list.u8().ok_or(Truncated("server_name type"))?;
                    let name = list.sub16().ok_or(Truncated("host_name"))?;
                    if name_type == 0 && sni.is_none() {
                        sni = Some(name.offset()..name.offset() + name.remaining());
                    }
                }
            }
            0x0033 => {
                let mut shares = data.sub16().ok_or(Truncated("client_shares"))?;
                data.expect_end()
                    .map_err(|_| LocateError::TrailingData("key_share"))?;
                let mut groups: [u16; 8] = [0; 8];
                let mut n = 0;
                while !shares.is_empty() {
                    let group = shares.u16().ok_or(Truncated("key share group"))?;
                    let key = shares.sub16().ok_or(Truncated("key_exchange"))?;
                    if groups[..n].contains(&group) {
                        return Err(LocateError::Duplicate("key share group"));
                    }
                    if n < groups.len() {
                        groups[n] = group;
                        n += 1;
                    }
                    match group {
                        GROUP_X25519 if key.remaining() == 32 => x25519 = Some(key.offset()),
                        GROUP_X25519_MLKEM768 if key.remaining() == HYBRID_SHARE_LEN => {
                            hybrid = Some(key.offset() + HYBRID_SHARE_LEN - 32)
                        }
                        GROUP_X25519 | GROUP_X25519_MLKEM768 => {
                            return Err(LocateError::ShareLength(group))
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(Located {
        random,
        session_id: sid.offset(),
        x25519: x25519.ok_or(LocateError::NoX25519)?,
        hybrid_x25519: hybrid,
        cipher_suites: suites.offset()..suites.offset() + suites.remaining(),
        sni,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faketls::client::{build_hello, HelloShape};

    #[test]
    fn finds_every_slot_of_a_post_quantum_hello() {
        let mut n = 0u8;
        let rec = build_hello(
            &[7; 16],
            "example.com",
            1,
            HelloShape::PostQuantum,
            &mut |b| {
                for x in b {
                    n = n.wrapping_add(1);
                    *x = n;
                }
            },
        );
        let at = locate(&rec).unwrap();
        assert_eq!(at.random, 11);
        assert_eq!(at.session_id, 44);
        assert_eq!(&rec[at.sni.clone().unwrap()], b"example.com");
        let hybrid = at.hybrid_x25519.unwrap();
        assert_eq!(
            &rec[hybrid - 1184 - 4..hybrid - 1184],
            &[0x11, 0xec, 0x04, 0xc0]
        );
        assert_eq!(&rec[at.x25519 - 4..at.x25519], &[0x00, 0x1d, 0x00, 0x20]);
        assert_eq!(at.suites(&rec).nth(1), Some(0x1301));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let rec = build_hello(&[7; 16], "a.b", 1, HelloShape::Classic517, &mut |b| {
            b.fill(3)
        });
        assert!(locate(&rec).is_ok());
        for cut in 0..rec.len() {
            assert!(locate(&rec[..cut]).is_err(), "cut at {cut}");
        }
    }
}
