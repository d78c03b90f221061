//! [`Braid`]: one end's state: the send buffer with go-back-N
//! retransmission, the reorder buffer, acknowledgements, lanes and budgets.

use super::*;
use crate::tunnel::mux::Role;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;

mod receive;

/// What an out-of-order piece costs: its allocation and [`PIECE_COST`].
fn charge(piece: &Vec<u8>) -> usize {
    piece.capacity() + PIECE_COST
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
    header: ([u8; INNER_HEADER], usize),
    record_end: Option<u64>,
    // --- receiving ---
    /// In-order bytes not yet read by the application.
    ready: VecDeque<u8>,
    /// Offset of `ready`'s first byte.
    consumed: u64,
    /// Out-of-order pieces by offset (all ≥ `received`), never
    /// overlapping; adjacent ones are merged where that is cheap.
    pub(super) ahead: BTreeMap<u64, Vec<u8>>,
    /// What `ahead` costs: each piece's allocation plus [`PIECE_COST`].
    ahead_charge: usize,
    /// What we last told the peer.
    ack_sent: (u64, u64),
    /// A piece we already had came again: the peer is resending, so it
    /// missed our last acknowledgement (that went down a lane that died,
    /// say). Owe one even though nothing moved, or a peer whose window
    /// is shut would resend the same bytes forever.
    resent: bool,
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
            header: ([0; INNER_HEADER], 0),
            record_end: None,
            ready: VecDeque::new(),
            consumed: 0,
            ahead: BTreeMap::new(),
            ahead_charge: 0,
            ack_sent: (0, 0),
            resent: false,
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
    /// The stream is the inner session's records (`len u16`-headed, see
    /// [`InnerReader`]); their ends are noted so that stream pieces are cut
    /// at record ends where they can be: a record split across two lane
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
                        self.note_end(end);
                        self.record_end = None;
                    }
                }
                None => {
                    let (hdr, have) = &mut self.header;
                    hdr[*have] = data[i];
                    *have += 1;
                    i += 1;
                    if *have == INNER_HEADER {
                        let len = u16::from_be_bytes([hdr[0], hdr[1]]) as u64;
                        *have = 0;
                        let end = start + i as u64 + len;
                        if len == 0 {
                            self.note_end(end);
                        } else {
                            self.record_end = Some(end);
                        }
                    }
                }
            }
        }
        n
    }

    /// Notes a record end, up to a bound (beyond it pieces are merely cut
    /// less well): the window holds at most this many real records.
    fn note_end(&mut self, end: u64) {
        if self.ends.len() < WINDOW / RECORD_OVERHEAD {
            self.ends.push_back(end);
        }
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
        if (r, c) == self.ack_sent && !self.resent {
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
        let mut pt = Vec::new();
        self.next_record_into(lane, ack_now, random, &mut pt)
            .then_some(pt)
    }

    /// [`Braid::next_record`], appending the plaintext to `out` instead
    /// (after a record header the caller reserved, say, so it can seal in
    /// place with `Sealer::finish`); `false`, with `out` untouched, when
    /// the lane has nothing to send.
    pub fn next_record_into(
        &mut self,
        lane: u32,
        ack_now: bool,
        random: u32,
        pt: &mut Vec<u8>,
    ) -> bool {
        let base = pt.len();
        if self.closed || self.lane(lane).is_none() {
            return false;
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
        let Some(l) = self.lane_mut(lane) else {
            return false;
        };
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
        for v in l.pongs.drain(..) {
            if pt.len() - base + PONG_LEN <= room {
                LaneFrame::Pong(v).encode(pt);
            }
        }
        if let Some(v) = l.ping.take() {
            if pt.len() - base + PONG_LEN <= room {
                LaneFrame::Ping(v).encode(pt);
            }
        }
        while let Some(&lane) = dead.first() {
            if pt.len() - base + LANE_HEADER + 12 > room {
                break;
            }
            LaneFrame::Rewind { lane, received }.encode(pt);
            dead.remove(0);
        }
        let mut ack_written = false;
        if ack && pt.len() - base + ACK_LEN <= room {
            LaneFrame::Ack { received, consumed }.encode(pt);
            ack_written = true;
        }
        let mut seg = None;
        if active
            && !l.full
            && !l.full_pending
            && sendable > 0
            && pt.len() - base + SEG_HEADER < room
        {
            let cap = room - (pt.len() - base) - SEG_HEADER;
            seg = Some((cap.min(sendable as usize), cap));
        }
        let seg = seg
            .map(|(n, cap)| self.piece(n, cap >= INNER_HEADER + INNER_PLAINTEXT))
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
        let Some(l) = self.lane_mut(lane) else {
            return false;
        };
        if seg.is_some() {
            l.sent_hi = l.sent_hi.max(next);
        }
        if l.full_pending && !l.full {
            LaneFrame::Full.encode(pt);
            l.full = true;
            l.full_pending = false;
        }
        if pt.len() == base {
            return false;
        }
        // Pad within the bucket, never past the budget.
        let cap = match l.budget_left {
            // A lane not yet full keeps room for its FULL record.
            Some(left) if l.full => (left as usize).saturating_sub(RECORD_OVERHEAD),
            Some(left) => (left as usize).saturating_sub(2 * RECORD_OVERHEAD + LANE_HEADER),
            None => MAX_PLAINTEXT,
        };
        let target = crate::tunnel::frame::padded_len(pt.len() - base, random).min(cap);
        if target >= pt.len() - base + LANE_HEADER {
            let n = target - (pt.len() - base) - LANE_HEADER;
            pt.extend_from_slice(&[PAD, (n >> 8) as u8, n as u8]);
            pt.resize(pt.len() + n, 0);
        }
        if let Some(left) = &mut l.budget_left {
            *left = left.saturating_sub((pt.len() - base + RECORD_OVERHEAD) as u64);
        }
        if ack_written {
            self.ack_sent = (received, consumed);
            self.resent = false;
        }
        true
    }
}
