//! The cover site: where every connection that does not authenticate goes.
//!
//! The cover connection is opened as soon as a client connects (eager
//! mode), every byte the client sends is forwarded to it while the
//! classifier reads, and its answers are held back (simply not read) until
//! the decision. So the cover's own timers run exactly as for a direct
//! visitor, and when the cover answers or closes before we have decided,
//! that is the decision: a real client's hello is never something a TLS
//! server rejects before it is complete. See ARCHITECTURE.md, "Cover".

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// How long a cover host's addresses are reused. Eager mode connects to the
/// cover for every client; without this each connection would run a
/// blocking DNS lookup.
const DNS_TTL: Duration = Duration::from_secs(60);

type DnsCache = Mutex<HashMap<(String, u16), (Instant, Vec<SocketAddr>)>>;

/// Resolves a cover host, reusing an answer for [`DNS_TTL`].
async fn resolve(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    static CACHE: OnceLock<DnsCache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let key = (host.to_string(), port);
    if let Some((at, addrs)) = cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
        if at.elapsed() < DNS_TTL {
            return Ok(addrs);
        }
    }
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{host} has no addresses"),
        ));
    }
    if let Ok(mut c) = cache.lock() {
        if c.len() > 64 {
            c.clear();
        }
        c.insert(key, (crate::clock::real_now(), addrs.clone()));
    }
    Ok(addrs)
}

/// Where the cover site is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoverTarget {
    /// An explicit address (`--cover`): never looked up in DNS.
    Addr(SocketAddr),
    /// A host name and port, resolved at connect time (the default: the
    /// fake-TLS domain on port 443).
    Host(String, u16),
}

impl std::fmt::Display for CoverTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CoverTarget::Addr(a) => write!(f, "{a}"),
            CoverTarget::Host(h, p) => write!(f, "{h}:{p}"),
        }
    }
}

/// When to connect to the cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CoverConnect {
    /// On accept, forwarding bytes while classifying: the cover's timing is preserved.
    #[default]
    Eager,
    /// Only once a connection is known not to authenticate: fewer cover
    /// connections, but a prober can see our classification delay.
    Lazy,
}

impl CoverTarget {
    /// Opens a connection with a deadline.
    pub async fn connect(&self, timeout: Duration) -> io::Result<TcpStream> {
        let fut = async {
            match self {
                CoverTarget::Addr(a) => TcpStream::connect(a).await,
                CoverTarget::Host(h, p) => {
                    let addrs = resolve(h, *p).await?;
                    TcpStream::connect(&addrs[..]).await
                }
            }
        };
        let stream = tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "cover connect timed out"))??;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}
