//! Sans-io wire formats and crypto state machines of samizdat.
//!
//! Nothing in this crate touches a socket, a clock or a random number
//! generator: bytes, the current time and randomness are arguments, so every
//! function here is deterministic, unit-testable against the recorded vectors
//! and fuzzable. The tokio drivers live in the `samizdat` crate.
//!
//! # Layout
//!
//! | module | job |
//! |---|---|
//! | [`secret`] | the 16-byte key, the plain / `dd` / `ee` secret forms, hex and base64url text, `tg://proxy` links |
//! | [`codec`] | the one byte `Reader` (integers, arrays, length-prefixed vectors, no trailing data) every binary parser uses |
//! | [`cipher`] | AES-256-CTR keystream used by obfuscated2 |
//! | [`obfuscated2`] | the 64-byte init packet: build (initiator), accept (responder), key derivation |
//! | [`framing`] | abridged, intermediate and padded-intermediate packet framing |
//! | [`browser`] | Chrome and Firefox ClientHello templates from captures: fresh GREASE, extension order, real key shares, GREASE ECH |
//! | [`faketls`] | ClientHello parse and verify, server flight, TLS record codec |
//! | [`link`] | `samizdat://` links: user secret, server key, servers, cover name, browser template |
//! | [`server_list`] | signed server lists: Ed25519 over a versioned, bounded body of endpoints; serial, issue and expiry checks |
//! | [`replay`] | bounded, time-windowed replay cache |
//! | [`classify`] | the first-flight classifier: need more bytes, send to cover, or authenticated |
//! | [`users`] | the set of keys a server tries, pre-keyed for HMAC |
//! | [`socks5`] | SOCKS5 server side: greeting, RFC 1929 auth, CONNECT request, replies |
//! | [`http1`] | HTTP/1.1 heads within a bound, request lines, the WebSocket upgrade both ways, response bodies (length, chunked), HTTP dates |
//! | [`http_proxy`] | HTTP proxy request heads: `CONNECT` and absolute-form, rewritten to origin-form |
//! | [`tunnel`] | the samizdat transport: hello slots, Noise NK handshake, server flight, AEAD records, mux frames and stream table, lanes |
//! | [`fuzzing`] | entry points shared by the fuzz targets and the corpus replay test |
//! | `testing` | deterministic randomness for tests (hidden from the docs) |
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod browser;
pub mod cipher;
pub mod classify;
pub mod codec;
pub mod faketls;
pub mod framing;
pub mod fuzzing;
pub mod http1;
pub mod http_proxy;
pub mod link;
pub mod obfuscated2;
pub mod replay;
pub mod secret;
pub mod server_list;
pub mod socks5;
#[doc(hidden)]
pub mod testing;
pub mod tunnel;
pub mod users;
