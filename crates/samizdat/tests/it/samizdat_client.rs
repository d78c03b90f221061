//! End to end through the samizdat transport: the real `samizdat client`
//! binary in front of the real `samizdat serve` binary, with curl, a raw
//! SOCKS5 client, the Telegram test client and probers as the apps. Every
//! address is on 127.0.0.1.

use crate::common;

use common::apps::{
    body, curl, free_port, get, printed_link, sha, socks_connect, tunnel_hello, web_server,
    ClientProc,
};
use common::{bin, eventually, start, start_with};
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};
use testkit::client::{Client, Options};
use testkit::fake_cover::CoverKind;
use testkit::fake_dc::DcEvent;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wire::link::{Endpoint, Link};
use wire::obfuscated2::Tag;

/// Starts `samizdat client LINK` with SOCKS5, the HTTP proxy and the
/// Telegram endpoint on ephemeral loopback ports.
fn start_client(link: &Link) -> ClientProc {
    common::apps::client(link).all_ports().start().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_fetches_through_socks5_and_http_proxy() {
    let web = web_server().await;
    let proxy = start(&["--egress-allow", "127.0.0.0/8"]).await;
    let client = start_client(&printed_link(&proxy));
    let want = sha(&body(3 << 20));
    let url_ip = format!("http://{web}/{}", 3 << 20);
    let url_name = format!("http://localhost:{}/{}", web.port(), 3 << 20);
    let runs: Vec<Vec<String>> = vec![
        vec![
            "--socks5-hostname".into(),
            client.socks.to_string(),
            url_name.clone(),
        ],
        vec!["--socks5".into(), client.socks.to_string(), url_ip.clone()],
        vec![
            "-x".into(),
            format!("http://{}", client.http.unwrap()),
            url_ip.clone(),
        ],
        // -p forces CONNECT through the HTTP proxy.
        vec![
            "-p".into(),
            "-x".into(),
            format!("http://{}", client.http.unwrap()),
            url_name,
        ],
    ];
    for args in runs {
        let (code, out, err) = curl(&args).await;
        assert_eq!(code, 0, "curl {args:?}: {err}");
        assert_eq!(out.len(), 3 << 20, "curl {args:?}");
        assert_eq!(sha(&out), want, "curl {args:?}: body differs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_streams_arrive_intact_and_a_stalled_one_slows_none() {
    let web = web_server().await;
    let proxy = start(&["--egress-allow", "127.0.0.0/8"]).await;
    let client = start_client(&printed_link(&proxy));
    // One stream that never reads its 64 MiB answer.
    let (code, mut stalled) = socks_connect(client.socks, "127.0.0.1", web.port()).await;
    assert_eq!(code, 0);
    stalled
        .write_all(format!("GET /{} HTTP/1.1\r\n\r\n", 64 << 20).as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let size = 1 << 20;
    let want = sha(&body(size));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let socks = client.socks;
        tasks.spawn(async move {
            let (code, s) = socks_connect(socks, "127.0.0.1", web.port()).await;
            assert_eq!(code, 0);
            sha(&get(s, size).await)
        });
    }
    let mut done = 0;
    while let Some(r) = tokio::time::timeout(Duration::from_secs(90), tasks.join_next())
        .await
        .expect("100 streams finish within 90 s beside a stalled one")
    {
        assert_eq!(r.unwrap(), want, "a stream's body differs");
        done += 1;
    }
    assert_eq!(done, 100);
    eprintln!(
        "100 × 1 MiB beside a stalled stream: {:?}",
        started.elapsed()
    );
    // The stalled stream is still open and still holds unread data.
    let mut b = [0u8; 1];
    let r = tokio::time::timeout(Duration::from_secs(5), stalled.read(&mut b)).await;
    assert!(
        matches!(r, Ok(Ok(1))),
        "the stalled stream still delivers when read"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_to_private_addresses_is_refused_by_default() {
    let web = web_server().await;
    let proxy = start(&[]).await;
    let client = start_client(&printed_link(&proxy));
    for host in [
        "127.0.0.1",
        "10.0.0.1",
        "169.254.169.254",
        "::1",
        "localhost",
    ] {
        let (code, _) = socks_connect(client.socks, host, web.port()).await;
        assert_eq!(
            code, 0x02,
            "{host}: SOCKS reply 0x02 (not allowed by ruleset)"
        );
    }
    let (code, _, err) = curl(&[
        "--socks5-hostname".into(),
        client.socks.to_string(),
        format!("http://127.0.0.1:{}/10", web.port()),
    ])
    .await;
    assert_ne!(code, 0);
    // curl names SOCKS reply 2 by number ("… (2)") or in words.
    assert!(
        err.contains("(2)") || err.to_lowercase().contains("not allowed"),
        "curl said: {err}"
    );
    let (code, out, err) = curl(&[
        "-x".into(),
        format!("http://{}", client.http.unwrap()),
        "-o".into(),
        "/dev/null".into(),
        "-w".into(),
        "%{http_code}".into(),
        format!("http://169.254.169.254:{}/10", web.port()),
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        String::from_utf8_lossy(&out),
        "403",
        "the HTTP proxy answers 403"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_telegram_app_reaches_its_dc_through_the_local_endpoint() {
    let proxy = start(&[]).await;
    let client = start_client(&printed_link(&proxy));
    let (addr, dd) = client.telegram().expect("a tg:// link");
    // The printed link is `dd`; the same key without the prefix (plain)
    // lets apps use the other two framings.
    let plain = wire::secret::Secret::parse(&dd.key.to_hex()).unwrap();
    for (secret, tag, dc) in [
        (&dd, Tag::Padded, 2),
        (&plain, Tag::Intermediate, -4),
        (&plain, Tag::Abridged, 1),
    ] {
        let opts = Options {
            tag,
            dc,
            ..Default::default()
        };
        let mut c = Client::connect(addr, secret, &opts)
            .await
            .unwrap_or_else(|e| panic!("{tag:?}: {e}"));
        let payload: Vec<u8> = (0..4000u32).map(|i| (i % 251) as u8).collect();
        c.send(&payload).await.unwrap();
        let back = tokio::time::timeout(Duration::from_secs(10), c.recv())
            .await
            .expect("echo within 10 s")
            .unwrap();
        assert_eq!(
            back, payload,
            "{tag:?}: the fake DC's echo came back intact"
        );
        assert!(
            eventually(Duration::from_secs(5), || proxy
                .dc_events
                .lock()
                .unwrap()
                .contains(&DcEvent::Connected { dc: dc.abs(), tag }))
            .await,
            "{tag:?} dc {dc}: the DC saw the connection: {:?}",
            proxy.dc_events.lock().unwrap()
        );
    }
}

/// Forwards 127.0.0.1:PORT to `to`, recording what the client sent first.
async fn recording_relay(
    to: SocketAddr,
) -> (SocketAddr, std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut c, _)) = l.accept().await else {
                continue;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let Ok(mut s) = TcpStream::connect(to).await else {
                    return;
                };
                // The first read is the ClientHello record (one write).
                let mut first = vec![0u8; 17 * 1024];
                let Ok(n) = c.read(&mut first).await else {
                    return;
                };
                first.truncate(n);
                log.lock().unwrap().push(first.clone());
                if s.write_all(&first).await.is_err() {
                    return;
                }
                let _ = tokio::io::copy_bidirectional(&mut c, &mut s).await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_and_altered_first_flights_land_at_the_cover() {
    let web = web_server().await;
    let proxy = start_with(CoverKind::Echo, &["--egress-allow", "127.0.0.0/8"]).await;
    let (relay, seen) = recording_relay(proxy.addr).await;
    let mut link = printed_link(&proxy);
    link.servers = vec![Endpoint::direct("127.0.0.1", relay.port())];
    let client = start_client(&link);
    let (code, s) = socks_connect(client.socks, "127.0.0.1", web.port()).await;
    assert_eq!(code, 0);
    assert_eq!(get(s, 1000).await, body(1000));
    let hello = seen.lock().unwrap()[0].clone();
    assert_eq!(
        hello[0], 0x16,
        "the client's first flight is a TLS handshake record"
    );
    assert!(
        !proxy
            .cover_received
            .lock()
            .unwrap()
            .iter()
            .any(|b| b.windows(64).any(|w| hello.windows(64).next() == Some(w))),
        "the authenticated client's hello never reached the cover"
    );
    let mut flipped = hello.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 1;
    let mut wrong_key = link.clone();
    wrong_key.server_key = [7; 32];
    // A hello for another server key, built as the client builds it.
    let other = tunnel_hello(&wrong_key).1;
    for (what, bytes) in [
        ("replay", hello),
        ("one bit flipped", flipped),
        ("other server key", other),
    ] {
        let before = proxy.cover_received.lock().unwrap().len();
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        s.write_all(&bytes).await.unwrap();
        // The echo cover sends the hello straight back: that, byte for
        // byte, is the answer (a samizdat server flight would differ).
        let mut back = vec![0u8; bytes.len()];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back))
            .await
            .unwrap_or_else(|_| panic!("{what}: no answer from the cover"))
            .unwrap();
        assert_eq!(back, bytes, "{what}: answered by the cover");
        drop(s);
        assert!(
            eventually(Duration::from_secs(5), || proxy
                .cover_received
                .lock()
                .unwrap()
                .len()
                > before)
            .await,
            "{what}: the cover saw the connection"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_over_to_the_next_server() {
    let web = web_server().await;
    let proxy = start(&["--egress-allow", "127.0.0.0/8"]).await;
    // Nothing listens on the first server's port.
    let dead = free_port();
    let mut link = printed_link(&proxy);
    link.servers.insert(0, Endpoint::direct("127.0.0.1", dead));
    let client = start_client(&link);
    let (code, s) = socks_connect(client.socks, "127.0.0.1", web.port()).await;
    assert_eq!(code, 0, "the second server carried the stream");
    assert_eq!(get(s, 5000).await, body(5000));
}

#[path = "../differential/nginx.rs"]
mod nginx;

/// Runs the client side of the handshake against `addr`; returns the
/// server's flight bytes (exactly what the handshake consumed) and the
/// client's reply.
async fn handshake_bytes(addr: SocketAddr, link: &Link) -> Option<(Vec<u8>, Vec<u8>)> {
    use wire::tunnel::handshake::Progress;
    let (mut hs, hello) = tunnel_hello(link);
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&hello).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        match hs.read_server_flight(&buf).ok()? {
            Progress::NeedMore => continue,
            Progress::Done {
                consumed, reply, ..
            } => {
                buf.truncate(consumed);
                return Some((buf, reply));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_answer_has_the_cover_sites_shape() {
    let cover = nginx::Nginx::start("default").await;
    let child = common::serve()
        .secret(common::KEY)
        .domain(common::DOMAIN)
        .cover(cover.addr)
        .spawn()
        .await
        .unwrap();
    let addr = child.addr;
    let link = Link::parse(child.link().expect("a samizdat:// link")).unwrap();
    // What nginx itself sends to a Chrome hello.
    let (_, direct) = samizdat::serve::flight_shape::measure(
        &samizdat::serve::cover::CoverTarget::Addr(cover.addr),
        common::DOMAIN,
    )
    .await
    .unwrap_or_else(|e| panic!("measuring nginx: {e}\n{}", cover.error_log()));
    // The first samizdat client starts the server's own measurement and
    // waits for it, so even the first answer has the cover's shape.
    let (flight, reply) = handshake_bytes(addr, &link).await.expect("handshake");
    let ours = wire::faketls::server_shape::server_shape(&flight).expect("a ServerHello");
    assert_eq!(ours.cipher_suite, direct.cipher_suite);
    assert_eq!(
        ours.extensions, direct.extensions,
        "ServerHello extension order"
    );
    assert_eq!(ours.group, direct.group);
    assert_eq!(ours.change_cipher_spec, direct.change_cipher_spec);
    assert_eq!(
        ours.encrypted, direct.encrypted,
        "encrypted handshake record sizes"
    );
    assert_ne!(
        ours.encrypted,
        wire::tunnel::flight::FlightShape::default()
            .sizes()
            .collect::<Vec<_>>(),
        "the test cover must differ from the default shape"
    );
    // The client's reply: CCS, then one record of Finished's size.
    let finished = wire::tunnel::flight::finished_record_len(ours.cipher_suite);
    assert_eq!(reply.len(), 6 + 5 + finished, "client reply {reply:02x?}");
    assert_eq!(&reply[..6], &[0x14, 3, 3, 0, 1, 1]);
    assert_eq!(&reply[6..9], &[0x17, 3, 3]);
    eprintln!(
        "nginx's shape, copied: {:?} {:?}",
        direct.extensions, direct.encrypted
    );
    drop(child);
}

/// A TLS 1.3 cover that prefers X25519MLKEM768, as OpenSSL 3.5, BoringSSL
/// and Cloudflare do: it completes handshakes and then closes.
async fn hybrid_cover() -> SocketAddr {
    use std::sync::Arc;
    use tokio_rustls::rustls::{self, crypto::aws_lc_rs as provider, pki_types};
    let ck = rcgen::generate_simple_self_signed(vec![common::DOMAIN.to_string()]).unwrap();
    let key = pki_types::PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der());
    let mut crypto = provider::default_provider();
    crypto.kx_groups = vec![
        provider::kx_group::X25519MLKEM768,
        provider::kx_group::X25519,
    ];
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(crypto))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key.into())
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(5), acceptor.accept(s)).await;
            });
        }
    });
    addr
}

/// A cover that answers Chrome with X25519MLKEM768 gets a samizdat answer
/// in that group, of the same ServerHello size (about 1.2 KB, where an
/// X25519 answer is 122 bytes: an observer would see the difference).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_quantum_covers_group_and_hello_size_are_copied() {
    let cover = hybrid_cover().await;
    let child = common::serve()
        .secret(common::KEY)
        .domain(common::DOMAIN)
        .cover(cover)
        .spawn()
        .await
        .unwrap();
    let addr = child.addr;
    let link = Link::parse(child.link().expect("a samizdat:// link")).unwrap();
    let (_, direct) = samizdat::serve::flight_shape::measure(
        &samizdat::serve::cover::CoverTarget::Addr(cover),
        common::DOMAIN,
    )
    .await
    .expect("measuring the rustls cover");
    assert_eq!(
        direct.group,
        Some(wire::tunnel::hello::GROUP_X25519_MLKEM768),
        "the test cover must pick the hybrid group"
    );
    let (flight, _) = handshake_bytes(addr, &link).await.expect("handshake");
    let ours = wire::faketls::server_shape::server_shape(&flight).expect("a ServerHello");
    assert_eq!(ours.group, direct.group);
    assert_eq!(ours.hello_len, direct.hello_len, "ServerHello size");
    assert_eq!(ours.extensions, direct.extensions);
    // rustls sends its encrypted flight as one record whose ECDSA signature
    // varies by a byte or two between handshakes; nginx's RSA flight is
    // compared exactly in `the_servers_answer_has_the_cover_sites_shape`.
    assert_eq!(ours.encrypted.len(), direct.encrypted.len());
    for (a, b) in ours.encrypted.iter().zip(&direct.encrypted) {
        assert!(a.abs_diff(*b) <= 3, "record sizes {ours:?} vs {direct:?}");
    }
    // `handshake_bytes` ran the real client handshake to the end: the
    // client authenticated the server through the hybrid answer.
    drop(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_sharing_a_transport_key_accept_one_link() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("transport.toml");
    // A missing key file is a clear error, not a new key.
    let out = Command::new(bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--transport-key"])
        .arg(&key_file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("transport key") && err.contains("transport.toml"),
        "{err}"
    );
    std::fs::write(
        &key_file,
        format!("private_key = \"{}\"\n", hex::encode([0x42u8; 32])),
    )
    .unwrap();
    let key = key_file.display().to_string();
    let a = start(&["--transport-key", &key]).await;
    let b = start(&["--transport-key", &key]).await;
    let (la, lb) = (printed_link(&a), printed_link(&b));
    assert_eq!(la.server_key, lb.server_key, "one public key in both links");
    // A's link, pointed at B, works on B.
    let mut link = la.clone();
    link.servers = vec![Endpoint::direct("127.0.0.1", b.addr.port())];
    let (flight, _) = handshake_bytes(b.addr, &link)
        .await
        .expect("B completes the handshake for A's link");
    assert_eq!(flight[0], 0x16);
}
