//! The client's side of the tunnel as a [`Dialer`]: one session at a time,
//! carrying every stream, over an endpoint pool ([`super::pool`]).
//!
//! When a session is needed, the dialer races connections Happy-Eyeballs
//! style: the best-ranked endpoint first, the next one [`TunnelDialer::stagger`]
//! later while earlier attempts are still pending (at most
//! [`TunnelDialer::max_parallel`] at once, the next one at once when an
//! attempt fails); the first completed handshake wins and the others are
//! aborted (their tasks, and so their sockets, dropped). Every outcome
//! goes to the pool: a success with its handshake time, a failure (refused,
//! reset, timed out, a handshake that does not complete) with its backoff.
//! A watcher task per session records its end (a session dies on a reset,
//! or when nothing arrives for [`SessionConfig::dead_after`], which is how
//! a blackholed path shows), so the next stream goes to a fresh session on
//! the next endpoint. With a state directory the pool's health is kept in
//! `pool.toml` across restarts.

use super::connect::{connect, ConnectError, LaneConn};
use super::pool::{Pool, Standing};
use crate::dial::{BoxIo, Dialer, OpenError, OpenFuture};
use crate::sync::Locked;
use crate::transport::{Session, SessionConfig};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use wire::browser::Template;
use wire::link::{Endpoint, Link};
use wire::tunnel::Destination;

/// An attempt still pending this long, and twice as long as the winner's
/// handshake took, when another endpoint won counts as a failure ("no
/// answer"): a blackholed endpoint is learned even though its attempt is
/// cut short, while attempts that were merely slower (all waiting on a busy
/// server, say) are not.
const LOSER_PENALTY_AFTER: Duration = Duration::from_secs(1);

/// Opens streams through a samizdat server.
pub struct TunnelDialer {
    link: Link,
    template: &'static Template,
    /// Connect plus handshake deadline per endpoint.
    pub timeout: Duration,
    /// Session settings (windows, keepalive). The client's default pings
    /// after 5 s idle and gives a session up after 15 s without a byte, so
    /// a blackholed path is left within 15 s.
    pub session_config: SessionConfig,
    /// Delay before racing the next endpoint while earlier attempts are
    /// pending (Happy Eyeballs, RFC 8305, uses 250 ms).
    pub stagger: Duration,
    /// Most connection attempts in flight at once (attempts pending over a
    /// second do not count: they hold a socket each, but not the race).
    pub max_parallel: usize,
    /// State shared with the session watchers.
    shared: Arc<DialerShared>,
    /// Only one task (re)connects at a time; the others wait for its session.
    connecting: tokio::sync::Mutex<()>,
    /// Ends the session watchers (on [`TunnelDialer::shutdown`] or drop).
    stop: CancellationToken,
}

/// Races the pool's endpoints for a connection: for a session's first lane
/// and, from its lane keeper (`super::lanes`), for every later one.
pub(super) struct Racer {
    link: Link,
    template: &'static Template,
    timeout: Duration,
    stagger: Duration,
    max_parallel: usize,
    pub(super) shared: Arc<DialerShared>,
}

/// What the dialer and its session watchers share.
pub(super) struct DialerShared {
    /// Endpoint health.
    pub(super) pool: Mutex<Pool>,
    /// The session in use.
    current: Mutex<Option<Live>>,
    /// Where `pool.toml` lives; `None`: nothing is saved.
    state_dir: Option<PathBuf>,
    /// The link's own servers: always in the pool, whatever lists add.
    link_servers: Vec<Endpoint>,
    /// Session ids, so a watcher retires only its own session.
    next_id: AtomicU64,
}

/// The session in use and where it goes.
struct Live {
    id: u64,
    session: Session,
    endpoint: Endpoint,
    since: Instant,
}

/// Uniform in `[0, 1)`, for the backoff's jitter.
pub(super) fn jitter() -> f64 {
    crate::random::unit()
}

/// A short reason for logs and `pool.toml`.
fn reason(e: &ConnectError) -> String {
    match e {
        ConnectError::Timeout(d) => format!("connect timed out after {} s", d.as_secs()),
        ConnectError::Connect(io) => match io.kind() {
            std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
            std::io::ErrorKind::ConnectionReset => "connection reset".into(),
            _ => format!("cannot connect: {io}"),
        },
        ConnectError::Closed(why) => format!("handshake did not complete: {why}"),
        other => other.to_string(),
    }
}

impl DialerShared {
    pub(super) fn save(&self) {
        if let Some(dir) = &self.state_dir {
            let pool = self.pool.locked().clone();
            if let Err(e) = pool.save(dir) {
                tracing::warn!("cannot save {}: {e}", dir.join(super::pool::FILE).display());
            }
        }
    }

    /// Takes session `id` out of use (if it still is) and records its end.
    fn retire(&self, id: u64) {
        let live = {
            let mut current = self.current.locked();
            match current.as_ref() {
                Some(l) if l.id == id => current.take(),
                _ => None,
            }
        };
        let Some(live) = live else { return };
        let lived = live.since.elapsed();
        let wait = self.pool.locked().record_session_end(
            &live.endpoint,
            lived,
            crate::clock::system_now(),
            jitter(),
        );
        tracing::warn!(
            "the session on endpoint {} ended after {} s (reset, or nothing arrived: blocked, or the server went away); backing off {} s",
            live.endpoint,
            lived.as_secs(),
            wait.as_secs()
        );
        self.save();
    }
}

impl Drop for TunnelDialer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl TunnelDialer {
    /// A dialer for `link`'s servers, with its browser template; endpoint
    /// health lives in memory only.
    pub fn new(link: Link, template: &'static Template) -> TunnelDialer {
        TunnelDialer::build(link, template, None)
    }

    /// A dialer whose endpoint health is loaded from and saved to
    /// `state_dir/pool.toml` (entries for endpoints not in the link are
    /// kept aside for [`TunnelDialer::set_servers`], and dropped if those
    /// do not bring them back).
    pub fn with_state(link: Link, template: &'static Template, state_dir: PathBuf) -> TunnelDialer {
        TunnelDialer::build(link, template, Some(state_dir))
    }

    fn build(link: Link, template: &'static Template, state_dir: Option<PathBuf>) -> TunnelDialer {
        let mut pool = Pool::new(link.servers.clone());
        if let Some(dir) = &state_dir {
            if let Err(e) = pool.load(dir) {
                tracing::warn!("ignoring {}: {e}", dir.join(super::pool::FILE).display());
            }
        }
        TunnelDialer {
            timeout: Duration::from_secs(10),
            session_config: SessionConfig {
                keepalive: Duration::from_secs(5),
                dead_after: Duration::from_secs(15),
                ..SessionConfig::default()
            },
            stagger: Duration::from_millis(250),
            max_parallel: 3,
            shared: Arc::new(DialerShared {
                pool: Mutex::new(pool),
                current: Mutex::new(None),
                state_dir,
                link_servers: link.servers.clone(),
                next_id: AtomicU64::new(0),
            }),
            link,
            template,
            connecting: tokio::sync::Mutex::new(()),
            stop: CancellationToken::new(),
        }
    }

    /// Makes the pool the link's servers plus `servers` (from a signed
    /// server list, say), keeping what is known of endpoints already in
    /// it; endpoints of an earlier list that are gone are dropped.
    pub fn set_servers(&self, servers: Vec<Endpoint>) {
        let mut all = self.shared.link_servers.clone();
        all.extend(servers);
        self.shared.pool.locked().set_endpoints(all);
        self.shared.save();
    }

    /// A copy of the pool (endpoints and their health).
    pub fn pool(&self) -> Pool {
        self.shared.pool.locked().clone()
    }

    /// The endpoint of the session in use, if one is open.
    pub fn current_endpoint(&self) -> Option<Endpoint> {
        self.shared
            .current
            .locked()
            .as_ref()
            .filter(|l| !l.session.is_closed())
            .map(|l| l.endpoint.clone())
    }

    /// Saves the pool and ends the session watchers (at shutdown).
    pub fn shutdown(&self) {
        self.stop.cancel();
        self.shared.save();
    }

    fn live(&self) -> Option<Session> {
        let dead = {
            let current = self.shared.current.locked();
            match current.as_ref() {
                Some(l) if !l.session.is_closed() => return Some(l.session.clone()),
                Some(l) => Some(l.id),
                None => None,
            }
        };
        // Closed before its watcher ran: record it now, so the ranking
        // below already knows.
        if let Some(id) = dead {
            self.shared.retire(id);
        }
        None
    }

    /// The live session, or a new one from the endpoint race.
    pub async fn session(&self) -> Result<Session, OpenError> {
        if let Some(s) = self.live() {
            return Ok(s);
        }
        let _one = self.connecting.lock().await;
        if let Some(s) = self.live() {
            return Ok(s);
        }
        let racer = Arc::new(Racer {
            link: self.link.clone(),
            template: self.template,
            timeout: self.timeout,
            stagger: self.stagger,
            max_parallel: self.max_parallel,
            shared: self.shared.clone(),
        });
        let (endpoint, conn) = racer.race(false).await?;
        let session = super::lanes::start(
            conn,
            endpoint.clone(),
            racer,
            self.session_config,
            self.stop.clone(),
        );
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        *self.shared.current.locked() = Some(Live {
            id,
            session: session.clone(),
            endpoint,
            since: Instant::now(),
        });
        let (watched, shared, stop) = (session.clone(), self.shared.clone(), self.stop.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = watched.closed() => shared.retire(id),
                _ = stop.cancelled() => {}
            }
        });
        Ok(session)
    }
}

impl Racer {
    /// Races the ranked endpoints; the first completed handshake wins.
    pub(super) async fn race(&self, quiet: bool) -> Result<(Endpoint, LaneConn), OpenError> {
        let order = {
            let pool = self.shared.pool.locked();
            let now = crate::clock::system_now();
            let order = pool.rank(now);
            let described: Vec<String> = order
                .iter()
                .filter_map(|e| pool.health(e).map(|h| (e, h)))
                .map(|(e, h)| match Pool::standing(h, now) {
                    Standing::Healthy => {
                        format!("{e} (works, {} ms)", h.rtt.unwrap_or_default().as_millis())
                    }
                    Standing::Untried => format!("{e} (untried)"),
                    Standing::Retry => format!(
                        "{e} (failed before: {})",
                        h.last_error.as_deref().unwrap_or("failed")
                    ),
                    Standing::BackedOff => format!(
                        "{e} (backed off {} s more: {})",
                        h.backoff_until
                            .and_then(|t| t.duration_since(now).ok())
                            .unwrap_or_default()
                            .as_secs(),
                        h.last_error.as_deref().unwrap_or("failed")
                    ),
                })
                .collect();
            if quiet {
                tracing::debug!("new lane; endpoints in order: {}", described.join(", "));
            } else {
                tracing::info!("connecting; endpoints in order: {}", described.join(", "));
            }
            order
        };
        let mut set: JoinSet<(usize, Result<LaneConn, ConnectError>)> = JoinSet::new();
        let mut started: Vec<Option<Instant>> = vec![None; order.len()];
        let mut errors: Vec<String> = Vec::new();
        let (mut next, mut next_at) = (0, Instant::now());
        loop {
            // Attempts pending over a second (blackholed, most likely) do
            // not hold back the next endpoints.
            let young = started
                .iter()
                .flatten()
                .filter(|t| t.elapsed() < LOSER_PENALTY_AFTER)
                .count();
            let may_start = next < order.len() && young < self.max_parallel.max(1);
            if may_start && (set.is_empty() || Instant::now() >= next_at) {
                let (endpoint, link) = (order[next].clone(), self.link.clone());
                let (template, timeout) = (self.template, self.timeout);
                let i = next;
                set.spawn(async move { (i, connect(&endpoint, &link, template, timeout).await) });
                started[i] = Some(Instant::now());
                next += 1;
                next_at = Instant::now() + self.stagger;
                continue;
            }
            // Held back by young attempts: look again when the oldest of
            // them turns old.
            let ages_at = started
                .iter()
                .flatten()
                .filter(|t| t.elapsed() < LOSER_PENALTY_AFTER)
                .min()
                .map(|t| *t + LOSER_PENALTY_AFTER);
            let wake = match ages_at {
                Some(t) if !may_start && next < order.len() => Some(t.max(next_at)),
                _ if may_start => Some(next_at),
                _ => None,
            };
            let joined = tokio::select! {
                r = set.join_next() => r,
                _ = tokio::time::sleep_until(wake.unwrap_or(next_at)), if wake.is_some() => continue,
            };
            let Some(joined) = joined else { break };
            let Ok((i, result)) = joined else { continue };
            let endpoint = &order[i];
            let took = started[i].take().map(|t| t.elapsed()).unwrap_or_default();
            match result {
                Ok(conn) => {
                    set.abort_all();
                    self.record_win(endpoint, took, &order, &started, quiet);
                    return Ok((endpoint.clone(), conn));
                }
                Err(e) => {
                    let why = reason(&e);
                    let wait = self.shared.pool.locked().record_failure(
                        endpoint,
                        &why,
                        crate::clock::system_now(),
                        jitter(),
                    );
                    tracing::warn!(
                        "endpoint {endpoint} looks blocked ({why}); backing off {} s",
                        wait.as_secs()
                    );
                    errors.push(format!("{endpoint}: {e}"));
                    // Do not wait out the stagger: the next one starts now.
                    next_at = Instant::now();
                }
            }
        }
        self.shared.save();
        Err(OpenError::General(format!(
            "no samizdat server answered ({})",
            errors.join("; ")
        )))
    }

    /// Records the winner and the attempts it beat that had been pending
    /// for [`LOSER_PENALTY_AFTER`] and twice its time; logs the switch.
    fn record_win(
        &self,
        endpoint: &Endpoint,
        took: Duration,
        order: &[Endpoint],
        pending: &[Option<Instant>],
        quiet: bool,
    ) {
        let now = crate::clock::system_now();
        {
            let mut pool = self.shared.pool.locked();
            pool.record_success(endpoint, took, now);
            for (loser, since) in order.iter().zip(pending) {
                let Some(waited) = since.map(|t| t.elapsed()) else {
                    continue;
                };
                if waited >= LOSER_PENALTY_AFTER.max(took * 2) {
                    let why = format!(
                        "no answer in {} ms while {endpoint} answered",
                        waited.as_millis()
                    );
                    let wait = pool.record_failure(loser, &why, now, jitter());
                    tracing::warn!(
                        "endpoint {loser} looks blocked ({why}); backing off {} s",
                        wait.as_secs()
                    );
                }
            }
        }
        if quiet {
            tracing::debug!("lane on {endpoint} (handshake {} ms)", took.as_millis());
        } else {
            tracing::info!(
                "using endpoint {endpoint} (handshake {} ms)",
                took.as_millis()
            );
        }
        // Lanes come and go by the hundred under a freeze: their wins are
        // saved with the keeper's next change, not each time.
        if !quiet {
            self.shared.save();
        }
    }
}

impl Dialer for TunnelDialer {
    fn open(&self, dest: Destination, first: Vec<u8>) -> OpenFuture<'_> {
        Box::pin(async move {
            // A session that died since it was last used is replaced once.
            for attempt in 0..2 {
                let session = self.session().await?;
                match session.open(dest.clone(), first.clone()).await {
                    Ok(stream) => return Ok(Box::new(stream) as BoxIo),
                    Err(e) if attempt == 0 && ended_with(&session, e).await => {
                        tracing::debug!(error = %e, "session ended; opening the stream on a new one");
                    }
                    Err(e) => return Err(open_error(e)),
                }
            }
            Err(OpenError::General(
                "the samizdat session keeps failing".into(),
            ))
        })
    }
}

/// Whether an open failed because its session ended. A pending open can
/// see its session's end a moment before the session reports itself
/// closed, so a local failure waits briefly for the close.
async fn ended_with(session: &Session, e: crate::transport::StreamOpenError) -> bool {
    use crate::transport::{Status, StreamOpenError as E};
    if session.is_closed() {
        return true;
    }
    match e {
        E::Closed | E::Refused(Status::GeneralFailure) => {
            tokio::time::timeout(Duration::from_millis(200), session.closed())
                .await
                .is_ok()
        }
        _ => false,
    }
}

/// The front-ends' error for a refused or failed open: the server's status
/// when it sent one, else what went wrong locally.
fn open_error(e: crate::transport::StreamOpenError) -> OpenError {
    match e {
        crate::transport::StreamOpenError::Refused(status) => OpenError::from_code(status.code())
            .err()
            .unwrap_or_else(|| OpenError::General(e.to_string())),
        other => OpenError::General(other.to_string()),
    }
}
