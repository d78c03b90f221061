//! The client's endpoint pool: which of a server set's endpoints work,
//! which look blocked, and in what order to try them.
//!
//! Pure bookkeeping, no I/O besides [`Pool::load`] and [`Pool::save`]: the
//! clock (`now`) and the jitter (`rand`, uniform in `[0, 1)`) are
//! arguments, so the ranking and the backoff are tested with a fake clock.
//! The dialer (`dialer.rs`) races connections in [`Pool::rank`] order and
//! reports every outcome back.
//!
//! - **Healthy** endpoints (a handshake completed, no failure since the
//!   last proof) come first, fastest handshake first;
//! - then **untried** ones (never worked, never failed), in the set's
//!   order;
//! - then ones whose backoff is over (**retry**), longest over first;
//! - then **backed-off** ones, soonest retry first. They stay in the list:
//!   when everything is backed off the soonest is still tried, so the user
//!   is never stranded.
//!
//! A failure (connect refused, reset or timed out, a handshake that does
//! not complete, a session that dies) backs the endpoint off for
//! [`Backoff::base`] doubling per consecutive failure up to
//! [`Backoff::max`], with ± [`Backoff::jitter`]. A session that lived
//! [`Backoff::proven_after`] proves the endpoint and resets the streak; a
//! completed handshake alone does not, or an endpoint whose sessions are
//! killed seconds after the handshake would be retried at once forever.

use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use wire::link::Endpoint;

/// The file in the client's state directory.
pub const FILE: &str = "pool.toml";

/// Most loaded entries kept aside for endpoints not in the set yet.
const MAX_PARKED: usize = 1024;

/// Backoff settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The first backoff after a failure (30 s).
    pub base: Duration,
    /// The longest backoff (1 h).
    pub max: Duration,
    /// Relative jitter: each backoff is scaled by a factor in
    /// `[1 - jitter, 1 + jitter)` (0.2), so many clients do not retry in
    /// step.
    pub jitter: f64,
    /// A session that lived this long proves its endpoint (60 s).
    pub proven_after: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            base: Duration::from_secs(30),
            max: Duration::from_secs(3600),
            jitter: 0.2,
            proven_after: Duration::from_secs(60),
        }
    }
}

/// What the pool knows about one endpoint.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Health {
    /// Handshakes that completed.
    pub successes: u64,
    /// Failures of any kind.
    pub failures: u64,
    /// Consecutive failures since the endpoint last proved itself.
    pub streak: u32,
    /// Not preferred before this time.
    pub backoff_until: Option<SystemTime>,
    /// The last completed handshake.
    pub last_success: Option<SystemTime>,
    /// Connect plus handshake time of the last success.
    pub rtt: Option<Duration>,
    /// Why it last failed (for logs).
    pub last_error: Option<String>,
    /// Record bytes the server may send down one connection to it before
    /// moving to the next: learned when a connection froze after a few
    /// kilobytes (a censor's freeze); `None`: no limit.
    pub lane_budget: Option<u32>,
}

impl Health {
    /// Backed off at `now`.
    pub fn backed_off(&self, now: SystemTime) -> bool {
        self.backoff_until.is_some_and(|t| t > now)
    }
}

/// Where an endpoint stands at a moment, as [`Pool::rank`] orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Standing {
    /// Worked, and has not failed since it last proved itself.
    Healthy,
    /// Never worked, never failed.
    Untried,
    /// Failed, and its backoff is over.
    Retry,
    /// Backed off.
    BackedOff,
}

/// One endpoint and its health.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The endpoint.
    pub endpoint: Endpoint,
    /// Its record.
    pub health: Health,
}

/// The endpoints of a server set with their health.
#[derive(Debug, Clone, Default)]
pub struct Pool {
    /// In the set's order (the tie-break of the ranking).
    entries: Vec<Entry>,
    /// Loaded health of endpoints not (yet) in the set, by their text:
    /// servers from a signed list join the set just after the start, and
    /// get their health back then. Never saved.
    parked: Vec<(String, Health)>,
    /// Backoff settings.
    pub backoff: Backoff,
}

impl Pool {
    /// A pool of `endpoints` (duplicates dropped), none tried yet.
    pub fn new(endpoints: Vec<Endpoint>) -> Pool {
        let mut pool = Pool::default();
        pool.set_endpoints(endpoints);
        pool
    }

    /// Makes the set `endpoints` (in this order, duplicates dropped),
    /// keeping what is known of endpoints already in the pool and
    /// forgetting those no longer in the set.
    pub fn set_endpoints(&mut self, endpoints: Vec<Endpoint>) {
        let mut old = std::mem::take(&mut self.entries);
        for endpoint in endpoints {
            if self.entries.iter().any(|e| e.endpoint == endpoint) {
                continue;
            }
            let text = endpoint.to_string();
            let health = old
                .iter()
                .position(|e| e.endpoint == endpoint)
                .map(|i| old.swap_remove(i).health)
                .or_else(|| {
                    let i = self.parked.iter().position(|(t, _)| *t == text)?;
                    Some(self.parked.swap_remove(i).1)
                })
                .unwrap_or_default();
            self.entries.push(Entry { endpoint, health });
        }
    }

    /// Every entry, in the set's order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The health of `endpoint`, if it is in the pool.
    pub fn health(&self, endpoint: &Endpoint) -> Option<&Health> {
        self.entries
            .iter()
            .find(|e| &e.endpoint == endpoint)
            .map(|e| &e.health)
    }

    fn entry(&mut self, endpoint: &Endpoint) -> Option<&mut Health> {
        self.entries
            .iter_mut()
            .find(|e| &e.endpoint == endpoint)
            .map(|e| &mut e.health)
    }

    /// Where `health` stands at `now`.
    pub fn standing(health: &Health, now: SystemTime) -> Standing {
        if health.backed_off(now) {
            Standing::BackedOff
        } else if health.streak > 0 {
            Standing::Retry
        } else if health.last_success.is_some() {
            Standing::Healthy
        } else {
            Standing::Untried
        }
    }

    /// The endpoints in the order to try them at `now`: healthy by
    /// handshake time, untried in the set's order, retry and backed off by
    /// the end of their backoff. Never drops one.
    pub fn rank(&self, now: SystemTime) -> Vec<Endpoint> {
        let mut order: Vec<&Entry> = self.entries.iter().collect();
        order.sort_by_key(|e| {
            let standing = Pool::standing(&e.health, now);
            let rtt = match standing {
                Standing::Healthy => e.health.rtt.unwrap_or(Duration::MAX),
                _ => Duration::ZERO,
            };
            let until = match standing {
                Standing::BackedOff | Standing::Retry => e.health.backoff_until,
                _ => None,
            };
            (standing, rtt, until)
        });
        order.into_iter().map(|e| e.endpoint.clone()).collect()
    }

    /// A handshake with `endpoint` completed in `rtt`: it is usable now.
    pub fn record_success(&mut self, endpoint: &Endpoint, rtt: Duration, now: SystemTime) {
        if let Some(h) = self.entry(endpoint) {
            h.successes += 1;
            h.last_success = Some(now);
            h.rtt = Some(rtt);
            h.backoff_until = None;
        }
    }

    /// `endpoint` failed (`why`): backs it off; returns for how long.
    /// `rand` is uniform in `[0, 1)` (the jitter).
    pub fn record_failure(
        &mut self,
        endpoint: &Endpoint,
        why: &str,
        now: SystemTime,
        rand: f64,
    ) -> Duration {
        let backoff = self.backoff;
        let Some(h) = self.entry(endpoint) else {
            return Duration::ZERO;
        };
        h.failures += 1;
        h.streak = h.streak.saturating_add(1);
        h.last_error = Some(why.to_string());
        let doubled = backoff
            .base
            .saturating_mul(1u32 << (h.streak - 1).min(20))
            .min(backoff.max);
        let factor = 1.0 + backoff.jitter * (2.0 * rand.clamp(0.0, 1.0) - 1.0);
        let wait = doubled.mul_f64(factor.max(0.0));
        h.backoff_until = Some(now + wait);
        wait
    }

    /// A session on `endpoint` ended after `lived`. A session that lived
    /// [`Backoff::proven_after`] proves the endpoint first (the streak
    /// starts over); either way the end counts as a failure, since a
    /// session dies when its path breaks (a blackhole, a reset). Returns
    /// the backoff.
    pub fn record_session_end(
        &mut self,
        endpoint: &Endpoint,
        lived: Duration,
        now: SystemTime,
        rand: f64,
    ) -> Duration {
        let proven = lived >= self.backoff.proven_after;
        if let Some(h) = self.entry(endpoint) {
            if proven {
                h.streak = 0;
            }
        }
        let why = format!("session ended after {} s", lived.as_secs());
        self.record_failure(endpoint, &why, now, rand)
    }

    /// The lane budget learned for `endpoint` (see [`Health::lane_budget`]).
    pub fn lane_budget(&self, endpoint: &Endpoint) -> Option<u32> {
        self.health(endpoint).and_then(|h| h.lane_budget)
    }

    /// Learns that connections to `endpoint` freeze: keeps the smaller of
    /// `budget` and what was known. Returns the budget now in force.
    pub fn learn_lane_budget(&mut self, endpoint: &Endpoint, budget: u32) -> u32 {
        match self.entry(endpoint) {
            Some(h) => {
                let b = h.lane_budget.map_or(budget, |old| old.min(budget));
                h.lane_budget = Some(b);
                b
            }
            None => budget,
        }
    }

    /// The pool as the text of `pool.toml`.
    pub fn to_toml(&self) -> String {
        let file = File {
            endpoint: self
                .entries
                .iter()
                .map(|e| Saved {
                    endpoint: e.endpoint.to_string(),
                    successes: e.health.successes,
                    failures: e.health.failures,
                    streak: e.health.streak,
                    backoff_until: e.health.backoff_until.map(unix),
                    last_success: e.health.last_success.map(unix),
                    rtt_ms: e.health.rtt.map(|d| d.as_millis() as u64),
                    last_error: e.health.last_error.clone(),
                    lane_budget: e.health.lane_budget,
                })
                .collect(),
        };
        let body = toml::to_string(&file).unwrap_or_default();
        format!("# samizdat client: endpoint health (rewritten by the client)\n{body}")
    }

    /// Takes the health of this pool's endpoints from `text` (a
    /// `pool.toml`); entries for endpoints not in the pool are kept aside
    /// for a later [`Pool::set_endpoints`], and dropped from the file at
    /// the next save if they never join.
    pub fn merge_toml(&mut self, text: &str) -> Result<(), toml::de::Error> {
        let file: File = toml::from_str(text)?;
        self.parked.clear();
        for saved in file.endpoint {
            let health = Health {
                successes: saved.successes,
                failures: saved.failures,
                streak: saved.streak,
                backoff_until: saved.backoff_until.map(from_unix),
                last_success: saved.last_success.map(from_unix),
                rtt: saved.rtt_ms.map(Duration::from_millis),
                last_error: saved.last_error,
                lane_budget: saved.lane_budget,
            };
            match self
                .entries
                .iter_mut()
                .find(|e| e.endpoint.to_string() == saved.endpoint)
            {
                Some(entry) => entry.health = health,
                None if self.parked.len() < MAX_PARKED => {
                    self.parked.push((saved.endpoint, health))
                }
                None => {}
            }
        }
        Ok(())
    }

    /// Loads `dir/pool.toml` into the pool; a missing file is no error.
    pub fn load(&mut self, dir: &Path) -> std::io::Result<()> {
        match std::fs::read_to_string(dir.join(FILE)) {
            Ok(text) => self
                .merge_toml(&text)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Writes `dir/pool.toml` (mode 0600, replaced atomically).
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        crate::state::replace_private(&dir.join(FILE), self.to_toml().as_bytes())
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn from_unix(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// `pool.toml`.
#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    endpoint: Vec<Saved>,
}

/// One endpoint in `pool.toml`; times are Unix seconds.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Saved {
    endpoint: String,
    #[serde(default)]
    successes: u64,
    #[serde(default)]
    failures: u64,
    #[serde(default)]
    streak: u32,
    backoff_until: Option<u64>,
    last_success: Option<u64>,
    rtt_ms: Option<u64>,
    last_error: Option<String>,
    lane_budget: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(n: u16) -> Endpoint {
        Endpoint::direct("127.0.0.1", n)
    }

    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    /// Jitter that scales by exactly 1.
    const MID: f64 = 0.5;

    #[test]
    fn untried_endpoints_keep_the_sets_order() {
        let pool = Pool::new(vec![ep(1), ep(2), ep(3), ep(2)]);
        assert_eq!(pool.entries().len(), 3, "duplicates dropped");
        assert_eq!(pool.rank(t(0)), vec![ep(1), ep(2), ep(3)]);
    }

    #[test]
    fn healthy_by_rtt_then_untried_then_backed_off_by_retry_time() {
        let mut pool = Pool::new((1..=6).map(ep).collect());
        pool.record_success(&ep(5), Duration::from_millis(80), t(0));
        pool.record_success(&ep(6), Duration::from_millis(20), t(0));
        pool.record_failure(&ep(1), "connect timed out", t(0), MID);
        pool.record_failure(&ep(2), "reset", t(0), MID);
        pool.record_failure(&ep(2), "reset", t(1), MID); // 60 s from t(1)
        assert_eq!(
            pool.rank(t(2)),
            vec![ep(6), ep(5), ep(3), ep(4), ep(1), ep(2)]
        );
        assert_eq!(
            Pool::standing(pool.health(&ep(1)).unwrap(), t(2)),
            Standing::BackedOff
        );
        // ep(1)'s 30 s are over: it may be retried, after the healthy and
        // the untried ones; ep(2) is still backed off.
        assert_eq!(
            pool.rank(t(31)),
            vec![ep(6), ep(5), ep(3), ep(4), ep(1), ep(2)]
        );
        assert_eq!(
            Pool::standing(pool.health(&ep(1)).unwrap(), t(31)),
            Standing::Retry
        );
        // Once ep(2)'s is over too, the longest over goes first.
        assert_eq!(
            pool.rank(t(100)),
            vec![ep(6), ep(5), ep(3), ep(4), ep(1), ep(2)]
        );
    }

    #[test]
    fn everything_backed_off_still_yields_the_soonest_first() {
        let mut pool = Pool::new(vec![ep(1), ep(2), ep(3)]);
        for _ in 0..3 {
            pool.record_failure(&ep(1), "refused", t(0), MID);
        }
        pool.record_failure(&ep(2), "refused", t(0), MID);
        pool.record_failure(&ep(3), "refused", t(0), MID);
        pool.record_failure(&ep(3), "refused", t(0), MID);
        assert_eq!(pool.rank(t(1)), vec![ep(2), ep(3), ep(1)]);
    }

    #[test]
    fn backoff_doubles_from_30_s_to_an_hour_with_bounded_jitter() {
        let mut pool = Pool::new(vec![ep(1)]);
        let waits: Vec<u64> = (0..10)
            .map(|_| {
                pool.record_failure(&ep(1), "timed out", t(0), MID)
                    .as_secs()
            })
            .collect();
        assert_eq!(waits, [30, 60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]);
        let h = pool.health(&ep(1)).unwrap();
        assert_eq!((h.failures, h.streak), (10, 10));
        assert_eq!(h.backoff_until, Some(t(3600)));
        let mut pool = Pool::new(vec![ep(1)]);
        let low = pool.record_failure(&ep(1), "x", t(0), 0.0);
        let mut pool = Pool::new(vec![ep(1)]);
        let high = pool.record_failure(&ep(1), "x", t(0), 0.999_999);
        assert_eq!(low, Duration::from_secs(24));
        assert!(high > Duration::from_secs(35) && high < Duration::from_secs(36));
    }

    #[test]
    fn a_success_ends_the_backoff_but_only_a_long_session_resets_the_streak() {
        let mut pool = Pool::new(vec![ep(1), ep(2)]);
        pool.record_failure(&ep(1), "reset", t(0), MID);
        pool.record_failure(&ep(1), "reset", t(0), MID);
        pool.record_success(&ep(1), Duration::from_millis(5), t(100));
        assert!(
            !pool.health(&ep(1)).unwrap().backed_off(t(100)),
            "working again: no longer backed off"
        );
        // Killed seconds after each handshake: the backoff keeps growing.
        let w = pool.record_session_end(&ep(1), Duration::from_secs(3), t(103), MID);
        assert_eq!(w, Duration::from_secs(120));
        assert_eq!(pool.rank(t(104)), vec![ep(2), ep(1)]);
        // A session that lived ten minutes proved it: the next end is a
        // first failure again.
        pool.record_success(&ep(1), Duration::from_millis(5), t(300));
        let w = pool.record_session_end(&ep(1), Duration::from_secs(600), t(900), MID);
        assert_eq!(w, Duration::from_secs(30));
        assert_eq!(pool.health(&ep(1)).unwrap().streak, 1);
    }

    #[test]
    fn new_sets_keep_known_health_and_drop_the_rest() {
        let mut pool = Pool::new(vec![ep(1), ep(2)]);
        pool.record_success(&ep(2), Duration::from_millis(7), t(0));
        pool.record_failure(&ep(1), "reset", t(0), MID);
        pool.set_endpoints(vec![ep(3), ep(2)]);
        assert_eq!(pool.entries().len(), 2);
        assert!(pool.health(&ep(1)).is_none(), "gone from the set");
        assert_eq!(pool.health(&ep(2)).unwrap().successes, 1);
        assert_eq!(pool.rank(t(1)), vec![ep(2), ep(3)]);
    }

    #[test]
    fn health_round_trips_through_pool_toml() {
        let mut pool = Pool::new(vec![ep(1), ep(2), Endpoint::direct("::1", 3)]);
        pool.record_success(&ep(2), Duration::from_millis(42), t(5));
        pool.record_failure(&ep(1), "connect timed out", t(10), MID);
        pool.record_failure(&Endpoint::direct("::1", 3), "reset", t(10), MID);
        let text = pool.to_toml();
        // A later start with one endpoint gone and one new.
        let mut again = Pool::new(vec![ep(4), ep(2), ep(1)]);
        again.merge_toml(&text).unwrap();
        assert_eq!(again.health(&ep(1)), pool.health(&ep(1)));
        assert_eq!(again.health(&ep(2)), pool.health(&ep(2)));
        assert_eq!(again.health(&ep(4)), Some(&Health::default()));
        assert_eq!(again.entries().len(), 3);
        assert_eq!(again.rank(t(11)), vec![ep(2), ep(4), ep(1)]);
        assert!(
            !again.to_toml().contains("::1"),
            "not in the set: not saved"
        );
        // A server list brings [::1]:3 back a moment later: its health too.
        again.set_endpoints(vec![ep(4), ep(2), ep(1), Endpoint::direct("::1", 3)]);
        assert_eq!(
            again.health(&Endpoint::direct("::1", 3)),
            pool.health(&Endpoint::direct("::1", 3))
        );
        assert!(again.merge_toml("endpoint = 3").is_err());
    }

    #[test]
    fn save_writes_a_private_file_and_load_reads_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("samizdat-pool-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut pool = Pool::new(vec![ep(1)]);
        pool.load(&dir).expect("a missing file is an empty record");
        pool.record_failure(&ep(1), "refused", t(0), MID);
        pool.save(&dir).unwrap();
        let mode = std::fs::metadata(dir.join(FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let mut again = Pool::new(vec![ep(1)]);
        again.load(&dir).unwrap();
        assert_eq!(again.health(&ep(1)), pool.health(&ep(1)));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
