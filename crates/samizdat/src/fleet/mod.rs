//! Fleet state: what several `serve` instances share.
//!
//! One interface ([`SharedState`]), two implementations: in-process (the default: no
//! setup, every check is this instance's own) and Redis (`--redis URL`).
//! The local checks always run first; the Redis backend adds the fleet-wide
//! answer on top:
//!
//! | item | Redis primitive | when Redis is down or slower than `timeout` |
//! |---|---|---|
//! | replay cache | `SET key 1 NX PX ttl` per accepted hello/init | `replay_when_down`: `open` accepts what the local cache accepted, `closed` sends it to the cover |
//! | usage, quotas | `INCRBY` of each user's new bytes, every second | counted locally, pushed when Redis is back (nothing is lost) |
//! | connections, addresses | per-user sorted sets of leases (score = expiry), refreshed every `lease`/3 | `limits_when_down`: `local` applies this instance's own count, `refuse` refuses |
//! | users | hash `PREFIX:users` + version key, polled every 2 s | the last table read keeps serving |
//!
//! Every call has a deadline (`timeout`, 100 ms by default), so a slow or
//! dead Redis never holds a connection longer than that. The connection
//! manager reconnects by itself once Redis is back. Nothing here logs a
//! key, a secret or the Redis password.

pub mod leases;
pub mod shared;
pub mod users;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Replay check when Redis cannot answer in time.
///
/// Closed by default: with `open`, a hello captured at one instance and
/// replayed to another while Redis is down gets that instance's answer
/// instead of the cover's, which tells a prober that both addresses are
/// one fleet (and the fleet is blocked for good); an outage of new
/// handshakes ends with the outage. Open connections are not affected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DownReplay {
    /// Accept what this instance's own cache accepted (fail-open): clients
    /// keep connecting; a replay to another instance passes meanwhile.
    Open,
    /// Send the handshake to the cover site (fail-closed): no replay passes,
    /// but nobody new connects while Redis is down.
    #[default]
    Closed,
}

/// Fleet-wide connection and address limits when Redis cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DownLimits {
    /// Apply this instance's own count only.
    #[default]
    Local,
    /// Refuse connections of users who have such a limit.
    Refuse,
}

/// The validated `[fleet]` section.
#[derive(Clone, PartialEq, Eq)]
pub struct FleetConfig {
    /// `redis://` or `rediss://` URL (may hold a password: never logged).
    pub url: String,
    /// Deadline of every Redis call.
    pub timeout: Duration,
    /// Replay check when Redis is down.
    pub replay_when_down: DownReplay,
    /// Connection and address limits when Redis is down.
    pub limits_when_down: DownLimits,
    /// Whether users are also read from the shared table.
    pub shared_users: bool,
    /// This instance's name in leases.
    pub instance: String,
    /// Prefix of every key.
    pub prefix: String,
    /// How long a connection lease lives without a refresh (an instance that
    /// dies stops counting after this).
    pub lease: Duration,
}

impl std::fmt::Debug for FleetConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetConfig")
            .field("url", &redact_url(&self.url))
            .field("timeout", &self.timeout)
            .field("replay_when_down", &self.replay_when_down)
            .field("limits_when_down", &self.limits_when_down)
            .field("shared_users", &self.shared_users)
            .field("instance", &self.instance)
            .field("prefix", &self.prefix)
            .field("lease", &self.lease)
            .finish()
    }
}

impl FleetConfig {
    /// The defaults for `url`.
    pub fn new(url: String) -> FleetConfig {
        FleetConfig {
            url,
            timeout: Duration::from_millis(100),
            replay_when_down: DownReplay::Closed,
            limits_when_down: DownLimits::Local,
            shared_users: true,
            instance: default_instance(),
            prefix: "samizdat".into(),
            lease: Duration::from_secs(30),
        }
    }
}

/// `$HOSTNAME` (a pod's name), else a random name made once per process
/// (so that a reload does not see a change).
fn default_instance() -> String {
    static RANDOM: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let host = std::env::var("HOSTNAME").unwrap_or_default();
    if valid_name(&host) {
        return host;
    }
    RANDOM
        .get_or_init(|| {
            let mut r = [0u8; 6];
            crate::random::fill(&mut r);
            format!("samizdat-{}", hex::encode(r))
        })
        .clone()
}

/// Instance names and key prefixes: 1-64 of `[A-Za-z0-9-_.:]`.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// The URL with any password (and user name) replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<not a URL>".into();
    };
    match rest.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://***@{host}"),
        None => url.to_string(),
    }
}

/// Checks that `url` is a Redis URL the client accepts.
pub fn check_url(url: &str) -> Result<(), String> {
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return Err("expected redis://[:PASSWORD@]HOST:PORT[/DB] or rediss://… (TLS)".into());
    }
    redis::Client::open(url)
        .map(drop)
        .map_err(|e| format!("not a usable Redis URL: {}", e.kind_name()))
}

trait KindName {
    fn kind_name(&self) -> String;
}

impl KindName for redis::RedisError {
    /// The error without its text, which may quote the URL.
    fn kind_name(&self) -> String {
        format!("{:?}", self.kind())
    }
}

/// Redis did not answer in time, or answered with an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Down;

/// What the fleet said about a handshake's random or init.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayAnswer {
    /// Never seen anywhere in the fleet: accept.
    Fresh,
    /// Already accepted by some instance: cover.
    Replay,
}

/// Which replay cache (`wire` names them: the classifier asks).
pub use shared::{InProcess, Redis, SharedState};
pub use wire::classify::ReplayKind;

/// A `--redis` URL the client refused (the URL shown without its
/// password).
#[derive(Debug, thiserror::Error)]
#[error("--redis {url}: {reason}")]
pub struct StartError {
    /// The URL, redacted.
    pub url: String,
    /// What was wrong with it.
    pub reason: String,
}

/// The Redis side of the fleet.
pub struct Fleet {
    conn: redis::aio::ConnectionManager,
    /// The configuration it was started with.
    pub config: FleetConfig,
    /// Whether the last call succeeded (for logs, `/readyz` and metrics).
    up: AtomicBool,
    last_down_log: AtomicU64,
    /// No warnings about Redis being down (operator commands report it).
    pub quiet: AtomicBool,
    /// Connection leases of this instance.
    pub leases: leases::Leases,
}

impl Fleet {
    /// Creates the client without connecting: it connects on first use, and
    /// reconnects by itself after Redis comes back. Must run in a runtime.
    pub fn start(config: FleetConfig) -> Result<Fleet, StartError> {
        let refused = |e: redis::RedisError| StartError {
            url: redact_url(&config.url),
            reason: e.kind_name(),
        };
        let client = redis::Client::open(config.url.as_str()).map_err(refused)?;
        let manager = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout.max(Duration::from_millis(500))))
            .set_response_timeout(Some(config.timeout))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(100))
            .set_max_delay(Duration::from_secs(1))
            // Bounds the requests queued on the one multiplexed connection.
            .set_pipeline_buffer_size(4096)
            .set_concurrency_limit(4096);
        let conn = redis::aio::ConnectionManager::new_lazy_with_config(client, manager)
            .map_err(refused)?;
        let mut random = [0u8; 32];
        crate::random::fill(&mut random);
        let leases = leases::Leases::new(&config, random);
        Ok(Fleet {
            conn,
            config,
            up: AtomicBool::new(true),
            last_down_log: AtomicU64::new(0),
            quiet: AtomicBool::new(false),
            leases,
        })
    }

    /// `PREFIX:rest`.
    pub fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.config.prefix)
    }

    /// Whether the last Redis call succeeded.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Runs one command with the deadline; failures mark Redis as down (and
    /// are logged at most every 10 s), success as up.
    pub async fn call<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, Down> {
        let mut conn = self.conn.clone();
        let r = tokio::time::timeout(self.config.timeout, cmd.query_async::<T>(&mut conn)).await;
        self.outcome(r)
    }

    /// Runs a script with the deadline.
    pub async fn script<T: redis::FromRedisValue>(
        &self,
        inv: redis::ScriptInvocation<'_>,
    ) -> Result<T, Down> {
        let mut conn = self.conn.clone();
        let r = tokio::time::timeout(self.config.timeout, inv.invoke_async::<T>(&mut conn)).await;
        self.outcome(r)
    }

    fn outcome<T>(
        &self,
        r: Result<redis::RedisResult<T>, tokio::time::error::Elapsed>,
    ) -> Result<T, Down> {
        match r {
            Ok(Ok(v)) => {
                if !self.up.swap(true, Ordering::Relaxed) {
                    tracing::info!("redis is reachable again; fleet state is shared again");
                }
                Ok(v)
            }
            Ok(Err(e)) => {
                self.down(&e.kind_name());
                Err(Down)
            }
            Err(_) => {
                self.down("timed out");
                Err(Down)
            }
        }
    }

    fn down(&self, why: &str) {
        let was_up = self.up.swap(false, Ordering::Relaxed);
        let now = crate::clock::unix_now();
        let last = self.last_down_log.load(Ordering::Relaxed);
        if !self.quiet.load(Ordering::Relaxed)
            && (was_up || now >= last + 10)
            && self
                .last_down_log
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let replay = match self.config.replay_when_down {
                DownReplay::Open => {
                    "fail-open: handshakes passing this instance's replay cache are accepted"
                }
                DownReplay::Closed => "fail-closed: handshakes go to the cover site",
            };
            let limits = match self.config.limits_when_down {
                DownLimits::Local => "connection and address limits count this instance only",
                DownLimits::Refuse => "users with connection or address limits are refused",
            };
            tracing::warn!(
                redis = %redact_url(&self.config.url),
                error = why,
                "redis is down or slow; replay check {replay}; {limits}; usage is counted locally and pushed when it is back"
            );
        }
    }

    /// Asks the fleet whether a handshake's random (or init) is new, and
    /// records it for `ttl`. One `SET NX PX`.
    pub async fn check_replay(
        &self,
        kind: ReplayKind,
        key: &[u8; 16],
        ttl: Duration,
    ) -> Result<ReplayAnswer, Down> {
        let name = match kind {
            ReplayKind::Tls => "replay:tls:",
            ReplayKind::Obfuscated2 => "replay:o2:",
            ReplayKind::Tunnel => "replay:nk:",
        };
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(&format!("{name}{}", hex::encode(key))))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64);
        let set: Option<String> = self.call(&cmd).await?;
        Ok(if set.is_some() {
            ReplayAnswer::Fresh
        } else {
            ReplayAnswer::Replay
        })
    }

    /// Adds `delta` bytes to `user`'s fleet-wide usage; returns the total.
    pub async fn add_usage(&self, user: &str, delta: u64) -> Result<u64, Down> {
        let mut cmd = redis::cmd("INCRBY");
        cmd.arg(self.key(&format!("usage:{user}"))).arg(delta);
        let total: i64 = self.call(&cmd).await?;
        Ok(total.max(0) as u64)
    }

    /// [`Fleet::add_usage`] for many users in one pipelined round trip.
    pub async fn add_usage_many(&self, deltas: &[(&str, u64)]) -> Result<Vec<u64>, Down> {
        let mut pipe = redis::pipe();
        for (user, delta) in deltas {
            pipe.cmd("INCRBY")
                .arg(self.key(&format!("usage:{user}")))
                .arg(*delta);
        }
        let mut conn = self.conn.clone();
        let r = tokio::time::timeout(self.config.timeout, pipe.query_async::<Vec<i64>>(&mut conn))
            .await;
        let totals = self.outcome(r)?;
        Ok(totals.into_iter().map(|t| t.max(0) as u64).collect())
    }

    /// The shared user table's version (0 when there is none).
    pub async fn users_version(&self) -> Result<u64, Down> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.key("users:version"));
        let v: Option<u64> = self.call(&cmd).await?;
        Ok(v.unwrap_or(0))
    }

    /// The shared user table: name → JSON record.
    pub async fn user_records(&self) -> Result<Vec<(String, String)>, Down> {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(self.key("users"));
        self.call(&cmd).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("redis://:hunter2@10.0.0.1:6379/0"),
            "redis://***@10.0.0.1:6379/0"
        );
        assert_eq!(
            redact_url("rediss://user:p@ss@r.example:6380"),
            "rediss://***@r.example:6380"
        );
        assert_eq!(redact_url("redis://127.0.0.1"), "redis://127.0.0.1");
        let c = FleetConfig::new("redis://:hunter2@h:1".into());
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn the_default_instance_name_is_stable() {
        let a = FleetConfig::new("redis://h:1".into());
        let b = FleetConfig::new("redis://h:1".into());
        assert_eq!(a, b, "a reload must not see a new instance name");
        assert!(valid_name(&a.instance));
    }

    #[test]
    fn urls_are_checked() {
        assert!(check_url("redis://127.0.0.1:6379").is_ok());
        assert!(check_url("rediss://:pw@127.0.0.1:6380/2").is_ok());
        assert!(check_url("http://127.0.0.1").is_err());
    }
}
