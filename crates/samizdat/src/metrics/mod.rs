//! Prometheus metrics (`--metrics ADDR`): one registry, typed metric
//! families and a tiny HTTP endpoint serving `GET /metrics` as OpenMetrics
//! text.
//!
//! Off by default. When on it should listen on loopback: the numbers show
//! who uses the proxy and how much (user names, never keys).
//!
//! Hot-path rules: every per-user handle is resolved once at start (users
//! are fixed for the life of the server) and indexed by user number, so a
//! connection never looks a label set up; relay byte counts are added once
//! when a relay ends (a long relay shows its bytes only at its end).
//!
//! The endpoint is a minimal HTTP/1.1 responder over tokio rather than
//! hyper: one route, one method, no keep-alive and no request body, for a
//! scraper on loopback. That keeps about ten crates (hyper, hyper-util,
//! http, http-body, httparse, …) out of a binary that serves no other HTTP.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wire::http1::{self, Head};

/// Content type of the answer (what `prometheus-client` encodes).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Handshake outcomes, as the `outcome` label: the successes (MTProto
/// fake-TLS, MTProto obfuscated2, a new samizdat-transport session, a
/// connection joining one as a lane), then every
/// [`wire::classify::CoverReason::name`] (all sent to the cover).
pub const OUTCOMES: [&str; 17] = [
    "ok_tls",
    "ok_obfuscated2",
    "ok_tunnel",
    "ok_tunnel_lane",
    "bad_hmac",
    "bad_init",
    "replay",
    "bad_timestamp",
    "unknown_sni",
    "unrecognised",
    "bad_hello",
    "trailing_data",
    "limit_connections",
    "limit_ips",
    "limit_quota",
    "expired",
    "fleet_down",
];

/// Upper bounds of the DC connect latency buckets, seconds.
const DC_CONNECT_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UserLabels {
    user: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UserDirectionLabels {
    user: String,
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DcLabels {
    /// The absolute DC number (media DC -2 counts as 2) when it is one of
    /// [`DC_LABELS`], else `other`.
    dc_id: &'static str,
}

/// The `dc_id` values: Telegram's production DCs 1–5, the CDN DC 203 and
/// the test DCs 10001–10003 (`serve/dc.rs`). Any other id a client asks
/// for (which reaches a DC only with `--dc-override` or `--dc`) is counted
/// as `other`, so a client cannot grow the label set.
pub const DC_LABELS: [(u16, &str); 9] = [
    (1, "1"),
    (2, "2"),
    (3, "3"),
    (4, "4"),
    (5, "5"),
    (203, "203"),
    (10001, "10001"),
    (10002, "10002"),
    (10003, "10003"),
];

fn dc_label(dc: i16) -> DcLabels {
    let abs = dc.unsigned_abs();
    let dc_id = DC_LABELS
        .iter()
        .find(|(id, _)| *id == abs)
        .map_or("other", |(_, name)| name);
    DcLabels { dc_id }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// One user's handles, resolved at start.
#[derive(Debug, Clone, Default)]
pub struct UserMetrics {
    /// Authenticated connections that reached the DC step.
    pub connections: Counter,
    /// Of those, open now.
    pub active: Gauge,
    /// Payload bytes client → DC.
    pub from_client: Counter,
    /// Payload bytes DC → client.
    pub to_client: Counter,
}

/// Every metric `serve` exports, and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    /// Connections accepted.
    pub connections: Counter,
    /// Connections open now.
    pub connections_active: Gauge,
    /// Connections from a source over its cap on unauthenticated
    /// connections (held unread, then closed).
    pub connections_refused: Counter,
    /// Connections spliced to the cover site (the cover was reached).
    pub cover_splices: Counter,
    /// Relays to a DC open now.
    pub relays_active: Gauge,
    outcomes: Vec<(&'static str, Counter)>,
    user_connections: Family<UserLabels, Counter>,
    user_active: Family<UserLabels, Gauge>,
    user_bytes: Family<UserDirectionLabels, Counter>,
    dc_connect: Family<DcLabels, Histogram, fn() -> Histogram>,
    dc_connect_errors: Family<DcLabels, Counter>,
    replay_entries: Family<KindLabels, Gauge>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn dc_histogram() -> Histogram {
    Histogram::new(DC_CONNECT_BUCKETS)
}

impl Metrics {
    /// Registers every family; `users` are the user names in user-index
    /// order.
    pub fn new<'a>(users: impl IntoIterator<Item = &'a str>) -> Metrics {
        let mut registry = Registry::with_prefix("samizdat");
        let connections = Counter::default();
        registry.register(
            "connections",
            "Client connections accepted",
            connections.clone(),
        );
        let connections_active = Gauge::default();
        registry.register(
            "connections_active",
            "Client connections open now",
            connections_active.clone(),
        );
        let connections_refused = Counter::default();
        registry.register(
            "connections_refused",
            "Connections from a source over its cap on unauthenticated connections (held unread, closed at the handshake deadline)",
            connections_refused.clone(),
        );
        let handshakes = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "handshakes",
            "Handshake outcomes: ok_tls, ok_obfuscated2, ok_tunnel and ok_tunnel_lane authenticated, every other outcome was sent to the cover site",
            handshakes.clone(),
        );
        let outcomes = OUTCOMES
            .iter()
            .map(|&outcome| {
                let c = handshakes.get_or_create(&OutcomeLabels { outcome }).clone();
                (outcome, c)
            })
            .collect();
        let cover_splices = Counter::default();
        registry.register(
            "cover_splices",
            "Connections spliced to the cover site (the cover site was reached)",
            cover_splices.clone(),
        );
        let user_connections = Family::<UserLabels, Counter>::default();
        registry.register(
            "user_connections",
            "Authenticated connections per user",
            user_connections.clone(),
        );
        let user_active = Family::<UserLabels, Gauge>::default();
        registry.register(
            "user_connections_active",
            "Authenticated connections open now per user",
            user_active.clone(),
        );
        let user_bytes = Family::<UserDirectionLabels, Counter>::default();
        registry.register(
            "user_bytes",
            "Payload bytes per user and direction (from_client, to_client), added when a relay ends",
            user_bytes.clone(),
        );
        for name in users {
            // Registered at start so every user shows, with zeros.
            let _ = Self::user_handles(&user_connections, &user_active, &user_bytes, name);
        }
        let dc_connect =
            Family::<DcLabels, Histogram, fn() -> Histogram>::new_with_constructor(dc_histogram);
        registry.register(
            "dc_connect_seconds",
            "Time to connect to a Telegram DC, seconds",
            dc_connect.clone(),
        );
        let dc_connect_errors = Family::<DcLabels, Counter>::default();
        registry.register(
            "dc_connect_errors",
            "Failed or timed-out connects to a Telegram DC address",
            dc_connect_errors.clone(),
        );
        let replay_entries = Family::<KindLabels, Gauge>::default();
        registry.register(
            "replay_cache_entries",
            "Entries in the replay caches (tls: hello randoms, obfuscated2: bare inits)",
            replay_entries.clone(),
        );
        let relays_active = Gauge::default();
        registry.register(
            "relays_active",
            "Relays to a Telegram DC open now",
            relays_active.clone(),
        );
        Metrics {
            registry,
            connections,
            connections_active,
            connections_refused,
            cover_splices,
            relays_active,
            outcomes,
            user_connections,
            user_active,
            user_bytes,
            dc_connect,
            dc_connect_errors,
            replay_entries,
        }
    }

    /// Counts one handshake outcome (a name from [`OUTCOMES`]).
    pub fn handshake(&self, outcome: &str) {
        if let Some((_, c)) = self.outcomes.iter().find(|(o, _)| *o == outcome) {
            c.inc();
        }
    }

    fn user_handles(
        connections: &Family<UserLabels, Counter>,
        active: &Family<UserLabels, Gauge>,
        bytes: &Family<UserDirectionLabels, Counter>,
        name: &str,
    ) -> UserMetrics {
        let user = UserLabels {
            user: name.to_string(),
        };
        let dir = |direction| {
            bytes
                .get_or_create(&UserDirectionLabels {
                    user: name.to_string(),
                    direction,
                })
                .clone()
        };
        UserMetrics {
            connections: connections.get_or_create(&user).clone(),
            active: active.get_or_create(&user).clone(),
            from_client: dir("from_client"),
            to_client: dir("to_client"),
        }
    }

    /// The handles of the user called `name`: resolve once per connection,
    /// then only atomics are touched. Users added by a reload appear here
    /// on their first connection.
    pub fn user(&self, name: &str) -> UserMetrics {
        Self::user_handles(
            &self.user_connections,
            &self.user_active,
            &self.user_bytes,
            name,
        )
    }

    /// Records a successful DC connect that took `took`.
    pub fn dc_connected(&self, dc: i16, took: Duration) {
        self.dc_connect
            .get_or_create(&dc_label(dc))
            .observe(took.as_secs_f64());
    }

    /// Counts a failed connect to one of a DC's addresses.
    pub fn dc_connect_failed(&self, dc: i16) {
        self.dc_connect_errors.get_or_create(&dc_label(dc)).inc();
    }

    /// Sets the replay cache sizes (read at scrape time).
    pub fn set_replay_entries(&self, tls: usize, obfuscated2: usize) {
        for (kind, n) in [("tls", tls), ("obfuscated2", obfuscated2)] {
            self.replay_entries
                .get_or_create(&KindLabels { kind })
                .set(n.try_into().unwrap_or(i64::MAX));
        }
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Decrements a gauge when dropped (an open-connection count that stays
/// right on every early return).
pub struct GaugeGuard(Gauge);

impl GaugeGuard {
    /// Increments `gauge` now and decrements it on drop.
    pub fn new(gauge: &Gauge) -> GaugeGuard {
        gauge.inc();
        GaugeGuard(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Longest request head read.
const MAX_REQUEST: usize = 8 * 1024;
/// Time a client has to send its request head (a scraper or a probe sends
/// it at once).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Time to read a request and write its answer, in all.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);
/// Connections served at once; more wait in the kernel's accept queue.
/// Each holds at most a request head and a read chunk (~9 KiB).
const MAX_OPEN: usize = 256;
/// Of those, from one address (IPv4, or IPv6 /64); more from it are closed
/// at once. A scraper, the kubelet's probes and an operator's curl each
/// need one or two, and one client with slow connections cannot take the
/// slots the liveness probe needs.
const MAX_PER_SOURCE: usize = 8;

/// Serves `GET /metrics` on `listener` until `stop` fires. `body` is called
/// for each scrape.
pub async fn serve(
    listener: TcpListener,
    body: Arc<dyn Fn() -> String + Send + Sync>,
    health: Arc<Health>,
    stop: CancellationToken,
) {
    use crate::serve::sources::{SourceCaps, Sources};
    let tracker = TaskTracker::new();
    let limit = Arc::new(tokio::sync::Semaphore::new(MAX_OPEN));
    let sources = Sources::new(SourceCaps {
        per_ip: MAX_PER_SOURCE,
        per_subnet: MAX_OPEN,
    });
    loop {
        let Some((permit, stream, peer)) = crate::accept::accept_within(
            &listener,
            &limit,
            &stop,
            |e| tracing::debug!(error = %e, "metrics: accept failed"),
        )
        .await
        else {
            break;
        };
        let Some(counted) = sources.enter(peer.ip()) else {
            tracing::debug!("metrics: too many open connections from one address; closed one");
            continue;
        };
        let body = body.clone();
        let health = health.clone();
        let stop = stop.clone();
        tracker.spawn(async move {
            // The whole answer is bounded too: a client that sends its
            // request and never reads the (possibly large) body does not
            // keep the slot.
            tokio::select! {
                _ = tokio::time::timeout(ANSWER_TIMEOUT, answer(stream, &*body, &*health)) => {}
                _ = stop.cancelled() => {}
            }
            drop((counted, permit));
        });
    }
    tracker.close();
    tracker.wait().await;
}

/// Reads one request head and answers it, then closes.
async fn answer(mut s: TcpStream, body: &(dyn Fn() -> String + Send + Sync), health: &Health) {
    let mut head = Vec::with_capacity(1024);
    let read = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let mut chunk = [0u8; 1024];
        loop {
            match http1::find_head(&head, MAX_REQUEST) {
                Head::NeedMore => {}
                done => return Some(done),
            }
            let want = (MAX_REQUEST - head.len()).min(chunk.len());
            match s.read(&mut chunk[..want]).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => head.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    let (status, content_type, text) = match read {
        Ok(Some(Head::Complete { .. })) => route(&head, body, health),
        Ok(Some(Head::TooLarge)) => (
            "431 Request Header Fields Too Large",
            "text/plain",
            String::new(),
        ),
        _ => return,
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        text.len()
    );
    let mut out = response.into_bytes();
    if !head.starts_with(b"HEAD ") {
        out.extend_from_slice(text.as_bytes());
    }
    let _ = s.write_all(&out).await;
    let _ = s.shutdown().await;
}

/// `/readyz`: whether to send this instance new connections, and why.
pub type Health = dyn Fn() -> (bool, String) + Send + Sync;

fn route(
    head: &[u8],
    body: &(dyn Fn() -> String + Send + Sync),
    health: &Health,
) -> (&'static str, &'static str, String) {
    let Ok(line) = http1::request_line(head) else {
        return ("400 Bad Request", "text/plain", "bad request\n".into());
    };
    if !matches!(line.method, "GET" | "HEAD") {
        return ("405 Method Not Allowed", "text/plain", "use GET\n".into());
    }
    match line.path() {
        "/metrics" => ("200 OK", CONTENT_TYPE, body()),
        // Liveness: the process answers.
        "/healthz" => ("200 OK", "text/plain", "ok\n".into()),
        // Readiness: not while draining.
        "/readyz" => match health() {
            (true, why) => ("200 OK", "text/plain", why),
            (false, why) => ("503 Service Unavailable", "text/plain", why),
        },
        _ => (
            "404 Not Found",
            "text/plain",
            "samizdat metrics are at /metrics (health: /healthz, /readyz)\n".into(),
        ),
    }
}

/// Binds the metrics listener, warning when it is not on loopback.
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    if !addr.ip().is_loopback() {
        tracing::warn!(
            %addr,
            "metrics listen on a non-loopback address: they reveal who uses this proxy and how much; \
             keep them on 127.0.0.1 or firewall the port"
        );
    }
    let l = std::net::TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

#[cfg(test)]
mod tests;
