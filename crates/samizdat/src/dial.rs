//! Where a stream goes: the [`Dialer`] trait, the boxed stream it returns
//! and the ways opening one fails.
//!
//! The client's front-ends (`client::frontends`) parse a request, ask a
//! [`Dialer`] for a stream to its destination and relay bytes. The dialer
//! decides where the bytes go: through the transport on the client
//! (`client::dialer::TunnelDialer`), or straight out on the server
//! (`serve::egress::DirectDialer`). [`OpenError`] is the outcome both sides
//! agree on: it crosses the transport as one status byte.

use std::future::Future;
use std::pin::Pin;
use tokio::io::{AsyncRead, AsyncWrite};
pub use wire::tunnel::Destination;

/// A byte stream in both directions.
pub trait AsyncReadWrite: AsyncRead + AsyncWrite {}

impl<T: AsyncRead + AsyncWrite + ?Sized> AsyncReadWrite for T {}

/// A stream a [`Dialer`] opened.
pub type BoxIo = Box<dyn AsyncReadWrite + Send + Unpin>;

/// The future [`Dialer::open`] returns.
pub type OpenFuture<'a> = Pin<Box<dyn Future<Output = Result<BoxIo, OpenError>> + Send + 'a>>;

/// Opens streams to destinations: the tunnel on the client, the network on
/// the server.
pub trait Dialer: Send + Sync + 'static {
    /// Opens a stream to `dest`, sending `first` before anything else.
    fn open(&self, dest: Destination, first: Vec<u8>) -> OpenFuture<'_>;
}

/// Why a stream could not be opened. The variants follow SOCKS5's reply
/// codes so that each front-end can answer in its own terms, and each has
/// a one-byte status code for carrying it across the tunnel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The egress policy refuses the destination (a private, loopback or
    /// otherwise reserved address, or a name that resolves only to such).
    #[error("destination not allowed by the egress policy")]
    NotAllowed,
    /// No route to the destination's network.
    #[error("network unreachable")]
    NetworkUnreachable,
    /// The destination host did not answer (no route to host).
    #[error("host unreachable")]
    HostUnreachable,
    /// The destination refused the connection (nothing listens on the port).
    #[error("connection refused by the destination")]
    ConnectionRefused,
    /// Connecting (or resolving) took longer than the dialer allows.
    #[error("timed out connecting to the destination")]
    TimedOut,
    /// The name did not resolve to any address.
    #[error("the destination name did not resolve")]
    NameNotResolved,
    /// Anything else; the text says what.
    #[error("cannot open the stream: {0}")]
    General(String),
}

/// The status code of a successful open.
pub const STATUS_OK: u8 = 0;

impl OpenError {
    /// The one-byte status carried across the tunnel: 1..=7 in declaration
    /// order ([`STATUS_OK`] is success).
    pub fn code(&self) -> u8 {
        match self {
            OpenError::NotAllowed => 1,
            OpenError::NetworkUnreachable => 2,
            OpenError::HostUnreachable => 3,
            OpenError::ConnectionRefused => 4,
            OpenError::TimedOut => 5,
            OpenError::NameNotResolved => 6,
            OpenError::General(_) => 7,
        }
    }

    /// The outcome a status byte stands for. `General` carries no text on
    /// the wire, so it comes back with a generic one; unknown codes are
    /// `General` failures too.
    pub fn from_code(code: u8) -> Result<(), OpenError> {
        match code {
            STATUS_OK => Ok(()),
            1 => Err(OpenError::NotAllowed),
            2 => Err(OpenError::NetworkUnreachable),
            3 => Err(OpenError::HostUnreachable),
            4 => Err(OpenError::ConnectionRefused),
            5 => Err(OpenError::TimedOut),
            6 => Err(OpenError::NameNotResolved),
            7 => Err(OpenError::General("the far end failed to open it".into())),
            other => Err(OpenError::General(format!("unknown open status {other}"))),
        }
    }

    /// The SOCKS5 reply code (RFC 1928 §6).
    pub fn socks5_reply(&self) -> u8 {
        match self {
            OpenError::NotAllowed => 0x02,
            OpenError::NetworkUnreachable => 0x03,
            OpenError::HostUnreachable => 0x04,
            OpenError::ConnectionRefused => 0x05,
            OpenError::TimedOut => 0x06,
            OpenError::NameNotResolved => 0x04,
            OpenError::General(_) => 0x01,
        }
    }

    /// The HTTP status an HTTP proxy answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            OpenError::NotAllowed => 403,
            OpenError::TimedOut => 504,
            _ => 502,
        }
    }
}

impl From<std::io::Error> for OpenError {
    fn from(e: std::io::Error) -> OpenError {
        use std::io::ErrorKind as K;
        match e.kind() {
            K::ConnectionRefused => return OpenError::ConnectionRefused,
            K::TimedOut => return OpenError::TimedOut,
            K::NetworkUnreachable => return OpenError::NetworkUnreachable,
            K::HostUnreachable => return OpenError::HostUnreachable,
            _ => {}
        }
        match e.raw_os_error() {
            Some(libc::ENETUNREACH) | Some(libc::ENETDOWN) => OpenError::NetworkUnreachable,
            Some(libc::EHOSTUNREACH) | Some(libc::EHOSTDOWN) => OpenError::HostUnreachable,
            Some(libc::ECONNREFUSED) => OpenError::ConnectionRefused,
            Some(libc::ETIMEDOUT) => OpenError::TimedOut,
            _ => OpenError::General(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> [OpenError; 7] {
        [
            OpenError::NotAllowed,
            OpenError::NetworkUnreachable,
            OpenError::HostUnreachable,
            OpenError::ConnectionRefused,
            OpenError::TimedOut,
            OpenError::NameNotResolved,
            OpenError::General("x".into()),
        ]
    }

    #[test]
    fn codes_in_order_and_back() {
        for (i, e) in all().into_iter().enumerate() {
            assert_eq!(usize::from(e.code()), i + 1);
            let back = OpenError::from_code(e.code()).unwrap_err();
            assert_eq!(back.code(), e.code());
        }
        assert_eq!(OpenError::from_code(0), Ok(()));
        assert_eq!(OpenError::from_code(200).unwrap_err().code(), 7);
    }

    #[test]
    fn socks_and_http_mappings() {
        let socks: Vec<u8> = all().iter().map(OpenError::socks5_reply).collect();
        assert_eq!(socks, [0x02, 0x03, 0x04, 0x05, 0x06, 0x04, 0x01]);
        let http: Vec<u16> = all().iter().map(OpenError::http_status).collect();
        assert_eq!(http, [403, 502, 502, 502, 504, 502, 502]);
    }

    #[test]
    fn io_errors_map() {
        use std::io::{Error, ErrorKind};
        assert_eq!(
            OpenError::from(Error::from(ErrorKind::ConnectionRefused)),
            OpenError::ConnectionRefused
        );
        assert_eq!(
            OpenError::from(Error::from_raw_os_error(libc::EHOSTUNREACH)),
            OpenError::HostUnreachable
        );
        assert_eq!(
            OpenError::from(Error::from_raw_os_error(libc::ENETUNREACH)),
            OpenError::NetworkUnreachable
        );
        assert!(matches!(
            OpenError::from(Error::other("boom")),
            OpenError::General(_)
        ));
    }
}
