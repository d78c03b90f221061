//! `samizdat serve`: listeners, shared state, the accept loop and graceful
//! shutdown. Each accepted connection runs in one task.
//!
//! One MTProto connection, in file order: `listener` (accept, caps) →
//! `connection` (read the first flight, keep the cover warm, splice to the
//! cover if not ours) → `admit` (classify with `wire`, key search in
//! `auth`, replay caches, the user's limits) → `fake_tls` (the server
//! flight and the inner init) → `dc` (connect, our own obfuscated2) →
//! `relay` (the pumps, charged by `meter`).
//!
//! | module | job |
//! |---|---|
//! | [`config`] | flags + TOML file → one validated [`config::ServeConfig`] |
//! | `listener` | bind, accept loops, the drain ([`Server`]) |
//! | `connection` | one TCP connection: first flight, cover warm-up and splice |
//! | `fake_tls` | the answer to an authenticated `ee` hello, and its inner init |
//! | `websocket` | `--ws-listen`: the WebSocket listener behind a reverse proxy or CDN |
//! | [`admit`] | the one admission path: classify, replay (local, fleet), user limits, cover accounting |
//! | [`auth`] | key search order (hints, domains), time slices, the cold-search budget |
//! | [`sources`] | per-source caps on unauthenticated connections |
//! | [`users`] | per-user limits and live state, the config snapshot |
//! | `transport` | a samizdat client's lanes and session; its streams to egress or a DC |
//! | [`egress`], [`resolve`] | where a samizdat client's stream may go, and the resolver |
//! | [`dc`] | the Telegram DC table and overrides; the one DC dialer, for MTProto relays and transport streams |
//! | [`cover`] | the cover site: address and connect |
//! | [`flight_shape`] | the cover's measured TLS answer, for the transport's flight |
//! | [`relay`], [`pool`] | readiness pumps; their borrowed buffers |
//! | [`meter`] | charging users' bytes: quota and rate, for relays and transport streams |
//! | [`usage`], [`reload`], [`memory`] | usage saving, live reload, giving memory back |
//! | [`links`] | the links printed at start |
//!
//! This file holds what connections share ([`ServeShared`]: the snapshot of
//! config and users, reloads, replay caches, shared state, the open count).

pub mod admit;
pub mod auth;
pub mod config;
pub mod cover;
pub mod dc;
pub mod egress;
mod fake_tls;
pub mod flight_shape;
pub mod links;
pub mod memory;
pub mod meter;
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
use crate::sync::Locked;
pub use listener::{BindError, Server};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
pub use usage::USAGE_FILE;
use users::Snapshot;
use wire::classify::ReplayState;
use wire::replay::ReplayCache;

use crate::clock::unix_now;

/// How often usage is saved and expiry checked.
const HOUSEKEEPING: Duration = Duration::from_secs(5);

/// Most replay-cache entries per generation (about 40 bytes each).
const REPLAY_CAP: usize = 1 << 20;

/// Everything connections share. Immutable but for the replay caches,
/// the counters and the buffer pool.
pub struct ServeShared {
    /// Config, users and their live state; swapped whole by a reload.
    current: arc_swap::ArcSwap<Snapshot>,
    /// Replay caches (fake-TLS randoms, bare inits): the first filter, also
    /// with a fleet.
    pub replay: Mutex<ReplayState>,
    /// Where state shared with other instances lives (in-process or Redis).
    pub state: Arc<dyn crate::fleet::SharedState>,
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
    /// Connections open right now (the drain waits for them; the memory
    /// release watches them fall). Everything else is counted in
    /// [`crate::metrics`].
    pub active: AtomicUsize,
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
        let _one = self.reloading.locked();
        self.reload_locked(config)
    }

    fn reload_locked(&self, config: ServeConfig) -> Vec<String> {
        *self.base.locked() = config.clone();
        let mut config = config;
        crate::fleet::users::merge(&mut config, &self.fleet_users.locked());
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
        let _one = self.reloading.locked();
        *self.fleet_users.locked() = users;
        let base = self.base.locked().clone();
        self.reload_locked(base)
    }

    /// Reads the shared user table when its version changed since `seen`.
    async fn poll_shared_users(&self, seen: &mut Option<u64>) {
        if let Some(users) = self.state.users(seen).await {
            for note in self.reload_shared_users(users) {
                tracing::info!("shared user table changed: {note}");
            }
        }
    }

    /// Whether this instance should get new connections (for `/readyz`).
    pub fn ready(&self) -> (bool, String) {
        if self.shutdown.is_cancelled() || self.draining.load(Ordering::Relaxed) {
            return (false, "shutting down\n".into());
        }
        (true, format!("{}\n", self.state.readiness()))
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
