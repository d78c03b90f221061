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
        if wire::censor::fet::classify_first_payload(&init.wire)
            == wire::censor::fet::FetVerdict::Block
        {
            return init.wire.to_vec();
        }
    }
}

/// An HTTP request.
pub const HTTP: &[u8] = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n";

/// Chrome 143's ClientHello as `wire`'s JA tests rebuild it (browserleaks
/// capture): its JA4 is the Telegram apps' one.
pub fn chrome_143_hello() -> Vec<u8> {
    const CIPHERS: [u16; 16] = [
        0x3a3a, 0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc013,
        0xc014, 0x009c, 0x009d, 0x002f, 0x0035,
    ];
    const ORDER: [u16; 16] = [
        0x002d, 0x0033, 0x0010, 0xfe0d, 0x0017, 0x44cd, 0x0000, 0x000b, 0x000a, 0x002b, 0xff01,
        0x0023, 0x0012, 0x0005, 0x000d, 0x001b,
    ];
    const GROUPS: [u16; 4] = [0x11ec, 0x001d, 0x0017, 0x0018];
    const SIG_ALGS: [u16; 8] = [
        0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601,
    ];
    fn list(width: usize, values: &[u16]) -> Vec<u8> {
        let len = values.len() * 2;
        let mut out = if width == 1 {
            vec![len as u8]
        } else {
            (len as u16).to_be_bytes().to_vec()
        };
        values
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_be_bytes()));
        out
    }
    let data = |kind: u16| -> Vec<u8> {
        match kind {
            0x0000 => {
                let host = b"www.example.com";
                let mut out = ((host.len() + 3) as u16).to_be_bytes().to_vec();
                out.push(0);
                out.extend_from_slice(&(host.len() as u16).to_be_bytes());
                out.extend_from_slice(host);
                out
            }
            0x000a => list(2, &GROUPS),
            0x000b => vec![1, 0],
            0x000d => list(2, &SIG_ALGS),
            0x0010 => {
                let mut l = vec![2];
                l.extend_from_slice(b"h2");
                l.push(8);
                l.extend_from_slice(b"http/1.1");
                let mut out = (l.len() as u16).to_be_bytes().to_vec();
                out.extend_from_slice(&l);
                out
            }
            0x002b => list(1, &[0x2a2a, 0x0304, 0x0303]),
            0x002d => vec![1, 1],
            0xff01 => vec![0],
            _ => Vec::new(),
        }
    };
    let mut exts = vec![(0x1a1a, Vec::new())];
    exts.extend(ORDER.iter().map(|&k| (k, data(k))));
    exts.push((0x4a4a, vec![0]));
    let mut body = 0x0303u16.to_be_bytes().to_vec();
    body.extend_from_slice(&[0x5a; 32]);
    body.push(0);
    body.extend(list(2, &CIPHERS));
    body.extend_from_slice(&[1, 0]);
    let mut e = Vec::new();
    for (kind, d) in exts {
        e.extend_from_slice(&u16::to_be_bytes(kind));
        e.extend_from_slice(&(d.len() as u16).to_be_bytes());
        e.extend_from_slice(&d);
    }
    body.extend_from_slice(&(e.len() as u16).to_be_bytes());
    body.extend_from_slice(&e);
    let mut hs = vec![1];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}
