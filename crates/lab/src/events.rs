//! What the techniques did, for tests and the scorecard.

use crate::Verdict;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// Counters of one technique: how many flows it acted on, by action.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Flows blackholed.
    pub dropped: u64,
    /// Flows reset.
    pub reset: u64,
    /// Flows throttled.
    pub throttled: u64,
    /// Flows whose downstream was frozen.
    pub frozen: u64,
}

impl Counts {
    /// Flows acted on in any way.
    pub fn total(&self) -> u64 {
        self.dropped + self.reset + self.throttled + self.frozen
    }
    /// Flows dropped or reset.
    pub fn blocked(&self) -> u64 {
        self.dropped + self.reset
    }
}

/// One action, for logs and the scorecard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The technique's name.
    pub technique: &'static str,
    /// What it did.
    pub verdict: Verdict,
    /// The flow's id.
    pub flow: u64,
    /// The client.
    pub client: SocketAddr,
    /// The destination judged.
    pub server: SocketAddr,
    /// The flow's SNI, if known then.
    pub sni: Option<String>,
}

/// Records kept at most (the counters keep counting past it).
pub const MAX_RECORDS: usize = 10_000;

#[derive(Debug, Default)]
struct Inner {
    flows: u64,
    counts: BTreeMap<&'static str, Counts>,
    records: Vec<Record>,
}

/// Shared, cheap to clone counters of a middlebox.
#[derive(Debug, Clone, Default)]
pub struct Events(Arc<Mutex<Inner>>);

impl Events {
    /// Flows accepted so far.
    pub fn flows(&self) -> u64 {
        self.0.lock().unwrap().flows
    }
    /// The counters of the technique named `technique` (zero if it never
    /// acted).
    pub fn get(&self, technique: &str) -> Counts {
        let inner = self.0.lock().unwrap();
        inner.counts.get(technique).copied().unwrap_or_default()
    }
    /// All counters, by technique name.
    pub fn all(&self) -> BTreeMap<&'static str, Counts> {
        self.0.lock().unwrap().counts.clone()
    }
    /// The first [`MAX_RECORDS`] actions, in order.
    pub fn records(&self) -> Vec<Record> {
        self.0.lock().unwrap().records.clone()
    }

    pub(crate) fn flow_opened(&self) {
        self.0.lock().unwrap().flows += 1;
    }

    pub(crate) fn record(&self, technique: &'static str, verdict: Verdict, flow: &crate::Flow) {
        let mut inner = self.0.lock().unwrap();
        let c = inner.counts.entry(technique).or_default();
        match verdict {
            Verdict::Pass => return,
            Verdict::Drop => c.dropped += 1,
            Verdict::Reset => c.reset += 1,
            Verdict::Throttle { .. } => c.throttled += 1,
            Verdict::Freeze => c.frozen += 1,
        }
        if inner.records.len() < MAX_RECORDS {
            inner.records.push(Record {
                technique,
                verdict,
                flow: flow.id,
                client: flow.client,
                server: flow.server,
                sni: flow.sni.clone(),
            });
        }
    }
}
