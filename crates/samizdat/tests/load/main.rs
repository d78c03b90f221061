//! `samizdat serve` under load: new connections answered while many
//! stream (busy), floods and exhaustion (exhaustion), and memory per
//! connection (memory). A binary of its own: these tests measure times and
//! memory, which tests from other topics running beside them would skew.

#[path = "../common/mod.rs"]
mod common;

mod busy;
mod exhaustion;
mod memory;
