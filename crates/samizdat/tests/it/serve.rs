//! `samizdat serve` end to end on 127.0.0.1: the real binary between a fake
//! Telegram DC and a fake cover site.

use crate::common;

use common::*;
use std::time::{Duration, Instant};
use testkit::client::{Client, Options};
use testkit::fake_dc::DcEvent;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wire::faketls::client::HelloShape;
use wire::obfuscated2::Tag;

/// Sends `total` bytes in packets and checks the echo arrives intact.
async fn bulk(client: &mut Client, total: usize) {
    let mut sent = 0;
    let mut seed = 1u32;
    while sent < total {
        let len = (256 * 1024).min(total - sent);
        let payload: Vec<u8> = (0..len)
            .map(|_| {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                (seed >> 16) as u8
            })
            .collect();
        client.send(&payload).await.unwrap();
        let back = tokio::time::timeout(Duration::from_secs(20), client.recv())
            .await
            .expect("echo in time")
            .unwrap();
        assert!(back == payload, "echo differs after {sent} bytes");
        sent += len;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_form_and_framing_carries_mebibytes_both_ways() {
    let proxy = start(&[]).await;
    let cases = [
        ("plain", Tag::Abridged, HelloShape::Classic517, 2),
        ("plain", Tag::Intermediate, HelloShape::Classic517, -4),
        ("dd", Tag::Padded, HelloShape::Classic517, 1),
        ("ee", Tag::Padded, HelloShape::Classic517, 2),
        ("ee", Tag::Padded, HelloShape::PostQuantum, 10002),
    ];
    for (form, tag, shape, dc) in cases {
        let opts = Options {
            tag,
            dc,
            shape,
            ..Default::default()
        };
        let mut c = Client::connect(proxy.addr, &secret(form), &opts)
            .await
            .unwrap_or_else(|e| panic!("{form}: {e}"));
        bulk(&mut c, 4 << 20).await;
        let ev = proxy.dc_events.lock().unwrap().last().cloned();
        assert_eq!(
            ev,
            Some(DcEvent::Connected { dc: dc.abs(), tag }),
            "{form} {tag:?}"
        );
    }
    // The cover sees a connection open and close, never an authentic hello.
    assert!(
        proxy
            .cover_received
            .lock()
            .unwrap()
            .iter()
            .all(|b| b.is_empty()),
        "an authenticated client's bytes reached the cover"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dc_ids_route_per_override() {
    let (media_addr, media_events) = fake_dc().await;
    let media = format!("-2={media_addr}");
    let proxy = start(&["--dc", &media]).await;
    let mut c = Client::connect(
        proxy.addr,
        &secret("ee"),
        &Options {
            dc: -2,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    bulk(&mut c, 1024).await;
    let mut c = Client::connect(
        proxy.addr,
        &secret("ee"),
        &Options {
            dc: 2,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    bulk(&mut c, 1024).await;
    assert_eq!(
        media_events.lock().unwrap().len(),
        1,
        "DC -2 goes to its own override"
    );
    assert_eq!(
        proxy.dc_events.lock().unwrap().len(),
        1,
        "DC 2 goes to --dc-override"
    );
}

/// Sends `probe`, half-closes, and returns everything that comes back.
async fn probe(addr: std::net::SocketAddr, probe: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(probe).await.unwrap();
    s.shutdown().await.unwrap();
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut back))
        .await
        .expect("cover answered")
        .unwrap();
    back
}

fn hello(key: &str, domain: &str, time: u32) -> Vec<u8> {
    let key: [u8; 16] = hex::decode(key).unwrap().try_into().unwrap();
    wire::faketls::client::build_hello(
        &key,
        domain,
        time,
        HelloShape::Classic517,
        &mut testkit::fill,
    )
}

fn now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_probe_lands_at_the_cover_byte_for_byte() {
    let proxy = start(&[]).await;
    let mut trailing = hello(KEY, DOMAIN, now());
    trailing.extend_from_slice(b"\x14\x03\x03\x00\x01\x01");
    let mut truncated = hello(KEY, DOMAIN, now());
    truncated.truncate(300);
    let probes: Vec<(&str, Vec<u8>)> = vec![
        ("random bytes", testkit::random::<200>().to_vec()),
        (
            "64 random bytes (bad obfuscated2 init)",
            testkit::random::<64>().to_vec(),
        ),
        ("a few bytes", b"\x01\x02\x03".to_vec()),
        (
            "HTTP",
            b"GET / HTTP/1.1\r\nHost: cover.localhost\r\n\r\n".to_vec(),
        ),
        (
            "ClientHello, wrong key",
            hello("ffffffffffffffffffffffffffffffff", DOMAIN, now()),
        ),
        (
            "ClientHello, stale timestamp",
            hello(KEY, DOMAIN, now() - 3600),
        ),
        (
            "ClientHello, future timestamp",
            hello(KEY, DOMAIN, now() + 3600),
        ),
        ("ClientHello, other SNI", hello(KEY, "example.com", now())),
        ("ClientHello + bytes before the server spoke", trailing),
        ("half a ClientHello", truncated),
        ("empty", Vec::new()),
    ];
    for (i, (name, bytes)) in probes.iter().enumerate() {
        let back = probe(proxy.addr, bytes).await;
        assert!(
            &back == bytes,
            "{name}: the cover's echo did not come back unchanged ({} of {} bytes)",
            back.len(),
            bytes.len()
        );
        let got = eventually(Duration::from_secs(2), || {
            proxy.cover_received.lock().unwrap().len() > i
        })
        .await;
        assert!(got, "{name}: no cover connection");
        assert_eq!(
            &proxy.cover_received.lock().unwrap()[i],
            bytes,
            "{name}: cover received other bytes"
        );
    }
    assert!(
        proxy.dc_events.lock().unwrap().is_empty(),
        "a probe reached the DC"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_cover_answers_probes_and_closes() {
    let proxy = start_with(testkit::fake_cover::CoverKind::Http, &[]).await;
    let back = probe(proxy.addr, b"GET / HTTP/1.1\r\n\r\n").await;
    assert_eq!(back, testkit::fake_cover::HTTP_ANSWER);
    // Without half-closing: the cover's answer and close reach the client.
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"\x16\x03\x01\x02\x00junk").await.unwrap();
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, testkit::fake_cover::HTTP_ANSWER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_are_refused() {
    let proxy = start(&[]).await;
    // Fake-TLS: a captured hello, sent again.
    let mut c = Client::connect(proxy.addr, &secret("ee"), &Options::default())
        .await
        .unwrap();
    bulk(&mut c, 64).await;
    let captured = c.hello.clone().unwrap();
    let back = probe(proxy.addr, &captured).await;
    assert_eq!(
        back, captured,
        "the replayed hello must be answered by the cover, not by us"
    );
    // Bare obfuscated2: a captured init (and first packet), sent again.
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let init =
        wire::obfuscated2::initiate(testkit::random(), Tag::Padded, 2, Some(&secret("dd").key));
    s.write_all(&init.wire).await.unwrap();
    assert!(
        eventually(Duration::from_secs(5), || proxy
            .dc_events
            .lock()
            .unwrap()
            .len()
            == 2)
        .await
    );
    drop(s);
    let back = probe(proxy.addr, &init.wire).await;
    assert_eq!(
        back,
        init.wire.to_vec(),
        "the replayed init must reach the cover"
    );
    assert_eq!(
        proxy.dc_events.lock().unwrap().len(),
        2,
        "a replay reached the DC"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_is_cut_at_the_deadline() {
    let proxy = start(&["--handshake-timeout", "1s", "--idle-timeout", "1s"]).await;
    // Authenticated hello, then silence: cut at the handshake deadline.
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(&hello(KEY, DOMAIN, now())).await.unwrap();
    let t = Instant::now();
    let mut sink = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut sink)).await;
    assert!(r.is_ok(), "not closed within 10 s");
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "closed too early: {:?}",
        t.elapsed()
    );
    assert!(sink.len() > 138, "the server flight came first");
    // A relay with no traffic: cut at the idle timeout.
    let mut c = Client::connect(proxy.addr, &secret("ee"), &Options::default())
        .await
        .unwrap();
    bulk(&mut c, 64).await;
    let t = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(10), c.recv()).await;
    assert!(matches!(r, Ok(Err(_))), "idle relay not closed");
    assert!(
        t.elapsed() >= Duration::from_millis(900) && t.elapsed() < Duration::from_secs(5),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_connections_leave_nothing_behind() {
    let proxy = start(&[]).await;
    let pid = proxy.child.id();
    // Let the runtime settle, then measure.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let baseline = fd_count(pid);
    let mut clients = Vec::new();
    for chunk in 0..10 {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..100 {
            let addr = proxy.addr;
            let form = ["ee", "dd", "plain"][(chunk + i) % 3];
            set.spawn(async move {
                let mut c = Client::connect(
                    addr,
                    &secret(form),
                    &Options {
                        tag: Tag::Intermediate,
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
                c.send(&[7u8; 64]).await.unwrap();
                assert_eq!(c.recv().await.unwrap(), vec![7u8; 64]);
                c
            });
        }
        while let Some(c) = set.join_next().await {
            clients.push(c.unwrap());
        }
    }
    let open = fd_count(pid);
    assert!(
        open >= baseline + 2000,
        "1000 relays should hold 2000 sockets: {baseline} → {open}"
    );
    drop(clients);
    let back = eventually(Duration::from_secs(10), || fd_count(pid) <= baseline).await;
    assert!(
        back,
        "sockets leaked: baseline {baseline}, now {}",
        fd_count(pid)
    );
    // Probes that are spliced to the cover also leave nothing behind.
    for _ in 0..200 {
        probe(proxy.addr, b"GET / HTTP/1.0\r\n\r\n").await;
    }
    let back = eventually(Duration::from_secs(10), || fd_count(pid) <= baseline).await;
    assert!(
        back,
        "cover splices leaked: baseline {baseline}, now {}",
        fd_count(pid)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_accepting_and_drains() {
    let mut proxy = start(&["--drain-timeout", "5s"]).await;
    let mut c = Client::connect(proxy.addr, &secret("ee"), &Options::default())
        .await
        .unwrap();
    bulk(&mut c, 1024).await;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &proxy.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        TcpStream::connect(proxy.addr).await.is_err(),
        "still accepting after SIGTERM"
    );
    bulk(&mut c, 1024).await; // the open relay keeps working while draining
    drop(c);
    let t = Instant::now();
    let exited = eventually(Duration::from_secs(8), || {
        matches!(proxy.child.try_wait(), Ok(Some(_)))
    })
    .await;
    assert!(exited, "did not exit after its last connection closed");
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "waited for the drain timeout although nothing was open"
    );
    assert!(proxy.child.try_wait().unwrap().unwrap().success());
}

#[test]
fn bad_options_are_named_with_the_fix() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin())
            .arg("serve")
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} should fail");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let e = run(&[
        "--secret",
        "0123456789abcdef0123456789abcd",
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(
        e.contains("--secret") && e.contains("expected 32 hex characters") && e.contains("got 30"),
        "{e}"
    );
    assert!(
        !e.contains("0123456789abcdef0123456789abcd"),
        "a secret leaked into an error: {e}"
    );
    let e = run(&["--modes", "ee,xx", "--listen", "127.0.0.1:0"]);
    assert!(
        e.contains("--modes") && e.contains("expected plain, dd or ee"),
        "{e}"
    );
    let e = run(&[
        "--dc",
        "two=1.2.3.4:443",
        "--listen",
        "127.0.0.1:0",
        "--secret",
        KEY,
    ]);
    assert!(
        e.contains("--dc") && e.contains("DC id must be a number"),
        "{e}"
    );
    let e = run(&[
        "--cover",
        "nonsense",
        "--listen",
        "127.0.0.1:0",
        "--secret",
        KEY,
    ]);
    assert!(e.contains("--cover") && e.contains("HOST:PORT"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cover_named_by_host_is_resolved_and_reached() {
    let (dc, _) = fake_dc().await;
    let (cover, received) = fake_cover(testkit::fake_cover::CoverKind::Echo).await;
    let served = serve()
        .secret(KEY)
        .domain(DOMAIN)
        .args(["--cover".to_string(), format!("localhost:{}", cover.port())])
        .dc(dc)
        .spawn()
        .await
        .unwrap();
    let addr = served.addr;
    for i in 0..3 {
        let bytes = format!("GET /{i} HTTP/1.1\r\n\r\n").into_bytes();
        assert_eq!(probe(addr, &bytes).await, bytes);
    }
    assert_eq!(received.lock().unwrap().len(), 3);
    drop(served);
}

/// The `ee` ServerHello's X25519 key share, as it goes on the wire, is a
/// point of the curve (a random 32-byte string is on the twist about half
/// the time, which anyone can test with one field exponentiation) and a new
/// one on every connection, as a TLS server's would be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_tls_key_share_is_a_fresh_curve_point() {
    use curve25519_dalek::montgomery::MontgomeryPoint;
    /// key_share extension: type 0x0033, length 36, group x25519, key length 32.
    const KEY_SHARE_X25519: [u8; 8] = [0x00, 0x33, 0x00, 0x24, 0x00, 0x1d, 0x00, 0x20];
    let proxy = start(&[]).await;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..16 {
        let c = Client::connect(proxy.addr, &secret("ee"), &Options::default())
            .await
            .unwrap();
        let flight = c
            .flight
            .clone()
            .expect("a fake-TLS client keeps the flight");
        // The ServerHello is the first record; its extensions end it.
        let hello_len = usize::from(u16::from_be_bytes([flight[3], flight[4]]));
        let server_hello = &flight[5..5 + hello_len];
        let at = server_hello
            .windows(KEY_SHARE_X25519.len())
            .position(|w| w == KEY_SHARE_X25519)
            .expect("an X25519 key share in the ServerHello")
            + KEY_SHARE_X25519.len();
        let key: [u8; 32] = server_hello[at..at + 32].try_into().unwrap();
        assert!(
            MontgomeryPoint(key).to_edwards(0).is_some(),
            "key share {} is not on curve25519",
            hex::encode(key)
        );
        assert!(seen.insert(key), "a key share was sent twice");
    }
}
