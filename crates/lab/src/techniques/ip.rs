//! Technique 1: IP and prefix blocking, as Roskomnadzor did in April 2018.

use super::{cidrs, in_any};
use crate::{Flow, Technique, Verdict};
use ipnet::IpNet;
use std::net::IpAddr;

/// Telegram's own prefixes (its AS62041/AS59930 announcements) blocked from
/// 16 April 2018.
pub const TELEGRAM_2018: &[&str] = &[
    "149.154.160.0/20",
    "91.108.4.0/22",
    "91.108.8.0/22",
    "91.108.12.0/22",
    "91.108.16.0/22",
    "91.108.56.0/22",
    "95.161.64.0/20",
];

/// A sample of the cloud ranges added in the following days, when Telegram
/// moved to Amazon and Google addresses: prefixes from /15 to /12 (the
/// whole block list reached ~18 million addresses; this sample is about
/// 2.4 million).
pub const CLOUD_2018_SAMPLE: &[&str] = &[
    "35.192.0.0/12",
    "35.156.0.0/14",
    "52.58.0.0/15",
    "18.194.0.0/15",
    "18.196.0.0/15",
    "52.28.0.0/16",
];

/// Blocks flows whose destination is inside any of a list of CIDRs, at
/// connect time (nothing reaches the server).
#[derive(Debug, Clone)]
pub struct IpBlock {
    /// The blocked prefixes.
    pub ranges: Vec<IpNet>,
    /// [`Verdict::Drop`] (SYNs eaten: the client times out) or
    /// [`Verdict::Reset`].
    pub action: Verdict,
}

impl IpBlock {
    /// Blocks `ranges` with `action`.
    pub fn new(ranges: Vec<IpNet>, action: Verdict) -> IpBlock {
        IpBlock { ranges, action }
    }
    /// Telegram's prefixes ([`TELEGRAM_2018`]).
    pub fn telegram_2018(action: Verdict) -> IpBlock {
        IpBlock::new(cidrs(TELEGRAM_2018), action)
    }
    /// Telegram's prefixes and the cloud sample ([`CLOUD_2018_SAMPLE`]).
    pub fn april_2018(action: Verdict) -> IpBlock {
        let mut ranges = cidrs(TELEGRAM_2018);
        ranges.extend(cidrs(CLOUD_2018_SAMPLE));
        IpBlock::new(ranges, action)
    }
}

impl Technique for IpBlock {
    fn name(&self) -> &'static str {
        "ip-block"
    }
    fn on_connect(&self, flow: &Flow) -> Verdict {
        if in_any(&self.ranges, flow.server.ip()) {
            self.action
        } else {
            Verdict::Pass
        }
    }
}

/// What a block list costs besides its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollateralReport {
    /// Distinct addresses the list covers (overlaps counted once).
    pub blocked_addresses: u128,
    /// Benign destinations checked.
    pub benign_total: usize,
    /// Benign destinations inside a blocked range.
    pub benign_blocked: usize,
    /// The benign destinations hit, with the first range that hits each.
    pub hits: Vec<(IpAddr, IpNet)>,
}

impl CollateralReport {
    /// Share of benign destinations blocked (0 with none checked).
    pub fn benign_share(&self) -> f64 {
        if self.benign_total == 0 {
            0.0
        } else {
            self.benign_blocked as f64 / self.benign_total as f64
        }
    }
}

/// How many `benign` destinations share the `blocked` ranges.
pub fn collateral_damage(blocked: &[IpNet], benign: &[IpAddr]) -> CollateralReport {
    let hits: Vec<(IpAddr, IpNet)> = benign
        .iter()
        .filter_map(|a| blocked.iter().find(|r| r.contains(a)).map(|r| (*a, *r)))
        .collect();
    let blocked_addresses = IpNet::aggregate(&blocked.to_vec())
        .iter()
        .map(|n| match n {
            IpNet::V4(n) => 1u128 << (32 - n.prefix_len()),
            IpNet::V6(n) => 1u128
                .checked_shl(128 - u32::from(n.prefix_len()))
                .unwrap_or(u128::MAX),
        })
        .sum();
    CollateralReport {
        blocked_addresses,
        benign_total: benign.len(),
        benign_blocked: hits.len(),
        hits,
    }
}
