//! Giving memory back to the system after a crowd has left. This is the
//! crate's one `unsafe` block (`malloc_trim`); the crate denies
//! `unsafe_code` everywhere else.

use super::ServeShared;
use std::sync::Arc;

/// Gives memory back once a crowd of connections has left. glibc keeps
/// what freed connections used in its arenas and returns only what lies at
/// the top of a heap, so without this RSS stays at its peak (measured: 72
/// MB after 9,900 idle connections closed, 7.7 MB after `malloc_trim`).
/// Once a second: if the open connections fell to half of their peak since
/// the last release, and by at least 256, drop the pool's idle buffers and
/// trim.
pub async fn release_after_crowds(shared: Arc<ServeShared>) {
    let mut peak = 0;
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let open = shared.active.load(std::sync::atomic::Ordering::Relaxed);
        peak = peak.max(open);
        if peak >= open + 256 && open <= peak / 2 {
            shared.pool.release();
            trim_heap();
            peak = open;
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim_heap() {
    // SAFETY: malloc_trim takes no pointers and is thread-safe: it locks
    // each arena in turn and hands whole free pages back to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_heap() {}
