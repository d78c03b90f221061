//! What the samizdat transport costs, against baselines measured in the same
//! run on 127.0.0.1 only.
//!
//! `cargo build --release -p samizdat && cargo run --release -p samizdat --example transport_bench`
//!
//! - **bulk**: downloads through `samizdat client` (SOCKS5) → `samizdat
//!   serve` → a local source, one stream and 32 parallel streams, against a
//!   plain TCP copy relay (64 KiB buffers) carrying the same bytes. Figures:
//!   wall-clock GB/s and GB per CPU-second of the system under test (client +
//!   server processes, or the relay thread), and their ratio.
//! - **handshakes**: transport handshakes per CPU-second of `serve` (hello →
//!   flight verified → key confirmation), against the fake-TLS (`ee`)
//!   handshakes of the same server (whose DC is a fake DC on loopback, so
//!   each of those also costs a DC connection).
//!
//! - **freeze**: a 64 MiB download through a lab middlebox applying the
//!   16 KiB freeze (the client spreads its session over budgeted lanes),
//!   against the same download through a middlebox that applies nothing;
//!   then 4 MiB each way with 25 ms added in each direction (a delaying
//!   proxy on loopback). Figures: wall MB/s, connections used, CPU of
//!   `serve` per GB, ratios.
//!
//! Counts and durations are bounded; every process is killed at the end.
// A benchmark measures wall-clock time by design; the clock rule of
// clippy.toml is for the proxy itself.
#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use testkit::process::{Client, Running, Serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wire::link::Link;

const KEY: &str = "b9a20c6e2fe21c83cc5a5e73d48be47a";
const DOMAIN: &str = "bench.localhost";

/// CPU time of a process (user + system, all threads), from /proc.
fn cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    // utime and stime are fields 14 and 15 of the line: 11 and 12 of what
    // follows ')' (which starts at field 3, the state). Taken by position:
    // fields that are not unsigned numbers (the state letter; tpgid, -1
    // for a process without a terminal) must not shift them. Until
    // December 2026 they did, and this read stime and cutime, so every
    // samizdat figure counted its system time only.
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    Duration::from_millis((field(11) + field(12)) * 10)
}

/// CPU time of this thread.
fn thread_cpu() -> Duration {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let ns: u64 = text
        .split_whitespace()
        .next()
        .and_then(|x| x.parse().ok())
        .unwrap_or(0);
    Duration::from_nanos(ns)
}

fn bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/release/examples/transport_bench → target/release/samizdat
    exe.parent().unwrap().parent().unwrap().join("samizdat")
}

/// A source: every connection gets `n` bytes (n = the u64 it sends first).
async fn source() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut n = [0u8; 8];
                if s.read_exact(&mut n).await.is_err() {
                    return;
                }
                let mut left = u64::from_be_bytes(n);
                let chunk = vec![0x5au8; 256 * 1024];
                while left > 0 {
                    let k = left.min(chunk.len() as u64) as usize;
                    if s.write_all(&chunk[..k]).await.is_err() {
                        return;
                    }
                    left -= k as u64;
                }
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// A plain copy relay with 64 KiB buffers on its own thread (the
/// baseline); returns its address and a handle reading its thread's CPU.
fn plain_relay(
    upstream: SocketAddr,
) -> (
    SocketAddr,
    std::sync::mpsc::Receiver<Duration>,
    std::sync::mpsc::Sender<()>,
) {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (cpu_tx, cpu_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr_tx.send(l.local_addr().unwrap()).unwrap();
            let stop = tokio::task::spawn_blocking(move || {
                let _ = stop_rx.recv();
            });
            tokio::pin!(stop);
            loop {
                tokio::select! {
                    r = l.accept() => {
                        let Ok((mut c, _)) = r else { continue };
                        tokio::spawn(async move {
                            let Ok(mut u) = TcpStream::connect(upstream).await else { return };
                            let _ = tokio::io::copy_bidirectional_with_sizes(&mut c, &mut u, 65536, 65536).await;
                        });
                    }
                    _ = &mut stop => break,
                }
            }
            cpu_tx.send(thread_cpu()).unwrap();
        });
    });
    (addr_rx.recv().unwrap(), cpu_rx, stop_tx)
}

/// Downloads `n` bytes over `s` (already connected to the source).
async fn pull(mut s: TcpStream, n: u64) -> u64 {
    s.write_all(&n.to_be_bytes()).await.unwrap();
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0u64;
    loop {
        let k = s.read(&mut buf).await.unwrap();
        if k == 0 {
            break;
        }
        got += k as u64;
    }
    assert_eq!(got, n, "short download");
    got
}

async fn socks(socks: SocketAddr, to: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(socks).await.unwrap();
    s.write_all(&[5, 1, 0]).await.unwrap();
    let mut m = [0u8; 2];
    s.read_exact(&mut m).await.unwrap();
    let mut req = vec![5, 1, 0, 1];
    if let SocketAddr::V4(v4) = to {
        req.extend(v4.ip().octets());
    }
    req.extend(to.port().to_be_bytes());
    s.write_all(&req).await.unwrap();
    let mut reply = [0u8; 10];
    s.read_exact(&mut reply).await.unwrap();
    assert_eq!(reply[1], 0, "SOCKS CONNECT refused");
    s
}

/// Runs `streams` parallel downloads of `each` bytes via `connect`;
/// returns the wall time.
async fn run<F, Fut>(streams: usize, each: u64, connect: F) -> Duration
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = TcpStream> + Send + 'static,
{
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..streams {
        let c = connect();
        set.spawn(async move { pull(c.await, each).await });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
    t.elapsed()
}

fn gb(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e9 / d.as_secs_f64().max(1e-9)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let src = source().await;
    // Every DC id goes to a fake DC on loopback: nothing leaves 127.0.0.1.
    let dc = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        tokio::spawn(testkit::fake_dc::serve(l, events, false));
        addr
    };
    let server = Serve::new(bin())
        .secret(KEY)
        .domain(DOMAIN)
        .args(["--cover", "127.0.0.1:9", "--egress-allow", "127.0.0.0/8"])
        .dc(dc)
        .env("SAMIZDAT_LOG", "warn")
        .spawn()
        .await
        .expect("run target/release/samizdat (cargo build --release -p samizdat first)");
    let link = Link::parse(server.link().expect("serve printed a samizdat:// link"))
        .expect("the printed link parses");
    let cstate = tempfile::tempdir().unwrap();
    let (client, socks_addr) = start_client(&link, cstate.path());
    // Warm up the session.
    run(1, 1 << 20, || socks(socks_addr, src)).await;

    println!("| workload | path | wall GB/s | GB per CPU-second | ratio to plain relay (CPU) |");
    println!("|---|---|---|---|---|");
    let mut per_hop = Vec::new();
    for (streams, each) in [(1usize, 1u64 << 30), (32, 32 << 20)] {
        let total = streams as u64 * each;
        // Baseline: the plain relay.
        let (relay, cpu_rx, stop) = plain_relay(src);
        let wall = run(streams, each, || async move {
            TcpStream::connect(relay).await.unwrap()
        })
        .await;
        let _ = stop.send(());
        let relay_cpu = cpu_rx.recv().unwrap();
        let base = gb(total, relay_cpu);
        println!(
            "| {streams} × {} MiB | plain TCP relay | {:.2} | {:.2} | 1.00 |",
            each >> 20,
            gb(total, wall),
            base
        );
        // Samizdat client + server: two relays in series, each with AEAD.
        let (c0, s0) = (cpu(client.child.id()), cpu(server.child.id()));
        let wall = run(streams, each, || socks(socks_addr, src)).await;
        let (c1, s1) = (cpu(client.child.id()) - c0, cpu(server.child.id()) - s0);
        let used = c1 + s1;
        let ours = gb(total, used);
        per_hop.push((streams, each, gb(total, c1) / base, gb(total, s1) / base));
        println!(
            "| {streams} × {} MiB | samizdat client + serve | {:.2} | {:.2} | {:.2} |",
            each >> 20,
            gb(total, wall),
            ours,
            ours / base
        );
    }

    println!();
    println!("| workload | client alone, ratio to plain relay (CPU) | serve alone, ratio to plain relay (CPU) |");
    println!("|---|---|---|");
    for (streams, each, c, s) in per_hop {
        println!("| {streams} × {} MiB | {c:.2} | {s:.2} |", each >> 20);
    }

    // Handshakes per CPU-second of serve: transport vs fake-TLS.
    let n = 2000;
    let before = cpu(server.child.id());
    let t = Instant::now();
    for _ in 0..n {
        transport_handshake(link.servers[0].port, &link).await;
    }
    let (wall_t, cpu_t) = (t.elapsed(), cpu(server.child.id()) - before);
    let secret = wire::secret::Secret::parse(&format!("ee{KEY}{}", hex::encode(DOMAIN))).unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], link.servers[0].port).into();
    let before = cpu(server.child.id());
    let t = Instant::now();
    for _ in 0..n {
        let _ =
            testkit::client::Client::connect(addr, &secret, &testkit::client::Options::default())
                .await;
    }
    let (wall_e, cpu_e) = (t.elapsed(), cpu(server.child.id()) - before);
    println!();
    println!("| handshakes ({n}, sequential) | per wall-second | per CPU-second of serve |");
    println!("|---|---|---|");
    println!(
        "| samizdat transport (Noise NK, Chrome hello) | {:.0} | {:.0} |",
        n as f64 / wall_t.as_secs_f64(),
        n as f64 / cpu_t.as_secs_f64().max(1e-3)
    );
    println!(
        "| MTProto fake-TLS (`ee`) | {:.0} | {:.0} |",
        n as f64 / wall_e.as_secs_f64(),
        n as f64 / cpu_e.as_secs_f64().max(1e-3)
    );
    drop(client);

    // Lanes under the 16 KiB freeze, against an unfrozen middlebox; at
    // loopback latency, then with 25 ms added each way (a 50 ms round trip).
    println!();
    println!(
        "| download, one stream | round trip | wall MB/s | connections (warm-up included) | serve CPU-seconds per GB |"
    );
    println!("|---|---|---|---|---|");
    let server_addr: SocketAddr = ([127, 0, 0, 1], link.servers[0].port).into();
    let mut rows = Vec::new();
    for (name, freeze, delay, n) in [
        (
            "64 MiB, lab middlebox, no technique",
            false,
            Duration::ZERO,
            64u64 << 20,
        ),
        ("64 MiB, 16 KiB freeze", true, Duration::ZERO, 64 << 20),
        (
            "4 MiB, lab middlebox, no technique",
            false,
            Duration::from_millis(25),
            4 << 20,
        ),
        (
            "4 MiB, 16 KiB freeze",
            true,
            Duration::from_millis(25),
            4 << 20,
        ),
    ] {
        let label: SocketAddr = "5.9.10.20:443".parse().unwrap();
        let techniques: Vec<std::sync::Arc<dyn lab::Technique>> = if freeze {
            vec![std::sync::Arc::new(lab::techniques::Freeze::russia_2025())]
        } else {
            Vec::new()
        };
        let policy = lab::Policy::new(techniques).destination(label);
        let mb = lab::start(([127, 0, 0, 1], 0).into(), server_addr, policy)
            .await
            .unwrap();
        let entry = if delay.is_zero() {
            mb.addr
        } else {
            delay_proxy(mb.addr, delay).await
        };
        let mut via = link.clone();
        via.servers = vec![wire::link::Endpoint::direct("127.0.0.1", entry.port())];
        let cstate = tempfile::tempdir().unwrap();
        let (client, socks_addr) = start_client(&via, cstate.path());
        // The first megabyte meets the freeze and learns the lane budget.
        run(1, 1 << 20, || socks(socks_addr, src)).await;
        let s0 = cpu(server.child.id());
        let wall = run(1, n, || socks(socks_addr, src)).await;
        let (flows, s1) = (mb.events().flows(), cpu(server.child.id()) - s0);
        let mbps = n as f64 / 1e6 / wall.as_secs_f64();
        let cpu_per_gb = s1.as_secs_f64() / (n as f64 / 1e9);
        println!(
            "| {name} | {} ms | {mbps:.2} | {flows} | {cpu_per_gb:.2} |",
            (delay * 2).as_millis()
        );
        rows.push((mbps, cpu_per_gb));
        drop(client);
    }
    if let [(m0, c0), (m1, c1), (m2, _), (m3, _)] = rows[..] {
        println!(
            "\nunder the freeze: {:.2} × the unfrozen wall rate, {:.1} × serve's CPU per GB; at a 50 ms round trip {:.2} ×",
            m1 / m0,
            c1 / c0,
            m3 / m2
        );
    }
    drop(server);
}

/// Starts `samizdat client` for `link` (SOCKS5 only) with its state in
/// `state`; returns it and its SOCKS5 address.
fn start_client(link: &Link, state: &std::path::Path) -> (Running, SocketAddr) {
    let client = Client::new(bin(), link)
        .state_dir(state)
        .env("SAMIZDAT_LOG", "warn")
        .start()
        .expect("samizdat client prints its SOCKS5 address");
    let socks = client.socks;
    (client, socks)
}

/// A TCP proxy on 127.0.0.1 that holds every chunk `delay` before passing
/// it on, each way: a round trip of twice `delay` (no loss, no rate limit).
async fn delay_proxy(to: SocketAddr, delay: Duration) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((c, _)) = l.accept().await {
            let _ = c.set_nodelay(true);
            tokio::spawn(async move {
                let Ok(s) = TcpStream::connect(to).await else {
                    return;
                };
                let _ = s.set_nodelay(true);
                let (cr, cw) = c.into_split();
                let (sr, sw) = s.into_split();
                tokio::join!(delayed(cr, sw, delay), delayed(sr, cw, delay));
            });
        }
    });
    addr
}

/// Copies `from` to `to`, each chunk `delay` after it was read.
async fn delayed(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(tokio::time::Instant, Vec<u8>)>(1024);
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let due = tokio::time::Instant::now() + delay;
                    if tx.send((due, buf[..n].to_vec())).await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

/// One transport handshake: hello, flight, key confirmation; then close.
async fn transport_handshake(port: u16, link: &Link) {
    use wire::tunnel::handshake::{ClientHandshake, Progress, UserCredential};
    let built = wire::browser::Template::builtin(wire::browser::Browser::Chrome)
        .build(&link.sni, &mut |b| samizdat::random::fill(b));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (mut hs, hello) = ClientHandshake::start(
        &built,
        &link.server_key,
        &UserCredential::from_secret(&link.secret.0),
        now,
        &mut |b| samizdat::random::fill(b),
    )
    .unwrap();
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(&hello).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let k = s.read(&mut chunk).await.unwrap();
        assert!(k > 0, "server closed during the handshake");
        buf.extend_from_slice(&chunk[..k]);
        if let Progress::Done { reply, .. } = hs.read_server_flight(&buf).unwrap() {
            s.write_all(&reply).await.unwrap();
            return;
        }
    }
}
