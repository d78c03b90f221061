//! Technique 5 end to end: the active prober flags naive servers and does
//! not flag the real `samizdat serve` in front of testkit covers, replays
//! of real clients' first flights included.

use lab::probe::{probe_server, ProbeOptions};
use lab::scorecard;
use std::net::SocketAddr;
use std::time::Duration;
use testkit::fake_cover::CoverKind;
use testkit::process::Served;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn opts() -> ProbeOptions {
    ProbeOptions {
        window: Duration::from_millis(1500),
        tolerance: Duration::from_secs(1),
        replay_delays: vec![Duration::ZERO, Duration::from_millis(300)],
        sni: scorecard::DOMAIN.into(),
        ..ProbeOptions::default()
    }
}

/// How a naive server treats what it cannot parse.
#[derive(Clone, Copy, Debug)]
enum Naive {
    /// Resets at once on the first bytes.
    ResetsAtOnce,
    /// Reads until it has 64 bytes, then closes silently; gives up with a
    /// FIN after 1 s of silence.
    Reads64ThenCloses,
}

async fn naive(kind: Naive) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let r = tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await;
                    match r {
                        Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
                        _ => return,
                    }
                    match kind {
                        Naive::ResetsAtOnce => {
                            let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                            return;
                        }
                        Naive::Reads64ThenCloses if got.len() >= 64 => return,
                        Naive::Reads64ThenCloses => {}
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn naive_servers_are_flagged() {
    let (cover, _) = scorecard::fake_cover(CoverKind::Echo).await;
    let recorded = vec![testkit::random::<64>().to_vec()];
    for kind in [Naive::ResetsAtOnce, Naive::Reads64ThenCloses] {
        let server = naive(kind).await;
        let report = probe_server(server, cover, &recorded, &opts()).await;
        assert!(report.flagged, "{kind:?} was not flagged:\n{report}");
        eprintln!("{kind:?}: {} differences", report.differences.len());
    }
    // The cover against itself: nothing to see.
    let report = probe_server(cover, cover, &recorded, &opts()).await;
    assert!(!report.flagged, "the cover against itself:\n{report}");
}

/// A real ee client's first flight (post-quantum hello) and a bare dd
/// client's init and first packet, each accepted once by `proxy`.
async fn recorded_flights(proxy: &Served, dc_events: &testkit::fake_dc::Events) -> Vec<Vec<u8>> {
    let c = testkit::client::Client::connect(
        proxy.addr,
        &scorecard::secret("ee"),
        &testkit::client::Options {
            shape: wire::faketls::client::HelloShape::PostQuantum,
            ..Default::default()
        },
    )
    .await
    .expect("an authentic ee client gets through");
    let ee = c.hello.clone().unwrap();
    drop(c);
    let dd = scorecard::dd_first_flight();
    let before = dc_events.lock().unwrap().len();
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(&dd).await.unwrap();
    let end = tokio::time::Instant::now() + Duration::from_secs(5);
    while dc_events.lock().unwrap().len() <= before {
        assert!(
            tokio::time::Instant::now() < end,
            "an authentic dd client did not reach the DC"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(s);
    vec![ee, dd]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samizdat_is_not_flagged() {
    let bin = scorecard::samizdat_bin().unwrap_or_else(|e| panic!("{e}"));
    for kind in [CoverKind::Echo, CoverKind::Http] {
        let (dc, dc_events) = scorecard::fake_dc().await;
        let (cover, _) = scorecard::fake_cover(kind).await;
        let proxy =
            scorecard::start_samizdat(&bin, cover, dc, "plain,dd,ee").expect("samizdat serve");
        let recorded = recorded_flights(&proxy, &dc_events).await;
        let report = probe_server(proxy.addr, cover, &recorded, &opts()).await;
        eprintln!("{kind:?} cover: {report}");
        assert!(
            !report.flagged,
            "samizdat in front of the {kind:?} cover was told apart:\n{report}"
        );
    }
}
