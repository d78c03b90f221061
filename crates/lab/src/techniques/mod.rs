//! The censorship techniques of `docs/lab.md`, one file each.
//!
//! | technique | type | censor |
//! |---|---|---|
//! | 1 | [`IpBlock`], [`LiveIpBlock`] (changed at run time), [`collateral_damage`] | Russia, April 2018: Telegram's and then cloud providers' prefixes |
//! | 2 | [`SniFilter`] | SNI blocking; Russia's March 2021 Twitter throttle and its `t.co` substring rule |
//! | 3 | [`Fet`] | China 2021–2023, fully encrypted traffic (Wu et al. 2023) and the 3-tuple residual block |
//! | 4 | [`Fingerprint`] | JA3/JA4 blocklists (Telegram apps' JA4 shipped) |
//! | 6 | [`Freeze`] | Russia 2025: TLS to foreign hosting frozen after 16–20 KB |
//! | 7 | [`ProtocolAllowlist`], [`Whitelist`] | Iran 2020 protocol allowlist; whitelist mode |

pub mod allowlist;
pub mod fet;
pub mod fingerprint;
pub mod freeze;
pub mod ip;
pub mod sni;

pub use allowlist::{ProtocolAllowlist, Whitelist};
pub use fet::{Fet, ResidualBlock};
pub use fingerprint::Fingerprint;
pub use freeze::Freeze;
pub use ip::{collateral_damage, CollateralReport, IpBlock, LiveIpBlock};
pub use sni::{SniFilter, SniRule};

use ipnet::IpNet;
use std::net::IpAddr;

/// Whether `addr` is inside any of `ranges`.
pub(crate) fn in_any(ranges: &[IpNet], addr: IpAddr) -> bool {
    ranges.iter().any(|r| r.contains(&addr))
}

/// Parses CIDR literals shipped in the source (panics on a typo, which the
/// tests catch).
pub(crate) fn cidrs(list: &[&str]) -> Vec<IpNet> {
    list.iter()
        .map(|s| s.parse().expect("shipped CIDR literal"))
        .collect()
}
