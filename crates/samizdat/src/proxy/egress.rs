//! Where the server may connect on a client's behalf, and the dialer that
//! does it.
//!
//! [`EgressPolicy`] refuses every address that is not the public internet
//! (loopback, private, link-local, CGNAT, multicast, reserved,
//! documentation, cloud metadata, and the IPv6 forms that embed such an
//! IPv4 address) unless an `allow` entry covers it. [`DirectDialer`] checks
//! every address before connecting and connects to the checked address
//! itself, so a name that resolves to 127.0.0.1 is refused, and a name that
//! changes its answer between check and connect (DNS rebinding) cannot win.

use super::{BoxIo, Destination, Dialer, OpenError, OpenFuture};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

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

/// Which addresses the server may connect to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EgressPolicy {
    /// Ranges let through although the built-in table refuses them (an
    /// operator's own network, or 127.0.0.0/8 in tests). An IPv4 entry
    /// also covers the IPv4-mapped IPv6 form of its addresses.
    pub allow: Vec<IpNet>,
    /// Ranges refused on top of the built-in table; these win over `allow`.
    pub deny: Vec<IpNet>,
}

impl EgressPolicy {
    /// The default policy with `allow` lifting refusals.
    pub fn with_allow(allow: Vec<IpNet>) -> EgressPolicy {
        EgressPolicy {
            allow,
            deny: Vec::new(),
        }
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

/// Connects straight to the destination, within an [`EgressPolicy`].
pub struct DirectDialer {
    /// Which addresses are allowed.
    pub policy: EgressPolicy,
    /// Longest wait for one address to accept the connection.
    pub connect_timeout: Duration,
    /// Longest wait for a name to resolve.
    pub resolve_timeout: Duration,
    /// Where `Destination::Telegram` streams go (the server's DC routing);
    /// without one they are refused.
    pub telegram: Option<Arc<dyn Dialer>>,
}

impl DirectDialer {
    /// A dialer with `policy`, 10 s timeouts and no Telegram route.
    pub fn new(policy: EgressPolicy) -> DirectDialer {
        DirectDialer {
            policy,
            connect_timeout: Duration::from_secs(10),
            resolve_timeout: Duration::from_secs(10),
            telegram: None,
        }
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
                let lookup = tokio::net::lookup_host((name, port));
                match tokio::time::timeout(self.resolve_timeout, lookup).await {
                    Err(_) => return Err(OpenError::TimedOut),
                    Ok(Err(_)) => return Err(OpenError::NameNotResolved),
                    Ok(Ok(addrs)) => addrs.take(64).collect(),
                }
            }
        };
        if resolved.is_empty() {
            return Err(OpenError::NameNotResolved);
        }
        let allowed: Vec<SocketAddr> = resolved
            .into_iter()
            .filter(|a| self.policy.permits(a.ip()))
            .map(|a| SocketAddr::new(a.ip().to_canonical(), a.port()))
            .collect();
        if allowed.is_empty() {
            return Err(OpenError::NotAllowed);
        }
        Ok(interleave(allowed))
    }

    /// Connects to the first address that accepts, within the timeout each.
    async fn connect(&self, addrs: &[SocketAddr]) -> Result<TcpStream, OpenError> {
        let mut last = OpenError::General("no address to connect to".into());
        for &addr in addrs {
            // Checked again right before the connect: nothing else decides.
            if !self.policy.permits(addr.ip()) {
                last = OpenError::NotAllowed;
                continue;
            }
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => return Ok(stream),
                Ok(Err(e)) => last = OpenError::from(e),
                Err(_) => last = OpenError::TimedOut,
            }
            tracing::debug!(%addr, error = %last, "egress connect failed");
        }
        Err(last)
    }

    async fn open_direct(&self, dest: Destination, first: Vec<u8>) -> Result<BoxIo, OpenError> {
        let addrs = match &dest {
            // Routed by `open`; never dialled directly.
            Destination::Telegram { .. } => return Err(OpenError::NotAllowed),
            Destination::Addr(addr) => {
                if !self.policy.permits(addr.ip()) {
                    tracing::debug!(%dest, "egress refused");
                    return Err(OpenError::NotAllowed);
                }
                vec![SocketAddr::new(addr.ip().to_canonical(), addr.port())]
            }
            Destination::Host { name, port } => {
                self.addresses(name, *port).await.inspect_err(|e| {
                    tracing::debug!(%dest, error = %e, "egress refused or unresolved");
                })?
            }
        };
        let mut stream = self.connect(&addrs).await?;
        let _ = stream.set_nodelay(true);
        if !first.is_empty() {
            stream.write_all(&first).await.map_err(OpenError::from)?;
        }
        tracing::debug!(%dest, "egress connected");
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
