//! One lane connection of a braid: its reader and writer tasks, records
//! in and out under the lane's keys, and a new connection's opening.

use super::*;

impl BraidHandle {
    /// Runs lane `lane` (registered with [`BraidHandle::add_lane`]) over
    /// `io` until it ends: `first` is plaintext already received on it
    /// (after its opening frame), `leftover` bytes read past the handshake
    /// are in `opener` already. Returns why it ended.
    pub async fn run_lane<T>(
        &self,
        lane: u32,
        io: T,
        sealer: Sealer,
        mut opener: Opener,
        first: &[u8],
        opening: Option<&Opening>,
    ) -> &'static str
    where
        T: AsyncRead + AsyncWrite + Send + Unpin,
    {
        let (notify, cancel) = {
            let st = self.lock();
            match st.lanes.get(&lane) {
                Some(l) => (l.notify.clone(), l.cancel.clone()),
                None => return "lane not registered",
            }
        };
        // Whatever ends the lane (its connection, the braid, or this future
        // being dropped), the braid forgets it.
        let _gone = LaneGone { braid: self, lane };
        let why = if !first.is_empty() {
            self.receive(lane, first).err()
        } else {
            None
        };
        let why = match why {
            Some(why) => why,
            None => {
                let (rd, wr) = tokio::io::split(io);
                tokio::select! {
                    why = self.read_lane(lane, rd, &mut opener) => why,
                    why = self.write_lane(lane, wr, sealer, &notify, opening) => why,
                    _ = cancel.cancelled() => "lane given up",
                }
            }
        };
        tracing::debug!(lane, reason = why, "lane ended");
        why
    }

    fn receive(&self, lane: u32, plaintext: &[u8]) -> Result<(), &'static str> {
        let mut st = self.lock();
        let got: Received = st
            .braid
            .receive(lane, plaintext)
            .map_err(|_| "bad lane frame")?;
        let now = Instant::now();
        st.last_rx = now;
        if let Some(l) = st.lanes.get_mut(&lane) {
            l.last_rx = now;
        }
        if got.acked {
            st.progress = now;
            wake_writer_app(&mut st);
        }
        if got.readable {
            if let Some(w) = st.read_waker.take() {
                w.wake();
            }
        }
        if let Some(dead) = got.dead_lane {
            if let Some(l) = st.lanes.remove(&dead) {
                l.cancel.cancel();
            }
        }
        if got.wake_writers || got.acked || got.dead_lane.is_some() {
            notify_all(&st);
        }
        drop(st);
        if let Some(tx) = &self.inner.events {
            if got.full {
                let _ = tx.try_send(LaneEvent::Full { lane });
            }
            if let Some(value) = got.pong {
                let _ = tx.try_send(LaneEvent::Pong { lane, value });
            }
        }
        Ok(())
    }

    async fn read_lane<R: AsyncRead + Unpin>(
        &self,
        lane: u32,
        mut rd: R,
        opener: &mut Opener,
    ) -> &'static str {
        loop {
            loop {
                match opener.open_next() {
                    Ok(Some(pt)) => {
                        if let Err(why) = self.receive(lane, pt) {
                            return why;
                        }
                    }
                    Ok(None) => break,
                    Err(_) => return "bad record",
                }
            }
            if opener.spare().is_empty() {
                return "record buffer full";
            }
            match rd.read(opener.spare()).await {
                Ok(0) => return "peer closed the lane",
                Ok(n) => {
                    opener.advance(n);
                    if let Some(l) = self.lock().lanes.get_mut(&lane) {
                        l.raw_rx += n as u64;
                    }
                }
                Err(_) => return "read error",
            }
        }
    }

    async fn write_lane<W: AsyncWrite + Unpin>(
        &self,
        lane: u32,
        mut wr: W,
        mut sealer: Sealer,
        notify: &Notify,
        opening: Option<&Opening>,
    ) -> &'static str {
        let mut seed = [0u8; 8];
        crate::random::fill(&mut seed);
        let mut rng = u64::from_le_bytes(seed) | 1;
        let mut out = Vec::with_capacity(BATCH + 20 * 1024);
        if let Some(opening) = opening {
            // The opening, and a PING whose PONG tells the client the
            // server took the lane.
            let mut pt = Vec::new();
            wire::tunnel::lanes::encode_opening(opening, &mut pt);
            wire::tunnel::lanes::LaneFrame::Ping(0).encode(&mut pt);
            if sealer.seal_record(&pt, &mut out).is_err() {
                return "record sealing failed";
            }
        }
        let mut ack_now = false;
        loop {
            let owed_soon;
            {
                let mut st = self.lock();
                while out.len() < BATCH {
                    // The braid encodes the record's plaintext in place,
                    // after its header, and it is sealed there: once.
                    let start = sealer.begin(&mut out);
                    let random = next_random(&mut rng);
                    if !st.braid.next_record_into(lane, ack_now, random, &mut out) {
                        out.truncate(start);
                        break;
                    }
                    if sealer.finish(&mut out, start).is_err() {
                        return "record sealing failed";
                    }
                }
                ack_now = false;
                owed_soon = st.braid.ack_owed().is_some();
                if st.braid.unacked() < wire::tunnel::lanes::WINDOW {
                    wake_writer_app(&mut st);
                }
            }
            if !out.is_empty() {
                if wr.write_all(&out).await.is_err() {
                    return "write error";
                }
                out.clear();
                continue;
            }
            tokio::select! {
                _ = notify.notified() => {}
                _ = tokio::time::sleep(ACK_DELAY), if owed_soon => ack_now = true,
            }
        }
    }
}
