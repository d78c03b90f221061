//! The client's local front-ends: what apps on this machine connect to.
//!
//! Every front-end parses its protocol with the sans-io parsers in `wire`,
//! then asks a [`Dialer`](crate::dial::Dialer) for a stream to the
//! destination and relays bytes.
//!
//! | module | job |
//! |---|---|
//! | [`socks5`] | SOCKS5 (RFC 1928, RFC 1929 auth), CONNECT only |
//! | [`http`] | HTTP proxy: `CONNECT` tunnels and absolute-form requests |
//! | [`telegram`] | a local MTProto endpoint for Telegram apps (`dd` secret) |
//! | `accept` | the shared accept loop, deadlines and the byte pump |

mod accept;
pub mod http;
pub mod socks5;
pub mod telegram;

pub use http::serve_http;
pub use socks5::serve_socks5;
pub use telegram::{serve_telegram, telegram_link};
