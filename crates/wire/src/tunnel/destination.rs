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

/// Why destination bytes do not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DestinationError {
    /// The bytes end inside the destination.
    #[error("destination truncated")]
    Truncated,
    /// Unknown kind byte, bad host name or bad framing tag.
    #[error("invalid destination")]
    Invalid,
}

const KIND_HOST: u8 = 1;
const KIND_V4: u8 = 4;
const KIND_V6: u8 = 6;
const KIND_TELEGRAM: u8 = 7;

impl Destination {
    /// Appends the wire form: `kind u8` then
    /// host `len u8 | name | port u16`, IPv4 `4 bytes | port`,
    /// IPv6 `16 bytes | port`, Telegram `dc i16 | tag 4 bytes` (BE).
    /// Host names longer than 255 bytes are truncated (callers validate).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Destination::Host { name, port } => {
                let name = &name.as_bytes()[..name.len().min(255)];
                out.push(KIND_HOST);
                out.push(name.len() as u8);
                out.extend_from_slice(name);
                out.extend_from_slice(&port.to_be_bytes());
            }
            Destination::Addr(SocketAddr::V4(a)) => {
                out.push(KIND_V4);
                out.extend_from_slice(&a.ip().octets());
                out.extend_from_slice(&a.port().to_be_bytes());
            }
            Destination::Addr(SocketAddr::V6(a)) => {
                out.push(KIND_V6);
                out.extend_from_slice(&a.ip().octets());
                out.extend_from_slice(&a.port().to_be_bytes());
            }
            Destination::Telegram { dc, tag } => {
                out.push(KIND_TELEGRAM);
                out.extend_from_slice(&dc.to_be_bytes());
                out.extend_from_slice(&tag.bytes());
            }
        }
    }

    /// Bytes [`Destination::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        match self {
            Destination::Host { name, .. } => 1 + 1 + name.len().min(255) + 2,
            Destination::Addr(SocketAddr::V4(_)) => 1 + 4 + 2,
            Destination::Addr(SocketAddr::V6(_)) => 1 + 16 + 2,
            Destination::Telegram { .. } => 1 + 2 + 4,
        }
    }

    /// Decodes a destination from the front of `buf`; returns it and the
    /// bytes it took. Host names must be non-empty printable ASCII.
    pub fn decode(buf: &[u8]) -> Result<(Destination, usize), DestinationError> {
        let take = |at: usize, n: usize| buf.get(at..at + n).ok_or(DestinationError::Truncated);
        let port = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
        match *buf.first().ok_or(DestinationError::Truncated)? {
            KIND_HOST => {
                let n = take(1, 1)?[0] as usize;
                let name = take(2, n)?;
                if name.is_empty() || !name.iter().all(|b| b.is_ascii_graphic()) {
                    return Err(DestinationError::Invalid);
                }
                let name =
                    String::from_utf8(name.to_vec()).map_err(|_| DestinationError::Invalid)?;
                let p = port(take(2 + n, 2)?);
                Ok((Destination::Host { name, port: p }, 4 + n))
            }
            KIND_V4 => {
                let ip: [u8; 4] = take(1, 4)?.try_into().expect("4 bytes");
                let p = port(take(5, 2)?);
                Ok((Destination::Addr(SocketAddr::from((ip, p))), 7))
            }
            KIND_V6 => {
                let ip: [u8; 16] = take(1, 16)?.try_into().expect("16 bytes");
                let p = port(take(17, 2)?);
                Ok((Destination::Addr(SocketAddr::from((ip, p))), 19))
            }
            KIND_TELEGRAM => {
                let dc = take(1, 2)?;
                let dc = i16::from_be_bytes([dc[0], dc[1]]);
                let tag = take(3, 4)?.try_into().expect("4 bytes");
                let tag = Tag::from_bytes(tag).ok_or(DestinationError::Invalid)?;
                Ok((Destination::Telegram { dc, tag }, 7))
            }
            _ => Err(DestinationError::Invalid),
        }
    }
}
