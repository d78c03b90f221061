//! Transport framing inside obfuscated2 (spec §3).
//!
//! In direct mode the proxy never parses framing; this module serves the
//! test client, the fake DC and (later) middle-proxy mode. Decoding follows
//! the three-outcome rule: a complete packet, need more bytes, or invalid.

use crate::obfuscated2::Tag;

/// Largest packet we decode (spec §3.5: MTProxy's client limit).
pub const MAX_PACKET: usize = 1_044_480;

/// One decoded packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// The MTProto payload (padding removed).
    pub payload: Vec<u8>,
    /// The client asked for a quick ACK.
    pub quick_ack: bool,
}

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The length prefix exceeds [`MAX_PACKET`].
    #[error("packet length {0} exceeds the limit of {MAX_PACKET} bytes")]
    TooLong(usize),
    /// Abridged and intermediate payloads are multiples of 4.
    #[error("packet length {0} is not a multiple of 4")]
    Unaligned(usize),
}

/// Outcome of decoding from the front of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A packet and how many bytes it used.
    Packet(Packet, usize),
    /// The buffer holds only part of a frame.
    NeedMore,
}

/// Encodes one packet. `padding` is used only for [`Tag::Padded`].
pub fn encode(tag: Tag, payload: &[u8], quick_ack: bool, padding: &[u8], out: &mut Vec<u8>) {
    match tag {
        Tag::Abridged => {
            let words = payload.len() / 4;
            let ack = if quick_ack { 0x80 } else { 0 };
            if words < 0x7f {
                out.push(words as u8 | ack);
            } else {
                out.push(0x7f | ack);
                out.extend_from_slice(&(words as u32).to_le_bytes()[..3]);
            }
            out.extend_from_slice(payload);
        }
        Tag::Intermediate | Tag::Padded => {
            let pad = if tag == Tag::Padded { padding } else { &[][..] };
            let mut len = (payload.len() + pad.len()) as u32;
            if quick_ack {
                len |= 0x8000_0000;
            }
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(payload);
            out.extend_from_slice(pad);
        }
    }
}

/// Decodes one packet from the front of `buf`.
pub fn decode(tag: Tag, buf: &[u8]) -> Result<Decoded, FrameError> {
    let (header, len, quick_ack) = match tag {
        Tag::Abridged => {
            let Some(&first) = buf.first() else {
                return Ok(Decoded::NeedMore);
            };
            let quick_ack = first & 0x80 != 0;
            if first & 0x7f == 0x7f {
                if buf.len() < 4 {
                    return Ok(Decoded::NeedMore);
                }
                let words = u32::from_le_bytes([buf[1], buf[2], buf[3], 0]) as usize;
                (4, words * 4, quick_ack)
            } else {
                (1, (first & 0x7f) as usize * 4, quick_ack)
            }
        }
        Tag::Intermediate | Tag::Padded => {
            if buf.len() < 4 {
                return Ok(Decoded::NeedMore);
            }
            let raw = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
            let len = (raw & 0x7fff_ffff) as usize;
            if tag == Tag::Intermediate && len % 4 != 0 {
                return Err(FrameError::Unaligned(len));
            }
            (4, len, raw & 0x8000_0000 != 0)
        }
    };
    if len > MAX_PACKET {
        return Err(FrameError::TooLong(len));
    }
    if buf.len() < header + len {
        return Ok(Decoded::NeedMore);
    }
    let body = &buf[header..header + len];
    let payload = match tag {
        Tag::Padded => body[..len & !3].to_vec(),
        _ => body.to_vec(),
    };
    Ok(Decoded::Packet(Packet { payload, quick_ack }, header + len))
}

/// A quick-ACK answer from server to client: 4 raw bytes, byte-reversed for
/// abridged clients (spec §3.1–3.2).
pub fn quick_ack_answer(tag: Tag, token: [u8; 4]) -> [u8; 4] {
    match tag {
        Tag::Abridged => {
            let mut t = token;
            t.reverse();
            t
        }
        _ => token,
    }
}
