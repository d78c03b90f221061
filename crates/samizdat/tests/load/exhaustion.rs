//! Unauthenticated exhaustion (security review M3, M4): what one source can
//! take from everyone else before it has authenticated. The real binary on
//! loopback; attackers use other 127/8 source addresses than the client.

use crate::common;

use common::*;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use testkit::client::{Client, Options};
use testkit::fake_cover::CoverKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use wire::faketls::client::HelloShape;

/// A connection to `to` from the loopback address `from`.
async fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(from)), 0))
        .unwrap();
    s.connect(to).await.unwrap()
}

/// A client of `secret` that connects and echoes 64 bytes through the
/// fake DC, within `limit`; the time it took.
async fn echo_client(addr: SocketAddr, secret: &wire::secret::Secret, limit: Duration) -> Duration {
    let t = Instant::now();
    let mut c = tokio::time::timeout(limit, Client::connect(addr, secret, &Options::default()))
        .await
        .unwrap_or_else(|_| panic!("no handshake within {limit:?}"))
        .expect("the client is served");
    c.send(&[5u8; 64]).await.unwrap();
    let back = tokio::time::timeout(limit, c.recv())
        .await
        .expect("echo in time")
        .unwrap();
    assert_eq!(back, vec![5u8; 64]);
    t.elapsed()
}

fn now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_from_one_address_do_not_lock_out_another() {
    let proxy = start(&["--max-connections", "20", "--handshake-timeout", "3s"]).await;
    // 20 idle sockets from 127.0.0.2: every slot of the old server.
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(connect_from([127, 0, 0, 2], proxy.addr).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let opened = Instant::now();
    // A client from 127.0.0.1 still gets in, at once.
    let took = echo_client(proxy.addr, &secret("ee"), Duration::from_secs(5)).await;
    assert!(took < Duration::from_secs(2), "client took {took:?}");
    // The five within the address's cap (a quarter of 20) went to the
    // cover at the deadline like any undecided connection; the fifteen over
    // it end the way a web server ends idle connections: a FIN at the
    // deadline, never a reset, and none closed early.
    let (mut clean, mut reset) = (0, 0);
    for mut s in idle {
        let mut sink = Vec::new();
        let left = Duration::from_secs(8).saturating_sub(opened.elapsed());
        match tokio::time::timeout(left, s.read_to_end(&mut sink)).await {
            Ok(Ok(_)) => clean += 1,
            Ok(Err(_)) => reset += 1,
            Err(_) => {}
        }
    }
    let closed = opened.elapsed();
    assert_eq!(reset, 0, "idle sockets were reset");
    assert!(clean >= 15, "only {clean} over-cap sockets were closed");
    assert!(
        closed >= Duration::from_millis(2_000),
        "idle sockets closed before the handshake deadline: {closed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_over_cap_source_is_held_and_closed_with_fin_even_after_sending() {
    // Caps of 2 per address: the third connection from 127.0.0.3 is held.
    let proxy = start(&[
        "--max-unauthenticated-per-ip",
        "2",
        "--handshake-timeout",
        "2s",
    ])
    .await;
    let mut first = Vec::new();
    for _ in 0..2 {
        first.push(connect_from([127, 0, 0, 3], proxy.addr).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut held = connect_from([127, 0, 0, 3], proxy.addr).await;
    held.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let t = Instant::now();
    let mut back = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(10), held.read_to_end(&mut back))
        .await
        .expect("closed within 10 s");
    assert!(r.is_ok(), "held connection was reset: {r:?}");
    assert!(
        back.is_empty(),
        "a held connection is never read into the cover"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(1_500),
        "{:?}",
        t.elapsed()
    );
    // Nothing of it reached the cover.
    assert!(proxy
        .cover_received
        .lock()
        .unwrap()
        .iter()
        .all(|b| !b.starts_with(b"GET")));
    // Another address is not affected meanwhile.
    echo_client(proxy.addr, &secret("ee"), Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_slot_is_taken_new_connections_wait_instead_of_being_closed() {
    let proxy = start(&[
        "--max-connections",
        "2",
        "--max-unauthenticated-per-ip",
        "10",
        "--max-unauthenticated-per-subnet",
        "10",
    ])
    .await;
    let mut idle = Vec::new();
    for _ in 0..2 {
        idle.push(connect_from([127, 0, 0, 2], proxy.addr).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A client now waits in the accept queue: not refused, not served.
    let addr = proxy.addr;
    let client =
        tokio::spawn(
            async move { echo_client(addr, &secret("ee"), Duration::from_secs(10)).await },
        );
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !client.is_finished(),
        "with every slot taken the client was answered at once (closed?)"
    );
    // A slot frees: the waiting client is served.
    drop(idle.pop());
    client
        .await
        .expect("the waiting client is served once a slot frees");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_spliced_to_the_cover_count_against_their_source() {
    let proxy = start(&["--max-unauthenticated-per-ip", "2"]).await;
    // Two probes from 127.0.0.4 spliced to the echo cover, kept open.
    let mut spliced = Vec::new();
    for _ in 0..2 {
        let mut s = connect_from([127, 0, 0, 4], proxy.addr).await;
        s.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut back = [0u8; 18];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back))
            .await
            .expect("the cover echoes")
            .unwrap();
        spliced.push(s);
    }
    // A third from the same address is held: no cover, no answer.
    let mut third = connect_from([127, 0, 0, 4], proxy.addr).await;
    third.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut back = [0u8; 1];
    let r = tokio::time::timeout(Duration::from_millis(800), third.read(&mut back)).await;
    assert!(
        r.is_err(),
        "a third connection from a source at its cap reached the cover: {r:?}"
    );
    // Another address is spliced as usual.
    let mut other = connect_from([127, 0, 0, 5], proxy.addr).await;
    other.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut back = [0u8; 18];
    tokio::time::timeout(Duration::from_secs(5), other.read_exact(&mut back))
        .await
        .expect("another address reaches the cover")
        .unwrap();
    // When a splice ends, the source may splice again.
    drop(spliced.pop());
    let mut again = None;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut c = connect_from([127, 0, 0, 4], proxy.addr).await;
        c.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut back = [0u8; 18];
        if let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_millis(500), c.read_exact(&mut back)).await
        {
            again = Some(c);
            break;
        }
    }
    assert!(
        again.is_some(),
        "the source's slot was not freed when its splice ended"
    );
}

/// Resident memory of a process, bytes.
fn rss(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS");
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<usize>()
        .unwrap()
        * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecided_one_byte_connection_costs_little_memory() {
    const N: usize = 400;
    let proxy = start(&[]).await;
    let pid = proxy.child.id();
    // Warm the runtime and the allocator with a round that is then closed.
    for _ in 0..2 {
        let mut warm = Vec::new();
        for i in 0..100u8 {
            let mut s = connect_from([127, 0, 1, 2 + i % 10], proxy.addr).await;
            s.write_all(&[0x16]).await.unwrap();
            warm.push(s);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(warm);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let base_fds = fd_count(pid);
    let before = rss(pid);
    let mut conns = Vec::new();
    // 40 per address from ten addresses: under every per-source cap.
    for i in 0..N {
        let mut s = connect_from([127, 0, 2, 2 + (i % 10) as u8], proxy.addr).await;
        // The first byte of a TLS record: undecided until more comes.
        s.write_all(&[0x16]).await.unwrap();
        conns.push(s);
    }
    // Each is accepted and has its eager cover connection.
    let all = eventually(Duration::from_secs(10), || {
        fd_count(pid) >= base_fds + 2 * N
    })
    .await;
    assert!(
        all,
        "not all accepted: {} fds over {base_fds}",
        fd_count(pid) - base_fds
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss(pid);
    let per = after.saturating_sub(before) / N;
    eprintln!("RSS {before} → {after}: {per} bytes per undecided connection");
    assert!(
        per < 8 * 1024,
        "an undecided one-byte connection costs {per} bytes of server memory"
    );
    drop(conns);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_random_hellos_from_one_source_does_not_delay_another() {
    const USERS: usize = 10_000;
    const LEGIT: usize = 6;
    let (dc_addr, _) = fake_dc().await;
    let (cover_addr, _) = fake_cover(CoverKind::Echo).await;
    let dir = tempfile::tempdir().unwrap();
    // Users found last: cold searches through every other key. Keys are
    // derived from the index by a mixing function (splitmix64), so they
    // differ and look random (serve refuses patterned keys).
    let key = |i: usize| {
        let mix = |x: u64| {
            let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let i = i as u64;
        format!("{:016x}{:016x}", mix(2 * i), mix(2 * i + 1))
    };
    let mut toml = format!("[server]\nmodes = [\"ee\"]\ndomains = [\"{DOMAIN}\"]\n");
    for i in 0..USERS - LEGIT {
        toml.push_str(&format!("[users.u{i:05}]\nsecret = \"{}\"\n", key(i)));
    }
    for j in 0..LEGIT {
        toml.push_str(&format!("[users.zz{j}]\nsecret = \"{}\"\n", key(USERS + j)));
    }
    let config = dir.path().join("samizdat.toml");
    std::fs::write(&config, toml).unwrap();
    let served = serve()
        .config(&config)
        .cover(cover_addr)
        .dc(dc_addr)
        .state_dir(dir.path())
        .args(["--threads", "2"])
        .spawn()
        .await
        .unwrap();
    let addr = served.addr;
    let legit = |j: usize| {
        wire::secret::Secret::parse(&format!("ee{}{}", key(USERS + j), hex::encode(DOMAIN)))
            .unwrap()
    };
    // The flood: 60 connections at a time from 127.0.0.2, each a random
    // key's hello for the served name, for at most 6 s or 3,000 hellos.
    let stop = Instant::now() + Duration::from_secs(6);
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut flood = tokio::task::JoinSet::new();
    for _ in 0..60 {
        let sent = sent.clone();
        flood.spawn(async move {
            while Instant::now() < stop
                && sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < 3_000
            {
                let key: [u8; 16] = testkit::random();
                let hello = wire::faketls::client::build_hello(
                    &key,
                    DOMAIN,
                    now(),
                    HelloShape::Classic517,
                    &mut testkit::fill,
                );
                let mut s = connect_from([127, 0, 0, 2], addr).await;
                if s.write_all(&hello).await.is_err() {
                    continue;
                }
                let _ = s.shutdown().await;
                let mut sink = Vec::new();
                let _ =
                    tokio::time::timeout(Duration::from_secs(8), s.read_to_end(&mut sink)).await;
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    // Meanwhile clients from 127.0.0.1, each a cold search (another user
    // than the address last authenticated).
    let mut took = Vec::new();
    for j in 0..LEGIT {
        took.push(echo_client(addr, &legit(j), Duration::from_secs(20)).await);
    }
    let hellos = sent.load(std::sync::atomic::Ordering::Relaxed).min(3_000);
    flood.abort_all();
    eprintln!("legit handshakes under a flood of {hellos} hellos: {took:?}");
    let worst = took.iter().max().unwrap();
    assert!(
        *worst < Duration::from_secs(1),
        "a flood from one source delayed another's handshake to {worst:?}"
    );
}
