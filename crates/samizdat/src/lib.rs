//! samizdat: an MTProto proxy that looks like an ordinary HTTPS site.
//!
//! # Layout
//!
//! | module | job |
//! |---|---|
//! | [`config`] | `serve` options → one validated [`config::ServeConfig`] |
//! | [`serve`] | listener, connection handling, cover splice, DC routing, relay |
//! | [`links`] | the `tg://proxy` links printed at start |
//! | [`link_cmd`] | `samizdat link`: those links and their QR codes, no server |
//! | [`list_cmd`] | `samizdat list`: make the list key, sign and check server lists |
//! | [`doctor`] | `samizdat doctor`: config, clock, DNS, cover and DC checks, each with a fix |
//! | [`fleet`] | state shared by several instances through Redis; `samizdat users` |
//! | [`metrics`] | Prometheus metrics and the `--metrics` endpoint |
//! | [`proxy`] | local SOCKS5 / HTTP / Telegram front-ends, the [`proxy::Dialer`] trait, the server's egress policy |
//! | [`random`] | the one way to take bytes from the OS generator (fails loudly) |
//! | [`state`] | the state directory (the zero-config secret) |
//! | [`duration`] | `10s`-style durations |
//!
//! All protocol logic lives in the sans-io `wire` crate; this crate only
//! drives sockets and timers around it.
#![forbid(unsafe_code)]

pub mod accept;
pub mod client;
pub mod config;
pub mod doctor;
pub mod duration;
pub mod fleet;
pub mod link_cmd;
pub mod links;
pub mod list_cmd;
pub mod metrics;
pub mod proxy;
pub mod random;
pub mod serve;
pub mod state;
pub mod tunnel;
