//! A bounded, time-windowed replay cache (the shape of quinn's
//! `BloomTokenLog`: two generations rotated by time or size).
//!
//! Censors replay captured first flights, hours or weeks later (the GFW has
//! replayed after 570 h), to see whether a server answers differently from
//! the site it pretends to be. Fake-TLS hellos carry a timestamp, so a cache
//! that remembers everything since [`ReplayCache::horizon`] together with a
//! timestamp check (`ts >= horizon`) refuses every replay, however late.
//! Bare obfuscated2 has no timestamp: its cache is bounded by count only.
//!
//! Only handshakes that authenticated are inserted, so an attacker without a
//! key cannot fill the cache.
//!
//! A generation that fills up before its time rotates early and forgets the
//! generation before it. Those hellos' timestamps may still be inside the
//! window (a client clock up to `max_future` ahead), so the cache keeps the
//! newest timestamp of each generation ([`ReplayCache::check_and_insert_at`])
//! and, when it forgets one, moves the horizon past it: a forgotten hello is
//! then refused by its timestamp. (Only after a million authenticated
//! hellos in one window; clients whose clock is behind the newest forgotten
//! timestamp are refused until their clock passes it, at most `max_future`.)

use std::collections::HashSet;

/// Key stored per handshake: 16 bytes that the client chose at random and
/// (for fake-TLS) that embed its HMAC.
pub type ReplayKey = [u8; 16];

/// Two generations of seen keys.
#[derive(Debug)]
pub struct ReplayCache {
    current: HashSet<ReplayKey>,
    previous: HashSet<ReplayKey>,
    current_since: u64,
    previous_since: u64,
    /// Newest timestamp inserted into each generation (0: none).
    current_newest: u64,
    previous_newest: u64,
    /// Every forgotten timestamped key had a timestamp below this.
    forgotten_below: u64,
    /// Seconds a generation lives; 0 rotates by count only.
    period: u64,
    /// Entries per generation before an early rotation.
    cap: usize,
}

impl ReplayCache {
    /// A cache created at unix time `now`; it remembers everything from
    /// `now` on while each generation lives `period` seconds and holds at
    /// most `cap` entries.
    pub fn new(now: u64, period: u64, cap: usize) -> ReplayCache {
        ReplayCache {
            current: HashSet::new(),
            previous: HashSet::new(),
            current_since: now,
            previous_since: now,
            current_newest: 0,
            previous_newest: 0,
            forgotten_below: 0,
            period,
            cap: cap.max(1),
        }
    }

    fn rotate_if_due(&mut self, now: u64) {
        let aged = self.period > 0 && now.saturating_sub(self.current_since) >= self.period;
        if aged || self.current.len() >= self.cap {
            // The previous generation is forgotten: nothing with its
            // timestamps may pass again.
            if !self.previous.is_empty() {
                self.forgotten_below = self
                    .forgotten_below
                    .max(self.previous_newest.saturating_add(1));
            }
            self.previous = std::mem::take(&mut self.current);
            self.previous_since = self.current_since;
            self.previous_newest = self.current_newest;
            self.current_since = now;
            self.current_newest = 0;
        }
    }

    /// Records `key`; returns `false` if it was seen before (a replay).
    /// For handshakes without a timestamp (bare obfuscated2).
    pub fn check_and_insert(&mut self, key: ReplayKey, now: u64) -> bool {
        self.rotate_if_due(now);
        if self.previous.contains(&key) {
            return false;
        }
        self.current.insert(key)
    }

    /// [`ReplayCache::check_and_insert`] for a handshake whose timestamp is
    /// `ts` (already checked against [`ReplayCache::horizon`]): once the
    /// key is forgotten, the horizon is past `ts`.
    pub fn check_and_insert_at(&mut self, key: ReplayKey, now: u64, ts: u64) -> bool {
        let fresh = self.check_and_insert(key, now);
        if fresh {
            self.current_newest = self.current_newest.max(ts);
        }
        fresh
    }

    /// A timestamped handshake older than this must be refused: keys are
    /// remembered for everything inserted since then, and every forgotten
    /// key's timestamp is below it.
    pub fn horizon(&self) -> u64 {
        self.previous_since.max(self.forgotten_below)
    }

    /// Number of remembered keys.
    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `classify` does: the horizon, then the cache.
    fn admit(cache: &mut ReplayCache, key: u8, ts: u64, now: u64) -> bool {
        ts >= cache.horizon() && cache.check_and_insert_at([key; 16], now, ts)
    }

    #[test]
    fn a_hello_forgotten_by_an_early_rotation_is_refused_by_its_timestamp() {
        // A window of 600 s behind and 60 s ahead; two keys per generation.
        let mut cache = ReplayCache::new(1_000, 660, 2);
        // Its client's clock is 60 s ahead: admitted at 1000 with ts 1060.
        assert!(admit(&mut cache, 1, 1_060, 1_000));
        assert!(!admit(&mut cache, 1, 1_060, 1_000), "remembered");
        // Four more hellos within a second rotate twice by count.
        for (key, now) in [(2, 1_000), (3, 1_001), (4, 1_001), (5, 1_001)] {
            assert!(admit(&mut cache, key, now, now));
        }
        // Key 1 is forgotten, its timestamp still inside the window.
        for now in [1_001, 1_030, 1_600] {
            assert!(
                !admit(&mut cache, 1, 1_060, now),
                "a forgotten hello passed again at {now} (horizon {})",
                cache.horizon()
            );
        }
        // Fresh hellos with current clocks still pass.
        assert!(admit(&mut cache, 6, 1_061, 1_061));
        assert!(!admit(&mut cache, 6, 1_061, 1_061));
    }

    #[test]
    fn time_rotation_keeps_the_window_and_the_horizon_follows_it() {
        let mut cache = ReplayCache::new(1_000, 660, 1_000);
        assert!(admit(&mut cache, 1, 1_000, 1_000));
        assert_eq!(cache.horizon(), 1_000);
        // One rotation by time: key 1 is still remembered.
        assert!(admit(&mut cache, 2, 1_700, 1_700));
        assert!(!admit(&mut cache, 1, 1_000, 1_700));
        assert_eq!(cache.horizon(), 1_000);
        // Two: it is forgotten, and the horizon is past its timestamp.
        assert!(admit(&mut cache, 3, 2_400, 2_400));
        assert!(cache.horizon() > 1_000);
        assert!(!admit(&mut cache, 1, 1_000, 2_400));
    }
}
