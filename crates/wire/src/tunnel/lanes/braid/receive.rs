//! The receiving half of a braid: lane records in, acknowledgements
//! taken, pieces stored and reordered into the byte stream.

use super::*;

impl Braid {
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
                    let resent = self.resent;
                    got.readable |= self.segment(offset, data)?;
                    // Many new bytes, or a resend asking for the ACK again
                    // (the writers then send it on their short timer).
                    got.wake_writers |= self.ack_owed() == Some(true) || (self.resent && !resent);
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
            self.resent = true;
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
}
