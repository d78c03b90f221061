//! Finding the user behind a handshake, fairly and cheaply.
//!
//! MTProto carries no user id, so the server tries keys: one HMAC (fake-TLS)
//! or one SHA-256 + AES block (bare obfuscated2) per user, about 0.4 µs each,
//! so 10,000 users cost about 4 ms for a handshake whose user is found last.
//! Four things keep that cheap and fair:
//!
//! 1. **Order.** The user last seen from the client's address is tried
//!    first (most connections come from a device that connected before),
//!    then the users bound to the hello's SNI, then users bound to no domain.
//!    Users bound to other domains are never tried for that SNI.
//! 2. **Time slices, not a user budget.** The search runs in chunks; after
//!    each time slice it yields to the runtime so other connections move.
//!    It never gives up early: a valid user is never sent to the cover site
//!    because the server was busy (only because its source is flooding).
//! 3. **Cold searches are bounded.** A hint hit, or a search of at most
//!    a few hundred candidates (a domain with few users), runs at once. A
//!    longer one waits for its source's budget of full searches and for
//!    one of about one-per-core global slots
//!    ([`super::sources::SearchBudget`]), so a flood of random hellos from
//!    one source costs a bounded share of the CPU and does not delay
//!    others' handshakes. A source that has spent its budget for more than
//!    a few seconds ahead has its hello treated as a wrong key (the cover).
//! 4. **The lock is short.** Only the final admission (time window, replay
//!    cache) takes the replay lock; key search runs outside it.
//!
//! With a fleet (`--redis`), a handshake the local replay cache accepted
//! (fake-TLS, bare init or samizdat transport hello) is also checked
//! against the fleet's (one `SET NX PX`, bounded by the Redis
//! deadline; see [`crate::fleet`] for what happens when Redis is down).

use super::users::Snapshot;
use super::{unix_now, ServeShared};
use crate::fleet::{ReplayAnswer, ReplayKind, BARE_REPLAY_TTL};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use wire::classify::{self, CoverReason, Inspected, Verdict};

/// Keys tried between two looks at the clock.
const CHUNK: usize = 64;
/// Longest stretch of key search before yielding to other connections.
const SLICE: Duration = Duration::from_micros(500);
/// Addresses remembered for the "last seen" hint; the map is cleared when
/// full (a cold hint costs one full search, nothing else).
const MAX_REMEMBERED: usize = 200_000;

/// The search order index, built once per user table.
#[derive(Debug, Default)]
pub struct AuthIndex {
    /// Users bound to a fake-TLS domain, by domain.
    by_domain: HashMap<String, Vec<usize>>,
    /// Users bound to no domain: tried for every hello and every bare init.
    any: Vec<usize>,
    /// Users bound to some domain (for bare inits, where there is no SNI).
    bound: Vec<usize>,
    /// Client address → the user who last authenticated from it.
    last_seen: Mutex<HashMap<IpAddr, usize>>,
}

impl AuthIndex {
    /// Builds the index from each user's domains (empty = any domain).
    pub fn new<'a>(user_domains: impl IntoIterator<Item = &'a [String]>) -> AuthIndex {
        let mut index = AuthIndex::default();
        for (i, domains) in user_domains.into_iter().enumerate() {
            if domains.is_empty() {
                index.any.push(i);
            } else {
                index.bound.push(i);
                for d in domains {
                    index
                        .by_domain
                        .entry(d.to_ascii_lowercase())
                        .or_default()
                        .push(i);
                }
            }
        }
        index
    }

    fn hint(&self, peer: IpAddr) -> Option<usize> {
        self.last_seen.lock().ok()?.get(&peer).copied()
    }

    /// Remembers who authenticated from `peer`.
    pub fn remember(&self, peer: IpAddr, user: usize) {
        if let Ok(mut map) = self.last_seen.lock() {
            if map.len() >= MAX_REMEMBERED && !map.contains_key(&peer) {
                map.clear();
            }
            map.insert(peer, user);
        }
    }

    /// Candidates in search order for a hello with `sni` (or a bare init
    /// when `None`). The hint is tried first and not again.
    #[cfg(test)]
    fn candidates(&self, peer: IpAddr, sni: Option<&str>) -> impl Iterator<Item = usize> + '_ {
        let (hint, rest, _) = self.order(peer, sni);
        hint.into_iter().chain(rest)
    }

    /// The search order in two parts: the hint (if it may hold this SNI),
    /// then the others without it, and how many those are at most.
    fn order(
        &self,
        peer: IpAddr,
        sni: Option<&str>,
    ) -> (Option<usize>, impl Iterator<Item = usize> + '_, usize) {
        let hint = self.hint(peer);
        let bound: &[usize] = match sni {
            Some(s) => self.by_domain.get(s).map(Vec::as_slice).unwrap_or(&[]),
            None => &self.bound,
        };
        let hint_ok = hint.filter(|h| self.any.contains(h) || bound.contains(h));
        let rest = bound
            .iter()
            .copied()
            .chain(self.any.iter().copied())
            .filter(move |&u| Some(u) != hint_ok);
        (hint_ok, rest, bound.len() + self.any.len())
    }
}

/// Candidates past the hint that a search tries without a cold-search
/// slot: a domain with a few hundred users costs about 0.1 ms.
const SMALL_SEARCH: usize = 256;

/// The key search of an MTProto handshake, bounded (`docs/auth-at-scale.md`):
/// the hint first, for free; then, when more than [`SMALL_SEARCH`]
/// candidates remain, a cold search that waits for the source's budget and
/// a global slot ([`super::sources::SearchBudget`]). `None` when no key
/// matched, or when the source has spent its budget (its hello is then
/// treated as one with a wrong key).
async fn bounded_search<T>(
    shared: &ServeShared,
    peer: IpAddr,
    order: (Option<usize>, impl Iterator<Item = usize>, usize),
    mut try_chunk: impl FnMut(&[usize]) -> Option<T>,
) -> Option<T> {
    let (hint, rest, size) = order;
    if let Some(h) = hint {
        if let Some(found) = try_chunk(&[h]) {
            return Some(found);
        }
    }
    if size <= SMALL_SEARCH {
        return search(rest, try_chunk).await;
    }
    let Ok(_slot) = shared.search_budget.cold(peer).await else {
        shared
            .stats
            .cold_searches_refused
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return None;
    };
    search(rest, try_chunk).await
}

/// Runs `try_chunk` over the candidates in chunks, yielding to the runtime
/// after every time slice, until it finds something or the candidates end.
async fn search<T>(
    candidates: impl Iterator<Item = usize>,
    mut try_chunk: impl FnMut(&[usize]) -> Option<T>,
) -> Option<T> {
    let mut slice = Instant::now();
    let mut chunk = Vec::with_capacity(CHUNK);
    let mut candidates = candidates.peekable();
    while candidates.peek().is_some() {
        chunk.clear();
        chunk.extend(candidates.by_ref().take(CHUNK));
        if let Some(found) = try_chunk(&chunk) {
            return Some(found);
        }
        if slice.elapsed() >= SLICE {
            tokio::task::yield_now().await;
            slice = Instant::now();
        }
    }
    None
}

/// Classifies everything read so far: structure, then the key search, then
/// admission. See the module doc for the order and fairness rules.
pub(super) async fn decide(
    buf: &[u8],
    shared: &ServeShared,
    snap: &Snapshot,
    peer: IpAddr,
) -> Verdict {
    let policy = &snap.config.policy;
    let users = &snap.users;
    match classify::inspect(buf, policy) {
        Inspected::NeedMore => Verdict::NeedMore,
        Inspected::Cover(reason) => Verdict::Cover(reason),
        Inspected::Hello { hello, record_len } => {
            let record = &buf[..record_len];
            if let Some(verdict) = tunnel(record, shared, snap).await {
                return verdict;
            }
            let order = snap.auth.order(peer, hello.sni.as_deref());
            let found = bounded_search(shared, peer, order, |chunk| {
                classify::find_hello_user(record, &hello, users, chunk.iter().copied())
            })
            .await;
            let Some(verified) = found else {
                return Verdict::Cover(CoverReason::BadHmac);
            };
            let verdict = {
                let mut replay = shared.replay.lock().unwrap_or_else(|p| p.into_inner());
                classify::admit_hello(
                    hello,
                    record_len,
                    verified,
                    policy,
                    unix_now(),
                    &mut replay.tls,
                )
            };
            let verdict = match verdict {
                Verdict::FakeTls(acc) => {
                    let mut key = [0u8; 16];
                    key.copy_from_slice(&acc.hello.random[..16]);
                    match shared
                        .state
                        .replay(ReplayKind::Tls, &key, fleet_replay_ttl(policy))
                        .await
                    {
                        ReplayAnswer::Fresh => Verdict::FakeTls(acc),
                        ReplayAnswer::Replay => Verdict::Cover(CoverReason::Replay),
                    }
                }
                other => other,
            };
            if let Verdict::FakeTls(acc) = &verdict {
                snap.auth.remember(peer, acc.user);
            }
            verdict
        }
        Inspected::Init(init) => {
            let order = snap.auth.order(peer, None);
            let found = bounded_search(shared, peer, order, |chunk| {
                classify::find_init_user(&init, policy, users, chunk.iter().copied())
            })
            .await;
            let Some(accepted) = found else {
                return Verdict::Cover(CoverReason::BadInit);
            };
            let user = accepted.user;
            let verdict = {
                let mut replay = shared.replay.lock().unwrap_or_else(|p| p.into_inner());
                classify::admit_init(&init, accepted, unix_now(), &mut replay.obfuscated2)
            };
            let verdict = match verdict {
                Verdict::Obfuscated2(acc) => {
                    let mut key = [0u8; 16];
                    key.copy_from_slice(&init[8..24]);
                    match shared
                        .state
                        .replay(ReplayKind::Obfuscated2, &key, BARE_REPLAY_TTL)
                        .await
                    {
                        ReplayAnswer::Fresh => Verdict::Obfuscated2(acc),
                        ReplayAnswer::Replay => Verdict::Cover(CoverReason::Replay),
                    }
                }
                other => other,
            };
            if matches!(verdict, Verdict::Obfuscated2(_)) {
                snap.auth.remember(peer, user);
            }
            verdict
        }
    }
}

/// How long the fleet remembers a timestamped hello: a replay is possible
/// while its timestamp is in the window, up to max_past + max_future after
/// acceptance, plus a minute for clocks that differ between instances.
fn fleet_replay_ttl(policy: &classify::Policy) -> Duration {
    Duration::from_secs(policy.max_past + policy.max_future + 60)
}

/// The samizdat transport's check, tried before any MTProto key: one
/// X25519 operation and a hash-map lookup (`docs/transport.md`), then the
/// same replay admission as fake-TLS: the local cache, then (with a fleet)
/// Redis, so a hello another instance accepted goes to the cover too.
/// `None` when the hello is not a samizdat client's, so the MTProto search
/// runs. The WebSocket listener runs the same check on the hello it carries.
pub(super) async fn tunnel(
    record: &[u8],
    shared: &ServeShared,
    snap: &Snapshot,
) -> Option<Verdict> {
    use wire::tunnel::handshake::{accept, Reject};
    let key = shared.tunnel_key.as_ref().filter(|_| snap.config.tunnel)?;
    let policy = &snap.config.policy;
    let now = unix_now();
    // The window is checked by `admit_tunnel`, with the horizon and skew.
    let verdict = match accept(
        record,
        key,
        |id| snap.tunnel.get(id).copied(),
        now,
        u64::MAX,
    ) {
        Ok(accepted) => {
            let mut replay = shared.replay.lock().unwrap_or_else(|p| p.into_inner());
            classify::admit_tunnel(accepted, policy, now, &mut replay.tls)
        }
        Err(Reject::UnknownUser | Reject::BadMac) => {
            return Some(Verdict::Cover(CoverReason::BadHmac))
        }
        Err(_) => return None,
    };
    Some(match verdict {
        Verdict::Tunnel(acc) => {
            let mut key = [0u8; 16];
            key.copy_from_slice(&acc.replay_key[..16]);
            match shared
                .state
                .replay(ReplayKind::Tunnel, &key, fleet_replay_ttl(policy))
                .await
            {
                ReplayAnswer::Fresh => Verdict::Tunnel(acc),
                ReplayAnswer::Replay => Verdict::Cover(CoverReason::Replay),
            }
        }
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_hint_then_domain_then_any_and_never_other_domains() {
        let a = vec!["a.example".to_string()];
        let b = vec!["b.example".to_string()];
        let none: Vec<String> = Vec::new();
        let domains: Vec<&[String]> = vec![&a, &none, &b, &a, &none];
        let index = AuthIndex::new(domains);
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        let got: Vec<usize> = index.candidates(peer, Some("a.example")).collect();
        assert_eq!(got, [0, 3, 1, 4]);
        index.remember(peer, 4);
        let got: Vec<usize> = index.candidates(peer, Some("a.example")).collect();
        assert_eq!(got, [4, 0, 3, 1]);
        // A hint for a user of another domain is not used for this SNI.
        index.remember(peer, 2);
        let got: Vec<usize> = index.candidates(peer, Some("a.example")).collect();
        assert_eq!(got, [0, 3, 1, 4]);
        // Bare inits: every user, hint first.
        let got: Vec<usize> = index.candidates(peer, None).collect();
        assert_eq!(got, [2, 0, 3, 1, 4]);
        let unknown: Vec<usize> = index.candidates(peer, Some("c.example")).collect();
        assert_eq!(unknown, [1, 4]);
    }

    #[tokio::test]
    async fn search_tries_every_candidate_across_slices() {
        let mut tried = 0;
        let found = search(0..10_000, |chunk| {
            tried += chunk.len();
            std::thread::sleep(Duration::from_micros(20));
            chunk.iter().copied().find(|&u| u == 9_999)
        })
        .await;
        assert_eq!(found, Some(9_999));
        assert_eq!(tried, 10_000);
    }
}
