//! `samizdat serve`: listeners, shared state, the accept loop and graceful
//! shutdown. Each accepted connection runs in one task
//! ([`connection::handle`]).

pub mod auth;
pub mod cover;
pub mod dc;
pub mod flight_shape;
pub mod pool;
pub mod relay;
pub mod sources;
pub mod users;

mod connection;
mod tunnel;
mod websocket;

use crate::config::{ServeConfig, DEFAULT_PORT, FALLBACK_PORT};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
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

/// Per-user byte usage inside the state directory.
pub const USAGE_FILE: &str = "usage.toml";

/// How often usage is saved and expiry checked.
const HOUSEKEEPING: Duration = Duration::from_secs(5);

/// Reads the usage file; a missing file is no usage, a broken one is an error.
fn load_usage(dir: &std::path::Path) -> anyhow::Result<std::collections::BTreeMap<String, u64>> {
    let path = dir.join(USAGE_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "{}: {e}; fix it, or delete it to reset every user's quota usage",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Default::default()),
        Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
    }
}

/// Users per pipelined usage push (bounds one request's size).
const USAGE_BATCH: usize = 500;

/// How often usage is pushed to (and read from) the fleet.
const FLEET_USAGE_SYNC: Duration = Duration::from_secs(1);

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
pub struct Shared {
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
    fleet_users: Mutex<Vec<crate::config::UserEntry>>,
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
    pub braids: tunnel::Braids,
    /// What samizdat clients' streams share: the host's own addresses and
    /// ports (refused), the resolver, each user's lookup slots.
    pub egress: Arc<crate::proxy::egress::Egress>,
    last_cover_warning: AtomicU64,
    last_skew_warning: AtomicU64,
    /// Set when accepting stopped (SIGTERM): `/readyz` says 503.
    draining: std::sync::atomic::AtomicBool,
}

impl Shared {
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
    pub fn reload_shared_users(&self, users: Vec<crate::config::UserEntry>) -> Vec<String> {
        let _one = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        *self.fleet_users.lock().unwrap_or_else(|p| p.into_inner()) = users;
        let base = self.base.lock().unwrap_or_else(|p| p.into_inner()).clone();
        self.reload_locked(base)
    }

    /// Pushes each user's new bytes to the fleet and reads the totals
    /// back; on failure the bytes wait for the next push.
    pub async fn sync_usage(&self) {
        let Some(fleet) = self.state.fleet() else {
            return;
        };
        let snap = self.snapshot();
        for chunk in snap.states.chunks(USAGE_BATCH) {
            let deltas: Vec<(&str, u64)> = chunk
                .iter()
                .map(|u| (u.name.as_str(), u.take_pending()))
                .collect();
            match fleet.add_usage_many(&deltas).await {
                Ok(totals) => {
                    for (user, total) in chunk.iter().zip(totals) {
                        if user.set_fleet_usage(total) {
                            tracing::info!(user = %user.name, "fleet-wide quota used up; their connections end");
                        }
                    }
                }
                Err(_) => {
                    // Counted again with the next push: nothing is lost.
                    for (user, (_, delta)) in chunk.iter().zip(deltas) {
                        user.unpushed(delta);
                    }
                    break;
                }
            }
        }
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

    fn usage_path(&self) -> std::path::PathBuf {
        self.snapshot().config.state_dir.join(USAGE_FILE)
    }

    /// Writes every user's byte usage to the state directory (atomically).
    pub fn save_usage(&self) -> std::io::Result<()> {
        if self.state.fleet().is_some() {
            // With a fleet, usage lives in Redis.
            return Ok(());
        }
        let usage = self.snapshot().usage();
        if usage.values().all(|&b| b == 0) && !self.usage_path().exists() {
            return Ok(());
        }
        let text = format!(
            "# Bytes used per user, kept across restarts for quotas. Written by samizdat serve.\n{}",
            toml::to_string(&usage).map_err(std::io::Error::other)?
        );
        let path = self.usage_path();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        crate::state::replace_private(&path, text.as_bytes())
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

/// A bound server, ready to run.
pub struct Server {
    listeners: Vec<TcpListener>,
    shared: Arc<Shared>,
    /// Bound addresses (with real ports when 0 was asked for).
    pub addrs: Vec<SocketAddr>,
    metrics_listener: Option<std::net::TcpListener>,
    /// The bound `--metrics` address, if any.
    pub metrics_addr: Option<SocketAddr>,
    /// The samizdat transport's public key (for `samizdat://` links), if
    /// the transport is on.
    pub tunnel_public: Option<[u8; 32]>,
    /// The `--ws-listen` listener (plain HTTP, WebSocket upgrades).
    ws_listener: Option<TcpListener>,
    /// Its bound address, if any.
    pub ws_addr: Option<SocketAddr>,
    /// The path it upgrades (`--ws-path`, or derived from the key).
    pub ws_path: Option<String>,
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

impl Server {
    /// Binds the listeners. Without `--listen`, tries 0.0.0.0:443 and falls
    /// back to 8443 when 443 may not be bound, saying so.
    pub fn bind(config: ServeConfig) -> anyhow::Result<Server> {
        // aws-lc-rs seeds its random generator from CPU jitter the first
        // time it is used (a few milliseconds; 0.4 billion instructions
        // under callgrind): here, before the first client, rather than in
        // a client's handshake. The key is thrown away.
        let _ = connection::fresh_key_share();
        let mut listeners = Vec::new();
        match &config.listen {
            Some(addrs) => {
                for a in addrs {
                    let l = bind(*a).map_err(|e| {
                        anyhow::anyhow!("--listen {a}: cannot listen: {e}{}", bind_hint(&e))
                    })?;
                    listeners.push(l);
                }
            }
            None => {
                let default = SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT));
                match bind(default) {
                    Ok(l) => listeners.push(l),
                    Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                        let fallback = SocketAddr::from(([0, 0, 0, 0], FALLBACK_PORT));
                        tracing::warn!(
                            "port {DEFAULT_PORT} needs root or CAP_NET_BIND_SERVICE; listening on {FALLBACK_PORT} instead \
                             (a cover site on 443 is less suspicious: see --listen)"
                        );
                        listeners.push(bind(fallback).map_err(|e| {
                            anyhow::anyhow!(
                                "cannot listen on {fallback} either: {e}; pass --listen ADDR"
                            )
                        })?);
                    }
                    Err(e) => {
                        return Err(anyhow::anyhow!(
                            "cannot listen on {default}: {e}{}",
                            bind_hint(&e)
                        ));
                    }
                }
            }
        }
        let addrs: Vec<SocketAddr> = listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect();
        let now = unix_now();
        let window = config.policy.max_past + config.policy.max_future;
        let metrics_listener = config.metrics.map(crate::metrics::bind).transpose()?;
        let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());
        let metrics = crate::metrics::Metrics::new(config.users.iter().map(|u| u.name.as_str()));
        // The transport key also keys the fleet's client-address hashes
        // (`fleet::leases`): loaded for a fleet even without the transport.
        let transport_secret = if config.tunnel || config.fleet.is_some() {
            Some(crate::state::transport_key(
                config.transport_key.as_deref(),
                &config.state_dir,
            )?)
        } else {
            None
        };
        let state = match (&config.fleet, &transport_secret) {
            (Some(f), Some(secret)) => {
                let fleet = crate::fleet::Fleet::start(f.clone())?;
                fleet
                    .leases
                    .set_address_key(crate::fleet::leases::address_key(secret));
                crate::fleet::Backend::Redis(Arc::new(fleet))
            }
            _ => crate::fleet::Backend::InProcess,
        };
        // With a fleet, usage comes from Redis at start-up (`run`).
        let usage = match state {
            crate::fleet::Backend::InProcess => load_usage(&config.state_dir)?,
            crate::fleet::Backend::Redis(_) => Default::default(),
        };
        let tunnel_key = transport_secret
            .filter(|_| config.tunnel)
            .map(wire::tunnel::handshake::ServerKey::from_secret);
        let tunnel_public = tunnel_key.as_ref().map(|k| k.public());
        let (ws_listener, ws_path) = match (config.ws_listen, &tunnel_public) {
            (Some(a), Some(public)) => {
                let l = bind(a).map_err(|e| {
                    anyhow::anyhow!("--ws-listen {a}: cannot listen: {e}{}", bind_hint(&e))
                })?;
                (Some(l), Some(crate::links::ws_path(&config, public)))
            }
            _ => (None, None),
        };
        let ws_addr = ws_listener.as_ref().and_then(|l| l.local_addr().ok());
        // Our own ports, which no stream may reach on a non-public address.
        let own_ports = addrs
            .iter()
            .chain(&metrics_addr)
            .chain(&ws_addr)
            .map(SocketAddr::port)
            .collect();
        let shutdown = CancellationToken::new();
        let sources = sources::Sources::new(config.source_caps);
        let held = Arc::new(Semaphore::new(config.max_connections));
        // About one cold search per core: more at once only share the
        // cores, and would let a flood of them delay everyone's.
        let cores = config.threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        });
        let search_budget = sources::SearchBudget::new(cores);
        let base = Mutex::new(config.clone());
        let shared = Arc::new(Shared {
            current: arc_swap::ArcSwap::from_pointee(Snapshot::build(
                config, None, &usage, &shutdown,
            )),
            state,
            base,
            fleet_users: Mutex::new(Vec::new()),
            reloading: Mutex::new(()),
            replay: Mutex::new(ReplayState {
                tls: ReplayCache::new(now, window.max(1), REPLAY_CAP),
                obfuscated2: ReplayCache::new(now, 0, REPLAY_CAP),
            }),
            pool: pool::BufferPool::new(64),
            shutdown,
            stats: Stats::default(),
            metrics,
            tunnel_key,
            sources,
            held,
            search_budget,
            flight_shape: Arc::default(),
            relay_runtime: std::sync::OnceLock::new(),
            braids: tunnel::Braids::default(),
            egress: crate::proxy::egress::Egress::new(own_ports),
            last_cover_warning: AtomicU64::new(0),
            last_skew_warning: AtomicU64::new(0),
            draining: std::sync::atomic::AtomicBool::new(false),
        });
        Ok(Server {
            listeners,
            shared,
            addrs,
            metrics_listener,
            metrics_addr,
            tunnel_public,
            ws_listener,
            ws_addr,
            ws_path,
        })
    }

    /// The shared state (for tests and metrics).
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Accepts until `stop` fires, then stops accepting and lets open
    /// connections finish for at most the drain timeout.
    /// Runs the MTProto relays on `rt` instead of the runtime that
    /// accepts and runs handshakes.
    ///
    /// A relay streaming at full speed is always ready to run; on one
    /// runtime, every step of a new connection's handshake (accept, the
    /// hello, the DC's answer) waits in the run queue behind a turn of
    /// every busy relay. On a runtime of their own, the handshake threads
    /// sleep between events, and the kernel runs a thread that wakes from
    /// sleep ahead of ones that have been busy (issue 14, item 11;
    /// BENCHMARKS.md, "Set-up under load").
    pub fn relay_on(&self, rt: tokio::runtime::Handle) {
        let _ = self.shared.relay_runtime.set(rt);
    }

    pub async fn run(self, stop: CancellationToken) {
        let tracker = TaskTracker::new();
        let limit = Arc::new(Semaphore::new(
            self.shared.snapshot().config.max_connections,
        ));
        if let Some(fleet) = self.shared.state.fleet().cloned() {
            tracing::info!(
                redis = %crate::fleet::redact_url(&fleet.config.url),
                instance = %fleet.config.instance,
                "sharing replay cache, usage, limits{} through redis",
                if fleet.config.shared_users { " and users" } else { "" }
            );
            // Usage totals and the shared users before the first client,
            // each bounded by the Redis deadline.
            self.shared.sync_usage().await;
            let mut seen = None;
            self.shared.poll_shared_users(&mut seen).await;
            let shared = self.shared.clone();
            let until = stop.clone();
            tracker.spawn(async move {
                let mut usage = tokio::time::interval(FLEET_USAGE_SYNC);
                let mut leases = tokio::time::interval(fleet.config.lease / 3);
                let mut users = tokio::time::interval(crate::fleet::users::POLL);
                for t in [&mut usage, &mut leases, &mut users] {
                    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                }
                loop {
                    tokio::select! {
                        _ = usage.tick() => {
                            shared.sync_usage().await;
                            fleet.retry_releases().await;
                        }
                        _ = leases.tick() => fleet.refresh_leases().await,
                        _ = users.tick() => shared.poll_shared_users(&mut seen).await,
                        _ = until.cancelled() => break,
                    }
                }
                // Push what was counted since the last tick.
                shared.sync_usage().await;
            });
        }
        let housekeeping = self.shared.clone();
        let until = stop.clone();
        tracker.spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(HOUSEKEEPING) => {}
                    _ = until.cancelled() => break,
                }
                for name in housekeeping.snapshot().end_expired(unix_now()) {
                    tracing::info!(user = %name, "user expired; their connections end");
                }
                if let Err(e) = housekeeping.save_usage() {
                    tracing::warn!(error = %e, "cannot save quota usage");
                }
            }
        });
        if self.shared.tunnel_key.is_some() {
            let shared = self.shared.clone();
            tracker.spawn(flight_shape::run(
                self.shared.flight_shape.clone(),
                move || {
                    let snap = shared.snapshot();
                    let sni = snap
                        .config
                        .policy
                        .domains
                        .first()
                        .cloned()
                        .unwrap_or_default();
                    (snap.config.cover.clone(), sni)
                },
                stop.clone(),
            ));
        }
        if let Some(l) = self.metrics_listener {
            self.shared.spawn_metrics(l, &tracker, stop.clone());
        }
        let ws = self
            .ws_listener
            .zip(self.ws_path.map(Arc::<str>::from))
            .map(|(l, path)| (l, Some(path)));
        let plain = self.listeners.into_iter().map(|l| (l, None));
        for (listener, ws_path) in plain.chain(ws) {
            let shared = self.shared.clone();
            let limit = limit.clone();
            let stop = stop.clone();
            let conns = tracker.clone();
            tracker.spawn(async move {
                loop {
                    // A slot first: when every slot is taken, connections
                    // wait in the kernel's accept queue (the listen backlog)
                    // instead of being accepted and closed, which a prober
                    // would see and which locks out real clients.
                    let permit = tokio::select! {
                        p = limit.clone().acquire_owned() => match p {
                            Ok(p) => p,
                            Err(_) => break,
                        },
                        _ = stop.cancelled() => break,
                    };
                    let accepted = tokio::select! {
                        r = listener.accept() => r,
                        _ = stop.cancelled() => break,
                    };
                    let (stream, peer) = match accepted {
                        Ok(x) => x,
                        Err(e) => {
                            // EMFILE and friends: back off instead of spinning.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    shared.stats.accepted.fetch_add(1, Ordering::Relaxed);
                    shared.metrics.connections.inc();
                    // The per-source caps apply to the TLS listeners; the
                    // WebSocket listener's peer is usually the front (a
                    // reverse proxy or CDN), one address for every client.
                    let source = match ws_path {
                        Some(_) => None,
                        None => match shared.sources.enter(peer.ip()) {
                            Some(g) => Some(g),
                            None => {
                                drop(permit);
                                shared
                                    .stats
                                    .refused_over_limit
                                    .fetch_add(1, Ordering::Relaxed);
                                shared.metrics.connections_refused.inc();
                                if let Ok(held) = shared.held.clone().try_acquire_owned() {
                                    let shared = shared.clone();
                                    conns.spawn(async move {
                                        connection::hold(stream, &shared).await;
                                        drop(held);
                                    });
                                }
                                continue;
                            }
                        },
                    };
                    let shared = shared.clone();
                    let ws_path = ws_path.clone();
                    conns.spawn(async move {
                        shared.stats.active.fetch_add(1, Ordering::Relaxed);
                        let open =
                            crate::metrics::GaugeGuard::new(&shared.metrics.connections_active);
                        match ws_path {
                            None => connection::handle(stream, peer, shared.clone(), source).await,
                            Some(path) => {
                                websocket::handle(stream, peer, shared.clone(), path).await
                            }
                        }
                        drop(open);
                        shared.stats.active.fetch_sub(1, Ordering::Relaxed);
                        drop(permit);
                    });
                }
            });
        }
        stop.cancelled().await;
        self.shared.draining.store(true, Ordering::Relaxed);
        tracker.close();
        let drain = self.shared.snapshot().config.drain_timeout;
        let open = self.shared.stats.active.load(Ordering::Relaxed);
        if open > 0 {
            tracing::info!(
                open,
                "stopped accepting; letting open connections finish for up to {drain:?}"
            );
        }
        if tokio::time::timeout(drain, tracker.wait()).await.is_err() {
            self.shared.shutdown.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(2), tracker.wait()).await;
        }
        self.shared.shutdown.cancel();
        // The drained connections' last bytes (bounded by the deadline).
        self.shared.sync_usage().await;
        if let Err(e) = self.shared.save_usage() {
            tracing::warn!(error = %e, "cannot save quota usage");
        }
    }
}

fn bind_hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => {
            "; ports below 1024 need root or CAP_NET_BIND_SERVICE (setcap cap_net_bind_service=+ep $(which samizdat))"
        }
        std::io::ErrorKind::AddrInUse => "; another program uses this port (ss -ltnp shows which)",
        std::io::ErrorKind::AddrNotAvailable => "; this machine has no such address",
        _ => "",
    }
}
