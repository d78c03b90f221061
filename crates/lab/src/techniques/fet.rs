//! Technique 3: China's fully-encrypted-traffic (FET) detector, with the
//! residual block of the (client IP, server IP, server port) triple.

use super::in_any;
use crate::detect::{classify_first_payload, FetVerdict};
use crate::{Flow, Technique, Verdict};
use ipnet::IpNet;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// How long the GFW kept blocking the triple after a detection.
pub const RESIDUAL_IN_THE_WILD: Duration = Duration::from_secs(180);

/// Triples blocked until an instant: every new flow on one is dropped.
///
/// Bounded: expired entries are swept when an insert finds more than
/// [`ResidualBlock::MAX`] entries, and past that the oldest-expiring entry
/// makes room.
#[derive(Debug)]
pub struct ResidualBlock {
    /// How long a triple stays blocked.
    pub period: Duration,
    /// Blocked triples and when they are released.
    until: Mutex<HashMap<(IpAddr, IpAddr, u16), Instant>>,
}

impl ResidualBlock {
    /// Entries kept at most (a lab runs thousands of flows, not millions).
    pub const MAX: usize = 65_536;

    /// Blocks triples for `period`.
    pub fn new(period: Duration) -> ResidualBlock {
        ResidualBlock {
            period,
            until: Mutex::new(HashMap::new()),
        }
    }

    fn key(flow: &Flow) -> (IpAddr, IpAddr, u16) {
        (flow.client.ip(), flow.server.ip(), flow.server.port())
    }

    /// A new connection's verdict: dropped while its triple is blocked.
    pub fn on_connect(&self, flow: &Flow) -> Verdict {
        if self.is_blocked(flow) {
            Verdict::Drop
        } else {
            Verdict::Pass
        }
    }

    /// Whether the flow's triple is blocked now.
    pub fn is_blocked(&self, flow: &Flow) -> bool {
        let now = Instant::now();
        let mut map = self.until.lock().unwrap();
        match map.get(&Self::key(flow)) {
            Some(&t) if t > now => true,
            Some(_) => {
                map.remove(&Self::key(flow));
                false
            }
            None => false,
        }
    }

    /// Blocks the flow's triple from now for [`ResidualBlock::period`].
    pub fn block(&self, flow: &Flow) {
        let now = Instant::now();
        let mut map = self.until.lock().unwrap();
        if map.len() >= Self::MAX {
            map.retain(|_, t| *t > now);
            if map.len() >= Self::MAX {
                if let Some(k) = map.iter().min_by_key(|(_, t)| **t).map(|(k, _)| *k) {
                    map.remove(&k);
                }
            }
        }
        map.insert(Self::key(flow), now + self.period);
    }
}

/// Drops flows whose first payload looks fully encrypted (no exemption of
/// Wu et al. 2023 applies), then every flow on the same triple for the
/// residual period.
#[derive(Debug)]
pub struct Fet {
    /// Server prefixes the detector watches (empty: all). The GFW applied
    /// it to ranges of popular hosting providers only.
    pub targets: Vec<IpNet>,
    /// The triples blocked after a detection.
    pub residual: ResidualBlock,
}

impl Fet {
    /// Watches every destination; blocks triples for `period`
    /// ([`RESIDUAL_IN_THE_WILD`] in the wild).
    pub fn new(period: Duration) -> Fet {
        Fet {
            targets: Vec::new(),
            residual: ResidualBlock::new(period),
        }
    }
    /// Watches only destinations in `targets`.
    pub fn targets(mut self, targets: Vec<IpNet>) -> Fet {
        self.targets = targets;
        self
    }
    fn watched(&self, flow: &Flow) -> bool {
        self.targets.is_empty() || in_any(&self.targets, flow.server.ip())
    }
}

impl Default for Fet {
    fn default() -> Fet {
        Fet::new(RESIDUAL_IN_THE_WILD)
    }
}

impl Technique for Fet {
    fn name(&self) -> &'static str {
        "fet"
    }
    fn on_connect(&self, flow: &Flow) -> Verdict {
        self.residual.on_connect(flow)
    }
    fn on_first_payload(&self, flow: &Flow, data: &[u8]) -> Verdict {
        if !self.watched(flow) {
            return Verdict::Pass;
        }
        match classify_first_payload(data) {
            FetVerdict::Block => {
                self.residual.block(flow);
                Verdict::Drop
            }
            FetVerdict::Exempt(_) => Verdict::Pass,
        }
    }
}
