//! Users at run time: their limits, what they use now, and the snapshot
//! that a reload swaps.
//!
//! A [`Snapshot`] is everything a new connection needs to authenticate and
//! route: the validated config, the keyed user table, the search index and
//! one [`UserState`] per user. Connections take the current snapshot once,
//! at accept; a reload builds a new one and swaps it in, so connections never
//! see half a change. A user who stays (same name and key) keeps their
//! `UserState` (live counters, usage); a removed user's, or one whose key
//! changed, is ended: their connections close.

use crate::serve::config::{ServeConfig, UserLimits};
use crate::sync::Locked;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use wire::users::Users;

/// Why an authenticated user's connection was refused or ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_connections` reached.
    Connections,
    /// `max_ips` distinct addresses already connected.
    Ips,
    /// `quota` used up.
    Quota,
    /// Past `expires`.
    Expired,
    /// The user has a fleet-wide limit, Redis is down and
    /// `limits_when_down = "refuse"`.
    FleetDown,
}

impl Refusal {
    /// Stable name for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::Connections => "limit_connections",
            Refusal::Ips => "limit_ips",
            Refusal::Quota => "limit_quota",
            Refusal::Expired => "expired",
            Refusal::FleetDown => "fleet_down",
        }
    }
}

/// A token bucket for the bandwidth cap, refilled lazily on use.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: tokio::time::Instant,
}

/// One user's live state, shared by all their connections.
#[derive(Debug)]
pub struct UserState {
    /// The user's name (never the key).
    pub name: String,
    key: [u8; 16],
    limits: Mutex<UserLimits>,
    active: AtomicUsize,
    ips: Mutex<HashMap<IpAddr, usize>>,
    /// Bytes used, both directions, including earlier runs (with a fleet:
    /// the fleet-wide total last read plus what is not pushed yet).
    pub used: AtomicU64,
    /// Bytes not yet pushed to the fleet's counter (unused in-process).
    pending: AtomicU64,
    bucket: Mutex<Bucket>,
    /// Fires when the user is removed, expires or runs out of quota; a
    /// child of the server's shutdown token.
    pub ended: CancellationToken,
}

impl UserState {
    fn new(
        name: &str,
        key: [u8; 16],
        limits: UserLimits,
        used: u64,
        shutdown: &CancellationToken,
    ) -> UserState {
        UserState {
            name: name.to_string(),
            key,
            limits: Mutex::new(limits),
            active: AtomicUsize::new(0),
            ips: Mutex::new(HashMap::new()),
            used: AtomicU64::new(used),
            pending: AtomicU64::new(0),
            bucket: Mutex::new(Bucket {
                tokens: 0.0,
                last: tokio::time::Instant::now(),
            }),
            ended: shutdown.child_token(),
        }
    }

    /// The user's current limits.
    pub fn limits(&self) -> UserLimits {
        self.limits.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Admits a new connection from `ip` at unix time `now`, or says which
    /// limit refuses it. The guard releases the slot when dropped.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, now: u64) -> Result<Admission, Refusal> {
        let limits = self.limits();
        if limits.expires.is_some_and(|t| now >= t) {
            return Err(Refusal::Expired);
        }
        if limits
            .quota
            .is_some_and(|q| self.used.load(Ordering::Relaxed) >= q)
        {
            return Err(Refusal::Quota);
        }
        let mut ips = self.ips.locked();
        if let Some(max) = limits.max_connections {
            if self.active.load(Ordering::Relaxed) >= max {
                return Err(Refusal::Connections);
            }
        }
        if let Some(max) = limits.max_ips {
            if !ips.contains_key(&ip) && ips.len() >= max {
                return Err(Refusal::Ips);
            }
        }
        *ips.entry(ip).or_insert(0) += 1;
        self.active.fetch_add(1, Ordering::Relaxed);
        Ok(Admission {
            user: self.clone(),
            ip,
            lease: None,
        })
    }

    /// Takes the bytes not yet pushed to the fleet (put them back with
    /// [`UserState::unpushed`] if the push fails).
    pub fn take_pending(&self) -> u64 {
        self.pending.swap(0, Ordering::Relaxed)
    }

    /// Returns bytes whose push failed; they go with the next one.
    pub fn unpushed(&self, n: u64) {
        self.pending.fetch_add(n, Ordering::Relaxed);
    }

    /// Sets usage to the fleet-wide `total` (plus what is not pushed yet)
    /// and ends the user's connections if that passes their quota.
    pub fn set_fleet_usage(&self, total: u64) -> bool {
        let used = total + self.pending.load(Ordering::Relaxed);
        self.used.store(used, Ordering::Relaxed);
        if self.limits().quota.is_some_and(|q| used >= q) && !self.ended.is_cancelled() {
            self.ended.cancel();
            return true;
        }
        false
    }

    /// Connections open right now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Accounts `n` relayed bytes. Returns how long the caller should wait
    /// before moving more (bandwidth cap), or `Err` when the quota is used
    /// up (the user's connections are then ended).
    pub fn charge(&self, n: usize) -> Result<Duration, Refusal> {
        let limits = self.limits();
        self.pending.fetch_add(n as u64, Ordering::Relaxed);
        let used = self.used.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        if limits.quota.is_some_and(|q| used >= q) {
            self.ended.cancel();
            return Err(Refusal::Quota);
        }
        let Some(rate) = limits.bandwidth else {
            return Ok(Duration::ZERO);
        };
        let rate = rate as f64;
        let mut b = self.bucket.locked();
        let now = tokio::time::Instant::now();
        // Allow a burst of a quarter second's worth.
        b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * rate).min(rate / 4.0);
        b.last = now;
        b.tokens -= n as f64;
        if b.tokens >= 0.0 {
            Ok(Duration::ZERO)
        } else {
            Ok(Duration::from_secs_f64(-b.tokens / rate))
        }
    }
}

impl super::relay::Meter for UserState {
    fn charge(&self, n: usize) -> Result<Duration, ()> {
        UserState::charge(self, n).map_err(|_| ())
    }
}

/// A connection's slot in its user's limits; released on drop.
#[derive(Debug)]
pub struct Admission {
    /// The user.
    pub user: Arc<UserState>,
    ip: IpAddr,
    /// The fleet-wide lease (users with connection or address limits, with
    /// Redis); released with the admission.
    lease: Option<crate::fleet::leases::Lease>,
}

impl Admission {
    /// Attaches the fleet-wide lease.
    pub fn with_lease(mut self, lease: Option<crate::fleet::leases::Lease>) -> Admission {
        self.lease = lease;
        self
    }

    /// The client's address.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.user.active.fetch_sub(1, Ordering::Relaxed);
        let mut ips = self.user.ips.locked();
        if let Some(n) = ips.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                ips.remove(&self.ip);
            }
        }
    }
}

/// Everything a new connection authenticates and routes with.
pub struct Snapshot {
    /// The validated configuration.
    pub config: ServeConfig,
    /// Users, pre-keyed, in config order.
    pub users: Users,
    /// Key search order.
    pub auth: super::auth::AuthIndex,
    /// Live state per user, same order as `users`.
    pub states: Vec<Arc<UserState>>,
    /// Samizdat-transport user id → (user index, auth key); empty when the
    /// transport is off.
    pub tunnel: HashMap<[u8; 8], (usize, [u8; 32])>,
}

impl Snapshot {
    /// Builds a snapshot. Users present in `previous` with the same name and
    /// key keep their state (with the new limits); others start fresh, with
    /// usage from `usage` (bytes by name, from the state directory).
    pub fn build(
        config: ServeConfig,
        previous: Option<&Snapshot>,
        usage: &BTreeMap<String, u64>,
        shutdown: &CancellationToken,
    ) -> Snapshot {
        let users = Users::new(config.users.iter().map(|u| (u.name.clone(), u.key.clone())));
        let auth = super::auth::AuthIndex::new(config.users.iter().map(|u| u.domains.as_slice()));
        let before: HashMap<&str, &Arc<UserState>> = previous
            .map(|p| p.states.iter().map(|s| (s.name.as_str(), s)).collect())
            .unwrap_or_default();
        let states = config
            .users
            .iter()
            .map(|u| {
                let kept = before
                    .get(u.name.as_str())
                    .filter(|s| s.key == u.key.0 && !s.ended.is_cancelled());
                match kept {
                    Some(&s) => {
                        if let Ok(mut l) = s.limits.lock() {
                            *l = u.limits.clone();
                        }
                        s.clone()
                    }
                    None => Arc::new(UserState::new(
                        &u.name,
                        u.key.0,
                        u.limits.clone(),
                        usage.get(&u.name).copied().unwrap_or(0),
                        shutdown,
                    )),
                }
            })
            .collect();
        let tunnel = if config.tunnel {
            config
                .users
                .iter()
                .enumerate()
                .map(|(i, u)| {
                    let cred = wire::tunnel::handshake::UserCredential::from_secret(&u.key.0);
                    (cred.user_id(), (i, cred.auth_key()))
                })
                .collect()
        } else {
            HashMap::new()
        };
        Snapshot {
            config,
            users,
            auth,
            states,
            tunnel,
        }
    }

    /// Ends the connections of users of `self` that `next` no longer has
    /// (removed, or their key changed).
    pub fn end_dropped(&self, next: &Snapshot) -> Vec<String> {
        let kept: std::collections::HashSet<*const UserState> =
            next.states.iter().map(Arc::as_ptr).collect();
        let mut ended = Vec::new();
        for s in &self.states {
            if !kept.contains(&Arc::as_ptr(s)) {
                s.ended.cancel();
                ended.push(s.name.clone());
            }
        }
        ended
    }

    /// Usage by user name, for saving.
    pub fn usage(&self) -> BTreeMap<String, u64> {
        self.states
            .iter()
            .map(|s| (s.name.clone(), s.used.load(Ordering::Relaxed)))
            .collect()
    }

    /// Ends the connections of users whose `expires` has passed.
    pub fn end_expired(&self, now: u64) -> Vec<String> {
        let mut ended = Vec::new();
        for s in &self.states {
            if s.limits().expires.is_some_and(|t| now >= t) && !s.ended.is_cancelled() {
                s.ended.cancel();
                ended.push(s.name.clone());
            }
        }
        ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(limits: UserLimits) -> Arc<UserState> {
        Arc::new(UserState::new(
            "u",
            [1; 16],
            limits,
            0,
            &CancellationToken::new(),
        ))
    }

    #[test]
    fn connection_and_ip_limits_hold_and_release() {
        let s = state(UserLimits {
            max_connections: Some(2),
            max_ips: Some(1),
            ..Default::default()
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let g1 = s.admit(a, 0).unwrap();
        assert_eq!(s.admit(b, 0).unwrap_err(), Refusal::Ips);
        let g2 = s.admit(a, 0).unwrap();
        assert_eq!(s.admit(a, 0).unwrap_err(), Refusal::Connections);
        drop((g1, g2));
        assert_eq!(s.active(), 0);
        let _g = s.admit(b, 0).unwrap();
    }

    #[test]
    fn expiry_and_quota_refuse() {
        let s = state(UserLimits {
            expires: Some(100),
            quota: Some(1000),
            ..Default::default()
        });
        assert!(s.admit("10.0.0.1".parse().unwrap(), 99).is_ok());
        assert_eq!(
            s.admit("10.0.0.1".parse().unwrap(), 100).unwrap_err(),
            Refusal::Expired
        );
        assert!(s.charge(999).is_ok());
        assert!(!s.ended.is_cancelled());
        assert_eq!(s.charge(1).unwrap_err(), Refusal::Quota);
        assert!(
            s.ended.is_cancelled(),
            "running out of quota ends the user's connections"
        );
        assert_eq!(
            s.admit("10.0.0.1".parse().unwrap(), 0).unwrap_err(),
            Refusal::Quota
        );
    }

    #[tokio::test(start_paused = true)]
    async fn bandwidth_cap_asks_to_wait() {
        let s = state(UserLimits {
            bandwidth: Some(1000),
            ..Default::default()
        });
        let wait = s.charge(1000).unwrap();
        assert!(wait >= Duration::from_millis(900), "{wait:?}");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(s.charge(100).unwrap(), Duration::ZERO);
    }
}
