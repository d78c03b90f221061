//! Where a tunnelled stream goes: a host the server resolves, an address,
//! or a Telegram DC the server reaches through its own DC routing.

use crate::obfuscated2::Tag;
use std::fmt;
use std::net::SocketAddr;

/// The target of one stream, named by the client in its open frame.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Destination {
    /// A DNS name; the server resolves it (so the client leaks no DNS).
    Host {
        /// The name, at most 255 bytes.
        name: String,
        /// TCP port.
        port: u16,
    },
    /// A literal address.
    Addr(SocketAddr),
    /// A Telegram DC by id (negative for media DCs). The stream carries the
    /// client's MTProto packets in `framing`'s format; the server speaks
    /// obfuscated2 to the DC with the same tag.
    Telegram {
        /// DC id as in the obfuscated2 init (±1…5, ±203, test DCs).
        dc: i16,
        /// The framing the packets use.
        tag: Tag,
    },
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Host { name, port } => write!(f, "{name}:{port}"),
            Destination::Addr(addr) => write!(f, "{addr}"),
            Destination::Telegram { dc, tag } => write!(f, "telegram dc {dc} ({})", tag.name()),
        }
    }
}
