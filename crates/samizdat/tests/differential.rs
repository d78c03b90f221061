//! The differential prober (issue 9): every probe goes both to samizdat
//! and straight to its cover site, and what an active prober can see must
//! be the same: the same bytes, the same way of closing (FIN or RST), the
//! close and the first byte at the same moment (within 1 s), and the same
//! answer to a byte sent after a FIN.
//!
//! Covers:
//! - a real nginx (Debian's package) with its default timeouts, run by
//!   scripts/nginx-cover.sh on 127.0.0.1 with a self-signed certificate;
//! - the same nginx with 2-3 s timers;
//! - a small cover with short timers and RSTs ([`short_cover`]).
//!
//! Each cover sits behind two samizdat instances: `--modes plain,dd,ee`
//! (64-byte probes are then taken for obfuscated2 inits) and `--modes ee`
//! (with a short `--handshake-timeout` where the cover's timers are short,
//! so that our own deadline passes while the cover still waits).
//!
//! All probes of a cover run at once, so a run takes about as long as the
//! cover's longest timer (nginx: 75 s keep-alive). Set
//! `SAMIZDAT_PROBE_SEED` to repeat a run's random probes.
// Tests measure real time (deadlines, latency, timeouts of real
// processes): the workspace's clock rule is for the library.
#![allow(clippy::disallowed_methods)]

mod common;
#[path = "differential/nginx.rs"]
mod nginx;
#[path = "differential/probes.rs"]
mod probes;
#[path = "differential/short_cover.rs"]
mod short_cover;
#[path = "differential/tls.rs"]
mod tls;

use common::{secret, DOMAIN, KEY};
use lab::probe::{Observation, Rng, Step};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use testkit::client::{Client, Options};
use testkit::process::Served;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The tolerance the issue asks for on times to first byte and to close.
const TOLERANCE: Duration = Duration::from_secs(1);

/// A probe: raw TCP steps, run by the lab's prober ([`lab::probe`]), or a
/// real TLS session with HTTP/1.1 requests ([`tls`]).
#[derive(Debug, Clone)]
enum Probe {
    Raw(lab::probe::Probe),
    Tls { name: String, session: tls::Session },
}

impl Probe {
    fn raw(name: impl Into<String>, steps: Vec<Step>) -> Probe {
        Probe::Raw(lab::probe::Probe::new(name, steps))
    }

    /// Shown in failures.
    fn name(&self) -> &str {
        match self {
            Probe::Raw(p) => &p.name,
            Probe::Tls { name, .. } => name,
        }
    }
}

/// Runs one probe against `addr`, watching for at most `window` after the
/// probe's last write.
async fn observe(addr: SocketAddr, probe: &Probe, window: Duration) -> Observation {
    match probe {
        Probe::Raw(p) => lab::probe::observe(addr, p, window, Duration::from_secs(5)).await,
        Probe::Tls { session, .. } => tls::observe(addr, session, window).await,
    }
}

/// How `got` (samizdat) differs from `want` (the cover) beyond [`TOLERANCE`].
fn differences(want: &Observation, got: &Observation) -> Vec<String> {
    lab::probe::differences(want, got, TOLERANCE)
}

/// The probes' generator, seeded from `SAMIZDAT_PROBE_SEED` or the clock;
/// prints the seed so that a failing run can be repeated.
fn seeded_rng(label: &str) -> Rng {
    let seed = std::env::var("SAMIZDAT_PROBE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("{label}: SAMIZDAT_PROBE_SEED={seed}");
    Rng::new(seed)
}

/// A samizdat process (killed on drop) and the name it has in reports.
struct Samizdat {
    _served: Served,
    addr: SocketAddr,
    name: String,
}

async fn samizdat(cover: SocketAddr, dc: SocketAddr, modes: &str, extra: &[&str]) -> Samizdat {
    let served = common::serve()
        .secret(KEY)
        .modes(modes)
        .domain(DOMAIN)
        .cover(cover)
        .dc(dc)
        .args(extra)
        .spawn()
        .await
        .unwrap();
    let mut name = format!("samizdat --modes {modes}");
    for a in extra {
        name.push(' ');
        name.push_str(a);
    }
    Samizdat {
        addr: served.addr,
        _served: served,
        name,
    }
}

fn now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32
}

fn hello(key: &str, domain: &str, time: u32) -> Vec<u8> {
    let key: [u8; 16] = hex::decode(key).unwrap().try_into().unwrap();
    wire::faketls::client::build_hello(
        &key,
        domain,
        time,
        wire::faketls::client::HelloShape::Classic517,
        &mut testkit::fill,
    )
}

/// Sends `hello` raw and checks samizdat answered with its own server
/// flight (so the hello is now in that instance's replay cache).
async fn accepted_by(addr: SocketAddr, hello: &[u8]) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(hello).await.unwrap();
    let mut flight = Vec::new();
    let mut buf = [0u8; 8192];
    let key: [u8; 16] = hex::decode(KEY).unwrap().try_into().unwrap();
    let random: [u8; 32] = hello[11..43].try_into().unwrap();
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("server flight in time")
            .unwrap();
        assert!(n > 0, "closed instead of answering an authentic hello");
        flight.extend_from_slice(&buf[..n]);
        if let Ok(Some(total)) = wire::faketls::client::flight_len(&flight) {
            assert!(
                wire::faketls::client::verify_flight(&key, &random, &flight[..total]),
                "an authentic hello was not answered by samizdat"
            );
            return;
        }
    }
}

/// A cover with two samizdat instances in front of it, and the real
/// clients' first flights (already accepted once by both).
struct Bench {
    cover: SocketAddr,
    proxies: Vec<Samizdat>,
    flights: probes::Flights,
}

async fn bench(cover: SocketAddr, ee_extra: &[&str]) -> Bench {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let (dc, dc_events) = common::fake_dc().await;
    let all = samizdat(cover, dc, "plain,dd,ee", &[]).await;
    let ee = samizdat(cover, dc, "ee", ee_extra).await;
    // A real client's fake-TLS first flight, used once on each instance.
    let c = Client::connect(all.addr, &secret("ee"), &Options::default())
        .await
        .expect("an authentic ee client gets through");
    let ee_hello = c.hello.clone().unwrap();
    drop(c);
    accepted_by(ee.addr, &ee_hello).await;
    // A bare dd client's init and first packet, used once.
    let init = wire::obfuscated2::initiate(
        loop {
            let r: [u8; 64] = testkit::random();
            if wire::obfuscated2::is_safe_bare_prefix(&r) {
                break r;
            }
        },
        wire::obfuscated2::Tag::Padded,
        2,
        Some(&secret("dd").key),
    );
    let mut dd_first = init.wire.to_vec();
    dd_first.extend_from_slice(&testkit::random::<40>());
    let before = dc_events.lock().unwrap().len();
    let mut s = TcpStream::connect(all.addr).await.unwrap();
    s.write_all(&dd_first).await.unwrap();
    assert!(
        common::eventually(Duration::from_secs(5), || dc_events.lock().unwrap().len()
            > before)
        .await,
        "an authentic dd client did not reach the DC"
    );
    drop(s);
    let flights = probes::Flights {
        ee_hello,
        fresh_hello: hello(KEY, DOMAIN, now()),
        wrong_key_hello: hello("ffffffffffffffffffffffffffffffff", DOMAIN, now()),
        stale_hello: hello(KEY, DOMAIN, now() - 3600),
        other_sni_hello: hello(KEY, "example.com", now()),
        dd_first,
        rustls_hello: tls::captured_hello().await,
    };
    Bench {
        cover,
        proxies: vec![all, ee],
        flights,
    }
}

/// Runs every probe against the cover and each proxy at the same time and
/// returns the differences, one line per probe and proxy.
async fn differential(label: &str, bench: &Bench, probes: Vec<Probe>, window: Duration) {
    let started = std::time::Instant::now();
    let targets: Arc<Vec<(String, SocketAddr)>> = Arc::new(
        std::iter::once(("cover".to_string(), bench.cover))
            .chain(bench.proxies.iter().map(|p| (p.name.clone(), p.addr)))
            .collect(),
    );
    let mut set = tokio::task::JoinSet::new();
    for (i, probe) in probes.into_iter().enumerate() {
        let targets = targets.clone();
        set.spawn(async move {
            // Spread the connects a little; all probes still overlap.
            tokio::time::sleep(Duration::from_millis(5 * i as u64)).await;
            let runs: Vec<_> = targets
                .iter()
                .map(|&(_, addr)| {
                    let probe = probe.clone();
                    tokio::spawn(async move { observe(addr, &probe, window).await })
                })
                .collect();
            let mut obs: Vec<Observation> = Vec::new();
            for r in runs {
                obs.push(r.await.expect("observation task"));
            }
            (i, probe, obs)
        });
    }
    let mut results = Vec::new();
    while let Some(r) = set.join_next().await {
        results.push(r.expect("probe task"));
    }
    results.sort_by_key(|r| r.0);
    let mut failures = Vec::new();
    let (mut max_first, mut max_end) = (Duration::ZERO, Duration::ZERO);
    let mut ends = std::collections::BTreeMap::<String, usize>::new();
    for (_, probe, obs) in &results {
        let want = &obs[0];
        *ends.entry(format!("{:?}", want.end)).or_default() += 1;
        for (k, got) in obs.iter().enumerate().skip(1) {
            if let (Some(a), Some(b)) = (want.first_byte, got.first_byte) {
                max_first = max_first.max(a.abs_diff(b));
            }
            if let (Some(a), Some(b)) = (want.end_at, got.end_at) {
                max_end = max_end.max(a.abs_diff(b));
            }
            for d in differences(want, got) {
                failures.push(format!("[{}] {}: {d}", targets[k].0, probe.name()));
            }
        }
    }
    eprintln!(
        "{label}: {} probes × {} proxies in {:.1} s; cover ends {ends:?}; largest difference in \
         time to first byte {max_first:?}, in time to close {max_end:?}",
        results.len(),
        targets.len() - 1,
        started.elapsed().as_secs_f32()
    );
    if std::env::var_os("SAMIZDAT_PROBE_VERBOSE").is_some() {
        for (_, probe, obs) in &results {
            eprintln!("  {}: {:?}", probe.name(), obs[0]);
        }
    }
    assert!(
        failures.is_empty(),
        "{label}: the prober told samizdat from its cover in {} cases:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_with_default_timeouts() {
    let cover = nginx::Nginx::start("default").await;
    let bench = bench(cover.addr, &[]).await;
    let mut rng = seeded_rng("nginx, default timeouts");
    let probes = probes::catalogue(&mut rng, &bench.flights, true);
    // nginx's longest default timer is the 75 s keep-alive.
    differential(
        "nginx, default timeouts",
        &bench,
        probes,
        Duration::from_secs(85),
    )
    .await;
    drop(bench);
    let log = cover.error_log();
    assert!(!log.contains("worker_connections are not enough"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_with_short_timeouts() {
    let cover = nginx::Nginx::start("short").await;
    let bench = bench(cover.addr, &["--handshake-timeout", "1s"]).await;
    let mut rng = seeded_rng("nginx, short timeouts");
    let probes = probes::catalogue(&mut rng, &bench.flights, true);
    differential(
        "nginx, short timeouts",
        &bench,
        probes,
        Duration::from_secs(8),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_timer_cover() {
    let (cover, _) = short_cover::start().await;
    let bench = bench(cover, &["--handshake-timeout", "1s"]).await;
    let mut rng = seeded_rng("short-timer cover");
    let probes = probes::catalogue(&mut rng, &bench.flights, false);
    differential("short-timer cover", &bench, probes, Duration::from_secs(6)).await;
}

/// How a probe's connection ends from the client's side.
#[derive(Clone, Copy, Debug)]
enum ClientClose {
    Fin,
    Rst,
}

/// The other direction: what the cover sees of a client that closes or
/// resets, before and after samizdat has decided, must be what it sees of
/// that client connecting directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_closes_reach_the_cover_alike() {
    let (cover, log) = short_cover::start().await;
    let bench = bench(cover, &["--handshake-timeout", "1s"]).await;
    let targets: Vec<(String, SocketAddr)> = std::iter::once(("cover".to_string(), cover))
        .chain(bench.proxies.iter().map(|p| (p.name.clone(), p.addr)))
        .collect();
    let partial_tls = bench.flights.fresh_hello[..100].to_vec();
    let get = b"GET / HTTP/1.1\r\nHost: cover.localhost\r\n\r\n".to_vec();
    let cases: Vec<(&str, Vec<u8>, Duration)> = vec![
        ("nothing", vec![], Duration::from_millis(200)),
        (
            "3 bytes",
            vec![0xc3, 0x01, 0x02],
            Duration::from_millis(200),
        ),
        (
            "20 binary bytes",
            // Binary for the short-timer cover too: a random first byte of
            // 0x16 or A-Z (about one time in nine) made it parse TLS or
            // HTTP and close first, so the test failed now and then.
            [&[0x8f][..], &testkit::random::<19>()].concat(),
            Duration::from_millis(200),
        ),
        ("a partial hello", partial_tls, Duration::from_millis(200)),
        // Past samizdat's 1 s handshake deadline: spliced by then.
        (
            "a partial hello, 1.2 s",
            bench.flights.fresh_hello[..300].to_vec(),
            Duration::from_millis(1200),
        ),
        ("a keep-alive GET", get, Duration::from_millis(300)),
    ];
    let mut failures = Vec::new();
    for (name, bytes, hold) in &cases {
        for how in [ClientClose::Fin, ClientClose::Rst] {
            let mut seen = Vec::new();
            for (target, addr) in &targets {
                let before = log.lock().unwrap().len();
                let mut s = TcpStream::connect(addr).await.unwrap();
                if !bytes.is_empty() {
                    s.write_all(bytes).await.unwrap();
                }
                tokio::time::sleep(*hold).await;
                let open = match how {
                    ClientClose::Fin => {
                        s.shutdown().await.unwrap();
                        Some(s)
                    }
                    ClientClose::Rst => {
                        socket2::SockRef::from(&s)
                            .set_linger(Some(Duration::ZERO))
                            .unwrap();
                        drop(s);
                        None
                    }
                };
                let done = common::eventually(Duration::from_secs(3), || {
                    log.lock()
                        .unwrap()
                        .get(before)
                        .is_some_and(|c| c.end.is_some())
                })
                .await;
                assert!(done, "{name}, {how:?} via {target}: the cover saw no end");
                drop(open);
                let c = log.lock().unwrap()[before].clone();
                seen.push((target.clone(), c.bytes, c.end));
            }
            let expected = match how {
                ClientClose::Fin => short_cover::ClientEnd::Fin,
                ClientClose::Rst => short_cover::ClientEnd::Rst,
            };
            assert_eq!(
                seen[0].2,
                Some(expected),
                "{name}: the cover did not see a direct client's {how:?}"
            );
            for (target, bytes, end) in &seen[1..] {
                if bytes != &seen[0].1 || end != &seen[0].2 {
                    failures.push(format!(
                        "{name}, client {how:?}: direct, the cover saw {} bytes and {:?}; \
                         via [{target}] {} bytes and {:?}",
                        seen[0].1.len(),
                        seen[0].2,
                        bytes.len(),
                        end
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "the cover told direct clients from clients via samizdat:\n  {}",
        failures.join("\n  ")
    );
}

/// The prober is not blind: `--cover-connect lazy` (the cover is reached
/// only after our decision, so its timers start late) must be caught.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prober_catches_a_late_cover() {
    let (cover, _) = short_cover::start().await;
    let (dc, _) = common::fake_dc().await;
    let lazy = samizdat(
        cover,
        dc,
        "ee",
        &["--cover-connect", "lazy", "--handshake-timeout", "3s"],
    )
    .await;
    let probes = vec![
        Probe::raw("empty, waiting", vec![]),
        Probe::raw(
            "authentic hello cut at 100",
            vec![Step::Send(hello(KEY, DOMAIN, now())[..100].to_vec())],
        ),
    ];
    let window = Duration::from_secs(8);
    for probe in &probes {
        let (want, got) = tokio::join!(
            observe(cover, probe, window),
            observe(lazy.addr, probe, window)
        );
        let d = differences(&want, &got);
        assert!(
            !d.is_empty(),
            "{}: a cover reached 3 s late went unnoticed: {want:?} / {got:?}",
            probe.name()
        );
    }
}
