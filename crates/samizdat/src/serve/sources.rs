//! What one source may hold before it has authenticated, and how much key
//! search it may ask for (`docs/cover.md`, "What a prober can learn from
//! our limits").
//!
//! A *source* is a client address seen two ways: narrow (the IPv4 address,
//! or the IPv6 /64 a host usually gets) and wide (the IPv4 /24, or the
//! IPv6 /48 a site usually gets). Each has its own cap.
//!
//! - [`Sources`] counts the connections a source holds that are not
//!   authenticated: undecided (before the classifier's verdict) and spliced
//!   to the cover. An authenticated connection stops counting at once: a
//!   user's own limits (`max_connections`, `max_ips`) govern it from then.
//! - [`SearchBudget`] bounds the MTProto key search, the one thing an
//!   unauthenticated hello makes us spend CPU on in proportion to the user
//!   count: a token bucket of full searches per narrow source, and a global
//!   semaphore of about one search per core. Hint hits and small searches
//!   (a domain with a few users) take neither.
//!
//! Every table here holds an entry only while it is needed (a count above
//! zero, a bucket not yet full), so its size is bounded by the connections
//! open, and it is cleared when it passes a hard bound all the same.

use crate::sync::Locked;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The two caps on unauthenticated connections per source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceCaps {
    /// Per IPv4 address or IPv6 /64.
    pub per_ip: usize,
    /// Per IPv4 /24 or IPv6 /48.
    pub per_subnet: usize,
}

impl SourceCaps {
    /// The defaults for a server capped at `max_connections`: one address
    /// may hold a quarter of the slots (at most 256), one subnet half of
    /// them (at most 1,024). An undecided connection of a real client lasts
    /// one round trip, so a carrier NAT's users stay below these unless
    /// they start hundreds of connections in the same fraction of a second.
    pub fn defaults(max_connections: usize) -> SourceCaps {
        SourceCaps {
            per_ip: (max_connections / 4).clamp(1, 256),
            per_subnet: (max_connections / 2).clamp(1, 1024),
        }
    }
}

/// A source prefix: the family's tag and the masked address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Prefix(u8, u128);

/// The narrow (/32, /64) and wide (/24, /48) prefixes of `ip`. IPv4-mapped
/// IPv6 addresses count as the IPv4 address they carry.
fn prefixes(ip: IpAddr) -> (Prefix, Prefix) {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let a = u128::from(u32::from(v4));
            (Prefix(4, a), Prefix(24, a & !0xff))
        }
        IpAddr::V6(v6) => {
            let a = u128::from(v6);
            (Prefix(64, a >> 64), Prefix(48, a >> 80))
        }
    }
}

/// Unauthenticated connections per source, against [`SourceCaps`].
#[derive(Debug)]
pub struct Sources {
    caps: SourceCaps,
    counts: Mutex<HashMap<Prefix, usize>>,
}

/// One unauthenticated connection, counted until dropped.
#[derive(Debug)]
pub struct SourceGuard {
    sources: Arc<Sources>,
    narrow: Prefix,
    wide: Prefix,
}

impl Sources {
    /// An empty table with these caps.
    pub fn new(caps: SourceCaps) -> Arc<Sources> {
        Arc::new(Sources {
            caps,
            counts: Mutex::default(),
        })
    }

    /// Counts a new connection from `ip`, or `None` when either of its
    /// prefixes is at its cap.
    pub fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<SourceGuard> {
        let (narrow, wide) = prefixes(ip);
        let mut counts = self.counts.locked();
        let n = counts.get(&narrow).copied().unwrap_or(0);
        let w = counts.get(&wide).copied().unwrap_or(0);
        if n >= self.caps.per_ip || w >= self.caps.per_subnet {
            return None;
        }
        counts.insert(narrow, n + 1);
        counts.insert(wide, w + 1);
        Some(SourceGuard {
            sources: self.clone(),
            narrow,
            wide,
        })
    }

    /// Prefixes with a connection counted (for tests).
    pub fn tracked(&self) -> usize {
        self.counts.lock().map(|c| c.len()).unwrap_or(0)
    }
}

impl Drop for SourceGuard {
    fn drop(&mut self) {
        let mut counts = self.sources.counts.locked();
        for p in [self.narrow, self.wide] {
            if let Some(c) = counts.get_mut(&p) {
                *c -= 1;
                if *c == 0 {
                    counts.remove(&p);
                }
            }
        }
    }
}

/// Full key searches one source may start in a burst.
const SEARCH_BURST: f64 = 40.0;
/// Full key searches one source earns per second after its burst.
const SEARCH_RATE: f64 = 20.0;
/// Longest a source's search waits for its budget; past that the hello is
/// treated as one that failed (it goes to the cover).
const SEARCH_MAX_WAIT: Duration = Duration::from_secs(5);
/// Buckets kept; past this the full ones are dropped, then all of them.
const MAX_BUCKETS: usize = 100_000;

/// Cold key searches: per source a token bucket and one search at a time,
/// globally a semaphore. One at a time per source is what makes the global
/// queue fair: a flooding source has at most one search waiting in it, so
/// another source's search waits for at most one search per busy source,
/// not for the flood's backlog.
#[derive(Debug)]
pub struct SearchBudget {
    global: Arc<Semaphore>,
    /// Narrow source → (tokens, when last refilled). Tokens may go below
    /// zero: a search that waits has reserved its token.
    buckets: Mutex<HashMap<Prefix, (f64, Instant)>>,
    /// Narrow source → its one-at-a-time lock, while someone holds or
    /// waits for it.
    running: Arc<Mutex<HashMap<Prefix, Arc<tokio::sync::Mutex<()>>>>>,
}

/// Why a cold search may not run.
#[derive(Debug, PartialEq, Eq)]
pub struct OverBudget;

/// The right to run one cold search: the source's turn and a global slot.
#[derive(Debug)]
pub struct ColdSlot {
    _global: OwnedSemaphorePermit,
    turn: Option<tokio::sync::OwnedMutexGuard<()>>,
    key: Prefix,
    running: Arc<Mutex<HashMap<Prefix, Arc<tokio::sync::Mutex<()>>>>>,
}

impl Drop for ColdSlot {
    fn drop(&mut self) {
        let mut running = self.running.locked();
        drop(self.turn.take());
        // Nobody else holds or waits for this source's lock: forget it.
        if running
            .get(&self.key)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            running.remove(&self.key);
        }
    }
}

impl SearchBudget {
    /// At most `concurrent` full searches at once (use about the core count).
    pub fn new(concurrent: usize) -> SearchBudget {
        SearchBudget {
            global: Arc::new(Semaphore::new(concurrent.max(1))),
            buckets: Mutex::default(),
            running: Arc::default(),
        }
    }

    /// Waits for `ip`'s budget, its turn and a global slot; the slot is
    /// held for the search. A source whose budget is spent for longer than
    /// [`SEARCH_MAX_WAIT`] ahead gets [`OverBudget`] at once.
    pub async fn cold(&self, ip: IpAddr) -> Result<ColdSlot, OverBudget> {
        let wait = self.reserve(ip, crate::clock::real_now())?;
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let (key, _) = prefixes(ip);
        let lock = self.running.locked().entry(key).or_default().clone();
        // Built before the first await, so a cancelled wait (the client
        // left) still cleans the entry up.
        let mut slot = ColdSlotBuilder {
            key,
            running: self.running.clone(),
            lock: Some(lock),
        };
        let turn = slot.lock.clone().expect("set").lock_owned().await;
        let global = self
            .global
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| OverBudget)?;
        slot.lock = None;
        Ok(ColdSlot {
            _global: global,
            turn: Some(turn),
            key,
            running: self.running.clone(),
        })
    }

    /// Takes a token from `ip`'s bucket: how long to wait until it is
    /// due, or `OverBudget` when that is longer than the longest wait.
    fn reserve(&self, ip: IpAddr, now: Instant) -> Result<Duration, OverBudget> {
        let (key, _) = prefixes(ip);
        let mut buckets = self.buckets.locked();
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(&key) {
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * SEARCH_RATE < SEARCH_BURST
            });
            if buckets.len() >= MAX_BUCKETS {
                buckets.clear();
            }
        }
        let (tokens, at) = buckets.entry(key).or_insert((SEARCH_BURST, now));
        let refilled =
            (*tokens + now.duration_since(*at).as_secs_f64() * SEARCH_RATE).min(SEARCH_BURST);
        let after = refilled - 1.0;
        let wait = if after >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-after / SEARCH_RATE)
        };
        if wait > SEARCH_MAX_WAIT {
            *tokens = refilled;
            *at = now;
            return Err(OverBudget);
        }
        *tokens = after;
        *at = now;
        Ok(wait)
    }
}

/// Cleans a source's lock entry up if the wait for it is abandoned.
struct ColdSlotBuilder {
    key: Prefix,
    running: Arc<Mutex<HashMap<Prefix, Arc<tokio::sync::Mutex<()>>>>>,
    lock: Option<Arc<tokio::sync::Mutex<()>>>,
}

impl Drop for ColdSlotBuilder {
    fn drop(&mut self) {
        let Some(lock) = self.lock.take() else {
            return;
        };
        let mut running = self.running.locked();
        drop(lock);
        if running
            .get(&self.key)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            running.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn caps_count_the_address_and_the_subnet_and_free_on_drop() {
        let s = Sources::new(SourceCaps {
            per_ip: 2,
            per_subnet: 3,
        });
        let a1 = s.enter(ip("10.0.0.1")).unwrap();
        let _a2 = s.enter(ip("10.0.0.1")).unwrap();
        assert!(s.enter(ip("10.0.0.1")).is_none(), "per address");
        let _b = s.enter(ip("10.0.0.2")).unwrap();
        assert!(s.enter(ip("10.0.0.3")).is_none(), "per /24");
        assert!(s.enter(ip("10.0.1.3")).is_some(), "another /24");
        assert!(
            s.enter(ip("::ffff:10.0.0.4")).is_none(),
            "mapped IPv4 is IPv4"
        );
        drop(a1);
        assert!(s.enter(ip("10.0.0.3")).is_some());
        // IPv6: one /64 is one source, /48 the subnet.
        let _c = s.enter(ip("2001:db8:0:1::1")).unwrap();
        let _d = s.enter(ip("2001:db8:0:1::2")).unwrap();
        assert!(s.enter(ip("2001:db8:0:1::3")).is_none(), "per /64");
        let _e = s.enter(ip("2001:db8:0:2::1")).unwrap();
        assert!(s.enter(ip("2001:db8:0:3::1")).is_none(), "per /48");
    }

    #[test]
    fn entries_last_only_while_counted() {
        let s = Sources::new(SourceCaps::defaults(20_000));
        let guards: Vec<_> = (0..50)
            .map(|i| s.enter(ip(&format!("192.0.2.{i}"))).unwrap())
            .collect();
        assert_eq!(s.tracked(), 51);
        drop(guards);
        assert_eq!(s.tracked(), 0);
    }

    #[test]
    fn defaults_follow_the_global_cap() {
        assert_eq!(
            SourceCaps::defaults(20),
            SourceCaps {
                per_ip: 5,
                per_subnet: 10
            }
        );
        assert_eq!(
            SourceCaps::defaults(20_000),
            SourceCaps {
                per_ip: 256,
                per_subnet: 1024
            }
        );
        assert_eq!(SourceCaps::defaults(1).per_ip, 1);
    }

    #[test]
    fn a_source_gets_its_burst_then_waits_then_is_refused() {
        let b = SearchBudget::new(2);
        let t = crate::clock::real_now();
        let me = ip("198.51.100.7");
        for _ in 0..SEARCH_BURST as usize {
            assert_eq!(b.reserve(me, t), Ok(Duration::ZERO));
        }
        let w = b.reserve(me, t).unwrap();
        assert!(
            w > Duration::ZERO && w <= Duration::from_millis(60),
            "{w:?}"
        );
        // Others are not charged for it.
        assert_eq!(b.reserve(ip("198.51.100.8"), t), Ok(Duration::ZERO));
        let mut refused = false;
        for _ in 0..200 {
            if b.reserve(me, t).is_err() {
                refused = true;
                break;
            }
        }
        assert!(refused, "the wait is bounded");
        // A second later the source has earned tokens back.
        let later = t + Duration::from_secs(10);
        assert!(b.reserve(me, later).is_ok());
    }

    #[tokio::test]
    async fn one_cold_search_per_source_so_others_pass_a_flood() {
        let b = SearchBudget::new(2);
        let a = ip("203.0.113.1");
        let first = b.cold(a).await.unwrap();
        // A second search of the same source waits for the first...
        let second = tokio::time::timeout(Duration::from_millis(50), b.cold(a)).await;
        assert!(second.is_err(), "a source runs one cold search at a time");
        // ...and leaves the global slot to another source.
        let other = tokio::time::timeout(Duration::from_millis(50), b.cold(ip("203.0.113.2")))
            .await
            .expect("another source is not queued behind the flood")
            .unwrap();
        drop(other);
        drop(first);
        let again = b.cold(a).await.unwrap();
        drop(again);
        assert!(
            b.running.lock().unwrap().is_empty(),
            "abandoned and finished waits leave no entry"
        );
    }
}
