//! Fleet-wide `max_connections` and `max_ips`: leases in Redis.
//!
//! Each open connection of a user with such a limit holds a lease: a member
//! `INSTANCE|ID` of the sorted set `PREFIX:conns:USER`, and its address a
//! member `ADDRESS|INSTANCE` of `PREFIX:ips:USER`, each scored with its expiry
//! (Redis server time + `lease`). Admission is one Lua script that drops
//! expired members, counts, and adds. Every instance refreshes its own
//! leases every `lease`/3 (re-adding any that Redis lost while it was down),
//! and removes them when connections close; the leases of an instance that
//! died expire on their own.
//!
//! `ADDRESS` is never the client's address itself: Redis (and its
//! append-only file) would then keep a history of who connected from
//! where. It is a keyed hash, the first 16 bytes of HMAC-SHA256 under the
//! fleet's address key (hex), which the script compares for equality only.
//! The key comes from the transport key file every instance of a fleet
//! shares ([`address_key`]), never from Redis: whoever reads Redis cannot
//! test guessed addresses against it.

use super::{DownLimits, Fleet};
use crate::serve::config::UserLimits;
use crate::serve::users::Refusal;
use crate::sync::Locked;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

const ADMIT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[1])
local max_conns = tonumber(ARGV[2])
local max_ips = tonumber(ARGV[3])
local ip = ARGV[5]
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if max_conns > 0 and redis.call('ZCARD', KEYS[1]) >= max_conns then
  return 1
end
if max_ips > 0 then
  local seen = {}
  local n = 0
  local mine = false
  for _, m in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
    local a = string.match(m, '^(.*)|[^|]*$')
    if a == ip then mine = true end
    if a and not seen[a] then
      seen[a] = true
      n = n + 1
    end
  end
  if not mine and n >= max_ips then
    return 2
  end
end
redis.call('ZADD', KEYS[1], now + lease, ARGV[4])
redis.call('ZADD', KEYS[2], now + lease, ARGV[6])
redis.call('PEXPIRE', KEYS[1], lease * 2)
redis.call('PEXPIRE', KEYS[2], lease * 2)
return 0
"#;

const REFRESH: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[1])
local conns = tonumber(ARGV[2])
for i = 3, #ARGV do
  if i < 3 + conns then
    redis.call('ZADD', KEYS[1], now + lease, ARGV[i])
  else
    redis.call('ZADD', KEYS[2], now + lease, ARGV[i])
  end
end
redis.call('PEXPIRE', KEYS[1], lease * 2)
redis.call('PEXPIRE', KEYS[2], lease * 2)
return 0
"#;

/// Publishes this instance's address-key id in `KEYS[1]` unless another
/// one is there: 1 if the fleet agrees with it, 0 if not.
const KEY_ID: &str = r#"
local cur = redis.call('GET', KEYS[1])
if (not cur) or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"#;

/// Most leases refreshed in one script call (bounds the request size).
const REFRESH_BATCH: usize = 1000;

/// Most releases kept for a retry while Redis is down or slow; past this
/// they are left to expire with their lease.
const MAX_UNRELEASED: usize = 100_000;

/// The key client addresses are hashed under in Redis, derived from the
/// transport private key every instance of a fleet shares (domain
/// separated: it is not the transport key).
pub fn address_key(transport_secret: &[u8; 32]) -> [u8; 32] {
    wire::users::hmac_sha256(
        transport_secret,
        &[b"samizdat fleet: client address key v1"],
    )
}

/// This instance's leases.
pub struct Leases {
    inner: Mutex<Inner>,
    next: AtomicU64,
    instance: String,
    /// See [`address_key`]; random until [`Leases::set_address_key`] (so an
    /// address is never stored in the clear, even by a caller that forgot).
    address_key: Mutex<[u8; 32]>,
    admit: redis::Script,
    refresh: redis::Script,
    key_id: redis::Script,
    /// Whether another instance hashes addresses under another key.
    key_differs: AtomicBool,
}

#[derive(Default)]
struct Inner {
    /// Lease id → (user, address).
    by_id: HashMap<u64, (Arc<str>, IpAddr)>,
    /// Open leases per (user, address): the address member is removed
    /// when the last one closes.
    ip_refs: HashMap<(Arc<str>, IpAddr), usize>,
    /// Releases Redis did not take in time, retried every second.
    unreleased: Vec<Release>,
}

/// Members to remove from a user's lease sets.
#[derive(Debug, Clone)]
struct Release {
    user: Arc<str>,
    conn: String,
    ip: Option<String>,
}

/// One connection's lease; removed from Redis when dropped.
pub struct Lease {
    fleet: Arc<Fleet>,
    id: u64,
}

impl Leases {
    pub(super) fn new(config: &super::FleetConfig, random: [u8; 32]) -> Leases {
        Leases {
            inner: Mutex::new(Inner::default()),
            next: AtomicU64::new(1),
            instance: config.instance.clone(),
            address_key: Mutex::new(random),
            admit: redis::Script::new(ADMIT),
            refresh: redis::Script::new(REFRESH),
            key_id: redis::Script::new(KEY_ID),
            key_differs: AtomicBool::new(false),
        }
    }

    /// Open leases on this instance.
    pub fn len(&self) -> usize {
        self.inner.lock().map(|i| i.by_id.len()).unwrap_or(0)
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn conn_member(&self, id: u64) -> String {
        format!("{}|{id}", self.instance)
    }

    /// Sets the key addresses are hashed under ([`address_key`]); every
    /// instance of the fleet must use the same.
    pub fn set_address_key(&self, key: [u8; 32]) {
        *self.address_key.locked() = key;
    }

    /// A public name of the address key (it tells nothing about the key or
    /// the addresses): instances compare it in Redis.
    fn address_key_id(&self) -> String {
        let key = *self.address_key.locked();
        hex::encode(&wire::users::hmac_sha256(&key, &[b"key id"])[..8])
    }

    /// What Redis holds for `ip`: a keyed hash, never the address.
    fn address_tag(&self, ip: IpAddr) -> String {
        let key = *self.address_key.locked();
        let (version, octets): (u8, Vec<u8>) = match ip {
            IpAddr::V4(a) => (4, a.octets().to_vec()),
            IpAddr::V6(a) => (6, a.octets().to_vec()),
        };
        let mac = wire::users::hmac_sha256(&key, &[&[version], &octets]);
        hex::encode(&mac[..16])
    }

    fn ip_member(&self, ip: IpAddr) -> String {
        format!("{}|{}", self.address_tag(ip), self.instance)
    }

    fn register(&self, user: &str, ip: IpAddr) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let user: Arc<str> = user.into();
        let mut inner = self.inner.locked();
        *inner.ip_refs.entry((user.clone(), ip)).or_insert(0) += 1;
        inner.by_id.insert(id, (user, ip));
        id
    }

    /// Forgets a lease; returns its user, address and whether it was the
    /// user's last one from that address here.
    fn unregister(&self, id: u64) -> Option<(Arc<str>, IpAddr, bool)> {
        let mut inner = self.inner.locked();
        let (user, ip) = inner.by_id.remove(&id)?;
        let key = (user.clone(), ip);
        let last = match inner.ip_refs.get_mut(&key) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            _ => {
                inner.ip_refs.remove(&key);
                true
            }
        };
        Some((user, ip, last))
    }
}

impl Fleet {
    /// Fleet-wide admission for a user with `max_connections` or `max_ips`
    /// (users without either need no lease: `Ok(None)`). When Redis is
    /// down, `limits_when_down` decides.
    pub async fn admit(
        self: &Arc<Self>,
        user: &str,
        ip: IpAddr,
        limits: &UserLimits,
    ) -> Result<Option<Lease>, Refusal> {
        if limits.max_connections.is_none() && limits.max_ips.is_none() {
            return Ok(None);
        }
        let id = self.leases.register(user, ip);
        let lease = Lease {
            fleet: self.clone(),
            id,
        };
        let mut inv = self.leases.admit.prepare_invoke();
        inv.key(self.key(&format!("conns:{user}")))
            .key(self.key(&format!("ips:{user}")))
            .arg(self.config.lease.as_millis() as u64)
            .arg(limits.max_connections.unwrap_or(0))
            .arg(limits.max_ips.unwrap_or(0))
            .arg(self.leases.conn_member(id))
            .arg(self.leases.address_tag(ip))
            .arg(self.leases.ip_member(ip));
        match self.script::<i64>(inv).await {
            Ok(0) => Ok(Some(lease)),
            Ok(1) => {
                lease.forget_locally();
                Err(Refusal::Connections)
            }
            Ok(_) => {
                lease.forget_locally();
                Err(Refusal::Ips)
            }
            // Kept locally: the next refresh adds it to Redis once it is back.
            Err(_) if self.config.limits_when_down == DownLimits::Local => Ok(Some(lease)),
            Err(_) => {
                lease.forget_locally();
                Err(Refusal::FleetDown)
            }
        }
    }

    /// Removes lease members from Redis; `false` if Redis did not answer.
    async fn release(&self, r: &Release) -> bool {
        let mut pipe = redis::pipe();
        pipe.cmd("ZREM")
            .arg(self.key(&format!("conns:{}", r.user)))
            .arg(&r.conn)
            .ignore();
        if let Some(ip) = &r.ip {
            pipe.cmd("ZREM")
                .arg(self.key(&format!("ips:{}", r.user)))
                .arg(ip)
                .ignore();
        }
        let mut conn = self.conn.clone();
        let res =
            tokio::time::timeout(self.config.timeout, pipe.query_async::<()>(&mut conn)).await;
        self.outcome(res).is_ok()
    }

    fn keep_unreleased(&self, r: Release) {
        let mut inner = self.leases.inner.locked();
        if inner.unreleased.len() < MAX_UNRELEASED {
            inner.unreleased.push(r);
        }
    }

    /// Retries the releases Redis missed (called every second).
    pub async fn retry_releases(&self) {
        let todo = {
            let mut inner = self.leases.inner.locked();
            std::mem::take(&mut inner.unreleased)
        };
        let mut todo = todo.into_iter();
        for r in todo.by_ref() {
            if !self.release(&r).await {
                self.keep_unreleased(r);
                break;
            }
        }
        for r in todo {
            self.keep_unreleased(r);
        }
    }

    /// Checks that the fleet's instances hash addresses under one key (the
    /// one transport key file); warns once when they do not, since
    /// `max_ips` then counts one client address once per key.
    async fn check_address_key(&self) {
        let mut inv = self.leases.key_id.prepare_invoke();
        inv.key(self.key("address-key"))
            .arg(self.leases.address_key_id())
            .arg((self.config.lease.as_millis() as u64).saturating_mul(3));
        let Ok(agrees) = self.script::<i64>(inv).await else {
            return;
        };
        let differs = agrees == 0;
        if self.leases.key_differs.swap(differs, Ordering::Relaxed) != differs {
            if differs {
                tracing::warn!(
                    "another instance of this fleet has a different transport key, so client addresses are hashed differently and max_ips counts an address once per key: give every instance the same transport_key file (docs/fleet.md)"
                );
            } else {
                tracing::info!("every instance of this fleet hashes client addresses alike again");
            }
        }
    }

    /// Refreshes (and re-adds) every lease of this instance, after checking
    /// that the fleet agrees on the address key.
    pub async fn refresh_leases(&self) {
        self.check_address_key().await;
        let by_user: HashMap<Arc<str>, (Vec<u64>, Vec<IpAddr>)> = {
            let inner = self.leases.inner.locked();
            let mut m: HashMap<Arc<str>, (Vec<u64>, Vec<IpAddr>)> = HashMap::new();
            for (id, (user, _)) in &inner.by_id {
                m.entry(user.clone()).or_default().0.push(*id);
            }
            for (user, ip) in inner.ip_refs.keys() {
                m.entry(user.clone()).or_default().1.push(*ip);
            }
            m
        };
        for (user, (ids, ips_of_user)) in by_user {
            let conns: Vec<String> = ids.iter().map(|&i| self.leases.conn_member(i)).collect();
            let ips: Vec<String> = ips_of_user
                .iter()
                .map(|&i| self.leases.ip_member(i))
                .collect();
            for chunk in conns.chunks(REFRESH_BATCH) {
                if !self.refresh_chunk(&user, chunk, &ips).await {
                    // Redis is down: try everything again next time.
                    return;
                }
            }
            // Leases that closed while this refresh ran were re-added by
            // it: remove them again.
            let closed: Vec<Release> = {
                let inner = self.leases.inner.locked();
                ids.iter()
                    .filter(|id| !inner.by_id.contains_key(id))
                    .map(|&id| Release {
                        user: user.clone(),
                        conn: self.leases.conn_member(id),
                        ip: None,
                    })
                    .chain(
                        ips_of_user
                            .iter()
                            .filter(|ip| !inner.ip_refs.contains_key(&(user.clone(), **ip)))
                            .map(|&ip| Release {
                                user: user.clone(),
                                conn: String::new(),
                                ip: Some(self.leases.ip_member(ip)),
                            }),
                    )
                    .collect()
            };
            for r in closed {
                self.keep_unreleased(r);
            }
        }
    }

    async fn refresh_chunk(&self, user: &str, conns: &[String], ips: &[String]) -> bool {
        let mut inv = self.leases.refresh.prepare_invoke();
        inv.key(self.key(&format!("conns:{user}")))
            .key(self.key(&format!("ips:{user}")))
            .arg(self.config.lease.as_millis() as u64)
            .arg(conns.len())
            .arg(conns)
            .arg(ips);
        self.script::<i64>(inv).await.is_ok()
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("id", &self.id).finish()
    }
}

impl Lease {
    /// Drops a lease that Redis never took (refused, or Redis down).
    fn forget_locally(self) {
        // `drop` then finds nothing to remove.
        self.fleet.leases.unregister(self.id);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some((user, ip, last)) = self.fleet.leases.unregister(self.id) else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let fleet = self.fleet.clone();
        let release = Release {
            user,
            conn: fleet.leases.conn_member(self.id),
            ip: last.then(|| fleet.leases.ip_member(ip)),
        };
        rt.spawn(async move {
            if !fleet.release(&release).await {
                fleet.keep_unreleased(release);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_members_are_keyed_hashes_that_agree_under_one_key() {
        let config = super::super::FleetConfig::new("redis://127.0.0.1:1".into());
        let (a, b) = (Leases::new(&config, [1; 32]), Leases::new(&config, [2; 32]));
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        // Two processes with their own (random) keys disagree...
        assert_ne!(a.address_tag(ip), b.address_tag(ip));
        // ...and agree once given the fleet's key.
        let key = address_key(&[9; 32]);
        a.set_address_key(key);
        b.set_address_key(key);
        let tag = a.address_tag(ip);
        assert_eq!(tag, b.address_tag(ip));
        assert_eq!(tag.len(), 32);
        assert!(tag.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(tag, a.address_tag("192.0.2.8".parse().unwrap()));
        assert_ne!(tag, a.address_tag("::ffff:192.0.2.7".parse().unwrap()));
        let member = a.ip_member(ip);
        assert!(!member.contains("192.0.2.7"), "{member}");
        assert_ne!(
            address_key(&[9; 32]),
            [9; 32],
            "not the transport key itself"
        );
    }
}
