//! The tokio driver of a braid ([`wire::tunnel::lanes`]): one session's
//! byte stream over many lane connections.
//!
//! - [`BraidHandle`] owns the sans-io [`Braid`] under a lock, the wakers of
//!   the inner session's I/O ([`BraidIo`]) and, per lane, a writer wakeup
//!   and a cancel token.
//! - [`BraidHandle::run_lane`] drives one lane connection: a reader that
//!   opens records and hands their plaintexts to the braid, and a writer
//!   that has the braid encode the lane's next record in place, seals and
//!   writes it.
//!   When it returns the lane is gone (and unacknowledged data on it is
//!   resent on the others).
//! - [`BraidIo`] is the inner session's connection: `AsyncRead +
//!   AsyncWrite` over the braid's buffers. The session's records cross it
//!   unsealed (`Session::client_on_braid`): the lane records are the only
//!   seal.
//!
//! The client decides when to add lanes, which to give up and with what
//! budgets (`client::lanes`); the server only follows ([`LaneEvent`]s
//! report what happened).

use crate::sync::Locked;
use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use wire::tunnel::lanes::{Braid, LaneError, Opening, Received, MAX_LANES};
use wire::tunnel::mux::Role;
use wire::tunnel::record::{HEADER_LEN, TAG_LEN};
use wire::tunnel::{Opener, Sealer};

/// An owed acknowledgement waits at most this long for data to ride with.
const ACK_DELAY: Duration = Duration::from_millis(20);
/// Plaintext bytes a lane writer packs into one socket write.
const BATCH: usize = 64 * 1024;
/// Lane events queued for the client's keeper at most.
const EVENTS: usize = 256;

/// Something the lane keeper should know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaneEvent {
    /// The lane's connection ended (`received`: record bytes that came
    /// down it).
    Ended {
        /// The lane.
        lane: u32,
    },
    /// The server filled the lane's budget.
    Full {
        /// The lane.
        lane: u32,
    },
    /// A PONG came back on the lane.
    Pong {
        /// The lane.
        lane: u32,
        /// Its value.
        value: u64,
    },
}

/// Per-lane driver state.
struct LaneIo {
    notify: Arc<Notify>,
    cancel: CancellationToken,
    /// When the last record arrived on it.
    last_rx: Instant,
    /// Bytes read from its connection (complete records or not).
    raw_rx: u64,
    /// When it was added.
    since: Instant,
}

struct State {
    braid: Braid,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
    lanes: HashMap<u32, LaneIo>,
    /// When the peer last acknowledged something (or we had nothing in
    /// flight).
    progress: Instant,
    /// When any record last arrived.
    last_rx: Instant,
}

struct Inner {
    state: Mutex<State>,
    cancel: CancellationToken,
    events: Option<mpsc::Sender<LaneEvent>>,
}

/// One end of a braid. Cheap to clone.
#[derive(Clone)]
pub struct BraidHandle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for BraidHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BraidHandle")
            .field("braid", &self.lock().braid)
            .finish()
    }
}

/// What the keeper sees of a lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaneView {
    /// Its id.
    pub id: u32,
    /// Record bytes received on it.
    pub received_bytes: u64,
    /// Bytes read from its connection, parts of records included (a slow
    /// lane shows life here before a whole record arrives).
    pub raw_bytes: u64,
    /// The server filled it.
    pub full: bool,
    /// Time since its last record (or since it was added).
    pub silent_for: Duration,
    /// Time since it was added.
    pub age: Duration,
}

impl BraidHandle {
    /// A new braid; the client passes a channel for [`LaneEvent`]s.
    pub fn new(role: Role, events: Option<mpsc::Sender<LaneEvent>>) -> BraidHandle {
        let now = Instant::now();
        BraidHandle {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    braid: Braid::new(role),
                    read_waker: None,
                    write_waker: None,
                    lanes: HashMap::new(),
                    progress: now,
                    last_rx: now,
                }),
                cancel: CancellationToken::new(),
                events,
            }),
        }
    }

    /// An event channel of the usual size.
    pub fn event_channel() -> (mpsc::Sender<LaneEvent>, mpsc::Receiver<LaneEvent>) {
        mpsc::channel(EVENTS)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.state.locked()
    }

    /// The inner session's connection over this braid.
    pub fn io(&self) -> BraidIo {
        BraidIo {
            braid: self.clone(),
        }
    }

    /// Ends the braid: every lane closes, the inner session sees EOF.
    pub fn close(&self) {
        {
            let mut st = self.lock();
            st.braid.close();
            wake_app(&mut st);
        }
        self.inner.cancel.cancel();
    }

    /// Whether the braid ended.
    pub fn is_closed(&self) -> bool {
        self.inner.cancel.is_cancelled()
    }

    /// Waits until the braid ends.
    pub async fn closed(&self) {
        self.inner.cancel.cancelled().await
    }

    /// Every byte before this offset arrived.
    pub fn received(&self) -> u64 {
        self.lock().braid.received()
    }

    /// The lanes, oldest first.
    pub fn lanes(&self) -> Vec<LaneView> {
        let st = self.lock();
        let now = Instant::now();
        st.braid
            .lane_ids()
            .into_iter()
            .map(|id| {
                let io = st.lanes.get(&id);
                LaneView {
                    id,
                    received_bytes: st.braid.lane_received_bytes(id),
                    raw_bytes: io.map(|l| l.raw_rx).unwrap_or_default(),
                    full: st.braid.lane_full(id),
                    silent_for: io.map(|l| now - l.last_rx).unwrap_or_default(),
                    age: io.map(|l| now - l.since).unwrap_or_default(),
                }
            })
            .collect()
    }

    /// How long sent data has waited for an acknowledgement (zero when
    /// nothing is in flight).
    pub fn unacked_for(&self) -> Duration {
        let st = self.lock();
        if st.braid.in_flight() == 0 {
            Duration::ZERO
        } else {
            st.progress.elapsed()
        }
    }

    /// How long the peer has acknowledged nothing (neither receiving nor
    /// reading) while this end holds data to send or resend (zero when it
    /// holds none): a peer that lets nothing through.
    pub fn stalled_for(&self) -> Duration {
        let st = self.lock();
        if st.braid.unacked() == 0 {
            Duration::ZERO
        } else {
            st.progress.elapsed()
        }
    }

    /// Bytes this end holds: to send or resend, received and not read,
    /// out of order (charged by allocation).
    pub fn buffered(&self) -> usize {
        self.lock().braid.buffered()
    }

    /// Bytes sent and not yet acknowledged.
    pub fn in_flight(&self) -> u64 {
        self.lock().braid.in_flight()
    }

    /// Time since any record arrived.
    pub fn silent_for(&self) -> Duration {
        self.lock().last_rx.elapsed()
    }

    /// Sends a PING on `lane`.
    pub fn ping(&self, lane: u32, value: u64) {
        let mut st = self.lock();
        st.braid.ping(lane, value);
        if let Some(l) = st.lanes.get(&lane) {
            l.notify.notify_one();
        }
    }

    /// Gives a lane up: its connection closes and unacknowledged data on
    /// it goes out again on the others.
    pub fn drop_lane(&self, lane: u32) {
        let mut st = self.lock();
        if let Some(l) = st.lanes.remove(&lane) {
            l.cancel.cancel();
        }
        st.braid.remove_lane(lane);
        notify_all(&st);
    }

    /// Client: gives a lane up and tells the server (REWIND), which resends
    /// what we lack on the others.
    pub fn declare_dead(&self, lane: u32) {
        let mut st = self.lock();
        if let Some(l) = st.lanes.remove(&lane) {
            l.cancel.cancel();
        }
        st.braid.declare_dead(lane);
        notify_all(&st);
    }

    /// Registers a lane before its connection runs; `false` if the braid
    /// is closed, full of lanes or has the id.
    ///
    /// A braid at [`MAX_LANES`] first gives its oldest lane up: lanes the
    /// client lost without our noticing (a blackholed path shows no EOF)
    /// must not lock it out.
    pub fn add_lane(&self, lane: u32, budget: Option<u32>) -> bool {
        let mut st = self.lock();
        if st.braid.lanes() >= MAX_LANES {
            if let Some(&oldest) = st.braid.lane_ids().first() {
                if let Some(l) = st.lanes.remove(&oldest) {
                    l.cancel.cancel();
                }
                st.braid.remove_lane(oldest);
            }
        }
        if self.inner.cancel.is_cancelled() || !st.braid.add_lane(lane, budget) {
            return false;
        }
        let now = Instant::now();
        st.lanes.insert(
            lane,
            LaneIo {
                notify: Arc::new(Notify::new()),
                cancel: self.inner.cancel.child_token(),
                last_rx: now,
                raw_rx: 0,
                since: now,
            },
        );
        true
    }

    /// Takes a JOIN's report of what the client received.
    pub fn peer_received(&self, received: u64) -> Result<(), LaneError> {
        let mut st = self.lock();
        if st.braid.peer_received(received)? {
            st.progress = Instant::now();
            wake_writer_app(&mut st);
        }
        Ok(())
    }

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

    /// Reads a lane's first record (its opening) from `io`: returns the
    /// opening and the frames after it.
    pub async fn read_opening<T: AsyncRead + Unpin>(
        io: &mut T,
        opener: &mut Opener,
        leftover: &[u8],
        deadline: Duration,
    ) -> Result<(Opening, Vec<u8>), &'static str> {
        let mut pending = leftover;
        let read = async {
            loop {
                while !pending.is_empty() {
                    let n = opener.feed(pending);
                    pending = &pending[n..];
                    if n == 0 {
                        break;
                    }
                }
                match opener.open_next() {
                    Ok(Some(pt)) => {
                        let (opening, rest) =
                            wire::tunnel::lanes::opening(pt).map_err(|_| "bad lane opening")?;
                        return Ok((opening, rest.to_vec()));
                    }
                    Ok(None) => {}
                    Err(_) => return Err("bad record"),
                }
                if !pending.is_empty() {
                    continue;
                }
                if opener.spare().is_empty() {
                    return Err("record buffer full");
                }
                match io.read(opener.spare()).await {
                    Ok(0) => return Err("closed before the lane opening"),
                    Ok(n) => opener.advance(n),
                    Err(_) => return Err("read error"),
                }
            }
        };
        tokio::time::timeout(deadline, read)
            .await
            .map_err(|_| "no lane opening in time")?
    }
}

/// Takes a lane out of its braid when dropped, and reports its end.
struct LaneGone<'a> {
    braid: &'a BraidHandle,
    lane: u32,
}

impl Drop for LaneGone<'_> {
    fn drop(&mut self) {
        {
            let mut st = self.braid.lock();
            st.lanes.remove(&self.lane);
            st.braid.remove_lane(self.lane);
            notify_all(&st);
        }
        if let Some(tx) = &self.braid.inner.events {
            let _ = tx.try_send(LaneEvent::Ended { lane: self.lane });
        }
    }
}

fn next_random(rng: &mut u64) -> u32 {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    (*rng >> 32) as u32
}

fn notify_all(st: &State) {
    for l in st.lanes.values() {
        l.notify.notify_one();
    }
}

fn wake_writer_app(st: &mut State) {
    if let Some(w) = st.write_waker.take() {
        w.wake();
    }
}

fn wake_app(st: &mut State) {
    if let Some(w) = st.read_waker.take() {
        w.wake();
    }
    wake_writer_app(st);
}

/// The inner session's connection: reads what the braid delivered in
/// order, writes into its send buffer. Dropping it ends the braid.
pub struct BraidIo {
    braid: BraidHandle,
}

impl Drop for BraidIo {
    fn drop(&mut self) {
        self.braid.close();
    }
}

impl AsyncRead for BraidIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut st = self.braid.lock();
        if st.braid.readable() > 0 {
            let n = st.braid.read(buf.initialize_unfilled());
            buf.advance(n);
            if st.braid.ack_owed().is_some() {
                notify_all(&st);
            }
            return Poll::Ready(Ok(()));
        }
        if st.braid.is_closed() {
            return Poll::Ready(Ok(()));
        }
        st.read_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncWrite for BraidIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut st = self.braid.lock();
        if st.braid.is_closed() {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if st.braid.in_flight() == 0 {
            st.progress = Instant::now();
        }
        let n = st.braid.write(buf);
        if n > 0 {
            notify_all(&st);
            return Poll::Ready(Ok(n));
        }
        st.write_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Record bytes on the wire for `plaintext` bytes.
pub fn record_len(plaintext: usize) -> usize {
    HEADER_LEN + plaintext + TAG_LEN
}
