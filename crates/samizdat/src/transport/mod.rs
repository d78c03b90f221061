//! The tokio driver of the samizdat transport: one [`Session`] per TLS
//! look-alike connection, multiplexing [`Stream`]s.
//!
//! The protocol (handshake, records, frames, stream table) is sans-io in
//! `wire::tunnel`; this module only moves bytes and wakes tasks:
//!
//! - a reader task reads into the record layer's bounded buffer, takes
//!   out records and feeds their frames to the `wire` stream table,
//!   queueing data per stream (never more than the stream's window);
//! - a writer task packs pending control frames and stream data
//!   round-robin into padded records, sends keepalive PINGs when idle;
//! - [`Stream`]s read and write those per-stream queues under one lock.
//!
//! The records are AEAD-sealed under the handshake's keys when the session
//! has a connection of its own ([`Session::client`]), and only
//! length-framed over a braid ([`Session::client_on_braid`]), whose lanes
//! seal every record they carry: each byte is sealed once either way.
//!
//! The session dies on any I/O or protocol error, when no bytes arrive for
//! [`SessionConfig::dead_after`], or when every handle ([`Session`],
//! [`Incoming`], [`Stream`], [`IncomingStream`]) is gone; then both tasks
//! end and every stream errors out.

pub mod braid;
mod reader;
mod records;
mod session;
mod stream;
mod writer;
pub mod ws;

pub use session::{Incoming, IncomingStream, Session, StreamOpenError};
pub use stream::Stream;
pub use wire::tunnel::frame::Status;

use std::time::Duration;

/// Limits and timers of one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// Receive window per stream: the most bytes buffered for a stream the
    /// application does not read (at least 256 KiB, the protocol's initial
    /// window).
    pub window: u32,
    /// Most concurrent streams (the peer's opens beyond this are a
    /// protocol error; ours fail with [`StreamOpenError::TooManyStreams`]).
    pub max_streams: usize,
    /// Send a PING after this long without sending anything.
    pub keepalive: Duration,
    /// Declare the session dead after this long without receiving a byte.
    pub dead_after: Duration,
}

impl Default for SessionConfig {
    fn default() -> SessionConfig {
        SessionConfig {
            window: wire::tunnel::mux::INITIAL_WINDOW,
            max_streams: 1024,
            keepalive: Duration::from_secs(10),
            dead_after: Duration::from_secs(30),
        }
    }
}
