//! `samizdat-lab`: a censor in a box (the library; `src/main.rs` is the
//! program).
//!
//! A [`Middlebox`] sits on loopback between a client and a server and
//! forwards TCP both ways, while a [`Policy`] of [`Technique`]s judges each
//! flow at three moments: when it opens ([`Technique::on_connect`]), on the
//! client's first payload ([`Technique::on_first_payload`]) and as the
//! server's bytes come back ([`Technique::on_downstream`]). A verdict can
//! drop the flow silently (blackhole), reset it, throttle it or freeze its
//! downstream. [`Events`] counts what each technique did.
//!
//! The lab only ever connects to the configured upstream (a loopback
//! address); the destination techniques judge is a *label* that can pretend
//! to be, say, a Telegram DC ([`Policy::destination`]).
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use lab::{techniques::IpBlock, Policy, Verdict};
//! use std::sync::Arc;
//! let policy = Policy::new(vec![Arc::new(IpBlock::telegram_2018(Verdict::Drop))])
//!     .destination("149.154.167.51:443".parse().unwrap());
//! let mb = lab::start("127.0.0.1:0".parse().unwrap(), "127.0.0.1:8443".parse().unwrap(), policy).await?;
//! // connect clients to mb.addr; read mb.events()
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! | module | job |
//! |---|---|
//! | [`policy`] | the [`Technique`] trait, [`Verdict`], [`Flow`], [`Policy`] |
//! | [`events`] | per-technique counters ([`Events`]) |
//! | [`middlebox`] | the listener and the per-flow driver ([`start`]) |
//! | `pump` | the byte pump with throttle, freeze and FIN/RST mirroring |
//! | [`censor`] | the pure detectors (sans-io): GFW fully-encrypted-traffic rules, JA3/JA4, Iran's protocol allowlist |
//! | [`detect`] | the detectors the techniques use, re-exported from [`censor`] |
//! | [`techniques`] | techniques 1, 2, 3, 4, 6, 7 of `docs/lab.md` |
//! | [`probe`] | technique 5: active probing and replay |
//! | [`scorecard`] | subjects × techniques on loopback, rendered as a table |
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod censor;
pub mod detect;
pub mod events;
pub mod middlebox;
pub mod policy;
pub mod probe;
mod pump;
pub mod scorecard;
pub mod techniques;

pub use events::{Counts, Events, Record};
pub use middlebox::{start, Middlebox};
pub use policy::{Flow, Policy, Technique, Verdict};
