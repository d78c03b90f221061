//! `samizdat serve`: listeners, shared state, the accept loop and graceful
//! shutdown. Each accepted connection runs in one task
//! ([`connection::handle`]).
//!
//! This file holds what connections share ([`ServeShared`]: the snapshot of
//! config and users, reloads, replay caches, counters, usage saving);
//! `listener` binds and runs the accept loops ([`Server`]).

pub mod auth;
pub mod config;
pub mod cover;
pub mod dc;
pub mod egress;
pub mod flight_shape;
pub mod links;
pub mod memory;
pub mod pool;
pub mod relay;
pub mod reload;
pub mod resolve;
pub mod sources;
pub mod usage;
pub mod users;

mod connection;
mod listener;
mod transport;
mod websocket;

use crate::serve::config::{ServeConfig, DEFAULT_PORT, FALLBACK_PORT};
pub use listener::Server;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
pub use usage::USAGE_FILE;
use users::Snapshot;
use wire::classify::{CoverReason, ReplayState};
use wire::replay::ReplayCache;

/// Unix time in seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// How often usage is saved and expiry checked.
const HOUSEKEEPING: Duration = Duration::from_secs(5);

/// Most replay-cache entries per generation (about 40 bytes each).
const REPLAY_CAP: usize = 1 << 20;

/// Counters, readable by tests today and exported as metrics later.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Connections from a source over its unauthenticated cap
    /// (`--max-unauthenticated-per-ip`, `--max-unauthenticated-per-subnet`):
    /// held unread, then closed.
    pub refused_over_limit: AtomicU64,
    /// Cold key searches not run because their source had spent its
    /// budget (the hello went to the cover).
    pub cold_searches_refused: AtomicU64,
    /// Connections open right now.
    pub active: AtomicUsize,
    /// Relays to a DC open right now.
    pub relays_active: AtomicUsize,
    /// Fake-TLS hellos that authenticated.
    pub authenticated_tls: AtomicU64,
    /// Bare obfuscated2 inits that authenticated.
    pub authenticated_bare: AtomicU64,
    /// Connections sent to the cover site.
    pub covered: AtomicU64,
    /// Of those, replays.
    pub replays: AtomicU64,
}

impl Stats {
    fn count_cover(&self, reason: CoverReason) {
        self.covered.fetch_add(1, Ordering::Relaxed);
        if reason == CoverReason::Replay {
            self.replays.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Everything connections share. Immutable but for the replay caches,
/// the counters and the buffer pool.
pub struct ServeShared {
    /// Config, users and their live state; swapped whole by a reload.
    current: arc_swap::ArcSwap<Snapshot>,
    /// Replay caches (fake-TLS randoms, bare inits): the first filter, also
    /// with a fleet.
    pub replay: Mutex<ReplayState>,
    /// Where state shared with other instances lives (in-process or Redis).
    pub state: crate::fleet::Backend,
    /// The configuration as loaded (file and flags), before the shared
    /// users are added to it.
    base: Mutex<ServeConfig>,
    /// The shared users last read from the fleet.
    fleet_users: Mutex<Vec<crate::serve::config::UserEntry>>,
    /// One reload at a time (the config file's and the shared table's).
    reloading: Mutex<()>,
    /// Relay buffers.
    pub pool: pool::BufferPool,
    /// Fires on shutdown.
    pub shutdown: CancellationToken,
    /// Counters.
    pub stats: Stats,
    /// Prometheus metrics (exported only with `--metrics`).
    pub metrics: crate::metrics::Metrics,
    /// The samizdat transport's static key (from the state directory), if
    /// the transport is on.
    pub tunnel_key: Option<wire::tunnel::handshake::ServerKey>,
    /// Unauthenticated connections per source.
    pub sources: Arc<sources::Sources>,
    /// Connections of sources over their cap, held unread: at most
    /// `max_connections` of them, beside the served ones.
    held: Arc<Semaphore>,
    /// Cold MTProto key searches: per source and at once.
    pub search_budget: sources::SearchBudget,
    /// The cover site's TLS answer, as samizdat clients get it.
    pub flight_shape: Arc<flight_shape::LearnedShape>,
    /// Where authenticated MTProto relays run once their handshake is done
    /// ([`Server::relay_on`]); unset, they stay on the accepting runtime.
    pub relay_runtime: std::sync::OnceLock<tokio::runtime::Handle>,
    /// samizdat sessions later lanes may join.
    pub braids: transport::Braids,
    /// What samizdat clients' streams share: the host's own addresses and
    /// ports (refused), the resolver, each user's lookup slots.
    pub egress: Arc<crate::serve::egress::Egress>,
    last_cover_warning: AtomicU64,
    last_skew_warning: AtomicU64,
    /// Set when accepting stopped (SIGTERM): `/readyz` says 503.
    draining: std::sync::atomic::AtomicBool,
}

impl ServeShared {
    /// The configuration and users new connections use now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Swaps in a new configuration: users who stay keep their live state,
    /// removed users (or users whose key changed) have their connections
    /// ended, nobody else's connection is touched. Listen and metrics
    /// addresses, threads and the state directory need a restart; they are
    /// reported, not applied.
    pub fn reload(&self, config: ServeConfig) -> Vec<String> {
        let _one = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        self.reload_locked(config)
    }

    fn reload_locked(&self, config: ServeConfig) -> Vec<String> {
        *self.base.lock().unwrap_or_else(|p| p.into_inner()) = config.clone();
        let mut config = config;
        crate::fleet::users::merge(
            &mut config,
            &self.fleet_users.lock().unwrap_or_else(|p| p.into_inner()),
        );
        let old = self.snapshot();
        let mut notes = Vec::new();
        if config.listen != old.config.listen
            || config.metrics != old.config.metrics
            || config.threads != old.config.threads
            || config.state_dir != old.config.state_dir
            || config.max_connections != old.config.max_connections
            || config.source_caps != old.config.source_caps
            || config.fleet != old.config.fleet
            || config.ws_listen != old.config.ws_listen
            || config.transport_key != old.config.transport_key
            || config.tunnel != old.config.tunnel
            || config.ws_path != old.config.ws_path
        {
            notes.push(
                "listen, metrics, threads, state_dir, max_connections, max_unauthenticated_*, [fleet], ws_listen, ws_path, tunnel and transport_key change only on restart"
                    .to_string(),
            );
        }
        let next = Snapshot::build(config, Some(&old), &old.usage(), &self.shutdown);
        let ended = old.end_dropped(&next);
        if !ended.is_empty() {
            notes.push(format!(
                "ended the connections of removed users: {}",
                ended.join(", ")
            ));
        }
        let (before, after) = (old.states.len(), next.states.len());
        self.current.store(Arc::new(next));
        notes.insert(0, format!("reloaded: {after} users (was {before})"));
        notes
    }

    /// Swaps in a new shared user table (from the fleet) over the last
    /// loaded configuration.
    pub fn reload_shared_users(&self, users: Vec<crate::serve::config::UserEntry>) -> Vec<String> {
        let _one = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        *self.fleet_users.lock().unwrap_or_else(|p| p.into_inner()) = users;
        let base = self.base.lock().unwrap_or_else(|p| p.into_inner()).clone();
        self.reload_locked(base)
    }

    /// Reads the shared user table when its version changed since `seen`.
    async fn poll_shared_users(&self, seen: &mut Option<u64>) {
        let Some(fleet) = self.state.fleet() else {
            return;
        };
        if !fleet.config.shared_users {
            return;
        }
        let Ok(version) = fleet.users_version().await else {
            return;
        };
        if *seen == Some(version) {
            return;
        }
        let Ok(users) = fleet.shared_users().await else {
            return;
        };
        *seen = Some(version);
        for note in self.reload_shared_users(users) {
            tracing::info!("shared user table changed: {note}");
        }
    }

    /// Whether this instance should get new connections (for `/readyz`).
    pub fn ready(&self) -> (bool, String) {
        if self.shutdown.is_cancelled() || self.draining.load(Ordering::Relaxed) {
            return (false, "shutting down\n".into());
        }
        match self.state.fleet() {
            None => (true, "ready\n".into()),
            Some(f) if f.is_up() => (true, "ready; redis up\n".into()),
            // Serving on with the configured fallbacks is the point of
            // them; the body says why the replay and limits are local.
            Some(_) => (true, "ready; redis down (fallbacks in force)\n".into()),
        }
    }

    fn rate_limited(slot: &AtomicU64) -> bool {
        let now = unix_now();
        let last = slot.load(Ordering::Relaxed);
        now >= last + 60
            && slot
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    fn warn_cover_unreachable(&self, e: &std::io::Error) {
        if Self::rate_limited(&self.last_cover_warning) {
            tracing::warn!(
                cover = %self.snapshot().config.cover,
                error = %e,
                "cannot reach the cover site, so connections that fail authentication are closed instead of \
                 looking like a web site; fix --cover (or --domain) so that it points at a working HTTPS server"
            );
        }
    }

    /// Serves `--metrics` on `listener` until `stop` fires. The replay
    /// cache sizes are read at each scrape.
    fn spawn_metrics(
        self: &Arc<Self>,
        listener: std::net::TcpListener,
        tracker: &TaskTracker,
        stop: CancellationToken,
    ) {
        let listener = match TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "metrics endpoint not started");
                return;
            }
        };
        if let Ok(addr) = listener.local_addr() {
            tracing::info!("metrics at http://{addr}/metrics");
        }
        let shared = self.clone();
        let body = Arc::new(move || {
            if let Ok(r) = shared.replay.lock() {
                shared
                    .metrics
                    .set_replay_entries(r.tls.len(), r.obfuscated2.len());
            }
            shared.metrics.encode()
        });
        let shared = self.clone();
        let health = Arc::new(move || shared.ready());
        tracker.spawn(crate::metrics::serve(listener, body, health, stop));
    }

    fn warn_clock_skew(&self, skew: i64) {
        if Self::rate_limited(&self.last_skew_warning) {
            tracing::warn!(
                skew_secs = skew,
                "a client with a valid key sent a timestamp outside the accepted window (or a replay of an old \
                 hello); if this repeats, check this server's clock (NTP)"
            );
        }
    }
}
