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

/// IPv4 ranges refused unless allowed.
const REFUSED_V4: &[&str] = &[
    "0.0.0.0/8",       // "this network", includes the unspecified address
    "10.0.0.0/8",      // RFC 1918
    "100.64.0.0/10",   // CGNAT (includes Alibaba's metadata 100.100.100.200)
    "127.0.0.0/8",     // loopback
    "169.254.0.0/16",  // link-local (includes the 169.254.169.254 metadata)
    "172.16.0.0/12",   // RFC 1918
    "192.0.0.0/24",    // IETF protocol assignments
    "192.0.2.0/24",    // TEST-NET-1
    "192.88.99.0/24",  // 6to4 relay anycast (deprecated)
    "192.168.0.0/16",  // RFC 1918
    "198.18.0.0/15",   // benchmarking
    "198.51.100.0/24", // TEST-NET-2
    "203.0.113.0/24",  // TEST-NET-3
    "224.0.0.0/4",     // multicast
    "240.0.0.0/4",     // reserved, includes the broadcast 255.255.255.255
];

/// IPv6 ranges refused unless allowed. Forms that embed an IPv4 address
/// are also checked by that address ([`embedded_v4`]).
const REFUSED_V6: &[&str] = &[
    "::/128",         // unspecified
    "::1/128",        // loopback
    "64:ff9b:1::/48", // local-use NAT64
    "100::/64",       // discard-only
    "2001::/32",      // Teredo
    "2001:2::/48",    // benchmarking
    "2001:db8::/32",  // documentation
    "3fff::/20",      // documentation (RFC 9637)
    "fc00::/7",       // unique local, includes AWS's fd00:ec2::254 metadata
    "fe80::/10",      // link-local
    "fec0::/10",      // site-local (deprecated)
    "ff00::/8",       // multicast
];

/// The parsed tables, built once.
static REFUSED: LazyLock<(Vec<Ipv4Net>, Vec<Ipv6Net>)> = LazyLock::new(|| {
    let v4 = REFUSED_V4
        .iter()
        .map(|s| s.parse().expect("table"))
        .collect();
    let v6 = REFUSED_V6
        .iter()
        .map(|s| s.parse().expect("table"))
        .collect();
    (v4, v6)
});

/// The IPv4 address an IPv6 address stands for or carries: IPv4-mapped
/// (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`), NAT64 (`64:ff9b::/96`)
/// and 6to4 (`2002:aabb:ccdd::/48`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let o = ip.octets();
    let tail = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] | [0, 0, 0, 0, 0, 0, _, _] => Some(tail),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(tail),
        [0x2002, ..] => Some(Ipv4Addr::new(o[2], o[3], o[4], o[5])),
        _ => None,
    }
}

/// Whether the built-in table refuses `ip`.
fn refused_by_default(ip: IpAddr) -> bool {
    let (v4, v6) = &*REFUSED;
    match ip {
        IpAddr::V4(a) => v4.iter().any(|n| n.contains(&a)),
        IpAddr::V6(a) => {
            v6.iter().any(|n| n.contains(&a))
                || embedded_v4(a).is_some_and(|e| v4.iter().any(|n| n.contains(&e)))
        }
    }
}

/// Which addresses and ports the server may connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EgressPolicy {
    /// Ranges let through although the built-in table refuses them (an
    /// operator's own network, or 127.0.0.0/8 in tests). An IPv4 entry
    /// also covers the IPv4-mapped IPv6 form of its addresses.
    pub allow: Vec<IpNet>,
    /// Ranges refused on top of the built-in table; these win over `allow`.
    pub deny: Vec<IpNet>,
    /// Ports refused on every address, `allow` or not
    /// ([`DEFAULT_DENY_PORTS`] by default).
    pub deny_ports: Vec<u16>,
}

impl Default for EgressPolicy {
    fn default() -> Self {
        EgressPolicy {
            allow: Vec::new(),
            deny: Vec::new(),
            deny_ports: DEFAULT_DENY_PORTS.to_vec(),
        }
    }
}

impl EgressPolicy {
    /// The default policy with `allow` lifting refusals.
    pub fn with_allow(allow: Vec<IpNet>) -> EgressPolicy {
        EgressPolicy {
            allow,
            ..EgressPolicy::default()
        }
    }

    /// Whether an `allow` entry names exactly `ip` (a /32 or /128 entry):
    /// the only kind that lets a host's own address through.
    fn names_exactly(&self, ip: IpAddr) -> bool {
        self.allow
            .iter()
            .any(|n| n.prefix_len() == n.max_prefix_len() && n.addr() == ip)
    }

    /// Whether the server may connect to `ip`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let forms = [Some(ip), mapped_v4(ip).map(IpAddr::V4)];
        let listed = |nets: &[IpNet]| {
            forms
                .iter()
                .flatten()
                .any(|a| nets.iter().any(|n| n.contains(a)))
        };
        if listed(&self.deny) {
            return false;
        }
        !refused_by_default(ip) || listed(&self.allow)
    }
}

/// The IPv4 address of an IPv4-mapped IPv6 address (the only embedded form
/// that connects to the IPv4 address itself).
fn mapped_v4(ip: IpAddr) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V6(a) => a.to_ipv4_mapped(),
        IpAddr::V4(_) => None,
    }
}

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
        let mut map = self.user_lookups.lock().unwrap_or_else(|e| e.into_inner());
        // Users who have no session left give their entry back.
        if map.len() >= 1024 {
            map.retain(|_, s| Arc::strong_count(s) > 1);
        }
        map.entry(user.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(USER_LOOKUPS)))
            .clone()
    }
}

/// Connects straight to the destination, within an [`EgressPolicy`] and
/// the host's [`Egress`] rules. One per session.
pub struct DirectDialer {
    /// Which addresses are allowed.
    pub policy: EgressPolicy,
    /// Longest wait for one address to accept the connection.
    pub connect_timeout: Duration,
    /// Longest wait for a name to resolve, a free lookup slot included.
    pub resolve_timeout: Duration,
    /// Where `Destination::Telegram` streams go (the server's DC routing);
    /// without one they are refused.
    pub telegram: Option<Arc<dyn Dialer>>,
    /// Whether log lines may name destinations (`--log-destinations`);
    /// otherwise they are the users' browsing history and stay out.
    pub log_destinations: bool,
    egress: Arc<Egress>,
    session_lookups: Semaphore,
    user_lookups: Arc<Semaphore>,
}

impl DirectDialer {
    /// A dialer with `policy`, 10 s timeouts, no Telegram route and an
    /// [`Egress`] of its own that knows no listening ports.
    pub fn new(policy: EgressPolicy) -> DirectDialer {
        DirectDialer::for_user(policy, &Egress::new(Vec::new()), "")
    }

    /// A dialer for one session of `user` on the server's `egress`.
    pub fn for_user(policy: EgressPolicy, egress: &Arc<Egress>, user: &str) -> DirectDialer {
        DirectDialer {
            policy,
            connect_timeout: Duration::from_secs(10),
            resolve_timeout: Duration::from_secs(10),
            telegram: None,
            log_destinations: false,
            user_lookups: egress.user_slots(user),
            egress: egress.clone(),
            session_lookups: Semaphore::new(SESSION_LOOKUPS),
        }
    }

    /// Resolves `name` within a free slot of the session and of the user.
    async fn resolve(&self, name: &str) -> Result<Vec<IpAddr>, OpenError> {
        let _session = self
            .session_lookups
            .acquire()
            .await
            .map_err(|_| OpenError::General("closed".into()))?;
        let _user = self
            .user_lookups
            .acquire()
            .await
            .map_err(|_| OpenError::General("closed".into()))?;
        self.egress
            .resolver
            .lookup(name)
            .await
            .map_err(|e| match e {
                LookupError::TimedOut => OpenError::TimedOut,
                LookupError::NotFound | LookupError::BadName | LookupError::Failed => {
                    OpenError::NameNotResolved
                }
            })
    }

    /// The addresses to try for `dest`, allowed ones only, in order.
    async fn addresses(&self, name: &str, port: u16) -> Result<Vec<SocketAddr>, OpenError> {
        let literal = name
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .unwrap_or(name);
        let resolved: Vec<SocketAddr> = match literal.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => {
                if name.is_empty() || name.len() > 255 {
                    return Err(OpenError::NameNotResolved);
                }
                // Refused whatever the name resolves to: no lookup.
                if self.policy.deny_ports.contains(&port) {
                    tracing::debug!(reason = %Refusal::DeniedPort, "egress refused");
                    return Err(OpenError::NotAllowed);
                }
                // The deadline covers the wait for a slot; dropping the
                // lookup cancels it.
                match tokio::time::timeout(self.resolve_timeout, self.resolve(name)).await {
                    Err(_) => return Err(OpenError::TimedOut),
                    Ok(Err(e)) => return Err(e),
                    Ok(Ok(ips)) => ips
                        .into_iter()
                        .map(|ip| SocketAddr::new(ip, port))
                        .collect(),
                }
            }
        };
        if resolved.is_empty() {
            return Err(OpenError::NameNotResolved);
        }
        let mut refusal = None;
        let allowed: Vec<SocketAddr> = resolved
            .into_iter()
            .filter(|a| match self.egress.check(&self.policy, *a) {
                Ok(()) => true,
                Err(r) => {
                    refusal = Some(r);
                    false
                }
            })
            .map(|a| SocketAddr::new(a.ip().to_canonical(), a.port()))
            .collect();
        if allowed.is_empty() {
            if let Some(r) = refusal {
                tracing::debug!(reason = %r, "egress refused");
            }
            return Err(OpenError::NotAllowed);
        }
        Ok(interleave(allowed))
    }

    /// Connects to the first address that accepts, within the timeout each.
    async fn connect(&self, addrs: &[SocketAddr]) -> Result<TcpStream, OpenError> {
        let mut last = OpenError::General("no address to connect to".into());
        for &addr in addrs {
            // Checked again right before the connect: nothing else decides.
            if self.egress.check(&self.policy, addr).is_err() {
                last = OpenError::NotAllowed;
                continue;
            }
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => return Ok(stream),
                Ok(Err(e)) => last = OpenError::from(e),
                Err(_) => last = OpenError::TimedOut,
            }
            if self.log_destinations {
                tracing::debug!(%addr, error = %last, "egress connect failed");
            } else {
                tracing::debug!(error = %last, "egress connect failed");
            }
        }
        Err(last)
    }

    async fn open_direct(&self, dest: Destination, first: Vec<u8>) -> Result<BoxIo, OpenError> {
        let logged = self.log_destinations.then_some(&dest);
        let addrs = match &dest {
            // Routed by `open`; never dialled directly.
            Destination::Telegram { .. } => return Err(OpenError::NotAllowed),
            Destination::Addr(addr) => {
                if let Err(reason) = self.egress.check(&self.policy, *addr) {
                    match logged {
                        Some(dest) => tracing::debug!(%dest, %reason, "egress refused"),
                        None => tracing::debug!(%reason, "egress refused"),
                    }
                    return Err(OpenError::NotAllowed);
                }
                vec![SocketAddr::new(addr.ip().to_canonical(), addr.port())]
            }
            Destination::Host { name, port } => {
                self.addresses(name, *port)
                    .await
                    .inspect_err(|e| match logged {
                        Some(dest) => {
                            tracing::debug!(%dest, error = %e, "egress refused or unresolved")
                        }
                        None => tracing::debug!(error = %e, "egress refused or unresolved"),
                    })?
            }
        };
        let mut stream = self.connect(&addrs).await?;
        let _ = stream.set_nodelay(true);
        if !first.is_empty() {
            stream.write_all(&first).await.map_err(OpenError::from)?;
        }
        match logged {
            Some(dest) => tracing::debug!(%dest, "egress connected"),
            None => tracing::debug!("egress connected"),
        }
        Ok(Box::new(stream))
    }
}

/// Alternates families, starting with the family of the first address
/// (the resolver's preference), as Happy Eyeballs orders its attempts.
fn interleave(addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let first_v6 = addrs.first().is_some_and(|a| a.is_ipv6());
    let (mut a, mut b): (Vec<_>, Vec<_>) = addrs.into_iter().partition(|x| x.is_ipv6() == first_v6);
    let mut out = Vec::with_capacity(a.len() + b.len());
    a.reverse();
    b.reverse();
    loop {
        match (a.pop(), b.pop()) {
            (None, None) => return out,
            (x, y) => out.extend(x.into_iter().chain(y)),
        }
    }
}

impl Dialer for DirectDialer {
    fn open(&self, dest: Destination, first: Vec<u8>) -> OpenFuture<'_> {
        Box::pin(async move {
            match dest {
                Destination::Telegram { .. } => match &self.telegram {
                    Some(t) => t.open(dest, first).await,
                    None => Err(OpenError::NotAllowed),
                },
                other => self.open_direct(other, first).await,
            }
        })
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
