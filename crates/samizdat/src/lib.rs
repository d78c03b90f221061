//! samizdat: an MTProto proxy that looks like an ordinary HTTPS site.
//!
//! # Layout
//!
//! | module | job |
//! |---|---|
//! | [`serve`] | `samizdat serve`: config, listeners, classification, admission, cover splice, DC routing, relay, egress, usage, reload |
//! | [`client`] | `samizdat client`: config, local front-ends (SOCKS5, HTTP, Telegram), the endpoint pool, lanes, signed server lists |
//! | [`transport`] | the samizdat transport's tokio driver, used by both sides: session, streams, braid of lanes, WebSocket carrier |
//! | [`dial`] | the [`dial::Dialer`] trait between front-ends and where streams go, and [`dial::OpenError`] |
//! | [`fleet`] | state shared by several instances through Redis: replay, usage, leases, the shared user table |
//! | [`cli`] | the other subcommands: `link`, `list`, `doctor`, `users` |
//! | [`metrics`] | Prometheus metrics and the `--metrics` endpoint |
//! | [`delegate`] | `AsyncRead`/`AsyncWrite` passed through to a field, for wrappers |
//! | [`accept`] | accepting within a connection limit (listeners and the metrics endpoint) |
//! | [`clock`] | the one place the system clocks are read (unix time, real elapsed time) |
//! | [`random`] | the one way to take bytes from the OS generator (fails loudly) |
//! | [`state`] | the state directory (the zero-config secret), files written owner-only |
//! | [`sync`] | one policy for poisoned locks ([`sync::Locked`]) |
//! | [`duration`] | `10s`-style durations |
//!
//! All protocol logic lives in the sans-io `wire` crate; this crate only
//! drives sockets and timers around it.
#![deny(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod accept;
pub mod cli;
pub mod client;
pub mod clock;
pub mod delegate;
pub mod dial;
pub mod duration;
pub mod fleet;
pub mod metrics;
pub mod random;
pub mod serve;
pub mod state;
pub mod sync;
pub mod transport;
