//! Fronting (docs/fronting.md): a real nginx (scripts/nginx-front.sh)
//! terminates TLS on 127.0.0.1 and passes one path's WebSockets to a real
//! `samizdat serve --ws-listen`; the real `samizdat client`, whose link's
//! only server is the `wss://` front, carries curl's traffic. Every address
//! is on 127.0.0.1.

use crate::common;

use common::apps::{
    body, curl, free_port, printed_link, sha, tunnel_hello, web_server, ClientProc,
};
use common::ws::{client_frame, server_frame, upgrade};
use common::{start, Proxy};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wire::link::{Endpoint, Link};

// === nginx ===

/// A running nginx front; stopped on drop.
struct Front {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Front {
    /// Starts nginx on `port` in front of `upstream`, passing `path`.
    async fn start(port: u16, upstream: SocketAddr, path: &str) -> Front {
        let installed = Command::new("sh")
            .args(["-c", "command -v nginx || test -x /usr/sbin/nginx"])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            installed,
            "fronting tests need a real nginx: apt-get install -y nginx-light openssl (Debian \
             packages). This test does not skip."
        );
        let dir = tempfile::tempdir().unwrap();
        let script = format!(
            "{}/../../scripts/nginx-front.sh",
            env!("CARGO_MANIFEST_DIR")
        );
        let mut child = Command::new("bash")
            .arg(script)
            .arg(dir.path())
            .arg(port.to_string())
            .arg(upstream.to_string())
            .arg(path)
            .env("FRONT_DOMAIN", "localhost")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run scripts/nginx-front.sh");
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
                panic!("nginx-front.sh exited with {status} before nginx listened:\n{log}");
            }
            if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                break;
            }
            assert!(Instant::now() < end, "nginx did not listen within 30 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Front { child, port, dir }
    }

    fn ca(&self) -> std::path::PathBuf {
        self.dir.path().join("cert.pem")
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        // SIGTERM first: nginx's master then stops its workers.
        if !testkit::process::terminate(&mut self.child, Duration::from_secs(5)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// === samizdat serve and client ===

/// `serve` with the WebSocket listener and `--ws-public` naming the front.
struct Setup {
    /// Kept running for the test.
    _proxy: Proxy,
    /// The WebSocket listener (plain HTTP).
    ws: SocketAddr,
    /// Its path (derived from the key: no --ws-path is given).
    path: String,
    /// The link `serve` printed.
    link: Link,
    front: Front,
}

async fn setup() -> Setup {
    let nginx_port = free_port();
    let public = format!("wss://localhost:{nginx_port}");
    let proxy = start(&[
        "--egress-allow",
        "127.0.0.0/8",
        "--ws-listen",
        "127.0.0.1:0",
        "--ws-public",
        &public,
        "--handshake-timeout",
        "5s",
    ])
    .await;
    let (ws, path) = proxy
        .stdout
        .iter()
        .find_map(|l| l.strip_prefix("WebSocket listener on http://"))
        .map(|rest| {
            let (addr, tail) = rest.split_once('/').unwrap();
            let path = format!("/{}", tail.split_whitespace().next().unwrap());
            (addr.parse::<SocketAddr>().unwrap(), path)
        })
        .unwrap_or_else(|| panic!("no WebSocket listener line: {:#?}", proxy.stdout));
    let link = printed_link(&proxy);
    let front = Front::start(nginx_port, ws, &path).await;
    Setup {
        _proxy: proxy,
        ws,
        path,
        link,
        front,
    }
}

/// `samizdat client LINK` with SOCKS5 only, trusting the CA `ca`.
fn start_client(link: &Link, ca: &std::path::Path) -> ClientProc {
    let env = [
        ("SAMIZDAT_TEST_CA", ca.to_str().unwrap()),
        ("RUST_LOG", "info"),
    ];
    let mut client = common::apps::client(link);
    for (k, v) in env {
        client = client.env(k, v);
    }
    client.start().unwrap()
}

/// The link with `server` as its only server.
fn only(link: &Link, server: Endpoint) -> Link {
    let mut link = link.clone();
    link.servers = vec![server];
    link
}

/// A DER certificate as PEM.
fn pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    )
}

// === tests ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_through_nginx_and_a_websocket_arrives_intact() {
    let web = web_server().await;
    let s = setup().await;
    // serve printed the front as an alternative server, with the derived path.
    let wss = s
        .link
        .servers
        .iter()
        .find(|e| e.ws_path.is_some())
        .cloned()
        .unwrap_or_else(|| panic!("no wss:// alt in the printed link: {}", s.link));
    assert_eq!(wss.host, "localhost");
    assert_eq!(wss.port, s.front.port);
    assert_eq!(wss.ws_path.as_deref(), Some(s.path.as_str()));
    assert!(
        s.path.len() > 16,
        "a random-looking default path: {}",
        s.path
    );

    let client = start_client(&only(&s.link, wss), &s.front.ca());
    let size = 8 << 20;
    let want = sha(&body(size));
    let url = format!("http://127.0.0.1:{}/{size}", web.port());
    let fetch = |socks: SocketAddr| {
        let url = url.clone();
        async move {
            let started = Instant::now();
            let (code, out, err) =
                curl(&["--socks5-hostname".into(), socks.to_string(), url]).await;
            (code, out, err, started.elapsed())
        }
    };
    // The first fetch includes connecting; the second is the carrier alone.
    for round in ["first", "second"] {
        let (code, out, err, took) = fetch(client.socks).await;
        assert_eq!(code, 0, "curl through the front: {err}");
        assert_eq!(out.len(), size);
        assert_eq!(sha(&out), want, "the body changed on the way");
        eprintln!(
            "8 MiB through nginx + WebSocket ({round} fetch): {took:?} ({:.1} MiB/s)",
            8.0 / took.as_secs_f64()
        );
    }
    // For comparison: the same server reached directly (TCP).
    let direct = start_client(&only(&s.link, s.link.servers[0].clone()), &s.front.ca());
    for round in ["first", "second"] {
        let (code, out, err, took) = fetch(direct.socks).await;
        assert_eq!(code, 0, "curl direct: {err}");
        assert_eq!(sha(&out), want);
        eprintln!(
            "8 MiB direct ({round} fetch): {took:?} ({:.1} MiB/s)",
            8.0 / took.as_secs_f64()
        );
    }
    drop(direct);
    // Several streams at once share the one WebSocket.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let socks = client.socks.to_string();
        let url = format!("http://127.0.0.1:{}/{}", web.port(), 1 << 20);
        tasks.spawn(async move { curl(&["--socks5".into(), socks, url]).await });
    }
    let want = sha(&body(1 << 20));
    while let Some(r) = tasks.join_next().await {
        let (code, out, err) = r.unwrap();
        assert_eq!(code, 0, "{err}");
        assert_eq!(sha(&out), want);
    }
    // nginx logs a WebSocket when it ends: stop the client.
    drop(client);
    let log = s.front.dir.path().join("access.log");
    let upgraded = format!("GET {} HTTP/1.1\" 101", s.path);
    assert!(
        common::eventually(Duration::from_secs(5), || std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains(&upgraded))
        .await,
        "nginx upgraded our path: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_path_gets_404_and_the_client_says_so() {
    let web = web_server().await;
    let s = setup().await;
    let wrong = Endpoint {
        host: "localhost".into(),
        port: s.front.port,
        ws_path: Some("/not-the-path".into()),
    };
    let client = start_client(&only(&s.link, wrong), &s.front.ca());
    let (code, _, _) = curl(&[
        "--socks5".into(),
        client.socks.to_string(),
        format!("http://127.0.0.1:{}/10", web.port()),
    ])
    .await;
    assert_ne!(code, 0, "nothing gets through a wrong path");
    assert!(
        common::eventually(Duration::from_secs(5), || client
            .logged("the front answered HTTP 404 for /not-the-path: wrong path?"))
        .await,
        "the client names the 404: {:#?}",
        client.log()
    );
    // A certificate the client does not trust is named as such.
    let right = Endpoint {
        host: "localhost".into(),
        port: s.front.port,
        ws_path: Some(s.path.clone()),
    };
    let other_ca = tempfile::NamedTempFile::new().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(other_ca.path(), pem(cert.cert.der())).unwrap();
    let client = start_client(&only(&s.link, right), other_ca.path());
    let (code, _, _) = curl(&[
        "--socks5".into(),
        client.socks.to_string(),
        format!("http://127.0.0.1:{}/10", web.port()),
    ])
    .await;
    assert_ne!(code, 0);
    assert!(
        common::eventually(Duration::from_secs(5), || client
            .logged("TLS certificate not trusted"))
        .await,
        "the client names the certificate: {:#?}",
        client.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_hello_over_a_websocket_is_refused() {
    let s = setup().await;
    let (mut hs, hello) = tunnel_hello(&s.link);
    // First time: the server answers with its flight, which completes our
    // handshake (so this really is the transport, inside the WebSocket).
    let mut ws = TcpStream::connect(s.ws).await.unwrap();
    assert_eq!(upgrade(&mut ws, &s.path).await, 101);
    ws.write_all(&client_frame(&hello)).await.unwrap();
    let mut flight = Vec::new();
    let done = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let (op, payload) = server_frame(&mut ws).await.expect("the flight");
            assert_eq!(op, 2, "binary frames");
            flight.extend(payload);
            match hs.read_server_flight(&flight).unwrap() {
                wire::tunnel::handshake::Progress::NeedMore => continue,
                wire::tunnel::handshake::Progress::Done { .. } => break,
            }
        }
    })
    .await;
    assert!(done.is_ok(), "the server's flight completes the handshake");
    drop(ws);
    // The same hello again: closed, no flight.
    let mut ws = TcpStream::connect(s.ws).await.unwrap();
    assert_eq!(upgrade(&mut ws, &s.path).await, 101);
    ws.write_all(&client_frame(&hello)).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), async {
        let mut ops = Vec::new();
        while let Some((op, _)) = server_frame(&mut ws).await {
            ops.push(op);
            if op == 8 {
                break;
            }
        }
        ops
    })
    .await
    .expect("the replay is closed within 10 s");
    assert!(
        !answer.contains(&2),
        "no binary answer to a replayed hello: {answer:?}"
    );
    // Garbage instead of a hello is closed the same way.
    let mut ws = TcpStream::connect(s.ws).await.unwrap();
    assert_eq!(upgrade(&mut ws, &s.path).await, 101);
    ws.write_all(&client_frame(&[0x16, 3, 1, 0, 4, 1, 2, 3, 4]))
        .await
        .unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), server_frame(&mut ws))
        .await
        .expect("garbage is closed within 10 s");
    assert!(matches!(end, None | Some((8, _))), "{end:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_are_not_our_upgrade_get_404() {
    let s = setup().await;
    let addr = s.ws;
    let ask = move |req: String| async move {
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(req.as_bytes()).await.unwrap();
        let mut all = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut all))
            .await
            .expect("an answer and close within 10 s")
            .unwrap();
        String::from_utf8_lossy(&all).into_owned()
    };
    let root = ask("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".into()).await;
    assert!(root.starts_with("HTTP/1.1 404 Not Found\r\n"), "{root}");
    let plain = ask(format!(
        "GET {} HTTP/1.1\r\nHost: localhost\r\n\r\n",
        s.path
    ))
    .await;
    assert!(plain.starts_with("HTTP/1.1 404 Not Found\r\n"), "{plain}");
    let other = {
        let mut c = TcpStream::connect(s.ws).await.unwrap();
        upgrade(&mut c, "/other").await
    };
    assert_eq!(other, 404);
    let huge = ask(format!(
        "GET / HTTP/1.1\r\nHost: localhost\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(20_000)
    ))
    .await;
    assert!(huge.starts_with("HTTP/1.1 400 "), "{huge}");
    // Through nginx, a plain request for our path reaches us and gets the
    // same 404 (curl trusts the front's certificate via --cacert).
    let (code, out, err) = curl(&[
        "--cacert".into(),
        s.front.ca().display().to_string(),
        "--write-out".into(),
        "%{http_code}".into(),
        format!("https://localhost:{}{}", s.front.port, s.path),
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(String::from_utf8_lossy(&out).ends_with("404"), "{out:?}");
    // A silent connection is closed at the handshake deadline.
    let mut c = TcpStream::connect(s.ws).await.unwrap();
    let mut b = [0u8; 1];
    let r = tokio::time::timeout(Duration::from_secs(15), c.read(&mut b)).await;
    assert!(matches!(r, Ok(Ok(0)) | Ok(Err(_))), "closed: {r:?}");
}
