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
            period,
            cap: cap.max(1),
        }
    }

    fn rotate_if_due(&mut self, now: u64) {
        let aged = self.period > 0 && now.saturating_sub(self.current_since) >= self.period;
        if aged || self.current.len() >= self.cap {
            self.previous = std::mem::take(&mut self.current);
            self.previous_since = self.current_since;
            self.current_since = now;
        }
    }

    /// Records `key`; returns `false` if it was seen before (a replay).
    pub fn check_and_insert(&mut self, key: ReplayKey, now: u64) -> bool {
        self.rotate_if_due(now);
        if self.previous.contains(&key) {
            return false;
        }
        self.current.insert(key)
    }

    /// Unix time since which every inserted key is still remembered. A
    /// timestamped handshake older than this must be refused.
    pub fn horizon(&self) -> u64 {
        self.previous_since
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
