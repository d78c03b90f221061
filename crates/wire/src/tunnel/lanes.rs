//! Lanes: one session's byte stream carried over many connections.
//!
//! A censor that cuts or freezes single connections (the 2025 "16 KiB
//! freeze", an endpoint blocked mid-download) would kill every stream of a
//! session bound to one connection. So a session runs over a *braid*: a
//! reliable, ordered byte stream whose pieces travel on any of several
//! *lanes* — transport connections, each with its own handshake and record
//! keys — and are acknowledged, reordered and, when a lane dies, resent on
//! another. The inner session (mux, streams) runs over the braid unchanged.
//!
//! The server may be told a *budget* per lane: the most record bytes it may
//! send down that lane. It fills a lane up to its budget, marks the last
//! record FULL, and moves on to the next lane the client joined, so that no
//! connection ever carries more than the censor lets through.
//!
//! Lane frames, inside each lane's record plaintexts: `type u8 | len u16 BE
//! | body`. The first frame of a lane is NEW (first lane of a session) or
//! JOIN (a later one). `docs/transport.md` has the table and the rules.
//!
//! [`Braid`] is the sans-io state of one end: send buffer with go-back-N
//! retransmission, reorder buffer, acknowledgements, lanes and budgets.

use super::handshake::Established;
use super::mux::Role;
use super::record::{Opener, Sealer, HEADER_LEN, TAG_LEN};
use crate::faketls::MAX_PLAINTEXT;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use zeroize::Zeroizing;

/// First frame of a session's first lane: the session secret, the lane's
/// id and budget.
pub const NEW: u8 = 1;
/// First frame of a later lane: the session token, the lane's id and
/// budget, and how much the client has received.
pub const JOIN: u8 = 2;
/// A piece of the braid byte stream: offset u64, bytes.
pub const SEG: u8 = 3;
/// Received (contiguously) and consumed offsets, u64 each.
pub const ACK: u8 = 4;
/// Server → client: this lane reached its budget; nothing more comes on it.
pub const FULL: u8 = 5;
/// Client → server: lane u32 is dead; resend from received u64.
pub const REWIND: u8 = 6;
/// Lane liveness probe (u64), answered by PONG on the same lane.
pub const PING: u8 = 7;
/// Answer to a PING.
pub const PONG: u8 = 8;
/// Padding, ignored.
pub const PAD: u8 = 9;

/// Lane frame header length.
pub const LANE_HEADER: usize = 3;
/// Most bytes in flight per direction: sent and not yet consumed by the
/// receiver. Bounds the send buffer and the receiver's buffers.
pub const WINDOW: usize = 1 << 20;
/// Most lanes one braid keeps at once.
pub const MAX_LANES: usize = 16;
/// Record bytes around a plaintext: header and tag.
pub const RECORD_OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// An acknowledgement goes out at once after this many new bytes.
pub const ACK_EVERY: u64 = 32 * 1024;
/// Largest record plaintext of the session a braid carries: one of its
/// records then fits a lane record whole, with room for an ACK and a PONG.
pub const INNER_PLAINTEXT: usize = MAX_PLAINTEXT - 64;
/// The smallest budget a lane may be given (smaller ones are raised).
pub const MIN_BUDGET: u32 = 2048;
/// What one out-of-order piece costs besides its bytes' allocation: its
/// map entry, its vector and the allocator's rounding (measured ~96 B).
pub const PIECE_COST: usize = 96;
/// Most memory the reorder buffer may hold, pieces charged with
/// [`PIECE_COST`] plus their allocation: a peer that cuts the window into
/// tiny pieces is refused ([`LaneError::Fragmented`]) instead of costing
/// ~100 bytes per byte. Whole pieces (even merged, whose vectors may have
/// grown to twice their length) never reach it.
pub const AHEAD_LIMIT: usize = 3 * WINDOW;

const SEG_HEADER: usize = LANE_HEADER + 8;
const ACK_LEN: usize = LANE_HEADER + 16;
const PONG_LEN: usize = LANE_HEADER + 8;
const MAX_PONGS: usize = 4;

/// A session's shared secret, sent in NEW; everything else derives from it.
#[derive(Clone)]
pub struct SessionSecret(Zeroizing<[u8; 32]>);

impl fmt::Debug for SessionSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionSecret(..)")
    }
}

/// Identifies a braid in JOIN frames.
pub type Token = [u8; 16];

impl SessionSecret {
    /// Wraps 32 random bytes.
    pub fn new(bytes: [u8; 32]) -> SessionSecret {
        SessionSecret(Zeroizing::new(bytes))
    }

    fn derive(&self, label: &[u8]) -> Zeroizing<[u8; 32]> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0[..])
            .expect("HMAC takes any key length");
        mac.update(b"samizdat lanes ");
        mac.update(label);
        Zeroizing::new(mac.finalize().into_bytes().into())
    }

    /// The token later lanes name the braid by.
    pub fn token(&self) -> Token {
        let k = self.derive(b"token");
        k[..16].try_into().expect("16 bytes")
    }

    /// Record keys of the inner session carried by the braid.
    pub fn inner_keys(&self, role: Role) -> Established {
        let c2s = self.derive(b"c2s");
        let s2c = self.derive(b"s2c");
        let (send, recv) = match role {
            Role::Client => (c2s, s2c),
            Role::Server => (s2c, c2s),
        };
        Established {
            sealer: Sealer::new(&send, 0),
            opener: Opener::new(&recv, None),
        }
    }

    fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

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

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes(b[i..i + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], i: usize) -> u64 {
    u64::from_be_bytes(b[i..i + 8].try_into().expect("8 bytes"))
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
                    secret: body[..32].try_into().expect("32 bytes"),
                    lane: u32_at(body, 32),
                    budget: u32_at(body, 36),
                }
            }
            JOIN => {
                exact(32)?;
                LaneFrame::Join {
                    token: body[..16].try_into().expect("16 bytes"),
                    lane: u32_at(body, 16),
                    budget: u32_at(body, 20),
                    received: u64_at(body, 24),
                }
            }
            SEG => {
                if len <= 8 {
                    return Err(LaneError::BadLength(kind));
                }
                LaneFrame::Seg {
                    offset: u64_at(body, 0),
                    data: &body[8..],
                }
            }
            ACK => {
                exact(16)?;
                LaneFrame::Ack {
                    received: u64_at(body, 0),
                    consumed: u64_at(body, 8),
                }
            }
            FULL => {
                exact(0)?;
                LaneFrame::Full
            }
            REWIND => {
                exact(12)?;
                LaneFrame::Rewind {
                    lane: u32_at(body, 0),
                    received: u64_at(body, 4),
                }
            }
            PING | PONG => {
                exact(8)?;
                let v = u64_at(body, 0);
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

/// What an out-of-order piece costs: its allocation and [`PIECE_COST`].
fn charge(piece: &Vec<u8>) -> usize {
    piece.capacity() + PIECE_COST
}

/// Iterates over the lane frames of a record plaintext.
pub fn lane_frames(
    plaintext: &[u8],
) -> impl Iterator<Item = Result<LaneFrame<'_>, LaneError>> + '_ {
    super::frame::decode_all(plaintext, LaneFrame::decode)
}

/// How a lane begins (its first frame).
#[derive(Debug, Clone)]
pub enum Opening {
    /// A new braid.
    New {
        /// Its secret.
        secret: SessionSecret,
        /// The lane's id.
        lane: u32,
        /// Its budget (`None`: unlimited).
        budget: Option<u32>,
    },
    /// A lane for an existing braid.
    Join {
        /// Which braid.
        token: Token,
        /// The lane's id.
        lane: u32,
        /// Its budget.
        budget: Option<u32>,
        /// What the client has received.
        received: u64,
    },
}

fn budget_of(b: u32) -> Option<u32> {
    (b != 0).then_some(b.max(MIN_BUDGET))
}

/// Splits a lane's first record plaintext into its opening and the frames
/// after it.
pub fn opening(plaintext: &[u8]) -> Result<(Opening, &[u8]), LaneError> {
    let (first, used) = LaneFrame::decode(plaintext)?;
    let opening = match first {
        LaneFrame::New {
            secret,
            lane,
            budget,
        } => Opening::New {
            secret: SessionSecret::new(secret),
            lane,
            budget: budget_of(budget),
        },
        LaneFrame::Join {
            token,
            lane,
            budget,
            received,
        } => Opening::Join {
            token,
            lane,
            budget: budget_of(budget),
            received,
        },
        _ => return Err(LaneError::Opening),
    };
    Ok((opening, &plaintext[used..]))
}

/// The opening frame a client sends first on a lane.
pub fn encode_opening(opening: &Opening, out: &mut Vec<u8>) {
    match opening {
        Opening::New {
            secret,
            lane,
            budget,
        } => LaneFrame::New {
            secret: *secret.bytes(),
            lane: *lane,
            budget: budget.unwrap_or(0),
        }
        .encode(out),
        Opening::Join {
            token,
            lane,
            budget,
            received,
        } => LaneFrame::Join {
            token: *token,
            lane: *lane,
            budget: budget.unwrap_or(0),
            received: *received,
        }
        .encode(out),
    }
}

/// One lane as the braid sees it.
#[derive(Debug, Clone)]
struct Lane {
    id: u32,
    /// Record bytes we may still send on it (`None`: unlimited).
    budget_left: Option<u64>,
    /// We send no more stream data on it (FULL sent or received).
    full: bool,
    /// FULL to be sent (server).
    full_pending: bool,
    /// Highest stream offset sent on it.
    sent_hi: u64,
    /// PINGs to answer on it.
    pongs: Vec<u64>,
    /// PING to send on it.
    ping: Option<u64>,
    /// Record bytes received on it.
    received_bytes: u64,
}

/// What a received record changed, for the driver.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Received {
    /// New in-order bytes for the application.
    pub readable: bool,
    /// The peer acknowledged data: room to write, maybe nothing in flight.
    pub acked: bool,
    /// The writers have something new to send.
    pub wake_writers: bool,
    /// Client: the server filled this lane; close it once acked.
    pub full: bool,
    /// Server: the client declared this lane dead (close its connection).
    pub dead_lane: Option<u32>,
    /// A PONG arrived with this value.
    pub pong: Option<u64>,
}

/// The sans-io state of one end of a braid.
pub struct Braid {
    role: Role,
    // --- sending ---
    /// Bytes from offset `peer_received` on: sent and unacknowledged, then
    /// not yet sent.
    out: VecDeque<u8>,
    /// The peer has every byte before this.
    peer_received: u64,
    /// The peer's application read every byte before this (flow control).
    peer_consumed: u64,
    /// Next offset to send.
    next: u64,
    /// End offsets of the records in `out` (see [`Braid::write`]).
    ends: VecDeque<u64>,
    /// The record being written: header bytes seen, and its end offset
    /// once the header is complete.
    header: ([u8; HEADER_LEN], usize),
    record_end: Option<u64>,
    // --- receiving ---
    /// In-order bytes not yet read by the application.
    ready: VecDeque<u8>,
    /// Offset of `ready`'s first byte.
    consumed: u64,
    /// Out-of-order pieces by offset (all ≥ `received`), never
    /// overlapping; adjacent ones are merged where that is cheap.
    ahead: BTreeMap<u64, Vec<u8>>,
    /// What `ahead` costs: each piece's allocation plus [`PIECE_COST`].
    ahead_charge: usize,
    /// What we last told the peer.
    ack_sent: (u64, u64),
    lanes: Vec<Lane>,
    /// Client: lanes to declare dead to the server (REWIND).
    dead: Vec<u32>,
    closed: bool,
}

impl fmt::Debug for Braid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Braid")
            .field("role", &self.role)
            .field("unacked", &self.out.len())
            .field("next", &self.next)
            .field("received", &self.received())
            .field("lanes", &self.lanes.len())
            .finish()
    }
}

impl Braid {
    /// An empty braid.
    pub fn new(role: Role) -> Braid {
        Braid {
            role,
            out: VecDeque::new(),
            peer_received: 0,
            peer_consumed: 0,
            next: 0,
            ends: VecDeque::new(),
            header: ([0; HEADER_LEN], 0),
            record_end: None,
            ready: VecDeque::new(),
            consumed: 0,
            ahead: BTreeMap::new(),
            ahead_charge: 0,
            ack_sent: (0, 0),
            lanes: Vec::new(),
            dead: Vec::new(),
            closed: false,
        }
    }

    /// Every byte before this offset arrived.
    pub fn received(&self) -> u64 {
        self.consumed + self.ready.len() as u64
    }

    /// Lanes in use.
    pub fn lanes(&self) -> usize {
        self.lanes.len()
    }

    /// Ids of the lanes in use, oldest first.
    pub fn lane_ids(&self) -> Vec<u32> {
        self.lanes.iter().map(|l| l.id).collect()
    }

    /// Record bytes received on `lane`.
    pub fn lane_received_bytes(&self, lane: u32) -> u64 {
        self.lane(lane).map(|l| l.received_bytes).unwrap_or(0)
    }

    /// Whether `lane` is full (no more stream data will go either way).
    pub fn lane_full(&self, lane: u32) -> bool {
        self.lane(lane).is_some_and(|l| l.full)
    }

    /// Lanes that may still carry stream data.
    pub fn open_lanes(&self) -> usize {
        self.lanes.iter().filter(|l| !l.full).count()
    }

    fn lane(&self, id: u32) -> Option<&Lane> {
        self.lanes.iter().find(|l| l.id == id)
    }

    fn lane_mut(&mut self, id: u32) -> Option<&mut Lane> {
        self.lanes.iter_mut().find(|l| l.id == id)
    }

    /// Adds a lane (with its send budget in record bytes). Refused when the
    /// braid has [`MAX_LANES`] or the id is taken.
    pub fn add_lane(&mut self, id: u32, budget: Option<u32>) -> bool {
        if self.lanes.len() >= MAX_LANES || self.lane(id).is_some() || self.closed {
            return false;
        }
        self.lanes.push(Lane {
            id,
            budget_left: budget.map(|b| u64::from(b.max(MIN_BUDGET))),
            full: false,
            full_pending: false,
            sent_hi: self.peer_received,
            pongs: Vec::new(),
            ping: None,
            received_bytes: 0,
        });
        true
    }

    /// A lane ended (its connection closed or failed, or the peer declared
    /// it dead). Data sent on it and not acknowledged is sent again.
    pub fn remove_lane(&mut self, id: u32) {
        let Some(i) = self.lanes.iter().position(|l| l.id == id) else {
            return;
        };
        let lane = self.lanes.remove(i);
        // A lane the server filled and the client then closed is the normal
        // course: what went down it arrived before its FULL did. Lost data
        // on it is the client's to report (REWIND).
        let filled = self.role == Role::Server && lane.full;
        if lane.sent_hi > self.peer_received && !filled {
            self.rewind();
        }
    }

    /// Client: gives `lane` up and tells the server (a REWIND on the next
    /// lane that carries data), which then resends what the client lacks.
    pub fn declare_dead(&mut self, lane: u32) {
        self.remove_lane(lane);
        if self.role == Role::Client && self.dead.len() < MAX_LANES {
            self.dead.push(lane);
        }
    }

    /// Sends everything unacknowledged again (go-back-N).
    pub fn rewind(&mut self) {
        self.next = self.peer_received;
        for l in &mut self.lanes {
            l.sent_hi = l.sent_hi.min(self.peer_received);
        }
    }

    /// Ends the braid: nothing more is sent or accepted.
    pub fn close(&mut self) {
        self.closed = true;
    }

    /// Whether [`Braid::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Bytes the application may still write.
    pub fn write_room(&self) -> usize {
        WINDOW.saturating_sub(self.out.len())
    }

    /// Takes as much of `data` as the send buffer holds.
    ///
    /// The stream is the inner session's TLS-style records (`type u16
    /// len`-headed); their ends are noted so that stream pieces are cut at
    /// record ends where they can be: a record split across two lane
    /// records is usable only once both arrived.
    pub fn write(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.write_room());
        let start = self.peer_received + self.out.len() as u64;
        self.out.extend(&data[..n]);
        let mut i = 0;
        while i < n {
            let at = start + i as u64;
            match self.record_end {
                Some(end) => {
                    let take = ((end - at) as usize).min(n - i);
                    i += take;
                    if at + take as u64 == end {
                        if self.ends.len() < WINDOW / RECORD_OVERHEAD {
                            self.ends.push_back(end);
                        }
                        self.record_end = None;
                    }
                }
                None => {
                    let (hdr, have) = &mut self.header;
                    hdr[*have] = data[i];
                    *have += 1;
                    i += 1;
                    if *have == HEADER_LEN {
                        let len = u16::from_be_bytes([hdr[3], hdr[4]]) as u64;
                        *have = 0;
                        let end = start + i as u64 + len;
                        if len == 0 {
                            self.ends.push_back(end);
                        } else {
                            self.record_end = Some(end);
                        }
                    }
                }
            }
        }
        n
    }

    /// How many of `max` bytes from `next` to send: up to the last record
    /// end within them; all of them when no record ends there and a whole
    /// record would not fit anyway (the lane record is not `roomy`), or
    /// nothing is in flight to wait on.
    fn piece(&self, max: usize, roomy: bool) -> usize {
        let limit = self.next + max as u64;
        let mut best = None;
        for &end in &self.ends {
            if end <= self.next {
                continue;
            }
            if end > limit {
                break;
            }
            best = Some(end);
        }
        match best {
            Some(end) => (end - self.next) as usize,
            // The record in hand is longer than this lane record can carry:
            // split it.
            None if self.ends.iter().any(|&e| e > limit) => max,
            // Its end is not written yet: wait for it if something in
            // flight will bring an acknowledgement (and so more room),
            // unless even a whole record would not fit.
            None if self.in_flight() > 0 && roomy => 0,
            None => max,
        }
    }

    /// Sent or queued bytes the peer has not acknowledged.
    pub fn unacked(&self) -> usize {
        self.out.len()
    }

    /// Sent bytes the peer has not acknowledged.
    pub fn in_flight(&self) -> u64 {
        self.next - self.peer_received
    }

    /// Moves in-order bytes to `buf`.
    pub fn read(&mut self, buf: &mut [u8]) -> usize {
        let n = buf.len().min(self.ready.len());
        let (a, b) = self.ready.as_slices();
        let from_a = a.len().min(n);
        buf[..from_a].copy_from_slice(&a[..from_a]);
        buf[from_a..n].copy_from_slice(&b[..n - from_a]);
        self.ready.drain(..n);
        self.consumed += n as u64;
        n
    }

    /// In-order bytes waiting for the application.
    pub fn readable(&self) -> usize {
        self.ready.len()
    }

    /// Whether an acknowledgement is owed: `Some(true)` at once (many new
    /// bytes), `Some(false)` soon (the driver's short timer), `None`.
    pub fn ack_owed(&self) -> Option<bool> {
        let (r, c) = (self.received(), self.consumed);
        if (r, c) == self.ack_sent {
            return None;
        }
        Some(r - self.ack_sent.0 >= ACK_EVERY || c - self.ack_sent.1 >= ACK_EVERY)
    }

    /// Queues a PING on `lane`.
    pub fn ping(&mut self, lane: u32, value: u64) {
        if let Some(l) = self.lane_mut(lane) {
            l.ping = Some(value);
        }
    }

    /// The lane stream data goes on: the oldest one not full.
    fn active(&self) -> Option<u32> {
        self.lanes.iter().find(|l| !l.full).map(|l| l.id)
    }

    /// Handles one record plaintext received on `lane`.
    pub fn receive(&mut self, lane: u32, plaintext: &[u8]) -> Result<Received, LaneError> {
        let mut got = Received::default();
        let role = self.role;
        {
            let l = self.lane_mut(lane).ok_or(LaneError::UnknownLane)?;
            l.received_bytes += (plaintext.len() + RECORD_OVERHEAD) as u64;
        }
        for frame in lane_frames(plaintext) {
            match frame? {
                LaneFrame::New { .. } | LaneFrame::Join { .. } => return Err(LaneError::Opening),
                LaneFrame::Seg { offset, data } => {
                    got.readable |= self.segment(offset, data)?;
                    got.wake_writers |= self.ack_owed() == Some(true);
                }
                LaneFrame::Ack { received, consumed } => {
                    got.acked |= self.acknowledged(received, Some(consumed))?;
                    got.wake_writers |= got.acked;
                }
                LaneFrame::Full => {
                    if role != Role::Client {
                        return Err(LaneError::WrongSide(FULL));
                    }
                    if let Some(l) = self.lane_mut(lane) {
                        l.full = true;
                    }
                    got.full = true;
                    got.wake_writers = true;
                }
                LaneFrame::Rewind {
                    lane: dead,
                    received,
                } => {
                    if role != Role::Server {
                        return Err(LaneError::WrongSide(REWIND));
                    }
                    got.acked |= self.acknowledged(received, None)?;
                    if self.lane(dead).is_some() && dead != lane {
                        got.dead_lane = Some(dead);
                        self.lanes.retain(|l| l.id != dead);
                    }
                    self.rewind();
                    got.wake_writers = true;
                }
                LaneFrame::Ping(v) => {
                    if let Some(l) = self.lane_mut(lane) {
                        if l.pongs.len() < MAX_PONGS {
                            l.pongs.push(v);
                        }
                    }
                    got.wake_writers = true;
                }
                LaneFrame::Pong(v) => got.pong = Some(v),
                LaneFrame::Pad => {}
            }
        }
        Ok(got)
    }

    /// Takes a JOIN's or REWIND's report of what the client received.
    pub fn peer_received(&mut self, received: u64) -> Result<bool, LaneError> {
        self.acknowledged(received, None)
    }

    /// Takes what the peer reports it received and (from an ACK) consumed.
    /// Reports travel on different lanes, so an older one may come after
    /// a newer one: only what moves forward counts.
    fn acknowledged(&mut self, received: u64, consumed: Option<u64>) -> Result<bool, LaneError> {
        let written = self.peer_received + self.out.len() as u64;
        if received > written || consumed.is_some_and(|c| c > received) {
            return Err(LaneError::OutOfRange);
        }
        let consumed = consumed.unwrap_or(0);
        let mut moved = false;
        if received > self.peer_received {
            let n = (received - self.peer_received) as usize;
            self.out.drain(..n);
            self.peer_received = received;
            while self.ends.front().is_some_and(|&e| e <= received) {
                self.ends.pop_front();
            }
            self.next = self.next.max(received);
            moved = true;
        }
        if consumed > self.peer_consumed {
            self.peer_consumed = consumed;
            moved = true;
        }
        Ok(moved)
    }

    /// Stores a piece; `true` if in-order bytes became readable.
    fn segment(&mut self, offset: u64, data: &[u8]) -> Result<bool, LaneError> {
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or(LaneError::OutOfRange)?;
        if end > self.consumed + WINDOW as u64 {
            return Err(LaneError::OutOfRange);
        }
        let received = self.received();
        if end <= received {
            return Ok(false);
        }
        if offset > received {
            // Out of order: keep the parts no stored piece covers, so the
            // pieces never overlap and hold at most the window (resent
            // pieces may be cut differently from the first copies).
            let mut at = offset;
            let mut gaps = Vec::new();
            let before = self.ahead.range(..=offset).next_back();
            if let Some((&o, p)) = before {
                at = at.max(o + p.len() as u64);
            }
            for (&o, p) in self.ahead.range(offset + 1..end) {
                if o > at {
                    gaps.push((at, o));
                }
                at = at.max(o + p.len() as u64);
            }
            if at < end {
                gaps.push((at, end));
            }
            for (from, to) in gaps {
                self.store(
                    from,
                    &data[(from - offset) as usize..(to - offset) as usize],
                )?;
            }
            return Ok(false);
        }
        let skip = (received - offset) as usize;
        self.ready.extend(&data[skip..]);
        // Pull in whatever now follows.
        while let Some((&off, _)) = self.ahead.first_key_value() {
            let received = self.received();
            if off > received {
                break;
            }
            let piece = self.ahead.remove(&off).expect("first key");
            self.ahead_charge -= charge(&piece);
            let end = off + piece.len() as u64;
            if end > received {
                self.ready.extend(&piece[(received - off) as usize..]);
            }
        }
        Ok(true)
    }

    /// Stores `piece` at `from`, in a gap between stored pieces: appended
    /// to the piece that ends at `from`, if any, and followed by the piece
    /// that starts after it if that one is no longer (so no byte is copied
    /// more than a few times, whatever the order pieces come in). Fails
    /// when the reorder buffer would cost over [`AHEAD_LIMIT`].
    fn store(&mut self, from: u64, piece: &[u8]) -> Result<(), LaneError> {
        let to = from + piece.len() as u64;
        let mut start = from;
        let mut merged = match self.ahead.range(..from).next_back() {
            Some((&o, p)) if o + p.len() as u64 == from => {
                start = o;
                let p = self.ahead.remove(&o).expect("just seen");
                self.ahead_charge -= charge(&p);
                p
            }
            _ => Vec::new(),
        };
        merged.extend_from_slice(piece);
        if self.ahead.get(&to).is_some_and(|n| n.len() <= merged.len()) {
            let next = self.ahead.remove(&to).expect("just seen");
            self.ahead_charge -= charge(&next);
            merged.extend_from_slice(&next);
        }
        self.ahead_charge += charge(&merged);
        self.ahead.insert(start, merged);
        if self.ahead_charge > AHEAD_LIMIT {
            return Err(LaneError::Fragmented);
        }
        Ok(())
    }

    /// What the reorder buffer costs now (see [`AHEAD_LIMIT`]).
    pub fn ahead_charge(&self) -> usize {
        self.ahead_charge
    }

    /// Bytes this end holds: unacknowledged and unsent, received and not
    /// read, and the reorder buffer's charge.
    pub fn buffered(&self) -> usize {
        self.out.len() + self.ready.len() + self.ahead_charge
    }

    /// The next record plaintext to send on `lane`, if it has anything:
    /// answers to its PINGs, its FULL, an owed acknowledgement (`ack_now`:
    /// also one only "soon" owed) and, on the active lane, stream data
    /// within the window and the lane's budget; padded with `random`.
    pub fn next_record(&mut self, lane: u32, ack_now: bool, random: u32) -> Option<Vec<u8>> {
        if self.closed || self.lane(lane).is_none() {
            return None;
        }
        let active = self.active() == Some(lane);
        let carrier = active || self.active().is_none();
        let ack = match self.ack_owed() {
            Some(now) => (now || ack_now) && carrier,
            None => false,
        };
        let mut dead = if carrier {
            std::mem::take(&mut self.dead)
        } else {
            Vec::new()
        };
        let (received, consumed) = (self.received(), self.consumed);
        let window_end = self.peer_consumed + WINDOW as u64;
        let sendable = (self.peer_received + self.out.len() as u64)
            .min(window_end)
            .saturating_sub(self.next);
        let l = self.lane_mut(lane)?;
        // Room in the record, keeping what FULL needs on a budgeted lane.
        let mut room = MAX_PLAINTEXT;
        if let Some(left) = l.budget_left {
            let left = left as usize;
            room = left
                .saturating_sub(2 * RECORD_OVERHEAD + LANE_HEADER)
                .min(room);
            if !l.full && room < 256 {
                l.full_pending = true;
            }
        }
        let mut pt = Vec::new();
        for v in l.pongs.drain(..) {
            if pt.len() + PONG_LEN <= room {
                LaneFrame::Pong(v).encode(&mut pt);
            }
        }
        if let Some(v) = l.ping.take() {
            if pt.len() + PONG_LEN <= room {
                LaneFrame::Ping(v).encode(&mut pt);
            }
        }
        while let Some(&lane) = dead.first() {
            if pt.len() + LANE_HEADER + 12 > room {
                break;
            }
            LaneFrame::Rewind { lane, received }.encode(&mut pt);
            dead.remove(0);
        }
        let mut ack_written = false;
        if ack && pt.len() + ACK_LEN <= room {
            LaneFrame::Ack { received, consumed }.encode(&mut pt);
            ack_written = true;
        }
        let mut seg = None;
        if active && !l.full && !l.full_pending && sendable > 0 && pt.len() + SEG_HEADER < room {
            let cap = room - pt.len() - SEG_HEADER;
            seg = Some((cap.min(sendable as usize), cap));
        }
        let seg = seg
            .map(|(n, cap)| self.piece(n, cap >= INNER_PLAINTEXT + RECORD_OVERHEAD))
            .filter(|&n| n > 0);
        if let Some(n) = seg {
            let start = (self.next - self.peer_received) as usize;
            pt.push(SEG);
            pt.extend_from_slice(&((8 + n) as u16).to_be_bytes());
            pt.extend_from_slice(&self.next.to_be_bytes());
            let (a, b) = self.out.as_slices();
            if start < a.len() {
                let from_a = n.min(a.len() - start);
                pt.extend_from_slice(&a[start..start + from_a]);
                pt.extend_from_slice(&b[..n - from_a]);
            } else {
                let start = start - a.len();
                pt.extend_from_slice(&b[start..start + n]);
            }
            self.next += n as u64;
        }
        let next = self.next;
        dead.append(&mut self.dead);
        self.dead = dead;
        let l = self.lane_mut(lane)?;
        if seg.is_some() {
            l.sent_hi = l.sent_hi.max(next);
        }
        if l.full_pending && !l.full {
            LaneFrame::Full.encode(&mut pt);
            l.full = true;
            l.full_pending = false;
        }
        if pt.is_empty() {
            return None;
        }
        // Pad within the bucket, never past the budget.
        let cap = match l.budget_left {
            // A lane not yet full keeps room for its FULL record.
            Some(left) if l.full => (left as usize).saturating_sub(RECORD_OVERHEAD),
            Some(left) => (left as usize).saturating_sub(2 * RECORD_OVERHEAD + LANE_HEADER),
            None => MAX_PLAINTEXT,
        };
        let target = super::frame::padded_len(pt.len(), random).min(cap);
        if target >= pt.len() + LANE_HEADER {
            let n = target - pt.len() - LANE_HEADER;
            pt.extend_from_slice(&[PAD, (n >> 8) as u8, n as u8]);
            pt.resize(pt.len() + n, 0);
        }
        if let Some(left) = &mut l.budget_left {
            *left = left.saturating_sub((pt.len() + RECORD_OVERHEAD) as u64);
        }
        if ack_written {
            self.ack_sent = (received, consumed);
        }
        Some(pt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` records' worth of stream, as the inner session writes it.
    fn records(n: usize, body: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..n {
            out.extend_from_slice(&[0x17, 3, 3]);
            out.extend_from_slice(&(body as u16).to_be_bytes());
            out.extend((0..body).map(|j| (i * 31 + j) as u8));
        }
        out
    }

    fn pump(from: &mut Braid, to: &mut Braid, lane: u32, drop_all: bool) -> usize {
        let mut moved = 0;
        while let Some(pt) = from.next_record(lane, true, 7) {
            moved += pt.len() + RECORD_OVERHEAD;
            if !drop_all {
                to.receive(lane, &pt).unwrap();
            }
        }
        moved
    }

    #[test]
    fn frames_round_trip() {
        let frames = [
            LaneFrame::New {
                secret: [7; 32],
                lane: 1,
                budget: 9000,
            },
            LaneFrame::Join {
                token: [3; 16],
                lane: 2,
                budget: 0,
                received: 77,
            },
            LaneFrame::Seg {
                offset: 5,
                data: b"hello",
            },
            LaneFrame::Ack {
                received: 10,
                consumed: 4,
            },
            LaneFrame::Full,
            LaneFrame::Rewind {
                lane: 3,
                received: 99,
            },
            LaneFrame::Ping(1),
            LaneFrame::Pong(2),
            LaneFrame::Pad,
        ];
        let mut buf = Vec::new();
        for f in &frames {
            f.encode(&mut buf);
        }
        let back: Vec<_> = lane_frames(&buf).map(Result::unwrap).collect();
        assert_eq!(back, frames);
    }

    #[test]
    fn data_crosses_and_is_acknowledged() {
        let mut c = Braid::new(Role::Client);
        let mut s = Braid::new(Role::Server);
        assert!(c.add_lane(0, None) && s.add_lane(0, None));
        let data = records(7, 16_000);
        assert_eq!(c.write(&data), data.len());
        pump(&mut c, &mut s, 0, false);
        let mut got = vec![0; data.len()];
        assert_eq!(s.read(&mut got), data.len());
        assert_eq!(got, data);
        pump(&mut s, &mut c, 0, false);
        assert_eq!(c.unacked(), 0);
    }

    #[test]
    fn a_budgeted_lane_fills_and_the_next_one_carries_on() {
        let mut c = Braid::new(Role::Client);
        let mut s = Braid::new(Role::Server);
        for id in 0..3 {
            c.add_lane(id, None);
            s.add_lane(id, Some(8000));
        }
        let data = records(4, 4_995);
        assert_eq!(data.len(), 20_000);
        s.write(&data);
        let mut total = 0;
        for id in 0..3 {
            let sent = pump(&mut s, &mut c, id, false);
            assert!(sent <= 8000, "lane {id} carried {sent}");
            // 20,000 bytes fill two lanes of 8,000 and part of the third.
            assert_eq!(c.lane_full(id), id < 2, "lane {id}");
            total += c.readable();
            let mut sink = vec![0; c.readable()];
            c.read(&mut sink);
        }
        assert_eq!(total, 20_000);
    }

    #[test]
    fn a_dead_lane_is_resent_on_the_next() {
        let mut c = Braid::new(Role::Client);
        let mut s = Braid::new(Role::Server);
        c.add_lane(0, None);
        s.add_lane(0, None);
        let data = records(5, 9_000);
        s.write(&data);
        // Lane 0 swallows everything.
        pump(&mut s, &mut c, 0, true);
        assert_eq!(c.readable(), 0);
        c.add_lane(1, None);
        s.add_lane(1, None);
        assert!(s.peer_received(c.received()).is_ok());
        s.remove_lane(0);
        c.remove_lane(0);
        pump(&mut s, &mut c, 1, false);
        let mut got = vec![0; data.len()];
        assert_eq!(c.read(&mut got), data.len());
        assert_eq!(got, data);
    }

    #[test]
    fn pieces_end_at_record_ends() {
        let mut c = Braid::new(Role::Client);
        let mut s = Braid::new(Role::Server);
        c.add_lane(0, None);
        s.add_lane(0, None);
        // Records of 16,320 bytes of plaintext fit one lane record whole;
        // each lane record must carry exactly one.
        let data = records(6, INNER_PLAINTEXT + TAG_LEN);
        s.write(&data);
        let mut sizes = Vec::new();
        while let Some(pt) = s.next_record(0, false, 0) {
            for f in lane_frames(&pt) {
                if let LaneFrame::Seg { data, .. } = f.unwrap() {
                    sizes.push(data.len());
                }
            }
            c.receive(0, &pt).unwrap();
            // Acknowledge, as the client would.
            let ack = c.next_record(0, true, 0).unwrap();
            s.receive(0, &ack).unwrap();
        }
        assert_eq!(sizes, vec![HEADER_LEN + INNER_PLAINTEXT + TAG_LEN; 6]);
        // A half-written record waits while anything is in flight.
        let mut s = Braid::new(Role::Server);
        s.add_lane(0, None);
        s.write(&data[..100]);
        assert!(
            s.next_record(0, false, 0).is_some(),
            "nothing in flight: sent"
        );
        s.write(&data[100..30_000]);
        let pt = s.next_record(0, false, 0).unwrap();
        let seg: usize = lane_frames(&pt)
            .filter_map(|f| match f.unwrap() {
                LaneFrame::Seg { data, .. } => Some(data.len()),
                _ => None,
            })
            .sum();
        assert_eq!(100 + seg, HEADER_LEN + INNER_PLAINTEXT + TAG_LEN);
        assert!(s.next_record(0, false, 0).is_none(), "the rest waits");
    }

    #[test]
    fn out_of_order_pieces_are_reassembled_and_bounded() {
        let mut c = Braid::new(Role::Client);
        c.add_lane(0, None);
        let mut rec = |off: u64, d: &[u8]| {
            let mut pt = Vec::new();
            LaneFrame::Seg {
                offset: off,
                data: d,
            }
            .encode(&mut pt);
            c.receive(0, &pt)
        };
        assert!(!rec(5, b"fghij").unwrap().readable);
        // Resent pieces cut elsewhere overlap the stored one: only the new
        // bytes are kept.
        assert!(!rec(3, b"defghijk").unwrap().readable);
        assert!(!rec(9, b"jk").unwrap().readable);
        assert!(rec(0, b"abcdefg").unwrap().readable);
        assert_eq!(rec(WINDOW as u64, b"x").unwrap_err(), LaneError::OutOfRange);
        let mut got = [0u8; 16];
        let n = c.read(&mut got);
        assert_eq!(&got[..n], b"abcdefghijk");
    }

    fn seg(off: u64, d: &[u8]) -> Vec<u8> {
        let mut pt = Vec::new();
        LaneFrame::Seg {
            offset: off,
            data: d,
        }
        .encode(&mut pt);
        pt
    }

    #[test]
    fn one_byte_pieces_cannot_make_the_reorder_buffer_cost_more_than_its_limit() {
        let mut s = Braid::new(Role::Server);
        s.add_lane(0, None);
        // Byte 0 never comes; one byte at every odd offset of the window.
        let mut refused = None;
        for i in 0..(WINDOW as u64 / 2) {
            match s.receive(0, &seg(2 * i + 1, b"x")) {
                Ok(_) => assert!(s.ahead_charge() <= AHEAD_LIMIT + PIECE_COST + 8),
                Err(e) => {
                    refused = Some((i, e));
                    break;
                }
            }
        }
        let (at, e) = refused.expect("a window of one-byte pieces is refused");
        assert_eq!(e, LaneError::Fragmented);
        // The limit, not the window, stopped it: about 3 MiB / 97 B.
        let most = (AHEAD_LIMIT / (PIECE_COST + 1)) as u64;
        assert!(at <= most + 1, "{at} pieces stored");
        assert!(at >= most / 2, "only {at} pieces stored");
    }

    #[test]
    fn pieces_filling_gaps_merge_into_one() {
        let mut s = Braid::new(Role::Server);
        s.add_lane(0, None);
        for i in 0..1000u64 {
            s.receive(0, &seg(2 * i + 1, b"o")).unwrap();
        }
        assert!(s.ahead_charge() >= 1000 * (PIECE_COST + 1));
        // One piece over all the gaps: everything merges into one piece.
        s.receive(0, &seg(2, &[b'e'; 1998])).unwrap();
        assert!(s.ahead.len() <= 2, "adjacent pieces are merged");
        assert!(s.ahead_charge() < 4 * 2000 + PIECE_COST);
        let mut want = vec![b'e'; 2000];
        for i in 0..1000 {
            want[2 * i + 1] = b'o';
        }
        want[0] = b'z';
        assert!(s.receive(0, &seg(0, b"z")).unwrap().readable);
        let mut got = vec![0u8; 4096];
        let n = s.read(&mut got);
        assert_eq!(&got[..n], &want[..], "every byte once, in order");
        assert_eq!(s.ahead_charge(), 0);
    }

    #[test]
    fn one_byte_pieces_in_reverse_order_are_refused_quickly() {
        let mut s = Braid::new(Role::Server);
        s.add_lane(0, None);
        let started = std::time::Instant::now();
        let mut refused = false;
        for i in (1..WINDOW as u64).rev() {
            if s.receive(0, &seg(i, b"r")).is_err() {
                refused = true;
                break;
            }
        }
        assert!(refused, "a window of one-byte pieces is refused");
        assert!(s.ahead_charge() <= AHEAD_LIMIT + PIECE_COST + 8);
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }

    #[test]
    fn a_window_of_whole_pieces_out_of_order_is_accepted() {
        let mut s = Braid::new(Role::Server);
        s.add_lane(0, None);
        let piece = 16 * 1024 - 64;
        let n = WINDOW / piece;
        // Every piece but the first, in reverse order, then the first.
        for i in (1..n).rev() {
            let body = vec![(i % 251) as u8; piece];
            s.receive(0, &seg((i * piece) as u64, &body)).unwrap();
        }
        assert!(s.ahead_charge() <= AHEAD_LIMIT);
        assert!(s.receive(0, &seg(0, &vec![0u8; piece])).unwrap().readable);
        assert_eq!(s.readable(), n * piece);
        assert_eq!(s.ahead_charge(), 0);
    }

    #[test]
    fn a_late_join_report_behind_newer_acks_is_no_error() {
        let mut s = Braid::new(Role::Server);
        s.add_lane(0, None);
        s.write(&records(2, 100));
        while s.next_record(0, false, 0).is_some() {}
        let mut pt = Vec::new();
        LaneFrame::Ack {
            received: 150,
            consumed: 150,
        }
        .encode(&mut pt);
        s.receive(0, &pt).unwrap();
        // A JOIN written before that ACK arrives after it.
        assert_eq!(s.peer_received(40), Ok(false));
        assert_eq!(s.in_flight(), 210 - 150);
    }

    #[test]
    fn acknowledging_unsent_bytes_is_refused() {
        let mut s = Braid::new(Role::Server);
        s.add_lane(0, None);
        let mut pt = Vec::new();
        LaneFrame::Ack {
            received: 1,
            consumed: 0,
        }
        .encode(&mut pt);
        assert_eq!(s.receive(0, &pt).unwrap_err(), LaneError::OutOfRange);
    }
}
