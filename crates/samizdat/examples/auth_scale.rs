//! How authentication cost grows with the number of users (issue 4.3).
//!
//! `cargo run --release -p samizdat --example auth_scale`
//!
//! For 1, 100, 1,000 and 10,000 users it measures, on 127.0.0.1 only:
//! - the key search alone (no I/O): a hello whose user is tried last
//!   (a client address never seen) and one whose user is tried first
//!   (the address's last-seen user);
//! - end to end through an in-process server: fake-TLS handshakes (hello →
//!   server flight verified) from fresh 127.0.0.x source addresses (cold)
//!   and from one address (warm hint), latency p50/p99 and handshakes/s of
//!   sequential clients. Counts and durations are bounded.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use wire::faketls::client::{build_hello, flight_len, verify_flight, HelloShape};
use wire::faketls::client_hello;
use wire::secret::Key;
use wire::users::Users;

const DOMAIN: &str = "bench.localhost";

fn now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32
}

fn keys(n: usize) -> Vec<Key> {
    (0..n)
        .map(|i| {
            // Distinct and random-looking: `serve` refuses patterned keys.
            let n = i as u64 + 1;
            let mut k = [0u8; 16];
            k[..8].copy_from_slice(&n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
            k[8..].copy_from_slice(&n.wrapping_mul(0xbf58_476d_1ce4_e5b9).to_le_bytes());
            Key(k)
        })
        .collect()
}

/// Median time of one key search over `users` for a hello by `user`, trying
/// users in index order.
fn search_time(users: &Users, keys: &[Key], user: usize) -> Duration {
    let hello = build_hello(
        &keys[user].0,
        DOMAIN,
        now(),
        HelloShape::Classic517,
        &mut testkit::fill,
    );
    let parsed = client_hello::parse(&hello).unwrap();
    let mut samples = Vec::new();
    let rounds = (20_000 / users.len()).clamp(5, 2_000);
    for _ in 0..rounds {
        let t = Instant::now();
        let v = client_hello::verify(&hello, &parsed.random, users, 0..users.len());
        samples.push(t.elapsed());
        assert_eq!(v.map(|v| v.user), Some(user));
    }
    samples.sort();
    samples[samples.len() / 2]
}

async fn handshake(proxy: SocketAddr, key: &Key, from: Ipv4Addr) -> Duration {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(IpAddr::V4(from), 0)).unwrap();
    let t = Instant::now();
    let mut s = socket.connect(proxy).await.unwrap();
    s.set_nodelay(true).unwrap();
    let hello = build_hello(
        &key.0,
        DOMAIN,
        now(),
        HelloShape::Classic517,
        &mut testkit::fill,
    );
    s.write_all(&hello).await.unwrap();
    let mut buf = Vec::new();
    let total = loop {
        if let Ok(Some(n)) = flight_len(&buf) {
            break n;
        }
        let mut b = [0u8; 8192];
        let n = s.read(&mut b).await.unwrap();
        assert!(n > 0, "closed during handshake");
        buf.extend_from_slice(&b[..n]);
    };
    let random: [u8; 32] = hello[11..43].try_into().unwrap();
    assert!(
        verify_flight(&key.0, &random, &buf[..total]),
        "reached the cover, not the proxy"
    );
    t.elapsed()
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p) as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    println!(
        "cpu: {cpu}; cores: {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!();
    println!("| users | key search, user tried last | key search, hint hit | handshake p50 / p99, cold address | handshakes/s, cold | handshake p50 / p99, warm hint | handshakes/s, warm |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let cover = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let cover_addr = cover.local_addr()?;
    tokio::spawn(testkit::fake_cover::serve(
        cover,
        testkit::fake_cover::CoverKind::Http,
        Default::default(),
    ));
    for n in [1usize, 100, 1_000, 10_000] {
        let keys = keys(n);
        let users = Users::new(
            keys.iter()
                .enumerate()
                .map(|(i, k)| (format!("u{i}"), k.clone())),
        );
        let last = search_time(&users, &keys, n - 1);
        let first = search_time(&users, &keys, 0);

        let state = tempfile::tempdir()?;
        let mut toml = String::from("[server]\nmodes = [\"ee\"]\n");
        toml.push_str(&format!(
            "domains = [\"{DOMAIN}\"]\ncover = \"{cover_addr}\"\ncover_connect = \"lazy\"\n"
        ));
        for (i, k) in keys.iter().enumerate() {
            toml.push_str(&format!("[users.u{i}]\nsecret = \"{}\"\n", k.to_hex()));
        }
        let path = state.path().join("samizdat.toml");
        std::fs::write(&path, toml)?;
        let args = samizdat::serve::config::ServeArgs {
            config: Some(path),
            listen: vec!["127.0.0.1:0".parse()?],
            state_dir: Some(state.path().to_path_buf()),
            ..Default::default()
        };
        let config = samizdat::serve::config::ServeConfig::from_args(&args, || unreachable!())?;
        let server = samizdat::serve::Server::bind(config)?;
        let proxy = server.addrs[0];
        let stop = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(server.run(stop.clone()));

        // Cold: a new source address each time, the user is tried last.
        let rounds = 300;
        let mut cold = Vec::new();
        let t = Instant::now();
        for i in 0..rounds {
            let from = Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250 + 1) as u8);
            cold.push(handshake(proxy, &keys[n - 1], from).await);
        }
        let cold_rate = rounds as f64 / t.elapsed().as_secs_f64();
        // Warm: one address, its last-seen user.
        let mut warm = Vec::new();
        let t = Instant::now();
        for _ in 0..rounds {
            warm.push(handshake(proxy, &keys[n - 1], Ipv4Addr::new(127, 0, 0, 1)).await);
        }
        let warm_rate = rounds as f64 / t.elapsed().as_secs_f64();
        stop.cancel();
        let _ = task.await;
        println!(
            "| {n} | {:.1} µs | {:.1} µs | {:.0} / {:.0} µs | {:.0} | {:.0} / {:.0} µs | {:.0} |",
            last.as_secs_f64() * 1e6,
            first.as_secs_f64() * 1e6,
            pct(&mut cold, 0.5).as_secs_f64() * 1e6,
            pct(&mut cold, 0.99).as_secs_f64() * 1e6,
            cold_rate,
            pct(&mut warm, 0.5).as_secs_f64() * 1e6,
            pct(&mut warm, 0.99).as_secs_f64() * 1e6,
            warm_rate
        );
    }
    println!();
    println!("(sequential clients on one connection at a time: handshakes/s here is 1/latency, not the server's capacity; see BENCHMARKS.md for load)");
    Ok(())
}
