//! AEAD-protected TLS application-data records of the transport phase.
//!
//! Each direction has its own AES-256-GCM key from the Noise split and a
//! 64-bit record counter as nonce (`0u32 || counter` big-endian), so no
//! nonce repeats; after [`MAX_RECORDS`] records the direction refuses to
//! go on and the connection must close. The 5-byte record header
//! (`17 03 03 len`) is the associated data, as in TLS 1.3.
//!
//! [`Sealer`] and [`Opener`] are independent so a writer task and a reader
//! task can each own one.

use crate::faketls::{APPLICATION_DATA, CCS_RECORD, CHANGE_CIPHER_SPEC, MAX_PLAINTEXT};
use crate::tunnel::read_buffer::ReadBuffer;
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use std::fmt;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// AEAD tag length.
pub const TAG_LEN: usize = 16;
/// Record header length.
pub const HEADER_LEN: usize = 5;
/// Largest record payload we accept: TLS's ciphertext limit (RFC 8446 §5.2).
pub const MAX_RECORD_PAYLOAD: usize = MAX_PLAINTEXT + 256;
/// Records one direction may carry before the connection must close.
pub const MAX_RECORDS: u64 = 1 << 40;
/// Bytes the opener buffers at most: four largest records (so one read
/// can take about 64 KiB).
pub const OPENER_BUFFER: usize = 4 * (HEADER_LEN + MAX_RECORD_PAYLOAD);

/// Why a record could not be sealed or opened. Any of these ends the
/// connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The plaintext is longer than a TLS record may carry.
    #[error("record plaintext of {0} bytes exceeds {MAX_PLAINTEXT}")]
    TooLong(usize),
    /// The direction has used up its nonces.
    #[error("record counter exhausted")]
    Exhausted,
    /// A record header that is not TLS 1.2-versioned application data.
    #[error("unexpected record header {0:02x?}")]
    BadHeader([u8; 5]),
    /// Authentication failed: altered, replayed or foreign bytes.
    #[error("record failed authentication")]
    BadTag,
    /// The first record was not the client's key confirmation.
    #[error("missing or wrong key confirmation")]
    BadConfirmation,
}

fn key(raw: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, raw).expect("32-byte AES-256-GCM key"))
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

/// Seals outgoing records for one direction.
pub struct Sealer {
    key: LessSafeKey,
    counter: u64,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("counter", &self.counter)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    pub(crate) fn new(raw: &[u8; 32], counter: u64) -> Sealer {
        Sealer {
            key: key(raw),
            counter,
        }
    }

    /// Records sealed so far.
    pub fn records(&self) -> u64 {
        self.counter
    }

    /// Appends one record carrying `plaintext` to `out`.
    pub fn seal_record(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), RecordError> {
        let start = self.begin(out);
        out.extend_from_slice(plaintext);
        self.finish(out, start)
    }

    /// Starts a record at the end of `out` by reserving its header; write
    /// the plaintext after it, then call [`Sealer::finish`] with the
    /// returned offset. Saves a copy when frames are encoded in place.
    pub fn begin(&self, out: &mut Vec<u8>) -> usize {
        let start = out.len();
        out.extend_from_slice(&[0; HEADER_LEN]);
        start
    }

    /// Encrypts `out[start + 5..]` in place and fills in the header.
    pub fn finish(&mut self, out: &mut Vec<u8>, start: usize) -> Result<(), RecordError> {
        let len = out.len() - start - HEADER_LEN;
        if len > MAX_PLAINTEXT {
            out.truncate(start);
            return Err(RecordError::TooLong(len));
        }
        if self.counter >= MAX_RECORDS {
            out.truncate(start);
            return Err(RecordError::Exhausted);
        }
        let wire_len = (len + TAG_LEN) as u16;
        let header = [
            APPLICATION_DATA,
            0x03,
            0x03,
            (wire_len >> 8) as u8,
            wire_len as u8,
        ];
        out[start..start + HEADER_LEN].copy_from_slice(&header);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                nonce(self.counter),
                Aad::from(header),
                &mut out[start + HEADER_LEN..],
            )
            .map_err(|_| RecordError::TooLong(len))?;
        self.counter += 1;
        out.extend_from_slice(tag.as_ref());
        Ok(())
    }
}

impl Sealer {
    /// Seals a record laid out in place as `[5 bytes for the header]
    /// [plaintext][16 bytes for the tag]` (what a writer reserves while it
    /// encodes frames, so it can seal later without holding its locks).
    pub fn seal_in_place(&mut self, record: &mut [u8]) -> Result<(), RecordError> {
        let Some(len) = record.len().checked_sub(HEADER_LEN + TAG_LEN) else {
            return Err(RecordError::TooLong(0));
        };
        if len > MAX_PLAINTEXT {
            return Err(RecordError::TooLong(len));
        }
        if self.counter >= MAX_RECORDS {
            return Err(RecordError::Exhausted);
        }
        let wire_len = (len + TAG_LEN) as u16;
        let header = [
            APPLICATION_DATA,
            0x03,
            0x03,
            (wire_len >> 8) as u8,
            wire_len as u8,
        ];
        record[..HEADER_LEN].copy_from_slice(&header);
        let (body, tag_slot) = record[HEADER_LEN..].split_at_mut(len);
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce(self.counter), Aad::from(header), body)
            .map_err(|_| RecordError::TooLong(len))?;
        self.counter += 1;
        tag_slot.copy_from_slice(tag.as_ref());
        Ok(())
    }
}

/// Opens incoming records for one direction, in place, from a bounded
/// buffer the driver reads into.
pub struct Opener {
    key: LessSafeKey,
    counter: u64,
    input: ReadBuffer,
    /// Server side: the plaintext the client's Finished-sized key
    /// confirmation record must carry, and its exact payload length.
    confirm: Option<(Zeroizing<Vec<u8>>, usize)>,
    /// A ChangeCipherSpec record may precede the first protected record.
    ccs_allowed: bool,
}

impl fmt::Debug for Opener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opener")
            .field("counter", &self.counter)
            .field("buffered", &self.input.buffered())
            .finish_non_exhaustive()
    }
}

impl Opener {
    pub(crate) fn new(raw: &[u8; 32], confirm: Option<(Zeroizing<Vec<u8>>, usize)>) -> Opener {
        Opener {
            key: key(raw),
            counter: 0,
            input: ReadBuffer::new(OPENER_BUFFER),
            ccs_allowed: confirm.is_some(),
            confirm,
        }
    }

    /// Bytes buffered and not yet returned.
    pub fn buffered(&self) -> usize {
        self.input.buffered()
    }

    /// Free space to read into; call [`Opener::advance`] with the bytes
    /// written. Empty only while a complete record waits to be taken.
    pub fn spare(&mut self) -> &mut [u8] {
        self.input.spare()
    }

    /// Marks `n` bytes of [`Opener::spare`] as filled.
    pub fn advance(&mut self, n: usize) {
        self.input.advance(n)
    }

    /// Copies as much of `data` as fits; returns the bytes taken.
    pub fn feed(&mut self, data: &[u8]) -> usize {
        self.input.feed(data)
    }

    /// Opens the next complete record and returns its plaintext, or `None`
    /// if more bytes are needed.
    pub fn open_next(&mut self) -> Result<Option<&[u8]>, RecordError> {
        loop {
            let have = self.input.filled();
            if have.len() < HEADER_LEN {
                return Ok(None);
            }
            let header: [u8; 5] = have[..HEADER_LEN].try_into().expect("5 bytes");
            if self.ccs_allowed && header[0] == CHANGE_CIPHER_SPEC {
                if have.len() < CCS_RECORD.len() {
                    return Ok(None);
                }
                if have[..CCS_RECORD.len()] != CCS_RECORD {
                    return Err(RecordError::BadHeader(header));
                }
                self.ccs_allowed = false;
                self.input.start += CCS_RECORD.len();
                continue;
            }
            let len = u16::from_be_bytes([header[3], header[4]]) as usize;
            if header[..3] != [APPLICATION_DATA, 0x03, 0x03]
                || !(TAG_LEN..=MAX_RECORD_PAYLOAD).contains(&len)
            {
                return Err(RecordError::BadHeader(header));
            }
            if have.len() < HEADER_LEN + len {
                return Ok(None);
            }
            if self.counter >= MAX_RECORDS {
                return Err(RecordError::Exhausted);
            }
            self.ccs_allowed = false;
            let body = self.input.start + HEADER_LEN..self.input.start + HEADER_LEN + len;
            self.input.start = body.end;
            let counter = self.counter;
            self.counter += 1;
            let plain = self
                .key
                .open_in_place(nonce(counter), Aad::from(header), &mut self.input.buf[body])
                .map_err(|_| RecordError::BadTag)?;
            if plain.len() > MAX_PLAINTEXT {
                return Err(RecordError::TooLong(plain.len()));
            }
            if let Some((expected, size)) = self.confirm.take() {
                if len != size || !bool::from(expected.as_slice().ct_eq(plain)) {
                    return Err(RecordError::BadConfirmation);
                }
                continue;
            }
            let range = self.input.start - len..self.input.start - TAG_LEN;
            return Ok(Some(&self.input.buf[range]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_roundtrip_in_pieces_and_reject_tampering() {
        let k = [9u8; 32];
        let mut s = Sealer::new(&k, 0);
        let mut wire = Vec::new();
        for n in [0usize, 1, 100, MAX_PLAINTEXT] {
            s.seal_record(&vec![n as u8; n], &mut wire).unwrap();
        }
        assert_eq!(
            s.seal_record(&vec![0; MAX_PLAINTEXT + 1], &mut wire),
            Err(RecordError::TooLong(MAX_PLAINTEXT + 1))
        );
        let mut o = Opener::new(&k, None);
        let mut got = Vec::new();
        for chunk in wire.chunks(7) {
            assert_eq!(o.feed(chunk), chunk.len());
            while let Some(p) = o.open_next().unwrap() {
                got.push(p.to_vec());
            }
        }
        assert_eq!(got.len(), 4);
        assert_eq!(got[2], vec![100u8; 100]);

        // In-place sealing gives the same bytes as seal_record.
        let mut a = Sealer::new(&k, 5);
        let mut b = Sealer::new(&k, 5);
        let mut one = Vec::new();
        a.seal_record(b"in place", &mut one).unwrap();
        let mut two = [0u8; 5 + 8 + TAG_LEN];
        two[5..13].copy_from_slice(b"in place");
        b.seal_in_place(&mut two).unwrap();
        assert_eq!(one, two);

        let mut bad = wire.clone();
        bad[10] ^= 1;
        let mut o = Opener::new(&k, None);
        o.feed(&bad);
        assert_eq!(o.open_next(), Err(RecordError::BadTag));
    }
}
