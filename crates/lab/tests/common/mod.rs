//! Shared by the lab's tests: an echo server, a middlebox in front of it,
//! and clients that speak raw bytes. Loopback only, every wait bounded.
#![allow(dead_code)]

use lab::{Middlebox, Policy, Technique};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use testkit::fake_cover::{self, CoverKind, Received};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use wire::faketls::client::{build_hello, HelloShape};

/// How long "nothing arrives" is waited for.
pub const QUIET: Duration = Duration::from_millis(300);

/// An echo server and a middlebox in front of it.
pub struct Lab {
    pub mb: Middlebox,
    /// Bytes the echo server received, per connection.
    pub received: Received,
}

/// Starts an echo server and a middlebox with `techniques`, judging
/// `destination` (a label) as the server.
pub async fn lab(techniques: Vec<Arc<dyn Technique>>, destination: &str) -> Lab {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let received = Received::default();
    tokio::spawn(fake_cover::serve(
        listener,
        CoverKind::Echo,
        received.clone(),
    ));
    let policy = Policy::new(techniques).destination(destination.parse().unwrap());
    let mb = lab::start("127.0.0.1:0".parse().unwrap(), upstream, policy)
        .await
        .unwrap();
    Lab { mb, received }
}

/// Connects from 127.0.0.1.
pub async fn connect(addr: SocketAddr) -> TcpStream {
    connect_from(addr, "127.0.0.1").await
}

/// Connects from another loopback source address (another "client IP").
pub async fn connect_from(addr: SocketAddr, source: &str) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let stream = s.connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// Reads exactly `n` bytes within `wait`.
pub async fn read_n(s: &mut TcpStream, n: usize, wait: Duration) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(wait, s.read_exact(&mut buf))
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
    Ok(buf)
}

/// Sends `data` and expects it echoed back.
pub async fn echoes(s: &mut TcpStream, data: &[u8]) -> bool {
    s.write_all(data).await.unwrap();
    matches!(read_n(s, data.len(), Duration::from_secs(5)).await, Ok(b) if b == data)
}

/// Sends `data` and expects nothing back for [`QUIET`] (a blackhole).
pub async fn blackholed(s: &mut TcpStream, data: &[u8]) -> bool {
    let _ = s.write_all(data).await;
    let mut b = [0u8; 1];
    tokio::time::timeout(QUIET, s.read(&mut b)).await.is_err()
}

/// Sends `data` and expects a reset.
pub async fn reset(s: &mut TcpStream, data: &[u8]) -> bool {
    let _ = s.write_all(data).await;
    let mut b = [0u8; 1];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await,
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionReset
    )
}

/// A Telegram-app-like ClientHello naming `sni`.
pub fn hello(sni: &str, shape: HelloShape) -> Vec<u8> {
    build_hello(&[7u8; 16], sni, 1_700_000_000, shape, &mut testkit::fill)
}

/// An MTProto obfuscated2 init, the first 64 bytes of a plain or `dd`
/// client: fully encrypted traffic.
pub fn obfuscated2_init() -> Vec<u8> {
    loop {
        let random: [u8; 64] = testkit::random();
        if !wire::obfuscated2::is_safe_bare_prefix(&random) {
            continue;
        }
        let init = wire::obfuscated2::initiate(random, wire::obfuscated2::Tag::Padded, 2, None);
        // Random bytes can fall under an exemption (~1 in a few hundred):
        // keep the ones the FET rules block, as most are.
        if lab::censor::fet::classify_first_payload(&init.wire)
            == lab::censor::fet::FetVerdict::Block
        {
            return init.wire.to_vec();
        }
    }
}

/// An HTTP request.
pub const HTTP: &[u8] = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n";

/// Chrome 143's ClientHello, which is the official Telegram apps' hello
/// (same JA4): the scorecard's builder, with any key (JA4 ignores it).
pub fn chrome_143_hello() -> Vec<u8> {
    lab::scorecard::apps::hello(&[7; 16], "www.example.com", 1_700_000_000)
}
