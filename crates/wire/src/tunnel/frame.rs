//! Mux frames inside record plaintexts, and the record padding policy.
//!
//! A record's plaintext is a sequence of whole frames (frames never span
//! records): `type u8 | stream u32 BE | len u16 BE | body[len]`.

use super::destination::{Destination, DestinationError};
use crate::faketls::MAX_PLAINTEXT;

/// Frame header length.
pub const FRAME_HEADER: usize = 7;
/// Largest body a frame in one record can carry.
pub const MAX_BODY: usize = MAX_PLAINTEXT - FRAME_HEADER;

/// Open a stream: body = destination, then the first data.
pub const OPEN: u8 = 1;
/// Answer an open: body = status u8.
pub const REPLY: u8 = 2;
/// Stream data.
pub const DATA: u8 = 3;
/// More send credit: body = u32 BE.
pub const WINDOW: u8 = 4;
/// The sender will send no more data on the stream.
pub const FIN: u8 = 5;
/// Abort the stream both ways.
pub const RESET: u8 = 6;
/// Liveness probe: body = u64 BE, echoed in a PONG (stream 0).
pub const PING: u8 = 7;
/// Answer to a PING (stream 0).
pub const PONG: u8 = 8;
/// Padding, ignored (stream 0).
pub const PAD: u8 = 9;

/// The status of an open, as the server's REPLY says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Status {
    /// Connected.
    Ok,
    /// The server's egress policy forbids the destination.
    NotAllowed,
    /// Network unreachable.
    NetworkUnreachable,
    /// Host unreachable.
    HostUnreachable,
    /// Connection refused.
    ConnectionRefused,
    /// Timed out.
    TimedOut,
    /// The name did not resolve.
    NameNotResolved,
    /// Anything else.
    GeneralFailure,
}

impl Status {
    /// The status byte.
    pub fn code(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::NotAllowed => 1,
            Status::NetworkUnreachable => 2,
            Status::HostUnreachable => 3,
            Status::ConnectionRefused => 4,
            Status::TimedOut => 5,
            Status::NameNotResolved => 6,
            Status::GeneralFailure => 7,
        }
    }

    /// The status a byte names (unknown codes are general failures).
    pub fn from_code(code: u8) -> Status {
        match code {
            0 => Status::Ok,
            1 => Status::NotAllowed,
            2 => Status::NetworkUnreachable,
            3 => Status::HostUnreachable,
            4 => Status::ConnectionRefused,
            5 => Status::TimedOut,
            6 => Status::NameNotResolved,
            _ => Status::GeneralFailure,
        }
    }
}

/// One decoded frame, borrowing its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    /// Open `stream` to `dest`, with `first` data.
    Open {
        /// Stream id (odd: client-opened).
        stream: u32,
        /// Where to.
        dest: Destination,
        /// Data to send as soon as connected.
        first: &'a [u8],
    },
    /// The outcome of an open.
    Reply {
        /// Stream id.
        stream: u32,
        /// Status.
        status: Status,
    },
    /// Data.
    Data {
        /// Stream id.
        stream: u32,
        /// Bytes.
        data: &'a [u8],
    },
    /// More credit for the receiver of this frame to send on `stream`.
    Window {
        /// Stream id.
        stream: u32,
        /// Bytes.
        credit: u32,
    },
    /// End of data from the sender.
    Fin {
        /// Stream id.
        stream: u32,
    },
    /// Abort.
    Reset {
        /// Stream id.
        stream: u32,
    },
    /// Liveness probe.
    Ping(u64),
    /// Echo of a probe.
    Pong(u64),
    /// Padding of this many body bytes.
    Pad(usize),
}

/// Why a record plaintext does not hold well-formed frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The plaintext ends inside a frame.
    #[error("frame truncated")]
    Truncated,
    /// Unknown frame type.
    #[error("unknown frame type {0}")]
    UnknownType(u8),
    /// A body of the wrong length for its type.
    #[error("frame type {0} with a body of the wrong length")]
    BadLength(u8),
    /// A connection-level frame with a stream id or a stream frame with id 0.
    #[error("frame type {0} on the wrong stream id")]
    BadStream(u8),
    /// The OPEN's destination does not decode.
    #[error("bad destination: {0}")]
    Destination(#[from] DestinationError),
}

impl<'a> Frame<'a> {
    /// Decodes the frame at the front of `buf`; returns it and its length.
    pub fn decode(buf: &'a [u8]) -> Result<(Frame<'a>, usize), FrameError> {
        let h = buf.get(..FRAME_HEADER).ok_or(FrameError::Truncated)?;
        let kind = h[0];
        let stream = u32::from_be_bytes([h[1], h[2], h[3], h[4]]);
        let len = u16::from_be_bytes([h[5], h[6]]) as usize;
        if len > MAX_BODY {
            return Err(FrameError::BadLength(kind));
        }
        let body = buf
            .get(FRAME_HEADER..FRAME_HEADER + len)
            .ok_or(FrameError::Truncated)?;
        let connection_level = matches!(kind, PING | PONG | PAD);
        if connection_level != (stream == 0) && (OPEN..=PAD).contains(&kind) {
            return Err(FrameError::BadStream(kind));
        }
        let exact = |n: usize| {
            if len == n {
                Ok(())
            } else {
                Err(FrameError::BadLength(kind))
            }
        };
        let frame = match kind {
            OPEN => {
                let (dest, used) = Destination::decode(body)?;
                Frame::Open {
                    stream,
                    dest,
                    first: &body[used..],
                }
            }
            REPLY => {
                exact(1)?;
                Frame::Reply {
                    stream,
                    status: Status::from_code(body[0]),
                }
            }
            DATA => {
                if body.is_empty() {
                    return Err(FrameError::BadLength(kind));
                }
                Frame::Data { stream, data: body }
            }
            WINDOW => {
                exact(4)?;
                Frame::Window {
                    stream,
                    credit: u32::from_be_bytes(body.try_into().expect("4 bytes")),
                }
            }
            FIN => {
                exact(0)?;
                Frame::Fin { stream }
            }
            RESET => {
                exact(0)?;
                Frame::Reset { stream }
            }
            PING | PONG => {
                exact(8)?;
                let v = u64::from_be_bytes(body.try_into().expect("8 bytes"));
                if kind == PING {
                    Frame::Ping(v)
                } else {
                    Frame::Pong(v)
                }
            }
            PAD => Frame::Pad(len),
            other => return Err(FrameError::UnknownType(other)),
        };
        Ok((frame, FRAME_HEADER + len))
    }

    /// Bytes [`Frame::encode`] appends (bodies cut to [`MAX_BODY`] as
    /// there).
    pub fn encoded_len(&self) -> usize {
        FRAME_HEADER
            + match self {
                Frame::Open { dest, first, .. } => {
                    let d = dest.encoded_len();
                    d + first.len().min(MAX_BODY.saturating_sub(d))
                }
                Frame::Reply { .. } => 1,
                Frame::Data { data, .. } => data.len().min(MAX_BODY),
                Frame::Window { .. } => 4,
                Frame::Fin { .. } | Frame::Reset { .. } => 0,
                Frame::Ping(_) | Frame::Pong(_) => 8,
                Frame::Pad(n) => (*n).min(MAX_BODY),
            }
    }

    /// Appends the frame. Bodies longer than [`MAX_BODY`] are the caller's
    /// bug (they would not fit a record) and are cut.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let head = header;
        match self {
            Frame::Open {
                stream,
                dest,
                first,
            } => {
                let first = &first[..first.len().min(MAX_BODY.saturating_sub(dest.encoded_len()))];
                head(out, OPEN, *stream, dest.encoded_len() + first.len());
                dest.encode(out);
                out.extend_from_slice(first);
            }
            Frame::Reply { stream, status } => {
                head(out, REPLY, *stream, 1);
                out.push(status.code());
            }
            Frame::Data { stream, data } => {
                let data = &data[..data.len().min(MAX_BODY)];
                head(out, DATA, *stream, data.len());
                out.extend_from_slice(data);
            }
            Frame::Window { stream, credit } => {
                head(out, WINDOW, *stream, 4);
                out.extend_from_slice(&credit.to_be_bytes());
            }
            Frame::Fin { stream } => head(out, FIN, *stream, 0),
            Frame::Reset { stream } => head(out, RESET, *stream, 0),
            Frame::Ping(v) => {
                head(out, PING, 0, 8);
                out.extend_from_slice(&v.to_be_bytes());
            }
            Frame::Pong(v) => {
                head(out, PONG, 0, 8);
                out.extend_from_slice(&v.to_be_bytes());
            }
            Frame::Pad(n) => {
                let n = (*n).min(MAX_BODY);
                head(out, PAD, 0, n);
                out.resize(out.len() + n, 0);
            }
        }
    }
}

/// Iterates over the frames of a record plaintext.
pub fn frames(plaintext: &[u8]) -> impl Iterator<Item = Result<Frame<'_>, FrameError>> + '_ {
    decode_all(plaintext, Frame::decode)
}

/// Decodes `buf` front to back with `decode` (which returns a value and
/// the bytes it used), stopping after the first error: the iterator behind
/// [`frames`] and the lane frames'.
pub(crate) fn decode_all<'a, T, E>(
    buf: &'a [u8],
    decode: impl Fn(&'a [u8]) -> Result<(T, usize), E> + 'a,
) -> impl Iterator<Item = Result<T, E>> + 'a {
    let mut rest = buf;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        match decode(rest) {
            Ok((f, used)) => {
                rest = &rest[used..];
                Some(Ok(f))
            }
            Err(e) => {
                rest = &[];
                Some(Err(e))
            }
        }
    })
}

/// Size buckets of the padding policy (record plaintext bytes).
pub const PAD_BUCKETS: [usize; 4] = [256, 1024, 4096, MAX_PLAINTEXT];

/// The padding policy: the plaintext size a record holding `used` bytes of
/// frames is padded to. The record goes to a size drawn uniformly (from
/// `random`) between `used + 7` and the top of the smallest bucket of
/// [`PAD_BUCKETS`] that holds `used + 7`: small records (keystrokes, acks,
/// control frames) all look like 7…256-byte records, and a bulk record
/// that is already full gets no padding. Returns `used` when no PAD frame
/// fits.
pub fn padded_len(used: usize, random: u32) -> usize {
    let min = used + FRAME_HEADER;
    let Some(&top) = PAD_BUCKETS.iter().find(|&&b| b >= min) else {
        return used;
    };
    min + (random as usize) % (top - min + 1)
}

/// Appends a PAD frame taking `buf` (a record plaintext under
/// construction) to [`padded_len`].
pub fn pad(buf: &mut Vec<u8>, start: usize, random: u32) {
    let used = buf.len() - start;
    let target = padded_len(used, random);
    if target > used {
        Frame::Pad(target - used - FRAME_HEADER).encode(buf);
    }
}

/// [`pad`], never past `max` plaintext bytes.
pub fn pad_within(buf: &mut Vec<u8>, start: usize, random: u32, max: usize) {
    let used = buf.len() - start;
    let target = padded_len(used, random).min(max);
    if target >= used + FRAME_HEADER {
        Frame::Pad(target - used - FRAME_HEADER).encode(buf);
    }
}

/// Appends a frame header: type, stream id, body length (cut to
/// [`MAX_BODY`]).
fn header(out: &mut Vec<u8>, kind: u8, stream: u32, len: usize) {
    out.push(kind);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(&(len.min(MAX_BODY) as u16).to_be_bytes());
}

/// Appends the header of a DATA frame whose `len` body bytes the caller
/// appends next: the session writer copies them straight from its send
/// buffer (two slices of a ring) instead of building a [`Frame::Data`].
/// `len` must be at most [`MAX_BODY`], as for [`Frame::encode`].
pub fn encode_data_header(stream: u32, len: usize, out: &mut Vec<u8>) {
    debug_assert!(len <= MAX_BODY, "a DATA body of {len} bytes");
    header(out, DATA, stream, len);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_header_and_its_body_decode_as_the_data_frame() {
        let mut out = Vec::new();
        encode_data_header(0x0102_0304, 3, &mut out);
        out.extend_from_slice(b"abc");
        let mut whole = Vec::new();
        Frame::Data {
            stream: 0x0102_0304,
            data: b"abc",
        }
        .encode(&mut whole);
        assert_eq!(out, whole);
        assert_eq!(
            Frame::decode(&out),
            Ok((
                Frame::Data {
                    stream: 0x0102_0304,
                    data: b"abc"
                },
                FRAME_HEADER + 3
            ))
        );
    }

    #[test]
    fn padding_stays_in_bucket() {
        for used in [
            0,
            1,
            100,
            249,
            250,
            251,
            1000,
            5000,
            MAX_PLAINTEXT - 7,
            MAX_PLAINTEXT,
        ] {
            for r in [0, 1, 77, u32::MAX] {
                let t = padded_len(used, r);
                assert!(t >= used && t <= MAX_PLAINTEXT.max(used), "{used} {t}");
                if used + 7 <= 256 {
                    assert!(t <= 256);
                }
            }
        }
    }
}
