//! One policy for poisoned locks: carry on with the data. A panic while a
//! lock was held leaves a task's state half-updated, but every structure
//! behind these locks stays valid at each step (counters, maps, queues),
//! and a server that stops serving everyone because one task panicked is
//! worse than one stale entry.

use std::sync::{Mutex, MutexGuard};

/// [`Mutex::lock`] that recovers a poisoned lock instead of panicking.
pub trait Locked<T> {
    /// The guard, poisoned or not.
    fn locked(&self) -> MutexGuard<'_, T>;
}

impl<T> Locked<T> for Mutex<T> {
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(|p| p.into_inner())
    }
}
