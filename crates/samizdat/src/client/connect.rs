//! One connection to a samizdat server: TCP, then the transport's
//! handshake (a browser-shaped ClientHello carrying Noise message 1, the
//! server's flight carrying message 2), then a session. A `wss://`
//! endpoint puts TLS and a WebSocket in front of the same exchange
//! ([`ws`], `docs/fronting.md`).

use super::wss;
use crate::dial::BoxIo;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use wire::browser::Template;
use wire::link::{Endpoint, Link};
use wire::tunnel::handshake::{ClientHandshake, Progress, UserCredential};
use wire::tunnel::Established;

/// A connection whose handshake completed: ready to carry a lane.
pub struct LaneConn {
    /// The connection (TCP, or a WebSocket carrier).
    pub io: BoxIo,
    /// Its record keys.
    pub established: Established,
    /// Bytes read past the server's flight.
    pub leftover: Vec<u8>,
    /// Bytes of the server's flight (they count against a censor's
    /// per-connection byte limit too).
    pub flight_len: usize,
    /// Connect plus handshake time.
    pub handshake: Duration,
}

impl std::fmt::Debug for LaneConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaneConn")
            .field("flight_len", &self.flight_len)
            .finish_non_exhaustive()
    }
}

/// Most bytes of server flight we read before giving up on it (the cover
/// site's flight is a few kilobytes; 255 records of 16 KiB is the most the
/// handshake can announce).
const MAX_FLIGHT: usize = 256 * 1024;

/// Why a server could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No address for the name.
    #[error("cannot resolve {0}")]
    Resolve(String),
    /// TCP connect failed.
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    /// Connect plus handshake took longer than allowed.
    #[error("no answer within {0:?} (blocked, or the server is down)")]
    Timeout(Duration),
    /// Something answered, but not a samizdat server with the link's key:
    /// the link is wrong or outdated, or the address now leads elsewhere.
    #[error("the answer is not from this link's samizdat server (wrong or outdated link, or another server at that address): {0}")]
    NotOurServer(String),
    /// The connection closed or broke during the handshake.
    #[error("connection closed during the handshake: {0}")]
    Closed(String),
    /// This client cannot use this kind of endpoint.
    #[error("{0} are not supported by this client")]
    Unsupported(&'static str),
    /// The link's hello template is unusable (a bug; report it).
    #[error("hello template: {0}")]
    Template(String),
    /// TLS with a `wss://` front failed: most often its certificate is not
    /// valid for the link's host.
    #[error("TLS with the front: {0}")]
    Tls(String),
    /// The reverse proxy or CDN in front of a `wss://` endpoint did not
    /// upgrade to a WebSocket (wrong path, or WebSockets not passed on).
    #[error("{0}")]
    Front(String),
}

fn fill(b: &mut [u8]) {
    crate::random::fill(b);
}

/// Connects to `endpoint` and runs the handshake within `timeout`.
pub async fn connect(
    endpoint: &Endpoint,
    link: &Link,
    template: &Template,
    timeout: Duration,
) -> Result<LaneConn, ConnectError> {
    let started = tokio::time::Instant::now();
    let mut conn = tokio::time::timeout(timeout, connect_inner(endpoint, link, template))
        .await
        .map_err(|_| ConnectError::Timeout(timeout))??;
    conn.handshake = started.elapsed();
    Ok(conn)
}

async fn connect_inner(
    endpoint: &Endpoint,
    link: &Link,
    template: &Template,
) -> Result<LaneConn, ConnectError> {
    let socket = tcp(endpoint).await?;
    match &endpoint.ws_path {
        None => handshake(socket, link, template).await,
        Some(path) => {
            let carrier = wss::open(socket, endpoint, path, link).await?;
            handshake(carrier, link, template).await
        }
    }
}

/// A TCP connection to the endpoint's host and port (each resolved
/// address in turn).
async fn tcp(endpoint: &Endpoint) -> Result<TcpStream, ConnectError> {
    let addrs: Vec<_> = tokio::net::lookup_host((endpoint.host.as_str(), endpoint.port))
        .await
        .map_err(|_| ConnectError::Resolve(endpoint.host.clone()))?
        .collect();
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) => ConnectError::Connect(e),
        None => ConnectError::Resolve(endpoint.host.clone()),
    })
}

/// The transport's exchange on `io` (a TCP socket, or a WebSocket
/// carrier): hello, the server's flight, our reply.
async fn handshake<S>(mut io: S, link: &Link, template: &Template) -> Result<LaneConn, ConnectError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let built = template
        .try_build(&link.sni, &mut fill)
        .map_err(|e| ConnectError::Template(format!("server name {:?}: {e}", link.sni)))?;
    let cred = UserCredential::from_secret(&link.secret.0);
    let (mut hs, hello) = ClientHandshake::start(
        &built,
        &link.server_key,
        &cred,
        crate::clock::unix_now(),
        &mut fill,
    )
    .map_err(|e| ConnectError::Template(e.to_string()))?;
    io.write_all(&hello)
        .await
        .map_err(|e| ConnectError::Closed(e.to_string()))?;
    let mut buf = Vec::with_capacity(8192);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let n = io
            .read(&mut chunk)
            .await
            .map_err(|e| ConnectError::Closed(e.to_string()))?;
        if n == 0 {
            return Err(ConnectError::Closed(
                "the server closed the connection".into(),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        match hs.read_server_flight(&buf) {
            Ok(Progress::NeedMore) if buf.len() < MAX_FLIGHT => continue,
            Ok(Progress::NeedMore) => {
                return Err(ConnectError::NotOurServer(
                    "the server's flight never ends".into(),
                ))
            }
            Ok(Progress::Done {
                consumed,
                established,
                reply,
            }) => {
                io.write_all(&reply)
                    .await
                    .map_err(|e| ConnectError::Closed(e.to_string()))?;
                let leftover = buf.split_off(consumed);
                return Ok(LaneConn {
                    io: Box::new(io),
                    established,
                    leftover,
                    flight_len: consumed,
                    handshake: Duration::ZERO,
                });
            }
            Err(e) => return Err(ConnectError::NotOurServer(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A link made in code (not parsed) with an IP address for its server
    /// name: the hello builder's error comes back, nothing panics, and
    /// nothing is sent.
    #[tokio::test]
    async fn an_ip_server_name_is_an_error_not_a_panic() {
        let link = Link {
            secret: wire::secret::Key([7; 16]),
            server_key: [9; 32],
            servers: vec![Endpoint::direct("127.0.0.1", 9)],
            sni: "10.0.0.1".into(),
            fingerprint: "chrome".into(),
            name: None,
            list_key: None,
            list_sources: Vec::new(),
        };
        let (ours, mut theirs) = tokio::io::duplex(4096);
        let template = Template::builtin(wire::browser::Browser::Chrome);
        let err = handshake(ours, &link, template).await.unwrap_err();
        assert!(
            matches!(&err, ConnectError::Template(m) if m.contains("10.0.0.1")),
            "{err}"
        );
        let mut sent = Vec::new();
        theirs.read_to_end(&mut sent).await.unwrap();
        assert!(sent.is_empty());
    }
}
