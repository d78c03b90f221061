//! Telegram data centres: the built-in address table (spec §5) and the
//! operator's overrides.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Which address family to try first when a DC has both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IpPreference {
    /// IPv4 first, then IPv6.
    #[default]
    Ipv4,
    /// IPv6 first, then IPv4.
    Ipv6,
    /// IPv4 only.
    Ipv4Only,
    /// IPv6 only.
    Ipv6Only,
}

const fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

const fn v6(s: [u16; 8]) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(
        s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7],
    ))
}

/// Production DCs 1–5 and the CDN DC 203: (IPv4, IPv6), port 443.
const PRODUCTION: [(u16, IpAddr, IpAddr); 6] = [
    (
        1,
        v4(149, 154, 175, 50),
        v6([0x2001, 0xb28, 0xf23d, 0xf001, 0, 0, 0, 0xa]),
    ),
    (
        2,
        v4(149, 154, 167, 51),
        v6([0x2001, 0x67c, 0x4e8, 0xf002, 0, 0, 0, 0xa]),
    ),
    (
        3,
        v4(149, 154, 175, 100),
        v6([0x2001, 0xb28, 0xf23d, 0xf003, 0, 0, 0, 0xa]),
    ),
    (
        4,
        v4(149, 154, 167, 91),
        v6([0x2001, 0x67c, 0x4e8, 0xf004, 0, 0, 0, 0xa]),
    ),
    (
        5,
        v4(149, 154, 171, 5),
        v6([0x2001, 0xb28, 0xf23f, 0xf005, 0, 0, 0, 0xa]),
    ),
    (
        203,
        v4(91, 105, 192, 100),
        v6([0x2a0a, 0xf280, 0x203, 0xa, 0x5000, 0, 0, 0x100]),
    ),
];

/// Test DCs 1–3 (DC ids 10001–10003).
const TEST: [(u16, IpAddr, IpAddr); 3] = [
    (
        1,
        v4(149, 154, 175, 10),
        v6([0x2001, 0xb28, 0xf23d, 0xf001, 0, 0, 0, 0xe]),
    ),
    (
        2,
        v4(149, 154, 167, 40),
        v6([0x2001, 0x67c, 0x4e8, 0xf002, 0, 0, 0, 0xe]),
    ),
    (
        3,
        v4(149, 154, 175, 117),
        v6([0x2001, 0xb28, 0xf23d, 0xf003, 0, 0, 0, 0xe]),
    ),
];

/// How DC ids map to addresses.
#[derive(Debug, Clone, Default)]
pub struct DcTable {
    /// `--dc-override`: every DC id goes here.
    pub all: Option<SocketAddr>,
    /// `--dc ID=ADDR`: per-id overrides (exact id first, then its absolute value).
    pub by_id: HashMap<i32, SocketAddr>,
    /// Family preference for the built-in table.
    pub preference: IpPreference,
}

impl DcTable {
    /// The addresses to try, in order, for the DC id a client asked for.
    /// Empty means the id is unknown.
    pub fn resolve(&self, dc: i16) -> Vec<SocketAddr> {
        let id = i32::from(dc);
        if let Some(addr) = self.by_id.get(&id).or_else(|| self.by_id.get(&id.abs())) {
            return vec![*addr];
        }
        if let Some(addr) = self.all {
            return vec![addr];
        }
        let abs = id.unsigned_abs();
        let entry = if abs > 10_000 {
            TEST.iter().find(|e| u32::from(e.0) + 10_000 == abs)
        } else {
            PRODUCTION.iter().find(|e| u32::from(e.0) == abs)
        };
        let Some(&(_, ip4, ip6)) = entry else {
            return Vec::new();
        };
        let (a, b) = (SocketAddr::new(ip4, 443), SocketAddr::new(ip6, 443));
        match self.preference {
            IpPreference::Ipv4 => vec![a, b],
            IpPreference::Ipv6 => vec![b, a],
            IpPreference::Ipv4Only => vec![a],
            IpPreference::Ipv6Only => vec![b],
        }
    }
}

/// Connects to data centre `dc` for `user` (for the log): each of its
/// addresses in the table's order, each within `--connect-timeout`,
/// counting successes, failures and connect time in the metrics. Both the
/// MTProto path and samizdat clients' Telegram streams come here.
pub(super) async fn connect(
    shared: &super::ServeShared,
    snap: &super::users::Snapshot,
    dc: i16,
    user: &str,
) -> Result<tokio::net::TcpStream, crate::dial::OpenError> {
    use crate::dial::OpenError;
    let addrs = snap.config.dcs.resolve(dc);
    if addrs.is_empty() {
        tracing::info!(
            user,
            dc,
            "client asked for an unknown DC id; add --dc {dc}=ADDR to route it"
        );
        return Err(OpenError::HostUnreachable);
    }
    let mut last = OpenError::HostUnreachable;
    for addr in &addrs {
        let started = tokio::time::Instant::now();
        let connecting = tokio::net::TcpStream::connect(addr);
        match tokio::time::timeout(snap.config.connect_timeout, connecting).await {
            Ok(Ok(s)) => {
                shared.metrics.dc_connected(dc, started.elapsed());
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Ok(Err(e)) => {
                shared.metrics.dc_connect_failed(dc);
                tracing::warn!(dc, %addr, error = %e, "cannot connect to Telegram DC");
                last = OpenError::from(e);
            }
            Err(_) => {
                shared.metrics.dc_connect_failed(dc);
                tracing::warn!(dc, %addr, "connecting to Telegram DC timed out");
                last = OpenError::TimedOut;
            }
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_and_test_dcs_map_like_the_spec() {
        let t = DcTable::default();
        assert_eq!(t.resolve(2)[0], "149.154.167.51:443".parse().unwrap());
        assert_eq!(t.resolve(-2), t.resolve(2));
        assert_eq!(t.resolve(10002)[0], "149.154.167.40:443".parse().unwrap());
        assert_eq!(t.resolve(-10003)[0], "149.154.175.117:443".parse().unwrap());
        assert_eq!(
            t.resolve(203)[1],
            "[2a0a:f280:203:a:5000::100]:443".parse().unwrap()
        );
        assert!(t.resolve(0).is_empty());
        assert!(t.resolve(6).is_empty());
        assert!(t.resolve(10004).is_empty());
    }

    #[test]
    fn overrides_win_exact_id_first() {
        let mut t = DcTable {
            preference: IpPreference::Ipv6Only,
            ..Default::default()
        };
        assert_eq!(t.resolve(1).len(), 1);
        assert!(t.resolve(1)[0].is_ipv6());
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        t.all = Some(a);
        t.by_id.insert(-2, b);
        assert_eq!(t.resolve(-2), vec![b]);
        assert_eq!(t.resolve(2), vec![a]);
        assert_eq!(t.resolve(0), vec![a]);
        t.by_id.insert(4, b);
        assert_eq!(t.resolve(-4), vec![b]);
    }
}
