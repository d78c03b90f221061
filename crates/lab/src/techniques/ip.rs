//! Technique 1: IP and prefix blocking, as Roskomnadzor did in April 2018.

use super::{cidrs, in_any};
use crate::{Flow, Technique, Verdict};
use ipnet::IpNet;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

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

/// An IP block list the test changes while flows run, as a censor
/// pushing a new list to its routers: [`LiveIpBlock::block`] a range (a
/// single endpoint as a /32, or a whole prefix) and new flows to it get the
/// range's action at connect, and established flows get it on the next
/// segment the server sends (a router's filter drops the packets of old
/// connections too; an idle flow is cut when its server next speaks).
/// Clones share the list, so one handle can steer the same technique in
/// several middleboxes.
#[derive(Debug, Clone, Default)]
pub struct LiveIpBlock {
    /// The blocked ranges and what happens to their flows.
    ranges: Arc<RwLock<Vec<(IpNet, Verdict)>>>,
}

impl LiveIpBlock {
    /// An empty list: everything passes.
    pub fn new() -> LiveIpBlock {
        LiveIpBlock::default()
    }
    /// Blocks `range` with `action` ([`Verdict::Drop`]: a blackhole;
    /// [`Verdict::Reset`]).
    pub fn block(&self, range: IpNet, action: Verdict) {
        let mut list = self.ranges.write().unwrap_or_else(|p| p.into_inner());
        list.retain(|(r, _)| *r != range);
        list.push((range, action));
    }
    /// Lifts the block of exactly `range`.
    pub fn unblock(&self, range: IpNet) {
        let mut list = self.ranges.write().unwrap_or_else(|p| p.into_inner());
        list.retain(|(r, _)| *r != range);
    }
    /// Lifts every block.
    pub fn clear(&self) {
        self.ranges
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
    /// The most severe action of the ranges holding `addr` (`Pass` if none).
    pub fn verdict(&self, addr: IpAddr) -> Verdict {
        let list = self.ranges.read().unwrap_or_else(|p| p.into_inner());
        list.iter()
            .filter(|(r, _)| r.contains(&addr))
            .map(|(_, v)| *v)
            .max_by_key(|v| v.severity())
            .unwrap_or(Verdict::Pass)
    }
}

impl Technique for LiveIpBlock {
    fn name(&self) -> &'static str {
        "ip-block"
    }
    fn on_connect(&self, flow: &Flow) -> Verdict {
        self.verdict(flow.server.ip())
    }
    fn on_downstream(&self, flow: &Flow, _total: u64) -> Verdict {
        self.verdict(flow.server.ip())
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
