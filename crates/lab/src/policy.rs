//! What a technique sees of a flow and what it can decide.

use std::net::SocketAddr;
use std::sync::Arc;

/// What to do with a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Let it through.
    Pass,
    /// Silently stop forwarding both ways and keep both sockets open (a
    /// blackhole: the client sees a connection on which nothing arrives).
    Drop,
    /// Reset both sides (RST).
    Reset,
    /// Pace both directions to this many bytes per second.
    Throttle {
        /// Rate cap.
        bytes_per_sec: u64,
    },
    /// Silently stop forwarding server → client; client → server still
    /// flows.
    Freeze,
}

impl Verdict {
    /// Severity, for combining several techniques' verdicts: the most
    /// severe wins (`Reset` > `Drop` > `Freeze` > `Throttle` > `Pass`; of
    /// two throttles the slower).
    pub fn severity(self) -> (u8, u64) {
        match self {
            Verdict::Pass => (0, 0),
            Verdict::Throttle { bytes_per_sec } => (1, u64::MAX - bytes_per_sec),
            Verdict::Freeze => (2, 0),
            Verdict::Drop => (3, 0),
            Verdict::Reset => (4, 0),
        }
    }
}

/// One TCP flow through the middlebox, as a censor on the path sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    /// Sequence number of the flow in this middlebox (from 0).
    pub id: u64,
    /// The client's address (its source address on loopback).
    pub client: SocketAddr,
    /// The destination the techniques judge: [`Policy::destination`] if set
    /// (a label), otherwise the real upstream.
    pub server: SocketAddr,
    /// The SNI of the client's ClientHello, once the first payload was seen
    /// (`None` before, and for flows that are not TLS or carry none).
    pub sni: Option<String>,
    /// The first payload was a TLS handshake record.
    pub tls: bool,
}

/// A censorship technique. Every hook defaults to [`Verdict::Pass`].
///
/// Hooks are called on the flow's task and must not block; state shared
/// between flows (a blocked 3-tuple) lives behind the technique's own lock.
pub trait Technique: Send + Sync {
    /// Stable name, the key in [`crate::Events`].
    fn name(&self) -> &'static str;
    /// The flow opened; only addresses are known.
    fn on_connect(&self, _flow: &Flow) -> Verdict {
        Verdict::Pass
    }
    /// The client's first bytes: a whole TLS record if they start one (at
    /// most 16 KiB + 5, or what arrived within 1 s of the first byte),
    /// otherwise what the first read returned.
    fn on_first_payload(&self, _flow: &Flow, _data: &[u8]) -> Verdict {
        Verdict::Pass
    }
    /// Server → client bytes so far, including the segment (at most
    /// [`crate::middlebox::SEGMENT`] bytes) about to be forwarded.
    fn on_downstream(&self, _flow: &Flow, _total: u64) -> Verdict {
        Verdict::Pass
    }
}

/// The techniques a middlebox applies, and the destination they judge.
#[derive(Clone, Default)]
pub struct Policy {
    /// Applied in order; for each hook the most severe verdict wins.
    pub techniques: Vec<Arc<dyn Technique>>,
    /// The destination address techniques see instead of the real upstream
    /// (e.g. a Telegram DC's address while forwarding to 127.0.0.1). Only
    /// a label: traffic goes to the upstream given to [`crate::start`].
    pub destination: Option<SocketAddr>,
}

impl Policy {
    /// A policy with these techniques and the real upstream as destination.
    pub fn new(techniques: Vec<Arc<dyn Technique>>) -> Policy {
        Policy {
            techniques,
            destination: None,
        }
    }

    /// Makes techniques judge `addr` as the destination.
    pub fn destination(mut self, addr: SocketAddr) -> Policy {
        self.destination = Some(addr);
        self
    }

    /// Runs `hook` on every technique and returns the most severe verdict
    /// and the technique that gave it.
    pub(crate) fn judge(
        &self,
        hook: impl Fn(&dyn Technique) -> Verdict,
    ) -> (Verdict, Option<&'static str>) {
        let mut best = (Verdict::Pass, None);
        for t in &self.techniques {
            let v = hook(t.as_ref());
            if v.severity() > best.0.severity() {
                best = (v, Some(t.name()));
            }
        }
        best
    }
}
