//! The samizdat transport: a TLS 1.3 look-alike carrying a Noise NK
//! handshake in the ClientHello's random fields, then AEAD-protected,
//! multiplexed stream frames inside application-data records.
//!
//! The design, threat model and byte layout are in `docs/transport.md`.

pub mod destination;

pub use destination::Destination;
