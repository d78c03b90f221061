//! Where the server may connect on a client's behalf, and the dialer that
//! does it.
//!
//! [`EgressPolicy`] refuses every address that is not the public internet
//! (loopback, private, link-local, CGNAT, multicast, reserved,
//! documentation, cloud metadata, and the IPv6 forms that embed such an
//! IPv4 address) unless an `allow` entry covers it, and the denied ports
//! (SMTP by default) everywhere. [`Egress`], one per server, adds what only
//! the running host knows:
//!
//! - the host's own interface addresses ([`HostAddrs`], read again every
//!   [`HOST_REFRESH`]) are refused, even inside a broad `allow` prefix: only
//!   an entry naming exactly that address (a /32 or /128) lets it through.
//!   Loopback addresses stay with the table and `allow`, as before;
//! - samizdat's own ports (listen, metrics, WebSocket) are refused on every
//!   address that is not the public internet, whatever `allow` says;
//! - names resolve with an asynchronous, cached resolver
//!   ([`super::resolve`]), at most [`SESSION_LOOKUPS`] at once per session
//!   and [`USER_LOOKUPS`] per user; a stream over the cap waits for a slot
//!   within the same resolve deadline.
//!
//! [`DirectDialer`] checks every address before connecting and connects to
//! the checked address itself, so a name that resolves to 127.0.0.1 is
//! refused, and a name that changes its answer between check and connect
//! (DNS rebinding) cannot win.

mod dialer;
mod policy;

use crate::sync::Locked;
#[cfg(test)]
use dialer::interleave;
pub use dialer::DirectDialer;
use policy::refused_by_default;
pub use policy::EgressPolicy;

use super::resolve::{LookupError, Resolver};
use crate::dial::{BoxIo, Destination, Dialer, OpenError, OpenFuture};
use arc_swap::ArcSwap;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// Ports refused on every address unless the operator changes the list
/// (`egress_deny_ports`): SMTP, whose abuse gets a server's addresses
/// blocklisted.
pub const DEFAULT_DENY_PORTS: [u16; 3] = [25, 465, 587];
/// Name lookups one session may have in flight.
pub const SESSION_LOOKUPS: usize = 16;
/// Name lookups one user may have in flight across all their sessions.
pub const USER_LOOKUPS: usize = 32;
/// Longest time the host's address list is used before it is read again.
pub const HOST_REFRESH: Duration = Duration::from_secs(30);
/// The host's own addresses, as the interfaces report them: every
/// non-loopback address, and the whole prefix of an address on a loopback
/// interface (Linux answers for all of it locally). Read again when older
/// than [`HOST_REFRESH`] at the time of a check.
pub struct HostAddrs {
    nets: ArcSwap<Vec<IpNet>>,
    /// When `nets` was read, in ms since `started`.
    read_at: AtomicU64,
    started: Instant,
}

impl Default for HostAddrs {
    fn default() -> Self {
        Self::new()
    }
}

impl HostAddrs {
    /// Reads the interfaces now.
    pub fn new() -> HostAddrs {
        HostAddrs {
            nets: ArcSwap::from_pointee(Self::read().unwrap_or_default()),
            read_at: AtomicU64::new(0),
            started: crate::clock::real_now(),
        }
    }

    fn read() -> Option<Vec<IpNet>> {
        let interfaces = match if_addrs::get_if_addrs() {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list this host's addresses; egress keeps the last list");
                return None;
            }
        };
        let mut nets = Vec::new();
        for i in interfaces {
            let ip = i.ip().to_canonical();
            if ip.is_loopback() {
                continue;
            }
            let prefix = match (&i.addr, i.is_loopback()) {
                (if_addrs::IfAddr::V4(a), true) => a.prefixlen,
                (if_addrs::IfAddr::V6(a), true) => a.prefixlen,
                (_, false) => {
                    if ip.is_ipv4() {
                        32
                    } else {
                        128
                    }
                }
            };
            if let Ok(net) = IpNet::new(ip, prefix) {
                nets.push(net.trunc());
            }
        }
        Some(nets)
    }

    /// Reads the interfaces again now.
    pub fn refresh(&self) {
        if let Some(nets) = Self::read() {
            self.nets.store(Arc::new(nets));
        }
        self.read_at
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Whether `ip` (or the IPv4 address it maps) is one of the host's.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let now = self.started.elapsed().as_millis() as u64;
        let last = self.read_at.load(Ordering::Relaxed);
        if now >= last + HOST_REFRESH.as_millis() as u64
            && self
                .read_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.refresh();
        }
        let ip = ip.to_canonical();
        self.nets.load().iter().any(|n| n.contains(&ip))
    }
}

/// Why an address is refused (for logs, which name no destination).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The port is in the denied list (SMTP by default).
    DeniedPort,
    /// One of samizdat's own ports on a non-public or host address.
    OwnPort,
    /// One of the host's own addresses.
    HostAddress,
    /// The address table or `deny` refuses it and no `allow` covers it.
    Policy,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::DeniedPort => "a denied port (egress_deny_ports)",
            Refusal::OwnPort => "one of samizdat's own ports on a non-public address",
            Refusal::HostAddress => "one of this host's own addresses",
            Refusal::Policy => "a non-public address no --egress-allow covers",
        })
    }
}

/// What the egress of one server shares across its sessions: the host's
/// addresses, its own ports, the resolver and each user's lookup slots.
pub struct Egress {
    host: HostAddrs,
    own_ports: Vec<u16>,
    resolver: Resolver,
    user_lookups: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Egress {
    /// The egress of a server listening on `own_ports` (listen, metrics,
    /// WebSocket), reading the host's addresses and resolver now.
    pub fn new(own_ports: Vec<u16>) -> Arc<Egress> {
        Arc::new(Egress {
            host: HostAddrs::new(),
            own_ports,
            resolver: Resolver::new(),
            user_lookups: Mutex::new(HashMap::new()),
        })
    }

    /// An egress whose host has exactly `nets` (tests).
    #[cfg(test)]
    fn with_host(own_ports: Vec<u16>, nets: Vec<IpNet>) -> Egress {
        let host = HostAddrs::new();
        host.nets.store(Arc::new(nets));
        host.read_at.store(u64::MAX / 2, Ordering::Relaxed);
        Egress {
            host,
            own_ports,
            resolver: Resolver::new(),
            user_lookups: Mutex::new(HashMap::new()),
        }
    }

    /// The host's addresses as this egress sees them.
    pub fn host(&self) -> &HostAddrs {
        &self.host
    }

    /// Whether `policy` and the host let a stream reach `addr`.
    pub fn check(&self, policy: &EgressPolicy, addr: SocketAddr) -> Result<(), Refusal> {
        let ip = addr.ip().to_canonical();
        if policy.deny_ports.contains(&addr.port()) {
            return Err(Refusal::DeniedPort);
        }
        let host = self.host.contains(ip);
        if self.own_ports.contains(&addr.port()) && (host || refused_by_default(ip)) {
            return Err(Refusal::OwnPort);
        }
        if !policy.permits(addr.ip()) {
            return Err(Refusal::Policy);
        }
        if host && !policy.names_exactly(ip) {
            return Err(Refusal::HostAddress);
        }
        Ok(())
    }

    /// The lookup slots of `user`, shared by all their sessions.
    fn user_slots(&self, user: &str) -> Arc<Semaphore> {
        let mut map = self.user_lookups.locked();
        // Users who have no session left give their entry back.
        if map.len() >= 1024 {
            map.retain(|_, s| Arc::strong_count(s) > 1);
        }
        map.entry(user.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(USER_LOOKUPS)))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> bool {
        !EgressPolicy::default().permits(text.parse().unwrap())
    }

    #[test]
    fn default_refuses_every_non_public_range() {
        for a in [
            "127.0.0.1",
            "127.255.0.9",
            "0.0.0.0",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.0.1",
            "100.64.0.1",
            "100.100.100.200",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "::",
            "::1",
            "fc00::1",
            "fd00:ec2::254",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "::ffff:100.100.100.200",
            "64:ff9b::a00:1",
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::",
        ] {
            assert!(refused(a), "{a} should be refused");
        }
    }

    #[test]
    fn default_permits_the_public_internet() {
        for a in [
            "1.1.1.1",
            "8.8.8.8",
            "149.154.167.51",
            "172.32.0.1",
            "100.128.0.1",
            "2001:4860:4860::8888",
            "2a00:1450::1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert!(!refused(a), "{a} should be allowed");
        }
    }

    #[test]
    fn allow_lifts_and_deny_wins() {
        let p = EgressPolicy::with_allow(vec!["127.0.0.0/8".parse().unwrap()]);
        assert!(p.permits("127.0.0.1".parse().unwrap()));
        assert!(p.permits("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!p.permits("::1".parse().unwrap()));
        assert!(!p.permits("10.0.0.1".parse().unwrap()));
        let mut p = p;
        p.deny.push("127.0.0.2/32".parse().unwrap());
        p.deny.push("8.8.0.0/16".parse().unwrap());
        assert!(!p.permits("127.0.0.2".parse().unwrap()));
        assert!(!p.permits("::ffff:8.8.8.8".parse().unwrap()));
        assert!(p.permits("8.9.0.1".parse().unwrap()));
    }

    #[test]
    fn host_addresses_own_ports_and_denied_ports() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let e = Egress::with_host(
            vec![443, 9090],
            vec![
                "198.51.100.7/32".parse().unwrap(),
                "2001:db8::7/128".parse().unwrap(),
            ],
        );
        let mut p = EgressPolicy::with_allow(vec![
            "127.0.0.0/8".parse().unwrap(),
            "10.1.0.0/16".parse().unwrap(),
            "198.51.100.0/24".parse().unwrap(),
            "2001:db8::/32".parse().unwrap(),
        ]);
        // The host's addresses, on any port and in any form, even inside
        // an allowed prefix.
        for dest in [
            "198.51.100.7:8080",
            "[::ffff:198.51.100.7]:22",
            "[2001:db8::7]:80",
        ] {
            assert_eq!(
                p_check(&e, &p, a(dest)),
                Err(Refusal::HostAddress),
                "{dest}"
            );
        }
        // Our ports wherever the address is not the public internet, allowed or not.
        for dest in [
            "127.0.0.1:9090",
            "10.1.2.3:443",
            "[::ffff:127.0.0.1]:443",
            "198.51.100.7:443",
        ] {
            assert_eq!(p_check(&e, &p, a(dest)), Err(Refusal::OwnPort), "{dest}");
        }
        // SMTP everywhere, allowed or public.
        for dest in ["127.0.0.1:25", "8.8.8.8:465", "[2001:4860::1]:587"] {
            assert_eq!(p_check(&e, &p, a(dest)), Err(Refusal::DeniedPort), "{dest}");
        }
        for dest in [
            "127.0.0.1:8080",
            "10.1.2.3:80",
            "198.51.100.8:80",
            "8.8.8.8:443",
            "[2001:4860::1]:9090",
        ] {
            assert_eq!(p_check(&e, &p, a(dest)), Ok(()), "{dest}");
        }
        assert_eq!(p_check(&e, &p, a("10.2.0.1:80")), Err(Refusal::Policy));
        // An entry naming exactly the host's address lets it through, but
        // never to our own ports; the denied list can be emptied.
        p.allow.push("198.51.100.7/32".parse().unwrap());
        p.deny_ports.clear();
        assert_eq!(p_check(&e, &p, a("198.51.100.7:8080")), Ok(()));
        assert_eq!(
            p_check(&e, &p, a("198.51.100.7:9090")),
            Err(Refusal::OwnPort)
        );
        assert_eq!(p_check(&e, &p, a("8.8.8.8:25")), Ok(()));
    }

    fn p_check(e: &Egress, p: &EgressPolicy, a: SocketAddr) -> Result<(), Refusal> {
        e.check(p, a)
    }

    #[tokio::test]
    async fn host_address_refused_before_any_connect() {
        // Loopback stands in for the host's public address: no packet
        // leaves the machine even if the check failed.
        let e = Arc::new(Egress::with_host(
            Vec::new(),
            vec!["127.0.0.5/32".parse().unwrap()],
        ));
        let d = DirectDialer::for_user(
            EgressPolicy::with_allow(vec!["127.0.0.0/8".parse().unwrap()]),
            &e,
            "alice",
        );
        assert_eq!(
            d.open(Destination::Addr("127.0.0.5:80".parse().unwrap()), vec![])
                .await
                .err(),
            Some(OpenError::NotAllowed)
        );
    }

    #[test]
    fn interleaves_families() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let got = interleave(vec![
            a("[::1]:1"),
            a("[::2]:1"),
            a("1.0.0.1:1"),
            a("[::3]:1"),
        ]);
        assert_eq!(
            got,
            vec![a("[::1]:1"), a("1.0.0.1:1"), a("[::2]:1"), a("[::3]:1")]
        );
    }

    #[tokio::test]
    async fn refused_before_any_connect() {
        let d = DirectDialer::new(EgressPolicy::default());
        for dest in [
            Destination::Addr("10.0.0.1:80".parse().unwrap()),
            Destination::Addr("169.254.169.254:80".parse().unwrap()),
            Destination::Host {
                name: "localhost".into(),
                port: 80,
            },
            Destination::Host {
                name: "[::1]".into(),
                port: 80,
            },
            Destination::Telegram {
                dc: 2,
                tag: wire::obfuscated2::Tag::Padded,
            },
        ] {
            assert_eq!(
                d.open(dest, vec![]).await.err(),
                Some(OpenError::NotAllowed)
            );
        }
    }
}
