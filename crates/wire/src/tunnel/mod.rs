//! The samizdat transport: a TLS 1.3 look-alike carrying a Noise NK
//! handshake in the ClientHello's random fields, then AEAD-protected,
//! multiplexed stream frames inside application-data records.
//!
//! The design, threat model and byte layout are in `docs/transport.md`.
//!
//! | module | job |
//! |---|---|
//! | [`hello`] | find the ClientHello slots the handshake fills |
//! | [`handshake`] | Noise NK in the hello: client start, server accept and flight, client flight check |
//! | [`flight`] | ServerHello and the cover-shaped flight |
//! | [`record`] | AES-256-GCM application-data records, sealer and in-place opener |
//! | [`frame`] | mux frames inside record plaintexts, and record padding |
//! | [`lanes`] | one session over many connections: budgets, acknowledgement, resending |
//! | [`mux`] | the stream table: windows, states, which frames are legal when |
//! | [`destination`] | where a stream goes |

pub mod destination;
pub mod flight;
pub mod frame;

pub mod handshake;
pub mod hello;
pub mod mux;
mod read_buffer;

pub mod lanes;
pub mod record;

pub use destination::Destination;
pub use flight::{ExtOrder, FlightShape, ServerFlightError};
pub use handshake::{
    accept, precheck, Accepted, ClientHandshake, Established, Progress, Reject, ServerKey,
    UserCredential,
};
pub use hello::{locate, LocateError, Located};
pub use record::{Opener, RecordError, Sealer};
