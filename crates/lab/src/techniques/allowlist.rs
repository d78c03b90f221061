//! Technique 7: Iran's 2020 protocol allowlist, and a whitelist mode.

use super::fet::ResidualBlock;
use super::in_any;
use super::sni::SniRule;
use crate::detect::{looks_like, Looks};
use crate::{Flow, Technique, Verdict};
use ipnet::IpNet;
use std::time::Duration;

/// How long a triple stayed cut off after a failed protocol match (Bock et
/// al. 2020 measured 60 s).
pub const PERIOD_IN_THE_WILD: Duration = Duration::from_secs(60);

/// Ports the filter watched in 2020.
pub const PORTS_2020: &[u16] = &[53, 80, 443];

/// On watched ports, a flow whose first payload does not look like DNS,
/// HTTP or TLS is dropped, and its triple stays dropped for a period.
#[derive(Debug)]
pub struct ProtocolAllowlist {
    /// Destination ports watched (empty: all).
    pub ports: Vec<u16>,
    /// The triples cut off.
    pub residual: ResidualBlock,
}

impl ProtocolAllowlist {
    /// Watches [`PORTS_2020`]; cuts triples off for `period`.
    pub fn new(period: Duration) -> ProtocolAllowlist {
        ProtocolAllowlist {
            ports: PORTS_2020.to_vec(),
            residual: ResidualBlock::new(period),
        }
    }
    /// Watches these ports (empty: all).
    pub fn ports(mut self, ports: Vec<u16>) -> ProtocolAllowlist {
        self.ports = ports;
        self
    }
    fn watched(&self, flow: &Flow) -> bool {
        self.ports.is_empty() || self.ports.contains(&flow.server.port())
    }
}

impl Default for ProtocolAllowlist {
    fn default() -> ProtocolAllowlist {
        ProtocolAllowlist::new(PERIOD_IN_THE_WILD)
    }
}

impl Technique for ProtocolAllowlist {
    fn name(&self) -> &'static str {
        "protocol-allowlist"
    }
    fn on_connect(&self, flow: &Flow) -> Verdict {
        self.residual.on_connect(flow)
    }
    fn on_first_payload(&self, flow: &Flow, data: &[u8]) -> Verdict {
        if !self.watched(flow) {
            return Verdict::Pass;
        }
        match looks_like(data) {
            Looks::Dns | Looks::Http | Looks::Tls => Verdict::Pass,
            Looks::Other => {
                self.residual.block(flow);
                Verdict::Drop
            }
        }
    }
}

/// Whitelist mode: only listed destinations, or TLS flows naming a listed
/// server, get through; everything else is dropped.
#[derive(Debug, Clone, Default)]
pub struct Whitelist {
    /// Destinations let through whatever they carry.
    pub addrs: Vec<IpNet>,
    /// Server names let through (to any destination).
    pub snis: Vec<SniRule>,
}

impl Whitelist {
    /// Lets `addrs` and `snis` through.
    pub fn new(addrs: Vec<IpNet>, snis: Vec<SniRule>) -> Whitelist {
        Whitelist { addrs, snis }
    }
}

impl Technique for Whitelist {
    fn name(&self) -> &'static str {
        "whitelist"
    }
    fn on_connect(&self, flow: &Flow) -> Verdict {
        if in_any(&self.addrs, flow.server.ip()) || !self.snis.is_empty() {
            Verdict::Pass
        } else {
            Verdict::Drop
        }
    }
    fn on_first_payload(&self, flow: &Flow, _data: &[u8]) -> Verdict {
        let sni_ok = flow
            .sni
            .as_deref()
            .is_some_and(|s| self.snis.iter().any(|r| r.matches(s)));
        if in_any(&self.addrs, flow.server.ip()) || sni_ok {
            Verdict::Pass
        } else {
            Verdict::Drop
        }
    }
}
