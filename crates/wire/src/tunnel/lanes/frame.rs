//! Lane frames inside each lane's record plaintexts: `type u8 | len u16
//! BE | body` (`docs/transport.md`).

use super::*;
use crate::codec::Reader;

/// One decoded lane frame, borrowing its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaneFrame<'a> {
    /// Starts a braid.
    New {
        /// The session secret.
        secret: [u8; 32],
        /// The lane's id (chosen by the client).
        lane: u32,
        /// Downstream record bytes allowed on the lane; 0: unlimited.
        budget: u32,
    },
    /// Adds a lane to a braid.
    Join {
        /// The braid's token.
        token: Token,
        /// The lane's id.
        lane: u32,
        /// Downstream record bytes allowed; 0: unlimited.
        budget: u32,
        /// What the client has received contiguously.
        received: u64,
    },
    /// Stream bytes at an offset.
    Seg {
        /// Offset of the first byte.
        offset: u64,
        /// The bytes.
        data: &'a [u8],
    },
    /// Acknowledgement.
    Ack {
        /// Every byte before this offset arrived.
        received: u64,
        /// Every byte before this offset was read by the application.
        consumed: u64,
    },
    /// The lane's budget is used up.
    Full,
    /// A lane died: resend from `received`.
    Rewind {
        /// The dead lane.
        lane: u32,
        /// What the client has received contiguously.
        received: u64,
    },
    /// Liveness probe.
    Ping(u64),
    /// Its answer.
    Pong(u64),
    /// Padding.
    Pad,
}

/// Why lane bytes were refused. Any of these ends the lane (a peer that
/// authenticated and then sends nonsense is a bug or an attack).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LaneError {
    /// A frame runs past the end of its record.
    #[error("lane frame truncated")]
    Truncated,
    /// Unknown frame type.
    #[error("unknown lane frame type {0}")]
    UnknownType(u8),
    /// A body of the wrong length for its type.
    #[error("lane frame type {0} with a body of the wrong length")]
    BadLength(u8),
    /// A lane's first frame was not NEW or JOIN, or one came later.
    #[error("lane opening out of place")]
    Opening,
    /// A frame only the other side may send.
    #[error("lane frame type {0} from the wrong side")]
    WrongSide(u8),
    /// Data beyond the window, or acknowledgement of bytes never sent.
    #[error("lane data or acknowledgement out of range")]
    OutOfRange,
    /// A frame for a lane the braid does not have.
    #[error("unknown lane")]
    UnknownLane,
    /// Out-of-order pieces so small and many that the reorder buffer
    /// would cost more than [`AHEAD_LIMIT`].
    #[error("out-of-order pieces too fragmented")]
    Fragmented,
}

impl<'a> LaneFrame<'a> {
    /// Decodes the frame at the front of `buf`; returns it and its length.
    pub fn decode(buf: &'a [u8]) -> Result<(LaneFrame<'a>, usize), LaneError> {
        let h = buf.get(..LANE_HEADER).ok_or(LaneError::Truncated)?;
        let kind = h[0];
        let len = u16::from_be_bytes([h[1], h[2]]) as usize;
        let body = buf
            .get(LANE_HEADER..LANE_HEADER + len)
            .ok_or(LaneError::Truncated)?;
        // Each body is read in order; after `exact` every read succeeds,
        // and a short one would still be an error rather than a panic.
        let mut b = Reader::new(body);
        let bad = LaneError::BadLength(kind);
        let exact = |n: usize| {
            if len == n {
                Ok(())
            } else {
                Err(LaneError::BadLength(kind))
            }
        };
        let frame = match kind {
            NEW => {
                exact(40)?;
                LaneFrame::New {
                    secret: b.array().ok_or(bad)?,
                    lane: b.u32().ok_or(bad)?,
                    budget: b.u32().ok_or(bad)?,
                }
            }
            JOIN => {
                exact(32)?;
                LaneFrame::Join {
                    token: b.array().ok_or(bad)?,
                    lane: b.u32().ok_or(bad)?,
                    budget: b.u32().ok_or(bad)?,
                    received: b.u64().ok_or(bad)?,
                }
            }
            SEG => {
                if len <= 8 {
                    return Err(LaneError::BadLength(kind));
                }
                LaneFrame::Seg {
                    offset: b.u64().ok_or(bad)?,
                    data: b.rest(),
                }
            }
            ACK => {
                exact(16)?;
                LaneFrame::Ack {
                    received: b.u64().ok_or(bad)?,
                    consumed: b.u64().ok_or(bad)?,
                }
            }
            FULL => {
                exact(0)?;
                LaneFrame::Full
            }
            REWIND => {
                exact(12)?;
                LaneFrame::Rewind {
                    lane: b.u32().ok_or(bad)?,
                    received: b.u64().ok_or(bad)?,
                }
            }
            PING | PONG => {
                exact(8)?;
                let v = b.u64().ok_or(bad)?;
                if kind == PING {
                    LaneFrame::Ping(v)
                } else {
                    LaneFrame::Pong(v)
                }
            }
            PAD => LaneFrame::Pad,
            other => return Err(LaneError::UnknownType(other)),
        };
        Ok((frame, LANE_HEADER + len))
    }

    /// Appends the frame. A SEG longer than a record can carry is the
    /// caller's bug and is cut.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let head = |out: &mut Vec<u8>, kind: u8, len: usize| {
            out.push(kind);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        };
        match self {
            LaneFrame::New {
                secret,
                lane,
                budget,
            } => {
                head(out, NEW, 40);
                out.extend_from_slice(secret);
                out.extend_from_slice(&lane.to_be_bytes());
                out.extend_from_slice(&budget.to_be_bytes());
            }
            LaneFrame::Join {
                token,
                lane,
                budget,
                received,
            } => {
                head(out, JOIN, 32);
                out.extend_from_slice(token);
                out.extend_from_slice(&lane.to_be_bytes());
                out.extend_from_slice(&budget.to_be_bytes());
                out.extend_from_slice(&received.to_be_bytes());
            }
            LaneFrame::Seg { offset, data } => {
                let data = &data[..data.len().min(MAX_PLAINTEXT - SEG_HEADER)];
                head(out, SEG, 8 + data.len());
                out.extend_from_slice(&offset.to_be_bytes());
                out.extend_from_slice(data);
            }
            LaneFrame::Ack { received, consumed } => {
                head(out, ACK, 16);
                out.extend_from_slice(&received.to_be_bytes());
                out.extend_from_slice(&consumed.to_be_bytes());
            }
            LaneFrame::Full => head(out, FULL, 0),
            LaneFrame::Rewind { lane, received } => {
                head(out, REWIND, 12);
                out.extend_from_slice(&lane.to_be_bytes());
                out.extend_from_slice(&received.to_be_bytes());
            }
            LaneFrame::Ping(v) => {
                head(out, PING, 8);
                out.extend_from_slice(&v.to_be_bytes());
            }
            LaneFrame::Pong(v) => {
                head(out, PONG, 8);
                out.extend_from_slice(&v.to_be_bytes());
            }
            LaneFrame::Pad => head(out, PAD, 0),
        }
    }
}

/// Iterates over the lane frames of a record plaintext.
pub fn lane_frames(
    plaintext: &[u8],
) -> impl Iterator<Item = Result<LaneFrame<'_>, LaneError>> + '_ {
    crate::tunnel::frame::decode_all(plaintext, LaneFrame::decode)
}
