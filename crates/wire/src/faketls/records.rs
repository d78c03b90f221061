//! TLS record codec for the fake-TLS data phase (spec §4.5).
//!
//! Client → server: ChangeCipherSpec records are skipped, ApplicationData
//! payloads are concatenated into the obfuscated2 stream, an alert ends the
//! stream, anything else is an error. Decoding happens in place: payload
//! bytes are moved to the front of the buffer the driver read into, so the
//! relay needs no second buffer. Server → client records are written by the
//! driver with [`super::app_data_header`].

use super::{ALERT, APPLICATION_DATA, CHANGE_CIPHER_SPEC, MAX_CIPHERTEXT};

/// Why the record stream is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// A record type other than ChangeCipherSpec, ApplicationData or alert.
    #[error("unexpected TLS record type 0x{0:02x}")]
    UnexpectedType(u8),
    /// The record version is not TLS 1.x.
    #[error("unexpected TLS record version {0:02x}{1:02x}")]
    BadVersion(u8, u8),
    /// A record longer than TLS allows.
    #[error("TLS record of {0} bytes exceeds the limit of {MAX_CIPHERTEXT}")]
    TooLong(usize),
}

/// Incremental record decoder; keeps the state of a record split across reads.
#[derive(Debug, Default, Clone)]
pub struct RecordDecoder {
    header: [u8; 5],
    have: usize,
    remaining: usize,
    skipping: bool,
    closed: bool,
}

impl RecordDecoder {
    /// A decoder at a record boundary.
    pub fn new() -> RecordDecoder {
        RecordDecoder::default()
    }

    /// The peer sent an alert: the stream has ended (like EOF).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Strips record framing from `buf` in place and returns how many
    /// payload bytes now stand at its front. Bytes after an alert are
    /// ignored.
    pub fn decode_in_place(&mut self, buf: &mut [u8]) -> Result<usize, RecordError> {
        let mut read = 0;
        let mut write = 0;
        while read < buf.len() && !self.closed {
            if self.remaining == 0 {
                let take = (5 - self.have).min(buf.len() - read);
                self.header[self.have..self.have + take].copy_from_slice(&buf[read..read + take]);
                self.have += take;
                read += take;
                if self.have < 5 {
                    break;
                }
                self.have = 0;
                let [kind, major, minor, hi, lo] = self.header;
                if major != 0x03 || !(0x01..=0x03).contains(&minor) {
                    return Err(RecordError::BadVersion(major, minor));
                }
                let len = u16::from_be_bytes([hi, lo]) as usize;
                if len > MAX_CIPHERTEXT {
                    return Err(RecordError::TooLong(len));
                }
                match kind {
                    APPLICATION_DATA => self.skipping = false,
                    CHANGE_CIPHER_SPEC => self.skipping = true,
                    ALERT => {
                        self.closed = true;
                        break;
                    }
                    other => return Err(RecordError::UnexpectedType(other)),
                }
                self.remaining = len;
            } else {
                let take = self.remaining.min(buf.len() - read);
                if !self.skipping {
                    buf.copy_within(read..read + take, write);
                    write += take;
                }
                read += take;
                self.remaining -= take;
            }
        }
        Ok(write)
    }
}

/// Wraps `payload` into ApplicationData records of at most `max` bytes each
/// (test clients and fake servers; the relay writes headers itself).
pub fn encode_app_data(payload: &[u8], max: usize, out: &mut Vec<u8>) {
    for chunk in payload.chunks(max.max(1)) {
        out.extend_from_slice(&super::app_data_header(chunk.len()));
        out.extend_from_slice(chunk);
    }
}
