//! `samizdat serve` under load: new connections answered while many
//! stream (busy), floods and exhaustion (exhaustion), and memory per
//! connection (memory). A binary of its own: these tests measure times and
//! memory, which tests from other topics running beside them would skew.
// Tests measure real time (deadlines, latency, timeouts of real
// processes): the workspace's clock rule is for the library.
#![allow(clippy::disallowed_methods)]

#[path = "../common/mod.rs"]
mod common;

mod busy;
mod exhaustion;
mod memory;
