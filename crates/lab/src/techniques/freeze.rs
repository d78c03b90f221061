//! Technique 6: Russia's 2025 freeze of TLS connections to foreign
//! hosting after 16–20 KB from the server.

use super::{cidrs, in_any};
use crate::{Flow, Technique, Verdict};
use ipnet::IpNet;

/// Default threshold: server → client bytes passed before the freeze.
pub const THRESHOLD: u64 = 16 * 1024;

/// A sample of "foreign hosting" prefixes (Hetzner, OVH, DigitalOcean,
/// Cloudflare, Amazon Frankfurt): the freeze was reported for these
/// providers. The lab's tests use their own lists.
pub const FOREIGN_HOSTING_SAMPLE: &[&str] = &[
    "5.9.0.0/16",
    "88.198.0.0/16",
    "51.68.0.0/16",
    "164.90.0.0/16",
    "104.16.0.0/13",
    "18.192.0.0/11",
];

/// Stops passing server → client bytes of TLS flows to listed prefixes
/// once more than `threshold` bytes came down; client → server still
/// flows, and nothing is reset.
#[derive(Debug, Clone)]
pub struct Freeze {
    /// Destinations affected.
    pub foreign: Vec<IpNet>,
    /// Bytes passed before the freeze.
    pub threshold: u64,
}

impl Freeze {
    /// Freezes flows to `foreign` after [`THRESHOLD`] bytes.
    pub fn new(foreign: Vec<IpNet>) -> Freeze {
        Freeze {
            foreign,
            threshold: THRESHOLD,
        }
    }
    /// The shipped sample ([`FOREIGN_HOSTING_SAMPLE`]).
    pub fn russia_2025() -> Freeze {
        Freeze::new(cidrs(FOREIGN_HOSTING_SAMPLE))
    }
    /// Sets the threshold.
    pub fn threshold(mut self, bytes: u64) -> Freeze {
        self.threshold = bytes;
        self
    }
}

impl Technique for Freeze {
    fn name(&self) -> &'static str {
        "freeze"
    }
    fn on_downstream(&self, flow: &Flow, total: u64) -> Verdict {
        if flow.tls && total > self.threshold && in_any(&self.foreign, flow.server.ip()) {
            Verdict::Freeze
        } else {
            Verdict::Pass
        }
    }
}
