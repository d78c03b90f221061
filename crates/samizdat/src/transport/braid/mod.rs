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

mod lane;
mod stream_end;
pub use stream_end::BraidIo;

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

/// Record bytes on the wire for `plaintext` bytes.
pub fn record_len(plaintext: usize) -> usize {
    HEADER_LEN + plaintext + TAG_LEN
}
