//! The address policy: which destinations are the public internet, and the
//! operator's `allow` exceptions and denied ports.

use super::*;

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
pub(super) fn refused_by_default(ip: IpAddr) -> bool {
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
    pub(super) fn names_exactly(&self, ip: IpAddr) -> bool {
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
