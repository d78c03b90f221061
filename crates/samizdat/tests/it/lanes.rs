//! Lanes: one client session carried over many TCP connections, against the
//! real `samizdat serve` and `samizdat client` behind lab middleboxes.
//!
//! - Under the 16 KiB freeze (a censor that stops a TLS flow's downstream
//!   after 16 KiB), a 10 MiB download in one request still completes: the
//!   client notices the stalled lane, learns a lane budget below the freeze
//!   and spreads the session over many short connections.
//! - The learned budget is kept in `pool.toml`: a restarted client starts
//!   in lane mode and never stalls again.
//! - A download survives the censor blackholing its endpoint mid-transfer
//!   (twice): the lost bytes are resent on a new lane to another endpoint,
//!   and the app's single request completes.
//!
//! Everything is on 127.0.0.0/8; every wait is bounded.

use crate::common;

use common::apps::{self, ClientProc};
use lab::techniques::{Freeze, LiveIpBlock};
use lab::{Flow, Middlebox, Policy, Technique, Verdict};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use wire::link::{Endpoint, Link};

/// The freeze threshold: downstream bytes a TLS flow gets before it freezes.
const FREEZE: u64 = 16 * 1024;
/// Longest silence on a download before it counts as broken.
const STALL: Duration = Duration::from_secs(20);
/// The client's environment: plain log lines at the default level.
const CLIENT_ENV: &[(&str, &str)] = &[("NO_COLOR", "1"), ("RUST_LOG", "info")];

/// The SHA-256 of an `n`-byte body.
fn sha_of_body(n: usize) -> [u8; 32] {
    apps::sha(&apps::body(n))
}

/// ONE request for `n` bytes at `rate` through the client's SOCKS5 port,
/// never resumed: the body's hash if all of it arrived on that one stream,
/// else why not. `progress` follows the body bytes received.
async fn fetch_once(
    socks: SocketAddr,
    web: SocketAddr,
    n: usize,
    rate: usize,
    progress: Arc<AtomicUsize>,
) -> Result<[u8; 32], String> {
    let (code, mut s) = apps::socks_connect(socks, "127.0.0.1", web.port()).await;
    if code != 0 {
        return Err(format!("SOCKS reply {code}"));
    }
    s.write_all(format!("GET /{n}/0/{rate} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .map_err(|e| format!("sending the request: {e}"))?;
    let mut sink = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut head = Vec::new();
    let mut in_body = false;
    let mut got = 0;
    while got < n {
        let k = match tokio::time::timeout(STALL, s.read(&mut buf)).await {
            Err(_) => return Err(format!("nothing for {STALL:?} after {got} of {n} bytes")),
            Ok(Err(e)) => return Err(format!("the stream broke after {got} of {n} bytes: {e}")),
            Ok(Ok(0)) => return Err(format!("the stream ended after {got} of {n} bytes")),
            Ok(Ok(k)) => k,
        };
        let body: &[u8] = if in_body {
            &buf[..k]
        } else {
            head.extend_from_slice(&buf[..k]);
            let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") else {
                if head.len() > 16384 {
                    return Err("no HTTP head".into());
                }
                continue;
            };
            in_body = true;
            &head[at + 4..]
        };
        sink.update(body);
        got += body.len();
        progress.store(got, Ordering::Relaxed);
    }
    if got != n {
        return Err(format!("{got} body bytes for {n}"));
    }
    Ok(sink.finalize().into())
}

/// Downloads `n` bytes in one request and checks the hash.
async fn download_whole(socks: SocketAddr, web: SocketAddr, n: usize) {
    let sha = fetch_once(socks, web, n, 0, Arc::default())
        .await
        .unwrap_or_else(|e| panic!("the {n}-byte download in one request: {e}"));
    assert_eq!(sha, sha_of_body(n), "the {n}-byte body arrived intact");
}

/// A short GET must work within 20 s: "new streams keep working".
async fn short_get(socks: SocketAddr, web: SocketAddr) {
    let n = 100_000;
    let r = tokio::time::timeout(
        Duration::from_secs(20),
        fetch_once(socks, web, n, 0, Arc::default()),
    )
    .await
    .expect("a new stream completes within 20 s");
    let sha = r.unwrap_or_else(|e| panic!("a new stream: {e}"));
    assert_eq!(sha, sha_of_body(n));
}

// === the client ===

fn start_client(link: &Link, state: &std::path::Path) -> ClientProc {
    let mut client = apps::client(link).state_dir(state);
    for (k, v) in CLIENT_ENV {
        client = client.env(k, v);
    }
    client.start().unwrap()
}

/// SIGTERM, and waits (10 s at most) for the exit: the pool is saved on
/// the way out.
async fn stop(mut client: ClientProc) {
    let sent = Command::new("kill")
        .args(["-TERM", &client.child.id().to_string()])
        .status()
        .expect("kill(1) runs");
    assert!(sent.success(), "SIGTERM sent");
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if let Ok(Some(_)) = client.child.try_wait() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("samizdat client did not exit within 10 s of SIGTERM");
}

fn log_lines(client: &ClientProc, what: &str) -> Vec<String> {
    let log = client.log();
    log.iter().filter(|l| l.contains(what)).cloned().collect()
}

/// The `lane_budget` of `ep`'s entry in a `pool.toml`.
fn lane_budget(pool: &str, ep: &Endpoint) -> Option<i64> {
    let file: toml::Table = pool.parse().expect("pool.toml parses");
    let entries = file.get("endpoint")?.as_array()?;
    let name = ep.to_string();
    let entry = entries
        .iter()
        .find(|e| e.get("endpoint").and_then(|v| v.as_str()) == Some(name.as_str()))?;
    entry.get("lane_budget")?.as_integer()
}

// === the censor ===

/// A `samizdat serve`, and a middlebox on `ip` in front of it that freezes
/// the downstream of every TLS flow after [`FREEZE`] bytes.
struct Frozen {
    web: SocketAddr,
    _proxy: common::Proxy,
    mb: Middlebox,
    ep: Endpoint,
    link: Link,
}

impl Frozen {
    async fn start(ip: Ipv4Addr) -> Frozen {
        let web = apps::paced_web_server().await;
        let proxy = common::start(&["--egress-allow", "127.0.0.0/8"]).await;
        let freeze = Freeze::new(vec![format!("{ip}/32").parse().unwrap()]).threshold(FREEZE);
        let policy = Policy::new(vec![Arc::new(freeze)]).destination((ip, 443).into());
        let mb = lab::start((ip, 0).into(), proxy.addr, policy)
            .await
            .unwrap_or_else(|e| panic!("listen on {ip}: {e}"));
        let ep = Endpoint::direct(ip.to_string(), mb.addr.port());
        let mut link = apps::printed_link(&proxy);
        link.servers = vec![ep.clone()];
        Frozen {
            web,
            _proxy: proxy,
            mb,
            ep,
            link,
        }
    }

    fn frozen(&self) -> u64 {
        self.mb.events().get("freeze").frozen
    }
}

/// Counts the server → client bytes a middlebox passed (a technique that
/// never acts): which endpoint carries a download right now.
#[derive(Default)]
struct Meter {
    per_flow: Mutex<HashMap<u64, u64>>,
    total: AtomicU64,
}

impl Technique for Meter {
    fn name(&self) -> &'static str {
        "meter"
    }
    fn on_downstream(&self, flow: &Flow, total: u64) -> Verdict {
        let last = self
            .per_flow
            .lock()
            .unwrap()
            .insert(flow.id, total)
            .unwrap_or(0);
        self.total
            .fetch_add(total.saturating_sub(last), Ordering::Relaxed);
        Verdict::Pass
    }
}

/// The index of the meter that grows fastest (at least 32 KiB in 300 ms),
/// waiting 20 s at most.
async fn busiest(meters: &[Arc<Meter>]) -> usize {
    let end = Instant::now() + Duration::from_secs(20);
    while Instant::now() < end {
        let before: Vec<u64> = meters
            .iter()
            .map(|m| m.total.load(Ordering::Relaxed))
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (i, grew) = meters
            .iter()
            .zip(&before)
            .map(|(m, b)| m.total.load(Ordering::Relaxed) - b)
            .enumerate()
            .max_by_key(|(_, d)| *d)
            .unwrap();
        if grew >= 32 * 1024 {
            return i;
        }
    }
    panic!("no endpoint carried the download for 20 s");
}

/// Waits (30 s at most) until `progress` reaches `at`.
async fn progress_reaches(progress: &AtomicUsize, at: usize, what: &str) {
    let ok = common::eventually(Duration::from_secs(30), || {
        progress.load(Ordering::Relaxed) >= at
    })
    .await;
    assert!(
        ok,
        "{what}: the download stuck at {} bytes (waiting for {at})",
        progress.load(Ordering::Relaxed)
    );
}

// === the tests ===

const FREEZE_DOWNLOAD: usize = 10 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_download_completes_under_the_16k_freeze() {
    tokio::time::timeout(Duration::from_secs(180), async {
        let lab = Frozen::start([127, 0, 3, 1].into()).await;
        let state = tempfile::tempdir().unwrap();
        let client = start_client(&lab.link, state.path());

        let started = Instant::now();
        let sha = tokio::time::timeout(
            Duration::from_secs(120),
            fetch_once(client.socks, lab.web, FREEZE_DOWNLOAD, 0, Arc::default()),
        )
        .await;
        let events = lab.mb.events();
        eprintln!(
            "10 MiB under the freeze: {} after {:?}; {} flows, {} frozen",
            match &sha {
                Ok(Ok(_)) => "done".to_string(),
                Ok(Err(e)) => e.clone(),
                Err(_) => "timed out".to_string(),
            },
            started.elapsed(),
            events.flows(),
            lab.frozen()
        );
        let sha = sha
            .expect("the download completes within 120 s")
            .unwrap_or_else(|e| panic!("the download in one request: {e}"));
        assert_eq!(sha, sha_of_body(FREEZE_DOWNLOAD), "the body arrived intact");

        // The rule was not inert: the first lane was frozen, and no flow
        // can carry more than the threshold (and a segment) downstream.
        assert!(lab.frozen() >= 1, "the freeze froze a flow");
        let most = FREEZE as usize + lab::middlebox::SEGMENT;
        assert!(
            events.flows() as usize >= FREEZE_DOWNLOAD / most,
            "{} flows cannot have carried {FREEZE_DOWNLOAD} bytes under the freeze",
            events.flows()
        );
        // The client noticed and learned.
        assert!(
            client.logged("stalled"),
            "the client logged the stalled lane"
        );
        assert!(
            client.logged("lane budget"),
            "the client logged the lane budget it learned"
        );
        eprintln!("learned: {:?}", log_lines(&client, "lane budget"));
        short_get(client.socks, lab.web).await;
    })
    .await
    .expect("the test finishes within 180 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_client_starts_in_lane_mode() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let lab = Frozen::start([127, 0, 3, 2].into()).await;
        let state = tempfile::tempdir().unwrap();

        // Learning: the first lane freezes, stalls, and the client learns.
        let client = start_client(&lab.link, state.path());
        download_whole(client.socks, lab.web, 1 << 20).await;
        assert!(lab.frozen() >= 1, "the freeze froze a flow");
        assert!(client.logged("stalled"), "the first lane stalled");
        assert!(client.logged("lane budget"), "a lane budget was learned");
        stop(client).await;

        let pool = std::fs::read_to_string(state.path().join("pool.toml"))
            .expect("the client saved pool.toml");
        let budget = lane_budget(&pool, &lab.ep)
            .unwrap_or_else(|| panic!("no lane_budget for {} in pool.toml:\n{pool}", lab.ep));
        assert!(
            budget > 0 && budget < FREEZE as i64,
            "the budget {budget} is below the {FREEZE}-byte freeze:\n{pool}"
        );

        // The restarted client stays under the freeze from its first lane.
        let frozen = lab.frozen();
        let flows = lab.mb.events().flows();
        let client = start_client(&lab.link, state.path());
        let n = 2 << 20;
        tokio::time::timeout(
            Duration::from_secs(60),
            download_whole(client.socks, lab.web, n),
        )
        .await
        .expect("the download completes within 60 s");
        assert!(
            !client.logged("stalled"),
            "no lane stalled: {:?}",
            log_lines(&client, "stalled")
        );
        assert_eq!(lab.frozen(), frozen, "no flow hit the freeze again");
        let more = lab.mb.events().flows() - flows;
        assert!(
            more as usize >= n / (FREEZE as usize + lab::middlebox::SEGMENT),
            "{more} flows cannot have carried {n} bytes under the freeze"
        );
    })
    .await
    .expect("the test finishes within 120 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_download_survives_its_endpoint_being_blocked() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let web = apps::paced_web_server().await;
        let proxy = common::start(&["--egress-allow", "127.0.0.0/8"]).await;
        let block = LiveIpBlock::new();
        let mut link = apps::printed_link(&proxy);
        link.servers.clear();
        let (mut mbs, mut meters) = (Vec::new(), Vec::new());
        for last in 1..=4u8 {
            let ip = Ipv4Addr::new(127, 0, 4, last);
            let meter = Arc::new(Meter::default());
            let techniques: Vec<Arc<dyn Technique>> = vec![Arc::new(block.clone()), meter.clone()];
            let policy = Policy::new(techniques).destination((ip, 443).into());
            let mb = lab::start((ip, 0).into(), proxy.addr, policy)
                .await
                .unwrap_or_else(|e| panic!("listen on {ip}: {e}"));
            link.servers
                .push(Endpoint::direct(ip.to_string(), mb.addr.port()));
            mbs.push(mb);
            meters.push(meter);
        }
        let eps = link.servers.clone();
        let state = tempfile::tempdir().unwrap();
        let client = start_client(&link, state.path());
        short_get(client.socks, web).await;

        // One long request: 6 MiB at 1 MiB/s.
        let (n, rate) = (6 << 20, 1 << 20);
        let progress = Arc::new(AtomicUsize::new(0));
        let dl = tokio::spawn(fetch_once(client.socks, web, n, rate, progress.clone()));

        // 1. The censor blackholes the endpoint carrying it.
        progress_reaches(&progress, 1 << 20, "before the first block").await;
        let first = busiest(&meters).await;
        let at = progress.load(Ordering::Relaxed);
        eprintln!("blocking {} at {at} bytes", eps[first]);
        block.block(
            format!("{}/32", eps[first].host).parse().unwrap(),
            Verdict::Drop,
        );
        short_get(client.socks, web).await;
        progress_reaches(&progress, at + (1 << 20), "after the first block").await;
        let second = busiest(&meters).await;
        assert_ne!(second, first, "the download moved off the blocked endpoint");

        // 2. And then the one it moved to.
        let at = progress.load(Ordering::Relaxed);
        eprintln!("blocking {} at {at} bytes", eps[second]);
        block.block(
            format!("{}/32", eps[second].host).parse().unwrap(),
            Verdict::Drop,
        );
        short_get(client.socks, web).await;
        progress_reaches(&progress, at + (1 << 20), "after the second block").await;
        let third = busiest(&meters).await;
        assert!(
            third != first && third != second,
            "the download moved to an open endpoint"
        );

        let sha = dl
            .await
            .expect("the download task")
            .unwrap_or_else(|e| panic!("the download in one request: {e}"));
        assert_eq!(
            sha,
            sha_of_body(n),
            "the body arrived intact, never resumed"
        );
        for i in [first, second] {
            assert!(
                mbs[i].events().get("ip-block").dropped >= 1,
                "the block of {} cut a flow",
                eps[i]
            );
        }
        short_get(client.socks, web).await;
    })
    .await
    .expect("the test finishes within 120 s");
}
