//! The client's endpoint pool against the lab's IP blocking: one real
//! `samizdat serve`, reachable only through lab middleboxes listening on
//! 127.0.1.1, 127.0.1.2, 127.0.1.3 and 127.0.2.1 (four endpoints of one
//! server set), and a `LiveIpBlock` the test changes while the real
//! `samizdat client` carries downloads through SOCKS5.
//!
//! What survives, honestly: a stream on a connection the censor kills
//! dies with it (the app sees its connection close and retries, here with
//! a range request); streams on a connection that is not blocked are
//! untouched; new streams keep working throughout, on a fresh session to
//! the next endpoint. Everything is on 127.0.0.0/8.

use crate::common;

use lab::techniques::LiveIpBlock;
use lab::{Middlebox, Policy, Verdict};
use sha2::{Digest, Sha256};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wire::link::{Endpoint, Link};

/// The SHA-256 of the `n`-byte body.
fn sha_of_body(n: usize) -> [u8; 32] {
    common::apps::sha(&common::apps::body(n))
}

/// A SOCKS5 CONNECT to `to` through `socks`: the stream, or why not.
async fn socks_connect(socks: SocketAddr, to: SocketAddr) -> Result<TcpStream, String> {
    let mut s = TcpStream::connect(socks).await.map_err(|e| e.to_string())?;
    s.write_all(&[5, 1, 0]).await.map_err(|e| e.to_string())?;
    let mut m = [0u8; 2];
    s.read_exact(&mut m).await.map_err(|e| e.to_string())?;
    let SocketAddr::V4(v4) = to else {
        return Err("IPv4 only".into());
    };
    let mut req = vec![5, 1, 0, 1];
    req.extend(v4.ip().octets());
    req.extend(v4.port().to_be_bytes());
    s.write_all(&req).await.map_err(|e| e.to_string())?;
    let mut reply = [0u8; 10];
    s.read_exact(&mut reply)
        .await
        .map_err(|e| format!("no SOCKS reply: {e}"))?;
    if reply[1] != 0 {
        return Err(format!("SOCKS reply {}", reply[1]));
    }
    Ok(s)
}

/// One GET of bytes `from..n`: what arrived of the body before the stream
/// ended (a stall of 30 s ends it too).
async fn get_range(
    socks: SocketAddr,
    web: SocketAddr,
    n: usize,
    from: usize,
    rate: usize,
    sink: &mut Sha256,
) -> Result<usize, String> {
    let mut s = socks_connect(socks, web).await?;
    s.write_all(format!("GET /{n}/{from}/{rate} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut head = Vec::new();
    let mut got = 0;
    let mut in_body = false;
    loop {
        let r = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf)).await;
        let k = match r {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return Ok(got),
            Ok(Ok(k)) => k,
        };
        let mut data = &buf[..k];
        if !in_body {
            head.extend_from_slice(data);
            let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let rest = head.split_off(at + 4);
            in_body = true;
            sink.update(&rest);
            got += rest.len();
            data = &[];
        }
        sink.update(data);
        got += data.len();
        if from + got >= n {
            return Ok(got);
        }
    }
}

/// Downloads `n` bytes at `rate`, resuming after a broken stream as an
/// app would (a range request on a new stream, at most 6 times). Returns
/// the body's hash and how many times it had to resume.
async fn download(socks: SocketAddr, web: SocketAddr, n: usize, rate: usize) -> ([u8; 32], u32) {
    let mut sink = Sha256::new();
    let mut have = 0;
    let mut resumed = 0;
    loop {
        let got = match get_range(socks, web, n, have, rate, &mut sink).await {
            Ok(got) => got,
            Err(e) => {
                eprintln!("download: a new stream failed: {e}");
                0
            }
        };
        have += got;
        if have >= n {
            return (sink.finalize().into(), resumed);
        }
        resumed += 1;
        assert!(resumed <= 6, "the download kept breaking ({have} of {n})");
        eprintln!("download: stream ended at {have} of {n} bytes; resuming");
    }
}

/// A short GET must work: the "new streams keep working" check.
async fn short_get(socks: SocketAddr, web: SocketAddr) {
    let n = 100_000;
    let mut sink = Sha256::new();
    let got = tokio::time::timeout(
        Duration::from_secs(45),
        get_range(socks, web, n, 0, 0, &mut sink),
    )
    .await
    .expect("a new stream works within 45 s")
    .expect("a new stream opens");
    assert_eq!(got, n, "a new stream's body arrived whole");
    assert_eq!(<[u8; 32]>::from(sink.finalize()), sha_of_body(n));
}

/// A running `samizdat client` whose log lines are collected.
struct ClientProc(common::apps::ClientProc);

impl std::ops::Deref for ClientProc {
    type Target = common::apps::ClientProc;
    fn deref(&self) -> &common::apps::ClientProc {
        &self.0
    }
}

impl ClientProc {
    fn start(link: &Link, state: &Path) -> ClientProc {
        let running = common::apps::client(link)
            .state_dir(state)
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .start()
            .expect("samizdat client printed its SOCKS address within 20 s");
        ClientProc(running)
    }

    fn logged(&self, needle: &str) -> bool {
        self.0.logged(needle)
    }

    async fn wait_log(&self, needle: &str) -> bool {
        common::eventually(Duration::from_secs(20), || self.logged(needle)).await
    }

    /// The endpoint of the last "using endpoint" line, waiting (20 s at
    /// most) for one that is not `not`.
    async fn in_use(&self, eps: &[Endpoint], not: Option<&Endpoint>) -> Endpoint {
        let last = || {
            self.0.log().iter().rev().find_map(|l| {
                let (_, rest) = l.split_once("using endpoint ")?;
                let name = rest.split_whitespace().next()?;
                eps.iter().find(|e| e.to_string() == name).cloned()
            })
        };
        let ok = common::eventually(Duration::from_secs(20), || {
            last().is_some_and(|e| Some(&e) != not)
        })
        .await;
        assert!(ok, "no 'using endpoint' line (other than {not:?})");
        last().unwrap()
    }

    /// SIGTERM, and waits for the exit (the pool is saved on the way out).
    fn stop(mut self) {
        assert!(
            self.0.terminate(Duration::from_secs(10)),
            "samizdat client did not exit within 10 s of SIGTERM"
        );
    }
}

/// The link `serve` printed.
fn printed_link(proxy: &common::Proxy) -> Link {
    common::apps::printed_link(proxy)
}

/// One endpoint: a middlebox on `ip` in front of the server, judged as `ip`.
async fn endpoint(ip: Ipv4Addr, server: SocketAddr, block: &LiveIpBlock) -> (Middlebox, Endpoint) {
    let policy = Policy::new(vec![Arc::new(block.clone())]).destination((ip, 443).into());
    let mb = lab::start((ip, 0).into(), server, policy)
        .await
        .unwrap_or_else(|e| panic!("listen on {ip}: {e}"));
    let ep = Endpoint::direct(ip.to_string(), mb.addr.port());
    (mb, ep)
}

fn net32(e: &Endpoint) -> ipnet::IpNet {
    format!("{}/32", e.host).parse().unwrap()
}

fn index(eps: &[Endpoint], e: &Endpoint) -> usize {
    eps.iter().position(|x| x == e).unwrap()
}

const LONG: usize = 16 << 20;
const RATE: usize = 2 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_move_to_the_next_endpoint_as_the_censor_blocks_them() {
    let web = common::apps::paced_web_server().await;
    let proxy = common::start(&["--egress-allow", "127.0.0.0/8"]).await;
    let block = LiveIpBlock::new();
    let ips: [Ipv4Addr; 4] = [
        [127, 0, 1, 1].into(),
        [127, 0, 1, 2].into(),
        [127, 0, 1, 3].into(),
        [127, 0, 2, 1].into(),
    ];
    let mut mbs = Vec::new();
    let mut link = printed_link(&proxy);
    link.servers.clear();
    for ip in ips {
        let (mb, ep) = endpoint(ip, proxy.addr, &block).await;
        mbs.push(mb);
        link.servers.push(ep);
    }
    let eps = link.servers.clone();
    let state = tempfile::tempdir().unwrap();
    let client = ClientProc::start(&link, state.path());
    let long_sha = sha_of_body(LONG);

    // 1. The censor blackholes the endpoint in use (one of the /24: the
    // race starts with 127.0.1.1) in the middle of a download.
    short_get(client.socks, web).await;
    let first = client.in_use(&eps, None).await;
    assert!(eps[..3].contains(&first), "{first} is one of 127.0.1.0/24");
    let dl = tokio::spawn(download(client.socks, web, LONG, RATE));
    tokio::time::sleep(Duration::from_secs(2)).await;
    block.block(net32(&first), Verdict::Drop);
    for _ in 0..3 {
        short_get(client.socks, web).await;
    }
    let (sha, resumed) = dl.await.unwrap();
    assert_eq!(sha, long_sha, "the download arrived whole");
    assert_eq!(
        resumed, 0,
        "its stream was on the blackholed connection and went on over another one"
    );
    assert!(
        client
            .wait_log(&format!("endpoint {first} looks blocked"))
            .await
    );
    let second = client.in_use(&eps, Some(&first)).await;
    assert_ne!(second, first);
    assert!(mbs[index(&eps, &first)].events().get("ip-block").dropped >= 1);

    // 2. Blocking an endpoint not in use touches no stream.
    let idle = eps[..3]
        .iter()
        .find(|e| **e != first && **e != second)
        .unwrap()
        .clone();
    let dl = tokio::spawn(download(client.socks, web, LONG, RATE));
    tokio::time::sleep(Duration::from_secs(2)).await;
    block.block(net32(&idle), Verdict::Drop);
    short_get(client.socks, web).await;
    let (sha, resumed) = dl.await.unwrap();
    assert_eq!(sha, long_sha);
    assert_eq!(resumed, 0, "the download's endpoint was not blocked");
    assert_eq!(client.in_use(&eps, None).await, second);

    // 3. The whole 127.0.1.0/24 is reset; 127.0.2.1 stays open.
    let dl = tokio::spawn(download(client.socks, web, LONG, RATE));
    tokio::time::sleep(Duration::from_secs(2)).await;
    block.block("127.0.1.0/24".parse().unwrap(), Verdict::Reset);
    for _ in 0..3 {
        short_get(client.socks, web).await;
    }
    let (sha, resumed) = dl.await.unwrap();
    assert_eq!(sha, long_sha);
    assert_eq!(
        resumed, 0,
        "the stream outlived the reset of its connection"
    );
    if second != eps[3] {
        assert!(
            mbs.iter()
                .map(|m| m.events().get("ip-block").reset)
                .sum::<u64>()
                >= 1,
            "the prefix block reset a flow"
        );
    }
    assert_eq!(client.in_use(&eps, None).await, eps[3]);
    assert_eq!(mbs[3].events().get("ip-block").total(), 0);

    // 4. A restart remembers: the endpoint that works is tried first, and
    // the three blocked ones are backed off.
    client.stop();
    let saved = std::fs::read_to_string(state.path().join("pool.toml")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(state.path().join("pool.toml"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(saved.matches("[[endpoint]]").count(), 4, "{saved}");
    assert_eq!(saved.matches("backoff_until").count(), 3, "{saved}");
    let before: Vec<u64> = mbs.iter().map(|m| m.events().flows()).collect();
    let client = ClientProc::start(&link, state.path());
    short_get(client.socks, web).await;
    let order = client
        .0
        .log()
        .iter()
        .find_map(|l| {
            l.split_once("endpoints in order: ")
                .map(|(_, o)| o.to_string())
        })
        .expect("the client logged its endpoint order");
    assert!(
        order.starts_with(&format!("{} (works", eps[3])),
        "the working endpoint first: {order}"
    );
    for ep in &eps[..3] {
        assert!(
            order.contains(&format!("{ep} (backed off"))
                || order.contains(&format!("{ep} (failed before")),
            "{ep} is known to fail: {order}"
        );
    }
    assert_eq!(client.in_use(&eps, None).await, eps[3]);
    let after: Vec<u64> = mbs.iter().map(|m| m.events().flows()).collect();
    assert!(after[3] > before[3], "the stream went through {}", eps[3]);
    eprintln!("flows per endpoint before/after the restart: {before:?} {after:?}");
}

/// A listener that accepts and never answers (a blackholed endpoint); its
/// accepted sockets come back through the channel.
async fn blackhole() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<TcpStream>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            if tx.send(s).is_err() {
                return;
            }
        }
    });
    (addr, rx)
}

fn dialer_for(link: &Link, servers: Vec<Endpoint>) -> samizdat::client::dialer::TunnelDialer {
    let mut link = link.clone();
    link.servers = servers;
    samizdat::client::dialer::TunnelDialer::new(
        link,
        wire::browser::Template::builtin(wire::browser::Browser::Chrome),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_race_drops_its_losers_and_learns_a_blackhole() {
    let proxy = common::start(&[]).await;
    let link = printed_link(&proxy);
    let real = Endpoint::direct("127.0.0.1", proxy.addr.port());
    // The server's first handshake waits for its cover measurement: get
    // it out of the way.
    dialer_for(&link, vec![real.clone()])
        .session()
        .await
        .expect("the server answers");

    let (hole, mut accepted) = blackhole().await;
    let hole_ep = Endpoint::direct("127.0.0.1", hole.port());
    // Staggered: the blackhole first, the real server 250 ms later wins.
    let dialer = dialer_for(&link, vec![hole_ep.clone(), real.clone()]);
    dialer
        .session()
        .await
        .expect("the real server wins the race");
    assert_eq!(dialer.current_endpoint(), Some(real.clone()));
    // The losing attempt's socket is closed, not leaked.
    let mut s = accepted
        .recv()
        .await
        .expect("the blackhole was tried first");
    let mut b = [0u8; 4096];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match s.read(&mut b).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue, // the ClientHello
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the loser's connection was closed");
    // Cut short at 250 ms, the blackhole is not blamed yet...
    let pool = dialer.pool();
    assert_eq!(pool.health(&hole_ep).unwrap().failures, 0);
    assert_eq!(pool.health(&real).unwrap().successes, 1);

    // ...but an attempt left pending for over a second (and twice the
    // winner's time) is: it ranks last next time.
    let mut dialer = dialer_for(&link, vec![hole_ep.clone(), real.clone()]);
    dialer.stagger = Duration::from_millis(1500);
    dialer
        .session()
        .await
        .expect("the real server wins the race");
    let pool = dialer.pool();
    let h = pool.health(&hole_ep).unwrap();
    assert_eq!(h.failures, 1);
    assert!(
        h.last_error.as_deref().unwrap().contains("no answer"),
        "{h:?}"
    );
    assert_eq!(
        pool.rank(std::time::SystemTime::now()),
        vec![real.clone(), hole_ep.clone()]
    );
    drop(accepted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_backed_off_still_connects() {
    let proxy = common::start(&[]).await;
    let link = printed_link(&proxy);
    let real = Endpoint::direct("127.0.0.1", proxy.addr.port());
    // Nothing listens here.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        Endpoint::direct("127.0.0.1", l.local_addr().unwrap().port())
    };
    // A saved pool in which both are backed off for about an hour, the
    // real one a minute longer.
    let state = tempfile::tempdir().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    std::fs::write(
        state.path().join("pool.toml"),
        format!(
            "[[endpoint]]\nendpoint = \"{real}\"\nfailures = 7\nstreak = 7\nbackoff_until = {}\n\n\
             [[endpoint]]\nendpoint = \"{dead}\"\nfailures = 6\nstreak = 6\nbackoff_until = {}\n\n\
             [[endpoint]]\nendpoint = \"127.0.0.1:9\"\nfailures = 1\n",
            now + 3660,
            now + 3600
        ),
    )
    .unwrap();
    let mut l = link.clone();
    l.servers = vec![real.clone(), dead.clone()];
    let dialer = samizdat::client::dialer::TunnelDialer::with_state(
        l,
        wire::browser::Template::builtin(wire::browser::Browser::Chrome),
        state.path().to_path_buf(),
    );
    let pool = dialer.pool();
    assert_eq!(pool.entries().len(), 2, "the unknown endpoint was dropped");
    assert_eq!(pool.health(&real).unwrap().failures, 7, "loaded");
    assert_eq!(
        pool.rank(std::time::SystemTime::now()),
        vec![dead.clone(), real.clone()],
        "soonest retry first"
    );
    tokio::time::timeout(Duration::from_secs(30), dialer.session())
        .await
        .expect("within 30 s")
        .expect("the user is not stranded: the backed-off server is still tried");
    assert_eq!(dialer.current_endpoint(), Some(real.clone()));
    let pool = dialer.pool();
    assert_eq!(pool.health(&dead).unwrap().failures, 7);
    assert_eq!(pool.health(&real).unwrap().successes, 1);
    dialer.shutdown();
    let saved = std::fs::read_to_string(state.path().join("pool.toml")).unwrap();
    assert!(!saved.contains("127.0.0.1:9\""), "{saved}");
    assert!(saved.contains("connection refused"), "{saved}");
}
