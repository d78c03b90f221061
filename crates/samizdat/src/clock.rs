//! The one place this crate reads the system's clocks (`clippy.toml`
//! forbids `SystemTime::now` and `std::time::Instant::now` elsewhere).
//!
//! Timers and deadlines use `tokio::time::Instant`, which tokio's paused
//! time controls in tests. What needs the wall clock (handshake
//! timestamps, expiry, saved state) or real elapsed time (a CPU time
//! slice, a measurement of a peer) comes from here, so a reader sees every
//! such use by its caller.
#![allow(clippy::disallowed_methods)]

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Unix time in seconds (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    system_now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The wall clock.
pub fn system_now() -> SystemTime {
    SystemTime::now()
}

/// Real elapsed time, not tokio's (paused) clock: for CPU time slices and
/// measurements of the outside world.
pub fn real_now() -> Instant {
    Instant::now()
}
