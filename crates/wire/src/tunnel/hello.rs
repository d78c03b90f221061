//! Finding the slots of a ClientHello that carry the Noise handshake.
//!
//! [`locate`] parses one ClientHello record strictly and returns the byte
//! offsets of the fields that are random in real TLS (the `random`, the
//! 32-byte `legacy_session_id`, the X25519 key share and the X25519 tail of
//! an X25519MLKEM768 share) plus the cipher-suite list and the SNI. It never
//! panics and never allocates.

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

struct Reader<'a> {
    buf: &'a [u8],
    /// Offset of `buf[0]` in the record.
    base: usize,
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], base: usize) -> Reader<'a> {
        Reader { buf, base, pos: 0 }
    }
    /// Absolute offset of the next byte.
    fn at(&self) -> usize {
        self.base + self.pos
    }
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], LocateError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(LocateError::Truncated(what))?;
        let out = self
            .buf
            .get(self.pos..end)
            .ok_or(LocateError::Truncated(what))?;
        self.pos = end;
        Ok(out)
    }
    fn u8(&mut self, what: &'static str) -> Result<usize, LocateError> {
        Ok(self.take(1, what)?[0] as usize)
    }
    fn u16(&mut self, what: &'static str) -> Result<usize, LocateError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]) as usize)
    }
    /// A vector with a `width`-byte length prefix, as a sub-reader.
    fn sub(&mut self, width: usize, what: &'static str) -> Result<Reader<'a>, LocateError> {
        let n = if width == 1 {
            self.u8(what)?
        } else {
            self.u16(what)?
        };
        let base = self.at();
        Ok(Reader::new(self.take(n, what)?, base))
    }
    fn done(&self) -> bool {
        self.pos == self.buf.len()
    }
    fn finish(&self, what: &'static str) -> Result<(), LocateError> {
        if self.done() {
            Ok(())
        } else {
            Err(LocateError::TrailingData(what))
        }
    }
}

/// Parses one complete ClientHello record (5-byte header included) and
/// returns where its handshake slots are.
pub fn locate(record: &[u8]) -> Result<Located, LocateError> {
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
    let mut hs = Reader::new(&record[5..], 5);
    if hs.u8("handshake type")? != 0x01 {
        return Err(LocateError::NotClientHello);
    }
    let b = hs.take(3, "handshake length")?;
    let hs_len = u32::from_be_bytes([0, b[0], b[1], b[2]]) as usize;
    let mut r = hs.sub_exact(hs_len)?;
    r.take(2, "legacy_version")?;
    let random = r.at();
    r.take(RANDOM_LEN, "random")?;
    let sid = r.sub(1, "legacy_session_id")?;
    if sid.buf.len() != SESSION_ID_LEN {
        return Err(LocateError::SessionId);
    }
    let suites = r.sub(2, "cipher_suites")?;
    if suites.buf.is_empty() || suites.buf.len() % 2 != 0 {
        return Err(LocateError::Truncated("cipher_suites"));
    }
    if r.sub(1, "legacy_compression_methods")?.buf.is_empty() {
        return Err(LocateError::Truncated("legacy_compression_methods"));
    }
    let mut exts = r.sub(2, "extensions")?;
    r.finish("ClientHello")?;

    let mut seen = [0u16; 64];
    let mut n_seen = 0;
    let mut x25519 = None;
    let mut hybrid = None;
    let mut sni = None;
    while !exts.done() {
        let kind = exts.u16("extension type")? as u16;
        let mut data = exts.sub(2, "extension data")?;
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
                let mut list = data.sub(2, "server_name list")?;
                data.finish("server_name")?;
                while !list.done() {
                    let name_type = list.u8("server_name type")?;
                    let name = list.sub(2, "host_name")?;
                    if name_type == 0 && sni.is_none() {
                        sni = Some(name.base..name.base + name.buf.len());
                    }
                }
            }
            0x0033 => {
                let mut shares = data.sub(2, "client_shares")?;
                data.finish("key_share")?;
                let mut groups: [u16; 8] = [0; 8];
                let mut n = 0;
                while !shares.done() {
                    let group = shares.u16("key share group")? as u16;
                    let key = shares.sub(2, "key_exchange")?;
                    if groups[..n].contains(&group) {
                        return Err(LocateError::Duplicate("key share group"));
                    }
                    if n < groups.len() {
                        groups[n] = group;
                        n += 1;
                    }
                    match group {
                        GROUP_X25519 if key.buf.len() == 32 => x25519 = Some(key.base),
                        GROUP_X25519_MLKEM768 if key.buf.len() == HYBRID_SHARE_LEN => {
                            hybrid = Some(key.base + HYBRID_SHARE_LEN - 32)
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
        session_id: sid.base,
        x25519: x25519.ok_or(LocateError::NoX25519)?,
        hybrid_x25519: hybrid,
        cipher_suites: suites.base..suites.base + suites.buf.len(),
        sni,
    })
}

impl<'a> Reader<'a> {
    /// The rest of this reader, which must be exactly `n` bytes.
    fn sub_exact(&mut self, n: usize) -> Result<Reader<'a>, LocateError> {
        if self.buf.len() - self.pos != n {
            return Err(LocateError::NotClientHello);
        }
        let base = self.at();
        Ok(Reader::new(self.take(n, "handshake body")?, base))
    }
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
