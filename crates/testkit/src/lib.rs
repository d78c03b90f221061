//! Test doubles shared by the integration tests, the interop suite and the
//! benchmarks: a fake Telegram DC, fake cover sites, and a client that
//! speaks the three MTProto proxy forms. Everything binds to loopback.
//!
//! | module | job |
//! |---|---|
//! | [`fake_dc`] | obfuscated2 responder; answers `req_pq_multi` like a DC, echoes the rest |
//! | [`res_pq`] | the DC's answer to the first auth-key request |
//! | [`fake_cover`] | cover sites: echo, or an HTTP error page |
//! | [`client`] | a Telegram-app-like client for plain, `dd` and `ee` secrets |
//! | [`process`] | the real `samizdat serve` / `client` as child processes, killed on drop |
//! | [`duplex`] | an in-memory connection with a drop/freeze/alter middlebox, for virtual-time tests |
//! | [`pki`] | a throwaway CA and `localhost` leaf for loopback TLS |
#![forbid(unsafe_code)]

pub mod client;
pub mod duplex;
pub mod fake_cover;
pub mod fake_dc;
pub mod pki;
pub mod process;
pub mod res_pq;

/// Random bytes from the OS (panics if the OS generator fails).
#[allow(clippy::disallowed_methods)]
pub fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("OS randomness");
    b
}

/// Fills a slice with random bytes (panics if the OS generator fails).
#[allow(clippy::disallowed_methods)]
pub fn fill(buf: &mut [u8]) {
    getrandom::fill(buf).expect("OS randomness");
}
