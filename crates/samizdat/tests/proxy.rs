//! The local proxy front-ends end to end on 127.0.0.1: real `curl` through
//! SOCKS5 and the HTTP proxy to a test-owned HTTP server via the direct
//! dialer, the egress policy refusing private destinations before any
//! connect, malformed and stalled handshakes, and the Telegram endpoint with
//! testkit's obfuscated2 client. Nothing here leaves 127.0.0.0/8.

use samizdat::client::frontends::{serve_http, serve_socks5, serve_telegram, telegram_link};
use samizdat::dial::{BoxIo, Destination, Dialer, OpenFuture};
use samizdat::serve::egress::{DirectDialer, EgressPolicy};
use std::net::SocketAddr;
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use testkit::client::{Client, Options};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wire::obfuscated2::Tag;
use wire::secret::{Key, Mode, Secret};

// === the test HTTP server ===

/// `n` deterministic bytes (an LCG), so a corrupted byte shows.
fn body(n: usize) -> Vec<u8> {
    let mut seed = 0x1234_5678u32;
    (0..n)
        .map(|_| {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (seed >> 16) as u8
        })
        .collect()
}

/// A tiny HTTP/1.1 server: `GET /bytes/N` answers N bytes of [`body`].
/// It counts connections and keeps every request head it saw.
struct Origin {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    heads: Arc<Mutex<Vec<String>>>,
}

async fn origin() -> Origin {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let heads = Arc::new(Mutex::new(Vec::new()));
    let (a, h) = (accepted.clone(), heads.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            a.fetch_add(1, Ordering::SeqCst);
            let h = h.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 1024];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 16384 {
                    match s.read(&mut b).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&b[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                h.lock().unwrap().push(head.clone());
                let n: usize = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|p| p.strip_prefix("/bytes/"))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                let resp =
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n");
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.write_all(&body(n)).await;
                let _ = s.shutdown().await;
            });
        }
    });
    Origin {
        addr,
        accepted,
        heads,
    }
}

// === proxies under test ===

/// A running front-end: its address, its shutdown and its serve task.
struct Proxy {
    addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Shuts down and checks the serve future returns promptly.
    async fn shutdown(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("serve returns after shutdown")
            .unwrap();
    }
}

fn loopback_dialer() -> Arc<dyn Dialer> {
    let policy = EgressPolicy::with_allow(vec!["127.0.0.0/8".parse().unwrap()]);
    Arc::new(DirectDialer::new(policy))
}

fn default_dialer() -> Arc<dyn Dialer> {
    Arc::new(DirectDialer::new(EgressPolicy::default()))
}

async fn listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    (l, a)
}

async fn socks(dialer: Arc<dyn Dialer>, auth: Option<(&str, &str)>) -> Proxy {
    let (l, addr) = listener().await;
    let stop = CancellationToken::new();
    let auth = auth.map(|(u, p)| (u.to_string(), p.to_string()));
    let task = tokio::spawn(serve_socks5(l, dialer, auth, stop.clone()));
    Proxy { addr, stop, task }
}

async fn http(dialer: Arc<dyn Dialer>) -> Proxy {
    let (l, addr) = listener().await;
    let stop = CancellationToken::new();
    let task = tokio::spawn(serve_http(l, dialer, stop.clone()));
    Proxy { addr, stop, task }
}

/// Runs curl with no proxy settings from the environment.
async fn curl(args: &[String]) -> Output {
    let mut cmd = tokio::process::Command::new("curl");
    for var in [
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "no_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
    ] {
        cmd.env_remove(var);
    }
    cmd.args([
        "--silent",
        "--show-error",
        "--max-time",
        "30",
        "--output",
        "-",
    ]);
    cmd.args(args);
    cmd.kill_on_drop(true);
    cmd.output()
        .await
        .expect("curl runs (apt-get install curl)")
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn assert_body(out: &Output, n: usize, what: &str) {
    assert!(
        out.status.success(),
        "{what}: curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), n, "{what}: body length");
    assert!(out.stdout == body(n), "{what}: body differs");
}

const SIZE: usize = 3 << 20;

// === SOCKS5 ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_through_socks5_by_name_and_by_address() {
    let o = origin().await;
    let p = socks(loopback_dialer(), None).await;
    let by_name = curl(&args(&[
        "--socks5-hostname",
        &p.addr.to_string(),
        &format!("http://localhost:{}/bytes/{SIZE}", o.addr.port()),
    ]))
    .await;
    assert_body(&by_name, SIZE, "--socks5-hostname localhost");
    let by_addr = curl(&args(&[
        "--socks5",
        &p.addr.to_string(),
        &format!("http://{}/bytes/{SIZE}", o.addr),
    ]))
    .await;
    assert_body(&by_addr, SIZE, "--socks5 127.0.0.1");
    assert_eq!(o.accepted.load(Ordering::SeqCst), 2);
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socks5_login() {
    let o = origin().await;
    let p = socks(loopback_dialer(), Some(("alice", "s3cret"))).await;
    let url = format!("http://{}/bytes/1000", o.addr);
    let good = curl(&args(&[
        "-x",
        &format!("socks5h://alice:s3cret@{}", p.addr),
        &url,
    ]))
    .await;
    assert_body(&good, 1000, "right password");
    let bad = curl(&args(&[
        "-x",
        &format!("socks5h://alice:wrong@{}", p.addr),
        &url,
    ]))
    .await;
    assert!(!bad.status.success(), "wrong password must fail");
    assert!(bad.stdout.is_empty());
    let none = curl(&args(&["-x", &format!("socks5h://{}", p.addr), &url])).await;
    assert!(!none.status.success(), "no credentials must fail");
    assert_eq!(
        o.accepted.load(Ordering::SeqCst),
        1,
        "only the good login connected"
    );

    // The same, raw: the RFC 1929 answers.
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(&[5, 1, 0]).await.unwrap();
    assert_eq!(read_all(&mut s).await, [5, 0xff], "no-auth offer refused");
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(&[5, 2, 0, 2]).await.unwrap();
    s.write_all(&[1, 5, b'a', b'l', b'i', b'c', b'e', 1, b'x'])
        .await
        .unwrap();
    assert_eq!(
        read_all(&mut s).await,
        [5, 2, 1, 1],
        "bad password answered 01 01"
    );
    p.shutdown().await;
}

/// Reads until the peer closes (bounded by a timeout).
async fn read_all(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut out))
        .await
        .expect("the proxy closes")
        .ok();
    out
}

/// A raw SOCKS5 CONNECT with no auth; returns everything the proxy sent.
async fn raw_connect(proxy: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(&[5, 1, 0]).await.unwrap();
    s.write_all(request).await.unwrap();
    read_all(&mut s).await
}

fn req_addr(addr: SocketAddr) -> Vec<u8> {
    let mut r = vec![5, 1, 0];
    match addr {
        SocketAddr::V4(a) => {
            r.push(1);
            r.extend_from_slice(&a.ip().octets());
        }
        SocketAddr::V6(a) => {
            r.push(4);
            r.extend_from_slice(&a.ip().octets());
        }
    }
    r.extend_from_slice(&addr.port().to_be_bytes());
    r
}

fn req_name(name: &str, port: u16) -> Vec<u8> {
    let mut r = vec![5, 1, 0, 3, name.len() as u8];
    r.extend_from_slice(name.as_bytes());
    r.extend_from_slice(&port.to_be_bytes());
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_egress_refuses_private_destinations_before_connecting() {
    let o = origin().await;
    let port = o.addr.port();
    let p = socks(default_dialer(), None).await;
    let refused = [
        req_addr(SocketAddr::from(([127, 0, 0, 1], port))),
        req_addr(SocketAddr::from(([10, 0, 0, 1], port))),
        req_addr(SocketAddr::from(([169, 254, 169, 254], port))),
        req_addr(format!("[::1]:{port}").parse().unwrap()),
        req_addr(format!("[::ffff:127.0.0.1]:{port}").parse().unwrap()),
        req_name("localhost", port),
        req_name("127.0.0.1", port),
    ];
    for r in refused {
        let t = std::time::Instant::now();
        let reply = raw_connect(p.addr, &r).await;
        assert_eq!(
            reply.len(),
            12,
            "method answer + 10-byte reply for {r:?}: {reply:?}"
        );
        assert_eq!(&reply[..2], &[5, 0]);
        assert_eq!(reply[3], 0x02, "not allowed by ruleset for {r:?}");
        // Refused without a connect attempt: no 10 s connect timeout.
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "{r:?} took {:?}",
            t.elapsed()
        );
    }
    // curl reports SOCKS reply 2 ("connection not allowed by ruleset");
    // curl 7.88 prints the code, not the words.
    let out = curl(&args(&[
        "--socks5-hostname",
        &p.addr.to_string(),
        &format!("http://localhost:{port}/"),
    ]))
    .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(97), "CURLE_PROXY: {err}");
    assert!(
        err.contains("not allowed") || err.contains("SOCKS5 connection to localhost. (2)"),
        "curl said: {err}"
    );
    assert_eq!(
        o.accepted.load(Ordering::SeqCst),
        0,
        "nothing reached 127.0.0.1"
    );
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_socks_is_answered_and_closed() {
    let p = socks(default_dialer(), None).await;
    let cases: [(&[u8], &[u8]); 7] = [
        // SOCKS4: not ours, closed without a word.
        (&[4, 1, 0, 80, 127, 0, 0, 1, 0], &[]),
        (b"GET / HTTP/1.1\r\n\r\n", &[]),
        // No methods offered.
        (&[5, 0], &[5, 0xff]),
        // Only username/password offered while none is configured.
        (&[5, 1, 2], &[5, 0xff]),
        // BIND and UDP ASSOCIATE: command not supported.
        (
            &[5, 1, 0, 5, 2, 0, 1, 127, 0, 0, 1, 0, 80],
            &[5, 0, 5, 7, 0, 1, 0, 0, 0, 0, 0, 0],
        ),
        (
            &[5, 1, 0, 5, 3, 0, 1, 127, 0, 0, 1, 0, 80],
            &[5, 0, 5, 7, 0, 1, 0, 0, 0, 0, 0, 0],
        ),
        // Unknown address type.
        (
            &[5, 1, 0, 5, 1, 0, 9, 1, 2],
            &[5, 0, 5, 8, 0, 1, 0, 0, 0, 0, 0, 0],
        ),
    ];
    for (send, want) in cases {
        let mut s = TcpStream::connect(p.addr).await.unwrap();
        s.write_all(send).await.unwrap();
        assert_eq!(read_all(&mut s).await, want, "after {send:?}");
    }
    // A request with a bad version after a good greeting: general failure.
    let reply = raw_connect(p.addr, &[4, 1, 0, 1, 1, 1, 1, 1, 0, 80]).await;
    assert_eq!(reply, [5, 0, 5, 1, 0, 1, 0, 0, 0, 0, 0, 0]);
    p.shutdown().await;
}

// Real time: with tokio's paused clock the test's own timeout could be
// reached before the server has even accepted (real sockets), which made
// this test flaky under load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_greeting_is_closed_at_the_deadline() {
    let p = socks(default_dialer(), None).await;
    // Before connecting: the server's deadline starts when it accepts,
    // which a clock started after our write would miss by a little.
    let start = tokio::time::Instant::now();
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(&[5, 2, 0]).await.unwrap(); // one method byte missing
    let mut b = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut b))
        .await
        .expect("closed before the test's own timeout")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(10) && waited < Duration::from_secs(15),
        "closed after {waited:?}"
    );
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_relays() {
    // An upstream that accepts and never answers.
    let (hold, hold_addr) = listener().await;
    let held = tokio::spawn(async move {
        let (s, _) = hold.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(s);
    });
    let p = socks(loopback_dialer(), None).await;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(&[5, 1, 0]).await.unwrap();
    s.write_all(&req_addr(hold_addr)).await.unwrap();
    let mut reply = [0u8; 12];
    s.read_exact(&mut reply).await.unwrap();
    assert_eq!(reply[3], 0, "connected");
    p.shutdown().await;
    let mut b = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b))
        .await
        .expect("relay closed by shutdown")
        .unwrap_or(0);
    assert_eq!(n, 0);
    held.abort();
}

// === HTTP proxy ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_through_the_http_proxy_plain_and_connect() {
    let o = origin().await;
    let p = http(loopback_dialer()).await;
    let proxy = format!("http://{}", p.addr);
    let url = format!("http://{}/bytes/{SIZE}", o.addr);
    let plain = curl(&args(&["-x", &proxy, &url])).await;
    assert_body(&plain, SIZE, "absolute-form GET");
    let tunnel = curl(&args(&["-p", "-x", &proxy, &url])).await;
    assert_body(&tunnel, SIZE, "CONNECT");
    // A raw absolute-form request, client side left open: the whole
    // response, then the end of the stream (one request per connection).
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    let req = format!(
        "GET http://{}/bytes/100 HTTP/1.1\r\nHost: x\r\n\r\n",
        o.addr
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let answer = read_all(&mut s).await;
    assert!(answer.starts_with(b"HTTP/1.1 200 OK\r\n"));
    assert!(answer.ends_with(&body(100)));
    let heads = o.heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 3);
    let forwarded = &heads[0];
    assert!(
        forwarded.starts_with(&format!("GET /bytes/{SIZE} HTTP/1.1\r\n")),
        "origin-form: {forwarded}"
    );
    assert!(
        !forwarded.to_ascii_lowercase().contains("proxy-"),
        "{forwarded}"
    );
    assert!(forwarded.contains("Connection: close\r\n"), "{forwarded}");
    assert!(
        forwarded.contains(&format!("Host: {}\r\n", o.addr)),
        "{forwarded}"
    );
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_proxy_refuses_in_http_terms() {
    let o = origin().await;
    let p = http(default_dialer()).await;
    let proxy = format!("http://{}", p.addr);
    let url = format!("http://{}/bytes/10", o.addr);
    let plain = curl(&args(&["-x", &proxy, "-w", "%{http_code}", &url])).await;
    let text = String::from_utf8_lossy(&plain.stdout);
    assert!(text.ends_with("403"), "{text}");
    assert!(text.contains("not allowed"), "{text}");
    let tunnel = curl(&args(&["-p", "-x", &proxy, &url])).await;
    assert!(!tunnel.status.success());
    let err = String::from_utf8_lossy(&tunnel.stderr);
    assert!(err.contains("403"), "curl said: {err}");
    assert_eq!(o.accepted.load(Ordering::SeqCst), 0);

    let cases: [(&[u8], &str); 5] = [
        (b"GARBAGE\r\n\r\n", "HTTP/1.1 400 "),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 400 "),
        (
            b"GET https://example.com/ HTTP/1.1\r\n\r\n",
            "HTTP/1.1 400 ",
        ),
        (b"CONNECT example.com HTTP/1.1\r\n\r\n", "HTTP/1.1 400 "),
        (b"\x16\x03\x01\x02\x00\x01", "HTTP/1.1 400 "),
    ];
    for (send, want) in cases {
        let mut s = TcpStream::connect(p.addr).await.unwrap();
        s.write_all(send).await.unwrap();
        let got = String::from_utf8(read_all(&mut s).await).unwrap();
        assert!(got.starts_with(want), "{send:?}: {got}");
        let (_, text) = got.split_once("\r\n\r\n").unwrap();
        assert!(
            text.ends_with('\n') && text.lines().count() == 1,
            "one-line body: {text:?}"
        );
    }
    // A head that never ends within 16 KiB.
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    let mut big = b"GET http://x/ HTTP/1.1\r\nX: ".to_vec();
    big.resize(20_000, b'a');
    let _ = s.write_all(&big).await;
    let got = String::from_utf8(read_all(&mut s).await).unwrap();
    assert!(got.starts_with("HTTP/1.1 431 "), "{got}");
    p.shutdown().await;
}

// === Telegram endpoint ===

/// Records every destination and echoes the stream (`first` included).
#[derive(Default)]
struct EchoDialer {
    opened: Mutex<Vec<Destination>>,
}

impl Dialer for EchoDialer {
    fn open(&self, dest: Destination, first: Vec<u8>) -> OpenFuture<'_> {
        self.opened.lock().unwrap().push(dest);
        Box::pin(async move {
            let (ours, theirs) = tokio::io::duplex(64 * 1024);
            tokio::spawn(async move {
                let (mut r, mut w) = tokio::io::split(theirs);
                if w.write_all(&first).await.is_ok() {
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                }
            });
            Ok(Box::new(ours) as BoxIo)
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram_endpoint_ends_obfuscated2_and_dials_the_dc() {
    let key = Key(*b"local-tg-secret!");
    let dialer = Arc::new(EchoDialer::default());
    let (l, addr) = listener().await;
    let stop = CancellationToken::new();
    let task = tokio::spawn(serve_telegram(l, dialer.clone(), key.clone(), stop.clone()));
    let p = Proxy { addr, stop, task };

    let link = telegram_link(addr.port(), &key);
    assert_eq!(
        link,
        format!(
            "tg://proxy?server=127.0.0.1&port={}&secret=dd{}",
            addr.port(),
            hex::encode(key.0)
        )
    );
    let secret = Secret::parse(link.rsplit_once("secret=").unwrap().1).unwrap();
    assert_eq!(secret.mode, Mode::Padded);

    let mut c = Client::connect(
        addr,
        &secret,
        &Options {
            dc: 2,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    for len in [4, 1024, 256 * 1024] {
        let payload: Vec<u8> = body(len);
        c.send(&payload).await.unwrap();
        let back = tokio::time::timeout(Duration::from_secs(10), c.recv())
            .await
            .expect("echo in time")
            .unwrap();
        assert!(back == payload, "echo of {len} bytes differs");
    }
    // The key as a plain secret works too, with the app's choice of framing.
    let plain = Secret {
        key: key.clone(),
        mode: Mode::Plain,
        domain: None,
    };
    let opts = Options {
        tag: Tag::Abridged,
        dc: -4,
        ..Default::default()
    };
    let mut c2 = Client::connect(addr, &plain, &opts).await.unwrap();
    c2.send(b"abcdefgh").await.unwrap();
    assert_eq!(c2.recv().await.unwrap(), b"abcdefgh");
    assert_eq!(
        *dialer.opened.lock().unwrap(),
        [
            Destination::Telegram {
                dc: 2,
                tag: Tag::Padded
            },
            Destination::Telegram {
                dc: -4,
                tag: Tag::Abridged
            },
        ]
    );

    // A wrong secret: closed, nothing dialled.
    let wrong = Secret::parse("dd00112233445566778899aabbccddeeff").unwrap();
    let mut bad = Client::connect(addr, &wrong, &Options::default())
        .await
        .unwrap();
    let _ = bad.send(b"abcd").await;
    let closed = tokio::time::timeout(Duration::from_secs(5), bad.recv())
        .await
        .expect("closed promptly");
    assert!(closed.is_err());
    assert_eq!(
        dialer.opened.lock().unwrap().len(),
        2,
        "no dial for a wrong secret"
    );
    p.shutdown().await;
}
