//! What several `serve` instances may share, behind one interface.
//!
//! [`SharedState`] has two implementations, and the server asks without
//! knowing which:
//!
//! - [`InProcess`], the default: this instance is the whole fleet. Its
//!   local caches and counters have already decided by the time it is
//!   asked, so every answer is immediate, and usage is kept in the state
//!   directory.
//! - [`Fleet`] (`--redis URL`): the fleet's answer on top of the local one,
//!   each call bounded by the Redis deadline, with the configured
//!   behaviour when Redis is down (see [`super`]).

use super::leases::Lease;
use super::{Down, DownReplay, Fleet, ReplayAnswer, ReplayKind};
use crate::serve::config::{UserEntry, UserLimits};
use crate::serve::users::Refusal;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// A shared-state answer (boxed, so that implementations can be chosen at
/// start-up behind one `dyn`).
pub type Answer<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The state instances share: replay keys, connection leases, usage and
/// the shared user table.
pub trait SharedState: Send + Sync {
    /// Second replay filter, after the local cache accepted `key`:
    /// whether any instance accepted it before.
    fn check_replay(
        &self,
        kind: ReplayKind,
        key: [u8; 16],
        ttl: Duration,
    ) -> Answer<'_, ReplayAnswer>;

    /// The fleet-wide connection and address limits of `user`, checked
    /// after this instance's own: a lease to hold while connected (`None`
    /// when there is nothing to hold).
    fn admit<'a>(
        &'a self,
        user: &'a str,
        ip: IpAddr,
        limits: &'a UserLimits,
    ) -> Answer<'a, Result<Option<Lease>, Refusal>>;

    /// Whether usage lives in this instance's state directory
    /// (`usage.toml`). If not, it is pushed with [`SharedState::add_usage`].
    fn usage_is_local(&self) -> bool;

    /// Adds each user's new bytes; returns the fleet-wide totals in the
    /// same order.
    fn add_usage<'a>(&'a self, deltas: &'a [(&'a str, u64)]) -> Answer<'a, Result<Vec<u64>, Down>>;

    /// The shared user table, when it changed since the version in `seen`
    /// (which is then updated); `None` when unchanged, unreachable or not
    /// shared.
    fn users<'a>(&'a self, seen: &'a mut Option<u64>) -> Answer<'a, Option<Vec<UserEntry>>>;

    /// What `/readyz` says about shared state.
    fn readiness(&self) -> &'static str;

    /// The Redis fleet, for the work only a fleet does (lease refresh,
    /// release retries, its start-up line); `None` in-process.
    fn fleet(&self) -> Option<&Arc<Fleet>>;
}

/// Everything in this process: the local checks are the only ones.
pub struct InProcess;

impl SharedState for InProcess {
    fn check_replay(&self, _: ReplayKind, _: [u8; 16], _: Duration) -> Answer<'_, ReplayAnswer> {
        Box::pin(std::future::ready(ReplayAnswer::Fresh))
    }

    fn admit<'a>(
        &'a self,
        _: &'a str,
        _: IpAddr,
        _: &'a UserLimits,
    ) -> Answer<'a, Result<Option<Lease>, Refusal>> {
        Box::pin(std::future::ready(Ok(None)))
    }

    fn usage_is_local(&self) -> bool {
        true
    }

    fn add_usage<'a>(&'a self, deltas: &'a [(&'a str, u64)]) -> Answer<'a, Result<Vec<u64>, Down>> {
        // Not called (usage is local); the totals would be the deltas.
        Box::pin(std::future::ready(Ok(deltas.iter().map(|d| d.1).collect())))
    }

    fn users<'a>(&'a self, _: &'a mut Option<u64>) -> Answer<'a, Option<Vec<UserEntry>>> {
        Box::pin(std::future::ready(None))
    }

    fn readiness(&self) -> &'static str {
        "ready"
    }

    fn fleet(&self) -> Option<&Arc<Fleet>> {
        None
    }
}

/// The Redis fleet (an `Arc` because leases point back at it).
pub struct Redis(pub Arc<Fleet>);

impl SharedState for Redis {
    fn check_replay(
        &self,
        kind: ReplayKind,
        key: [u8; 16],
        ttl: Duration,
    ) -> Answer<'_, ReplayAnswer> {
        Box::pin(async move {
            match self.0.check_replay(kind, &key, ttl).await {
                Ok(a) => a,
                Err(Down) => match self.0.config.replay_when_down {
                    DownReplay::Open => ReplayAnswer::Fresh,
                    DownReplay::Closed => ReplayAnswer::Replay,
                },
            }
        })
    }

    fn admit<'a>(
        &'a self,
        user: &'a str,
        ip: IpAddr,
        limits: &'a UserLimits,
    ) -> Answer<'a, Result<Option<Lease>, Refusal>> {
        Box::pin(self.0.admit(user, ip, limits))
    }

    fn usage_is_local(&self) -> bool {
        false
    }

    fn add_usage<'a>(&'a self, deltas: &'a [(&'a str, u64)]) -> Answer<'a, Result<Vec<u64>, Down>> {
        Box::pin(self.0.add_usage_many(deltas))
    }

    fn users<'a>(&'a self, seen: &'a mut Option<u64>) -> Answer<'a, Option<Vec<UserEntry>>> {
        Box::pin(async move {
            if !self.0.config.shared_users {
                return None;
            }
            let version = self.0.users_version().await.ok()?;
            if *seen == Some(version) {
                return None;
            }
            let users = self.0.shared_users().await.ok()?;
            *seen = Some(version);
            Some(users)
        })
    }

    fn readiness(&self) -> &'static str {
        if self.0.is_up() {
            "ready; redis up"
        } else {
            // Serving on with the configured fallbacks is the point of
            // them; the body says why the replay and limits are local.
            "ready; redis down (fallbacks in force)"
        }
    }

    fn fleet(&self) -> Option<&Arc<Fleet>> {
        Some(&self.0)
    }
}
