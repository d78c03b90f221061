//! The integration tests of `samizdat`, one module per topic, in one test
//! binary: the crate and tokio are linked once instead of once per file,
//! and the shared harness (`../common`, built on `testkit::process`) is a
//! plain module. Run one topic with `cargo test -p samizdat --test it
//! fleet::`.
//!
//! Two groups are binaries of their own: `load` (busy, exhaustion, memory)
//! measures latency and memory of a server under load, which other tests
//! running beside it in the same binary would skew; `differential`
//! compares samizdat with a real nginx within 1 s for about 75 s, and
//! needs the machine as quiet as it can be.
// Tests measure real time (deadlines, latency, timeouts of real
// processes): the workspace's clock rule is for the library.
#![allow(clippy::disallowed_methods)]

#[path = "../common/mod.rs"]
mod common;

mod braid;
mod config;
mod doctor;
mod egress;
mod endpoint_pool;
mod fleet;
mod fronting;
mod ip_sni;
mod lanes;
mod lean;
mod link;
mod metrics;
mod operator;
mod proxy;
mod samizdat_client;
mod serve;
mod server_lists;
mod tunnel_session;
mod users;
mod zero_config;
