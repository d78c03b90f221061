//! End to end through the samizdat transport: the real `samizdat client`
//! binary in front of the real `samizdat serve` binary, with curl, a raw
//! SOCKS5 client, the Telegram test client and probers as the apps. Every
//! address is on 127.0.0.1.

mod common;

use common::{bin, eventually, start, start_with, Proxy};
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use testkit::client::{Client, Options};
use testkit::fake_cover::CoverKind;
use testkit::fake_dc::DcEvent;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wire::link::{Endpoint, Link};
use wire::obfuscated2::Tag;

/// The `samizdat://` link `serve` printed.
fn printed_link(proxy: &Proxy) -> Link {
    let line = proxy
        .stdout
        .iter()
        .find_map(|l| {
            l.trim()
                .strip_prefix("samizdat://")
                .map(|_| l.trim().to_string())
        })
        .unwrap_or_else(|| panic!("serve printed no samizdat:// link: {:#?}", proxy.stdout));
    Link::parse(&line).expect("the printed link parses")
}

/// A running `samizdat client`.
struct ClientProc {
    child: Child,
    socks: SocketAddr,
    http: SocketAddr,
    telegram_link: String,
    _state: tempfile::TempDir,
}

impl Drop for ClientProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ClientProc {
    fn telegram(&self) -> (SocketAddr, wire::secret::Secret) {
        let query = self.telegram_link.split_once('?').unwrap().1;
        let (mut port, mut secret) = (None, None);
        for pair in query.split('&') {
            match pair.split_once('=').unwrap() {
                ("port", p) => port = Some(p.parse::<u16>().unwrap()),
                ("secret", s) => secret = Some(wire::secret::Secret::parse(s).unwrap()),
                _ => {}
            }
        }
        (
            SocketAddr::from(([127, 0, 0, 1], port.unwrap())),
            secret.unwrap(),
        )
    }
}

/// Starts `samizdat client LINK` on ephemeral loopback ports.
fn start_client(link: &Link) -> ClientProc {
    let state = tempfile::tempdir().unwrap();
    let mut child = Command::new(bin())
        .args(["client", &link.to_string()])
        .args(["--socks", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .args(["--telegram", "127.0.0.1:0", "--state-dir"])
        .arg(state.path())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn samizdat client");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let (mut socks, mut http, mut telegram_link) = (None, None, None);
    while socks.is_none() || http.is_none() || telegram_link.is_none() {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("samizdat client printed nothing for 20 s");
        if let Some(a) = line.strip_prefix("SOCKS5 proxy on ") {
            socks = Some(a.parse().unwrap());
        } else if let Some(a) = line.strip_prefix("HTTP proxy on ") {
            http = Some(a.parse().unwrap());
        } else if line.trim().starts_with("tg://proxy?") {
            telegram_link = Some(line.trim().to_string());
        }
    }
    ClientProc {
        child,
        socks: socks.unwrap(),
        http: http.unwrap(),
        telegram_link: telegram_link.unwrap(),
        _state: state,
    }
}

/// Deterministic body bytes for `/N` (so each size has one known hash).
fn body(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// A tiny HTTP/1.1 server: `GET /N` answers N body bytes, then closes.
async fn web_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16384 {
                    match s.read(&mut b).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&b[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&head);
                let path = text.split_whitespace().nth(1).unwrap_or("/0");
                let n: usize = path.trim_start_matches('/').parse().unwrap_or(0);
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {n}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n"
                );
                if s.write_all(reply.as_bytes()).await.is_ok() {
                    let _ = s.write_all(&body(n)).await;
                }
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// curl with `args`; returns (exit status, stdout bytes, stderr text).
async fn curl(args: &[String]) -> (i32, Vec<u8>, String) {
    let out = tokio::process::Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "60"])
        .args(args)
        .output()
        .await
        .expect("curl is installed (apt-get install curl)");
    (
        out.status.code().unwrap_or(-1),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A raw SOCKS5 CONNECT: returns the reply code and, on success, the stream.
async fn socks_connect(socks: SocketAddr, host: &str, port: u16) -> (u8, TcpStream) {
    let mut s = TcpStream::connect(socks).await.unwrap();
    s.write_all(&[5, 1, 0]).await.unwrap();
    let mut m = [0u8; 2];
    s.read_exact(&mut m).await.unwrap();
    assert_eq!(m, [5, 0], "no-auth method accepted");
    let mut req = vec![5, 1, 0];
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(v4)) => {
            req.push(1);
            req.extend(v4.octets());
        }
        Ok(std::net::IpAddr::V6(v6)) => {
            req.push(4);
            req.extend(v6.octets());
        }
        Err(_) => {
            req.push(3);
            req.push(host.len() as u8);
            req.extend(host.as_bytes());
        }
    }
    req.extend(port.to_be_bytes());
    s.write_all(&req).await.unwrap();
    let mut head = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(30), s.read_exact(&mut head))
        .await
        .expect("SOCKS reply within 30 s")
        .unwrap();
    let rest = match head[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        3 => {
            let mut n = [0u8; 1];
            s.read_exact(&mut n).await.unwrap();
            n[0] as usize + 2
        }
        other => panic!("bad ATYP {other} in reply"),
    };
    let mut skip = vec![0u8; rest];
    s.read_exact(&mut skip).await.unwrap();
    (head[1], s)
}

/// GET /n over an open stream; returns the body.
async fn get(mut s: TcpStream, n: usize) -> Vec<u8> {
    s.write_all(format!("GET /{n} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).await.unwrap();
    let at = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("HTTP head")
        + 4;
    all.split_off(at)
}

fn sha(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
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
            format!("http://{}", client.http),
            url_ip.clone(),
        ],
        // -p forces CONNECT through the HTTP proxy.
        vec![
            "-p".into(),
            "-x".into(),
            format!("http://{}", client.http),
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
        format!("http://{}", client.http),
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
    let (addr, dd) = client.telegram();
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
    let other = {
        let built = wire::browser::Template::builtin(wire::browser::Browser::Chrome)
            .build(&link.sni, &mut |b| getrandom::fill(b).unwrap());
        let cred = wire::tunnel::handshake::UserCredential::from_secret(&link.secret.0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        wire::tunnel::handshake::ClientHandshake::start(
            &built.record,
            &wrong_key.server_key,
            &cred,
            now,
            &mut |b| getrandom::fill(b).unwrap(),
        )
        .unwrap()
        .1
    };
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
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut link = printed_link(&proxy);
    link.servers.insert(0, Endpoint::direct("127.0.0.1", dead));
    let client = start_client(&link);
    let (code, s) = socks_connect(client.socks, "127.0.0.1", web.port()).await;
    assert_eq!(code, 0, "the second server carried the stream");
    assert_eq!(get(s, 5000).await, body(5000));
}

#[path = "differential/nginx.rs"]
mod nginx;

/// Runs the client side of the handshake against `addr`; returns the
/// server's flight bytes (exactly what the handshake consumed) and the
/// client's reply.
async fn handshake_bytes(addr: SocketAddr, link: &Link) -> Option<(Vec<u8>, Vec<u8>)> {
    use wire::tunnel::handshake::{ClientHandshake, Progress, UserCredential};
    let built = wire::browser::Template::builtin(wire::browser::Browser::Chrome)
        .build(&link.sni, &mut |b| getrandom::fill(b).unwrap());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (mut hs, hello) = ClientHandshake::start(
        &built.record,
        &link.server_key,
        &UserCredential::from_secret(&link.secret.0),
        now,
        &mut |b| getrandom::fill(b).unwrap(),
    )
    .unwrap();
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
    let state = tempfile::tempdir().unwrap();
    let (child, addr, stdout) = common::spawn(Command::new(bin()).args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--secret",
        common::KEY,
        "--domain",
        common::DOMAIN,
        "--cover",
        &cover.addr.to_string(),
        "--state-dir",
        &state.path().display().to_string(),
    ]))
    .await;
    let child = scopeguard(child);
    let link = stdout
        .iter()
        .find_map(|l| Link::parse(l.trim()).ok())
        .expect("a samizdat:// link");
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

/// Kills the child when the test ends, however it ends.
struct Guard(Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
fn scopeguard(child: Child) -> Guard {
    Guard(child)
}
