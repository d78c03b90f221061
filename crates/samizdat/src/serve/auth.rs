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
//! The order of the whole classification (transport check, search,
//! replay caches) is `wire::classify::Classifier`'s; [`super::admit`]
//! drives it and calls [`bounded_search`] for the search step.

use super::ServeShared;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

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
    pub(super) fn order(
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
pub(super) async fn bounded_search<T>(
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
        tracing::debug!("cold key search refused: the source spent its budget");
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
    let mut slice = crate::clock::real_now();
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
            slice = crate::clock::real_now();
        }
    }
    None
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
