//! The listeners and the accept loops: [`Server::bind`] binds every
//! address (443, or 8443 when 443 is not permitted), and [`Server::run`]
//! accepts, admits each connection within the caps and hands it to
//! `connection` (or `websocket`), then drains on shutdown.

use super::usage::{load_usage, FLEET_USAGE_SYNC};
use super::*;
use tokio::net::TcpSocket;

/// A bound server, ready to run.
pub struct Server {
    listeners: Vec<TcpListener>,
    shared: Arc<ServeShared>,
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
    pub fn bind(config: ServeConfig) -> Result<Server, BindError> {
        // aws-lc-rs seeds its random generator from CPU jitter the first
        // time it is used (a few milliseconds; 0.4 billion instructions
        // under callgrind): here, before the first client, rather than in
        // a client's handshake. The key is thrown away.
        let _ = fake_tls::fresh_key_share();
        let listeners = bind_listen(&config)?;
        let addrs: Vec<SocketAddr> = listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect();
        let now = unix_now();
        let window = config.policy.max_past + config.policy.max_future;
        let metrics_listener = config
            .metrics
            .map(|addr| {
                crate::metrics::bind(addr).map_err(|source| BindError::Listen {
                    flag: "--metrics",
                    addr,
                    source,
                })
            })
            .transpose()?;
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
        let state = shared_state(&config, transport_secret.as_ref())?;
        // With a fleet, usage comes from Redis at start-up (`run`).
        let usage = if state.usage_is_local() {
            load_usage(&config.state_dir)?
        } else {
            Default::default()
        };
        let tunnel_key = transport_secret
            .filter(|_| config.tunnel)
            .map(wire::tunnel::handshake::ServerKey::from_secret);
        let tunnel_public = tunnel_key.as_ref().map(|k| k.public());
        let (ws_listener, ws_path) = match (config.ws_listen, &tunnel_public) {
            (Some(a), Some(public)) => {
                let l = bind(a).map_err(|source| BindError::Listen {
                    flag: "--ws-listen",
                    addr: a,
                    source,
                })?;
                (Some(l), Some(crate::serve::links::ws_path(&config, public)))
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
        let shared = Arc::new(ServeShared {
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
            active: AtomicUsize::new(0),
            metrics,
            tunnel_key,
            sources,
            held,
            search_budget,
            flight_shape: Arc::default(),
            relay_runtime: std::sync::OnceLock::new(),
            braids: transport::Braids::default(),
            egress: crate::serve::egress::Egress::new(own_ports),
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
    pub fn shared(&self) -> Arc<ServeShared> {
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

    /// Serves until `stop` fires, then drains: open connections get
    /// `--drain-timeout` before they are cancelled.
    pub async fn run(self, stop: CancellationToken) {
        let tracker = TaskTracker::new();
        let limit = Arc::new(Semaphore::new(
            self.shared.snapshot().config.max_connections,
        ));
        if let Some(fleet) = self.shared.state.fleet().cloned() {
            fleet_work(&self.shared, fleet, &tracker, &stop).await;
        }
        tracker.spawn(housekeeping(self.shared.clone(), stop.clone()));
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
            tracker.spawn(accept_loop(
                listener,
                ws_path,
                self.shared.clone(),
                limit.clone(),
                stop.clone(),
                tracker.clone(),
            ));
        }
        stop.cancelled().await;
        drain(&self.shared, &tracker).await;
    }
}

/// With a fleet: usage totals and the shared users before the first
/// client (each bounded by the Redis deadline), then a task that pushes
/// usage, refreshes leases and polls the shared users until `stop`.
async fn fleet_work(
    shared: &Arc<ServeShared>,
    fleet: Arc<crate::fleet::Fleet>,
    tracker: &TaskTracker,
    stop: &CancellationToken,
) {
    tracing::info!(
        redis = %crate::fleet::redact_url(&fleet.config.url),
        instance = %fleet.config.instance,
        "sharing replay cache, usage, limits{} through redis",
        if fleet.config.shared_users { " and users" } else { "" }
    );
    shared.sync_usage().await;
    let mut seen = None;
    shared.poll_shared_users(&mut seen).await;
    let shared = shared.clone();
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

/// Every few seconds until `stop`: end expired users, save usage.
async fn housekeeping(shared: Arc<ServeShared>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(HOUSEKEEPING) => {}
            _ = stop.cancelled() => break,
        }
        for name in shared.snapshot().end_expired(unix_now()) {
            tracing::info!(user = %name, "user expired; their connections end");
        }
        if let Err(e) = shared.save_usage() {
            tracing::warn!(error = %e, "cannot save quota usage");
        }
    }
}

/// Accepts on one listener until `stop`: each connection within the
/// connection limit and (on the TLS listeners) its source's cap on
/// unauthenticated connections runs in a task of `conns`; one over the
/// source's cap is held unread, then closed.
async fn accept_loop(
    listener: TcpListener,
    ws_path: Option<Arc<str>>,
    shared: Arc<ServeShared>,
    limit: Arc<Semaphore>,
    stop: CancellationToken,
    conns: TaskTracker,
) {
    loop {
        let Some((permit, stream, peer)) = crate::accept::accept_within(
            &listener,
            &limit,
            &stop,
            |e| tracing::warn!(error = %e, "accept failed"),
        )
        .await
        else {
            break;
        };
        shared.metrics.connections.inc();
        // The per-source caps apply to the TLS listeners; the WebSocket
        // listener's peer is usually the front (a reverse proxy or CDN),
        // one address for every client.
        let source = match ws_path {
            Some(_) => None,
            None => match shared.sources.enter(peer.ip()) {
                Some(g) => Some(g),
                None => {
                    drop(permit);
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
            shared.active.fetch_add(1, Ordering::Relaxed);
            let open = crate::metrics::GaugeGuard::new(&shared.metrics.connections_active);
            match ws_path {
                None => connection::handle(stream, peer, shared.clone(), source).await,
                Some(path) => websocket::handle(stream, peer, shared.clone(), path).await,
            }
            drop(open);
            shared.active.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
}

/// After `stop`: open connections get `--drain-timeout`, then are
/// cancelled; usage is pushed and saved last.
async fn drain(shared: &ServeShared, tracker: &TaskTracker) {
    shared.draining.store(true, Ordering::Relaxed);
    tracker.close();
    let drain = shared.snapshot().config.drain_timeout;
    let open = shared.active.load(Ordering::Relaxed);
    if open > 0 {
        tracing::info!(
            open,
            "stopped accepting; letting open connections finish for up to {drain:?}"
        );
    }
    if tokio::time::timeout(drain, tracker.wait()).await.is_err() {
        shared.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(2), tracker.wait()).await;
    }
    shared.shutdown.cancel();
    // The drained connections' last bytes (bounded by the deadline).
    shared.sync_usage().await;
    if let Err(e) = shared.save_usage() {
        tracing::warn!(error = %e, "cannot save quota usage");
    }
}

/// The TLS listeners: each `--listen` address, or 0.0.0.0:443 with a
/// fallback to 8443 (said so) when 443 needs a privilege we lack.
fn bind_listen(config: &ServeConfig) -> Result<Vec<TcpListener>, BindError> {
    let mut listeners = Vec::new();
    match &config.listen {
        Some(addrs) => {
            for a in addrs {
                let l = bind(*a).map_err(|source| BindError::Listen {
                    flag: "--listen",
                    addr: *a,
                    source,
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
                    listeners.push(bind(fallback).map_err(|source| BindError::Fallback {
                        addr: fallback,
                        source,
                    })?);
                }
                Err(source) => {
                    return Err(BindError::Default {
                        addr: default,
                        source,
                    });
                }
            }
        }
    }
    Ok(listeners)
}

/// Where state shared with other instances lives: Redis with a
/// `[fleet]` (its address hashes keyed by the transport key), else this
/// process.
fn shared_state(
    config: &ServeConfig,
    transport_secret: Option<&[u8; 32]>,
) -> Result<Arc<dyn crate::fleet::SharedState>, BindError> {
    Ok(match (&config.fleet, transport_secret) {
        (Some(f), Some(secret)) => {
            let fleet = crate::fleet::Fleet::start(f.clone())?;
            fleet
                .leases
                .set_address_key(crate::fleet::leases::address_key(secret));
            Arc::new(crate::fleet::Redis(Arc::new(fleet)))
        }
        _ => Arc::new(crate::fleet::InProcess),
    })
}

/// Why `samizdat serve` could not start: each names the flag or file and
/// how to fix it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// A listening socket asked for by `flag`.
    #[error("{flag} {addr}: cannot listen: {source}{}", bind_hint(source))]
    Listen {
        /// `--listen`, `--ws-listen` or `--metrics`.
        flag: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The default address (no `--listen`).
    #[error("cannot listen on {addr}: {source}{}", bind_hint(source))]
    Default {
        /// 0.0.0.0:443.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The fallback port after 443 needed a privilege we lack.
    #[error("cannot listen on {addr} either: {source}; pass --listen ADDR")]
    Fallback {
        /// 0.0.0.0:8443.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The state directory (transport key, usage).
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    /// The `--redis` URL.
    #[error(transparent)]
    Fleet(#[from] crate::fleet::StartError),
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
