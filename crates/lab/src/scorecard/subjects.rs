//! The subjects of the scorecard and how each one's client runs a session:
//! `samizdat serve` (the real binary) for `ee`, `dd` and plain secrets in
//! front of a fake DC, a raw SOCKS5 server in front of an echo server, and
//! `samizdat client` (the real binary) carrying SOCKS5 to the echo server.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use testkit::client::{Client, Options};
use testkit::fake_cover::{CoverKind, Received};
use testkit::fake_dc::Events;
use testkit::process::{Client as ProcessClient, Running, Serve, Served};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use wire::faketls::client::HelloShape;
use wire::obfuscated2::{self, Tag};
use wire::secret::Secret;

/// The key every samizdat subject serves.
pub const KEY: &str = "91e4a973be97fee5db4b1752eb03586c";
/// The cover's name (the SNI of `ee` clients).
pub const DOMAIN: &str = "cover.localhost";

/// The secret of a form: "plain", "dd" or "ee".
pub fn secret(form: &str) -> Secret {
    let text = match form {
        "plain" => KEY.to_string(),
        "dd" => format!("dd{KEY}"),
        _ => {
            let hex: String = DOMAIN.bytes().map(|b| format!("{b:02x}")).collect();
            format!("ee{KEY}{hex}")
        }
    };
    Secret::parse(&text).expect("a well-formed secret")
}

/// A bare `dd` client's init and first 40 bytes, as one first flight.
pub fn dd_first_flight() -> Vec<u8> {
    let init = obfuscated2::initiate(
        obfuscated2::safe_init_random(&mut testkit::fill),
        Tag::Padded,
        2,
        Some(&secret("dd").key),
    );
    let mut b = init.wire.to_vec();
    b.extend_from_slice(&testkit::random::<40>());
    b
}

/// The `samizdat` binary: `$SAMIZDAT_BIN`, or `samizdat` beside the running
/// executable or one directory up (test binaries live in `target/debug/deps`).
pub fn samizdat_bin() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("SAMIZDAT_BIN") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("SAMIZDAT_BIN={} is not a file", p.display()))
        };
    }
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut tried = Vec::new();
    for dir in exe.ancestors().skip(1).take(2) {
        let p = dir.join("samizdat");
        if p.is_file() {
            return Ok(p);
        }
        tried.push(p.display().to_string());
    }
    Err(format!(
        "the samizdat binary is missing (looked at {}): build it first (`cargo build --bins`, \
         as scripts/test does) or set SAMIZDAT_BIN",
        tried.join(", ")
    ))
}

/// Starts `bin serve` with `modes` in front of `cover` and the DC `dc`,
/// its log discarded, and waits (blocking, up to 20 s) for its address and
/// link; killed on drop.
pub fn start_samizdat(
    bin: &Path,
    cover: SocketAddr,
    dc: SocketAddr,
    modes: &str,
) -> io::Result<Served> {
    Serve::new(bin)
        .secret(KEY)
        .modes(modes)
        .domain(DOMAIN)
        .cover(cover)
        .dc(dc)
        // `samizdat client` subjects reach the echo server on loopback.
        .args(["--egress-allow", "127.0.0.0/8"])
        // Every client cell runs at once under the one user: each stands
        // for a user of its own, so none may end another's session (the
        // default is 4 sessions per user).
        .args(["--transport-sessions-per-user", "64"])
        .quiet()
        .start()
}

/// Starts `bin client LINK` (SOCKS5 only) with its log discarded, and
/// waits (blocking, up to 20 s) for its SOCKS5 address; killed on drop.
pub fn start_samizdat_client(bin: &Path, link: &str) -> io::Result<Running> {
    ProcessClient::new(bin, link).quiet().start()
}

/// `link` with its servers replaced by `servers` (loopback middleboxes).
pub fn link_via(link: &str, servers: &[SocketAddr]) -> io::Result<String> {
    let mut l = wire::link::Link::parse(link).map_err(io::Error::other)?;
    l.servers = servers
        .iter()
        .map(|a| wire::link::Endpoint::direct(a.ip().to_string(), a.port()))
        .collect();
    Ok(l.to_string())
}

/// A fake Telegram DC on 127.0.0.1 (testkit's), in this runtime.
pub async fn fake_dc() -> (SocketAddr, Events) {
    let l = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1");
    let addr = l.local_addr().expect("local addr");
    let events: Events = Arc::new(Mutex::new(Vec::new()));
    tokio::spawn(testkit::fake_dc::serve(l, events.clone(), false));
    (addr, events)
}

/// A testkit cover site on 127.0.0.1, in this runtime.
pub async fn fake_cover(kind: CoverKind) -> (SocketAddr, Received) {
    let l = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1");
    let addr = l.local_addr().expect("local addr");
    let received: Received = Arc::new(Mutex::new(Vec::new()));
    tokio::spawn(testkit::fake_cover::serve(l, kind, received.clone()));
    (addr, received)
}

/// A raw SOCKS5 server (RFC 1928: no authentication, CONNECT to an IPv4
/// address) on 127.0.0.1. Anything else is answered with a failure reply
/// and a close, as small servers do.
pub async fn socks5_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1");
    let addr = l.local_addr().expect("local addr");
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let _ = socks5_serve(s).await;
            });
        }
    });
    addr
}

async fn socks5_serve(mut s: TcpStream) -> io::Result<()> {
    let mut head = [0u8; 2];
    s.read_exact(&mut head).await?;
    if head[0] != 5 {
        return Ok(());
    }
    let mut methods = vec![0u8; head[1] as usize];
    s.read_exact(&mut methods).await?;
    if !methods.contains(&0) {
        return s.write_all(&[5, 0xff]).await;
    }
    s.write_all(&[5, 0]).await?;
    let mut req = [0u8; 10];
    s.read_exact(&mut req).await?;
    if req[..4] != [5, 1, 0, 1] {
        return s.write_all(&[5, 7, 0, 1, 0, 0, 0, 0, 0, 0]).await;
    }
    let target = SocketAddr::from((
        [req[4], req[5], req[6], req[7]],
        u16::from_be_bytes([req[8], req[9]]),
    ));
    let mut up = match TcpStream::connect(target).await {
        Ok(u) => u,
        Err(_) => return s.write_all(&[5, 5, 0, 1, 0, 0, 0, 0, 0, 0]).await,
    };
    s.write_all(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0]).await?;
    tokio::io::copy_bidirectional(&mut s, &mut up).await?;
    Ok(())
}

/// A subject of the scorecard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    /// samizdat fake-TLS, a client sending the official apps' ClientHello
    /// (Chrome-like, post-quantum key share: [`super::apps`]).
    EeApps,
    /// samizdat fake-TLS, testkit's client sending samizdat's own
    /// post-quantum hello ([`HelloShape::PostQuantum`]).
    Ee,
    /// samizdat bare obfuscated2 with the `dd` tag.
    Dd,
    /// samizdat bare obfuscated2, plain secret (`ee` framing tag).
    Plain,
    /// An unobfuscated SOCKS5 proxy.
    Socks5,
    /// The real `samizdat client` (SOCKS5 in front of the samizdat
    /// transport, Chrome's hello) with a pool of endpoints of one server.
    Client,
}

impl Subject {
    /// Every subject, in table order.
    pub const ALL: [Subject; 6] = [
        Subject::EeApps,
        Subject::Ee,
        Subject::Dd,
        Subject::Plain,
        Subject::Socks5,
        Subject::Client,
    ];

    /// Row label.
    pub fn name(self) -> &'static str {
        match self {
            Subject::EeApps => "samizdat ee (apps' hello)",
            Subject::Ee => "samizdat ee (PQ hello)",
            Subject::Dd => "samizdat dd",
            Subject::Plain => "samizdat plain",
            Subject::Socks5 => "SOCKS5",
            Subject::Client => "samizdat client (4 endpoints)",
        }
    }
}

/// What one session got through.
#[derive(Debug, Clone)]
pub(crate) enum Session {
    /// Every byte came back, at this rate (bytes per second).
    Done(f64),
    /// It failed; why.
    Failed(String),
}

/// Where a session's client connects and what it talks to behind it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target {
    /// The address the client dials (a middlebox or the server itself).
    pub(crate) dial: SocketAddr,
    /// For SOCKS5: the echo server to CONNECT to.
    pub(crate) echo: SocketAddr,
}

/// Runs one client session of `subject`: handshake, then `payload` bytes
/// in 4 KiB packets, each echoed back (by the fake DC or the echo server),
/// failing when nothing moves for `stall`.
pub(crate) async fn session(
    subject: Subject,
    target: Target,
    payload: usize,
    stall: Duration,
) -> Session {
    let started = Instant::now();
    let r = match subject {
        Subject::Socks5 | Subject::Client => socks5_session(target, payload, stall).await,
        _ => mtproto_session(subject, target.dial, payload, stall).await,
    };
    match r {
        Ok(()) => Session::Done(payload as f64 / started.elapsed().as_secs_f64().max(1e-6)),
        Err(e) => Session::Failed(e),
    }
}

const CHUNK: usize = 4096;

async fn timed<T>(
    stall: Duration,
    what: &str,
    f: impl std::future::Future<Output = io::Result<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(stall, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {:?}", e.kind())),
        Err(_) => Err(format!("{what}: stalled")),
    }
}

async fn mtproto_session(
    subject: Subject,
    dial: SocketAddr,
    payload: usize,
    stall: Duration,
) -> Result<(), String> {
    let (form, opts) = match subject {
        Subject::Ee => (
            "ee",
            Options {
                shape: HelloShape::PostQuantum,
                ..Options::default()
            },
        ),
        Subject::EeApps => (
            "ee",
            Options {
                hello: Some(super::apps::hello),
                ..Options::default()
            },
        ),
        Subject::Dd => ("dd", Options::default()),
        _ => (
            "plain",
            Options {
                tag: Tag::Intermediate,
                ..Options::default()
            },
        ),
    };
    let mut c = timed(
        stall,
        "handshake",
        Client::connect(dial, &secret(form), &opts),
    )
    .await?;
    // Everything goes out first, then comes back: the rate is the path's,
    // not a round trip's (64 KiB fits in loopback socket buffers).
    let packets: Vec<Vec<u8>> = (0..payload.div_ceil(CHUNK))
        .map(|n| (0..CHUNK).map(|i| (i * 7 + n) as u8).collect())
        .collect();
    for p in &packets {
        timed(stall, "send", c.send(p)).await?;
    }
    for (n, p) in packets.iter().enumerate() {
        let back = timed(
            stall,
            &format!("echo after {} KiB", n * CHUNK / 1024),
            c.recv(),
        )
        .await?;
        if &back != p {
            return Err("echo corrupted".into());
        }
    }
    Ok(())
}

async fn socks5_session(target: Target, payload: usize, stall: Duration) -> Result<(), String> {
    let mut s = timed(stall, "connect", TcpStream::connect(target.dial)).await?;
    let _ = s.set_nodelay(true);
    let mut req = vec![5, 1, 0, 5, 1, 0, 1];
    let SocketAddr::V4(echo) = target.echo else {
        return Err("echo server is not IPv4".into());
    };
    req.extend_from_slice(&echo.ip().octets());
    req.extend_from_slice(&echo.port().to_be_bytes());
    timed(stall, "greeting", s.write_all(&req)).await?;
    let mut reply = [0u8; 12];
    timed(stall, "socks reply", s.read_exact(&mut reply)).await?;
    if reply[..2] != [5, 0] || reply[2..4] != [5, 0] {
        return Err(format!("socks refused: {reply:02x?}"));
    }
    let data: Vec<u8> = (0..payload).map(|i| (i * 7 + i / CHUNK) as u8).collect();
    timed(stall, "send", s.write_all(&data)).await?;
    let mut back = vec![0u8; payload];
    let mut got = 0;
    while got < payload {
        let n = timed(
            stall,
            &format!("echo after {} KiB", got / 1024),
            s.read(&mut back[got..]),
        )
        .await?;
        if n == 0 {
            return Err(format!("closed after {} KiB", got / 1024));
        }
        got += n;
    }
    if back != data {
        return Err("echo corrupted".into());
    }
    Ok(())
}
