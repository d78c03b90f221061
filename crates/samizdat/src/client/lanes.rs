//! The lane keeper: keeps a client session's braid supplied with lane
//! connections (`crate::transport::braid`, `docs/transport.md` "Lanes").
//!
//! - **Stalls.** When data sent waits over [`STALL_AFTER`] for its
//!   acknowledgement, or the session goes quiet that long after receiving,
//!   every lane still open is probed (PING); a lane that answers nothing
//!   within [`PROBE_TIMEOUT`] is declared dead (REWIND: the server resends
//!   what we lack on another lane) and a new lane is raced over the pool.
//!   Streams never notice beyond the pause.
//! - **Freezes.** A lane that stalls after a few kilobytes
//!   ([`FREEZE_MIN`]..=[`FREEZE_MAX`] bytes down, flight included) is what a
//!   censor's per-connection freeze looks like: the endpoint gets a lane
//!   budget (three quarters of what passed, minus the flight), kept in
//!   `pool.toml`. Lanes to it then carry that budget in their opening: the
//!   server fills each lane up to it, marks it FULL and moves to the next,
//!   while the keeper keeps [`SPARES`] more lanes joined.
//! - A lane the server filled is closed; a lane that broke counts against
//!   its endpoint; with no lane for [`GIVE_UP`] the session ends.

use super::connect::LaneConn;
use super::dialer::{jitter, Racer};
use crate::sync::Locked;
use crate::transport::braid::{BraidHandle, LaneEvent};
use crate::transport::{Session, SessionConfig};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use wire::link::Endpoint;
use wire::tunnel::lanes::{Opening, SessionSecret, Token, MIN_BUDGET};
use wire::tunnel::mux::Role;

/// Unacknowledged data, or silence after receiving, this long: probe.
pub(crate) const STALL_AFTER: Duration = Duration::from_millis(600);
/// A probed lane that receives not one byte this long (or four times its
/// handshake time, if longer) is dead. Any byte counts, so a throttled
/// lane that still trickles is alive.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_millis(800);
/// Fewest bytes down a lane (flight included) for a stall to count as a
/// freeze.
pub(crate) const FREEZE_MIN: u64 = 2 * 1024;
/// Most bytes down a lane for a stall to count as a freeze; a stall after
/// more is a block of the endpoint.
pub(crate) const FREEZE_MAX: u64 = 128 * 1024;
/// Lanes kept joined beyond the one in use when lanes have budgets: each
/// lane takes two round trips to open and carries a few kilobytes, so at a
/// real round-trip time the rate is about (spares × budget) per two round
/// trips.
pub(crate) const SPARES: usize = 6;
/// Lane connections raced at once.
const CONNECTING: usize = 6;
/// No lane this long: the session ends.
pub(crate) const GIVE_UP: Duration = Duration::from_secs(20);
/// The slowest upstream a probe waits for: a PING queued behind our own
/// unacknowledged data reaches the server only after it, so a probe may
/// wait that data's time at this rate (64 kbit/s, a throttle's pace), up to
/// [`MAX_QUEUE_WAIT`] more.
const SLOW_UPSTREAM: u64 = 8_000;
/// At most this much is added to a probe's wait for queued data.
const MAX_QUEUE_WAIT: Duration = Duration::from_secs(10);
/// Lanes in a row ending before the server confirms them: the server does
/// not know the session (any more); it ends.
const MAX_UNCONFIRMED: u32 = 3;
/// How often the keeper looks at its lanes.
const TICK: Duration = Duration::from_millis(100);

/// What the keeper knows of one lane.
struct LaneInfo {
    endpoint: Endpoint,
    flight_len: usize,
    /// How long a probe may wait on it.
    probe_timeout: Duration,
    /// Probe outstanding: its deadline, and the lane's raw bytes then.
    probe: Option<(Instant, u64)>,
    /// The server answered the PING sent with the lane's opening.
    confirmed: bool,
}

/// Runs a client session over a braid whose first lane is `first`, to
/// `endpoint`; later lanes are raced over `racer`'s pool. The keeper task
/// ends with the session (or at `stop`).
pub(super) fn start(
    first: LaneConn,
    endpoint: Endpoint,
    racer: Arc<Racer>,
    cfg: SessionConfig,
    stop: CancellationToken,
) -> Session {
    let mut bytes = [0u8; 32];
    crate::random::fill(&mut bytes);
    let secret = SessionSecret::new(bytes);
    let (tx, rx) = BraidHandle::event_channel();
    let braid = BraidHandle::new(Role::Client, Some(tx));
    let session = Session::client_on_braid(braid.io(), cfg);
    let mut keeper = Keeper {
        token: secret.token(),
        braid,
        racer,
        lanes: HashMap::new(),
        next_id: 0,
        budgeted: false,
        connecting: JoinSet::new(),
        no_lane_since: None,
        replacing: false,
        unconfirmed: 0,
        rx_at_probe: 0,
        probes: 0,
    };
    let budget = keeper.budget_for(&endpoint);
    keeper.attach(first, endpoint, |lane| Opening::New {
        secret,
        lane,
        budget,
    });
    tokio::spawn(keeper.run(rx, stop));
    session
}

struct Keeper {
    token: Token,
    braid: BraidHandle,
    racer: Arc<Racer>,
    lanes: HashMap<u32, LaneInfo>,
    next_id: u32,
    /// Some lane has a budget: keep spares.
    budgeted: bool,
    connecting: JoinSet<Result<(Endpoint, LaneConn), crate::dial::OpenError>>,
    no_lane_since: Option<Instant>,
    /// A lane broke or stalled: the next one is announced.
    replacing: bool,
    /// Lanes in a row that ended before the server confirmed them.
    unconfirmed: u32,
    /// Stream offset received when the last silence probe went out.
    rx_at_probe: u64,
    probes: u64,
}

impl Keeper {
    fn budget_for(&self, endpoint: &Endpoint) -> Option<u32> {
        self.racer.shared.pool.locked().lane_budget(endpoint)
    }

    /// Starts a lane over `conn`; `opening` builds its first frame.
    fn attach(&mut self, conn: LaneConn, endpoint: Endpoint, opening: impl FnOnce(u32) -> Opening) {
        let lane = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let budget = self.budget_for(&endpoint);
        if !self.braid.add_lane(lane, None) {
            return;
        }
        self.budgeted |= budget.is_some();
        self.no_lane_since = None;
        if std::mem::take(&mut self.replacing) {
            tracing::info!("using endpoint {endpoint} for the session's streams from now on");
        }
        self.lanes.insert(
            lane,
            LaneInfo {
                endpoint,
                flight_len: conn.flight_len,
                probe_timeout: PROBE_TIMEOUT.max(conn.handshake * 4),
                probe: None,
                confirmed: false,
            },
        );
        let opening = opening(lane);
        let braid = self.braid.clone();
        tokio::spawn(async move {
            let LaneConn {
                io,
                established,
                leftover,
                ..
            } = conn;
            let (sealer, mut opener) = established.into_split();
            opener.feed(&leftover);
            braid
                .run_lane(lane, io, sealer, opener, &[], Some(&opening))
                .await;
        });
    }

    async fn run(
        mut self,
        mut rx: tokio::sync::mpsc::Receiver<LaneEvent>,
        stop: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.braid.closed() => break,
                _ = stop.cancelled() => {
                    self.braid.close();
                    break;
                }
                Some(ev) = rx.recv() => self.event(ev),
                Some(done) = self.connecting.join_next(), if !self.connecting.is_empty() => {
                    match done {
                        Ok(Ok((endpoint, conn))) => {
                            let (token, received) = (self.token, self.braid.received());
                            let budget = self.budget_for(&endpoint);
                            self.attach(conn, endpoint, |lane| Opening::Join {
                                token,
                                lane,
                                budget,
                                received,
                            });
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, "no new lane"),
                        Err(_) => {}
                    }
                }
                _ = tick.tick() => self.check(),
            }
            if self.unconfirmed >= MAX_UNCONFIRMED {
                tracing::warn!(
                    "the samizdat server closed {MAX_UNCONFIRMED} connections in a row without taking them into the session (the session ended there: restarted, or the user was removed); starting over"
                );
                self.braid.close();
                break;
            }
            if self.gave_up() {
                tracing::warn!(
                    "no connection to any samizdat endpoint for {} s; the session ends",
                    GIVE_UP.as_secs()
                );
                self.braid.close();
                break;
            }
            self.supply();
        }
        self.connecting.shutdown().await;
    }

    fn gave_up(&mut self) -> bool {
        if !self.lanes.is_empty() {
            self.no_lane_since = None;
            return false;
        }
        let since = *self.no_lane_since.get_or_insert_with(Instant::now);
        since.elapsed() >= GIVE_UP
    }

    fn event(&mut self, ev: LaneEvent) {
        match ev {
            LaneEvent::Full { lane } => {
                // Everything it carried arrived before its FULL.
                self.lanes.remove(&lane);
                self.braid.drop_lane(lane);
            }
            LaneEvent::Ended { lane } => {
                if let Some(info) = self.lanes.remove(&lane) {
                    // It broke under us: the server may not know yet.
                    self.braid.declare_dead(lane);
                    self.replacing = true;
                    if !info.confirmed {
                        // Closed before the server took it: the server's
                        // doing (counted above), not the path's.
                        self.unconfirmed += 1;
                        tracing::debug!(lane, "a new lane was closed before the server took it");
                        return;
                    }
                    let why = "connection broke during the session";
                    let wait = self.racer.shared.pool.locked().record_failure(
                        &info.endpoint,
                        why,
                        crate::clock::system_now(),
                        jitter(),
                    );
                    tracing::warn!(
                        "endpoint {} looks blocked ({why}); its streams move to another connection; backing off {} s",
                        info.endpoint,
                        wait.as_secs()
                    );
                    self.racer.shared.save();
                }
            }
            LaneEvent::Pong { lane, .. } => {
                if let Some(info) = self.lanes.get_mut(&lane) {
                    info.probe = None;
                    info.confirmed = true;
                    self.unconfirmed = 0;
                }
            }
        }
    }

    /// Probes when the session looks stuck; declares unanswering lanes
    /// dead.
    fn check(&mut self) {
        let views = self.braid.lanes();
        let mut stalled = Vec::new();
        for v in &views {
            let Some(info) = self.lanes.get_mut(&v.id) else {
                continue;
            };
            if let Some((deadline, bytes)) = info.probe {
                if v.raw_bytes > bytes {
                    info.probe = None;
                } else if Instant::now() >= deadline {
                    stalled.push((v.id, v.raw_bytes));
                }
            }
        }
        for (lane, bytes) in stalled {
            self.stalled(lane, bytes);
        }
        let probing = self.lanes.values().any(|l| l.probe.is_some());
        let received = self.braid.received();
        let quiet_after_data =
            self.braid.silent_for() >= STALL_AFTER && received != self.rx_at_probe;
        if probing || !(self.braid.unacked_for() >= STALL_AFTER || quiet_after_data) {
            return;
        }
        self.rx_at_probe = received;
        let queued = Duration::from_secs_f64(self.braid.in_flight() as f64 / SLOW_UPSTREAM as f64)
            .min(MAX_QUEUE_WAIT);
        for v in self.braid.lanes() {
            if v.full {
                continue;
            }
            if let Some(info) = self.lanes.get_mut(&v.id) {
                self.probes += 1;
                info.probe = Some((Instant::now() + info.probe_timeout + queued, v.raw_bytes));
                self.braid.ping(v.id, self.probes);
            }
        }
    }

    /// `lane` answered nothing after `received` bytes (the flight not
    /// counted): give it up, and learn a freeze if it looks like one.
    fn stalled(&mut self, lane: u32, received: u64) {
        let Some(info) = self.lanes.remove(&lane) else {
            return;
        };
        self.braid.declare_dead(lane);
        self.replacing = true;
        let down = received + info.flight_len as u64;
        let endpoint = &info.endpoint;
        if (FREEZE_MIN..=FREEZE_MAX).contains(&down) {
            let budget = (down * 3 / 4)
                .saturating_sub(info.flight_len as u64)
                .max(u64::from(MIN_BUDGET)) as u32;
            let learned = self
                .racer
                .shared
                .pool
                .locked()
                .learn_lane_budget(endpoint, budget);
            self.budgeted = true;
            tracing::warn!(
                "a connection to {endpoint} stalled after {down} bytes down (a censor's freeze?): spreading the session over connections, lane budget {learned} bytes"
            );
        } else {
            let why = format!("connection stalled after {down} bytes down");
            let wait = self.racer.shared.pool.locked().record_failure(
                endpoint,
                &why,
                crate::clock::system_now(),
                jitter(),
            );
            tracing::warn!(
                "endpoint {endpoint} looks blocked ({why}); its streams move to another connection; backing off {} s",
                wait.as_secs()
            );
        }
        self.racer.shared.save();
    }

    /// Races new lanes until one (plus [`SPARES`] with budgets) is open.
    fn supply(&mut self) {
        let open = self.braid.lanes().iter().filter(|v| !v.full).count();
        let want = 1 + if self.budgeted { SPARES } else { 0 };
        while open + self.connecting.len() < want && self.connecting.len() < CONNECTING {
            let racer = self.racer.clone();
            self.connecting.spawn(async move { racer.race(true).await });
        }
    }
}
