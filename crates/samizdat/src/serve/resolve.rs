//! The egress name resolver: asynchronous (hickory), cached, and shared by
//! every session of the server.
//!
//! `tokio::net::lookup_host` runs `getaddrinfo` on the blocking pool, where
//! a lookup that never ends keeps its thread after its caller gave up: one
//! user's names under a silent zone queued everyone's lookups behind them
//! (security review M2). Here a lookup is a future: dropping it (the
//! caller's deadline) cancels it, and nothing one lookup waits for holds up
//! another. Answers are cached, negative ones (`NXDOMAIN`, no record) too,
//! for at least [`NEGATIVE_MIN_TTL`].
//!
//! The configuration comes from `/etc/resolv.conf` and `/etc/hosts`, read
//! again when either file changes (checked at most every [`RECHECK`]).
//! Names are looked up as absolute names: the server's `search` domains
//! are never appended to what a client asked for.

use crate::sync::Locked;
use arc_swap::ArcSwap;
use hickory_resolver::config::{LookupIpStrategy, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Shortest time a negative answer is cached, whatever its zone's SOA says.
pub const NEGATIVE_MIN_TTL: Duration = Duration::from_secs(30);
/// Longest time a negative answer is cached.
pub const NEGATIVE_MAX_TTL: Duration = Duration::from_secs(300);
/// How often the system files are checked for changes.
pub const RECHECK: Duration = Duration::from_secs(30);
/// Most answers (names × record types) kept in the cache.
const CACHE_SIZE: u64 = 8_192;

const RESOLV_CONF: &str = "/etc/resolv.conf";
const HOSTS: &str = "/etc/hosts";

/// Why a name did not resolve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupError {
    /// The name does not exist or has no address (cached).
    NotFound,
    /// No name server answered in time.
    TimedOut,
    /// The text is not a valid domain name.
    BadName,
    /// Any other failure (no name server configured, a server failure).
    Failed,
}

/// The server's egress resolver.
pub struct Resolver {
    current: ArcSwap<TokioResolver>,
    /// Modification times of resolv.conf and hosts when `current` was built.
    files: Mutex<[Option<SystemTime>; 2]>,
    /// When the files were last checked, in ms since `started`.
    checked: AtomicU64,
    started: Instant,
}

fn mtimes() -> [Option<SystemTime>; 2] {
    [RESOLV_CONF, HOSTS].map(|p| {
        std::fs::metadata(Path::new(p))
            .and_then(|m| m.modified())
            .ok()
    })
}

/// A resolver from the system's files, with the egress options.
fn build() -> TokioResolver {
    let mut builder = match TokioResolver::builder_tokio() {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(
                error = %e,
                "cannot read {RESOLV_CONF}; samizdat clients' names resolve from {HOSTS} only \
                 until it is fixed (checked every {}s)",
                RECHECK.as_secs()
            );
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(Vec::new()),
                TokioRuntimeProvider::default(),
            )
        }
    };
    let opts = builder.options_mut();
    opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    opts.use_hosts_file = ResolveHosts::Always;
    opts.cache_size = CACHE_SIZE;
    opts.negative_min_ttl = Some(NEGATIVE_MIN_TTL);
    opts.negative_max_ttl = Some(NEGATIVE_MAX_TTL);
    match builder.build() {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "cannot set up the egress resolver from {RESOLV_CONF}; names resolve from {HOSTS} only");
            let mut b = TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(Vec::new()),
                TokioRuntimeProvider::default(),
            );
            b.options_mut().use_hosts_file = ResolveHosts::Always;
            b.build()
                .expect("a resolver without name servers always builds")
        }
    }
}

impl Default for Resolver {
    fn default() -> Self {
        Self::new()
    }
}

impl Resolver {
    /// Reads the system's configuration now.
    pub fn new() -> Resolver {
        Resolver {
            files: Mutex::new(mtimes()),
            current: ArcSwap::from_pointee(build()),
            checked: AtomicU64::new(0),
            started: crate::clock::real_now(),
        }
    }

    /// Rebuilds the resolver (dropping its cache) when resolv.conf or
    /// hosts changed; checks at most every [`RECHECK`].
    fn recheck(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        let last = self.checked.load(Ordering::Relaxed);
        if now < last + RECHECK.as_millis() as u64
            || self
                .checked
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let seen = mtimes();
        let mut files = self.files.locked();
        if *files != seen {
            *files = seen;
            self.current.store(Arc::new(build()));
            tracing::info!(
                "{RESOLV_CONF} or {HOSTS} changed; the egress resolver reads them again"
            );
        }
    }

    /// The addresses of `name` (at most 64), from the cache, the hosts
    /// file or DNS. Dropping the future cancels the lookup.
    pub async fn lookup(&self, name: &str) -> Result<Vec<IpAddr>, LookupError> {
        self.recheck();
        let resolver = self.current.load_full();
        let absolute = if name.ends_with('.') {
            name.to_string()
        } else {
            format!("{name}.")
        };
        let name = hickory_resolver::proto::rr::Name::from_utf8(&absolute)
            .map_err(|_| LookupError::BadName)?;
        match resolver.lookup_ip(name).await {
            Ok(found) => {
                let addrs: Vec<IpAddr> = found.iter().take(64).collect();
                if addrs.is_empty() {
                    Err(LookupError::NotFound)
                } else {
                    Ok(addrs)
                }
            }
            Err(e) if e.is_nx_domain() || e.is_no_records_found() => Err(LookupError::NotFound),
            Err(hickory_resolver::net::NetError::Timeout) => Err(LookupError::TimedOut),
            Err(e) => {
                tracing::trace!(error = %e, "egress lookup failed");
                Err(LookupError::Failed)
            }
        }
    }
}
