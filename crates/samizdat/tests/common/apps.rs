//! The real `samizdat client` and the apps around it, all on 127.0.0.1: the
//! client started with its printed ports read back, a tiny web server, a
//! raw SOCKS5 CONNECT and curl.

use super::Proxy;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wire::link::Link;
use wire::tunnel::handshake::{ClientHandshake, UserCredential};

// === samizdat serve's output ===

/// The `samizdat://` link `serve` printed (the first one).
pub fn printed_link(proxy: &Proxy) -> Link {
    let line = proxy
        .link()
        .unwrap_or_else(|| panic!("serve printed no samizdat:// link: {:#?}", proxy.stdout));
    Link::parse(line).expect("the printed link parses")
}

/// A fresh samizdat hello for `link`, built as the client builds it
/// (Chrome's), and the handshake that checks the server's answer to it.
pub fn tunnel_hello(link: &Link) -> (ClientHandshake, Vec<u8>) {
    let mut fill = |b: &mut [u8]| samizdat::random::fill(b);
    let template = wire::browser::Template::builtin(wire::browser::Browser::Chrome);
    let built = template.build(&link.sni, &mut fill);
    let cred = UserCredential::from_secret(&link.secret.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    ClientHandshake::start(&built, &link.server_key, &cred, now, &mut fill).unwrap()
}

/// A loopback port nothing listens on (bound once, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// === samizdat client ===

/// A running `samizdat client` (see [`client`]).
pub type ClientProc = testkit::process::Running;

/// `samizdat client LINK` (SOCKS5 on an ephemeral port, the other ports
/// off, a fresh state directory), its log collected and echoed after
/// `client: `.
pub fn client(link: &Link) -> testkit::process::Client {
    super::client(link).collect_log(Some("client: "))
}

// === a web server ===

/// Deterministic body bytes for `/N` (so each size has one known hash).
pub fn body(n: usize) -> Vec<u8> {
    (0..n).map(body_byte).collect()
}

/// The byte at offset `i` of every [`body`].
pub fn body_byte(i: usize) -> u8 {
    (i * 7 + i / 251) as u8
}

pub fn sha(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// A tiny HTTP/1.1 server: `GET /N` answers N [`body`] bytes, then closes.
pub async fn web_server() -> SocketAddr {
    web_server_with(|path| body(path.trim_start_matches('/').parse().unwrap_or(0))).await
}

/// A tiny HTTP/1.1 server: every request gets 200 with `answer(path)` as
/// its body, then the connection closes.
pub async fn web_server_with(
    answer: impl Fn(&str) -> Vec<u8> + Send + Sync + 'static,
) -> SocketAddr {
    let answer = Arc::new(answer);
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            let answer = answer.clone();
            tokio::spawn(async move {
                let Some(head) = read_request(&mut s).await else {
                    return;
                };
                let text = String::from_utf8_lossy(&head);
                let body = answer(text.split_whitespace().nth(1).unwrap_or("/"));
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                if s.write_all(reply.as_bytes()).await.is_ok() {
                    let _ = s.write_all(&body).await;
                }
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// A web server for long downloads: `GET /N/FROM/RATE` sends bytes
/// FROM..N of the `N`-byte [`body`] at RATE bytes per second (0: as fast as
/// it goes), then closes; FROM lets an app resume with a range request.
#[allow(dead_code)]
pub async fn paced_web_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let Some(head) = read_request(&mut s).await else {
                    return;
                };
                let text = String::from_utf8_lossy(&head);
                let path = text.split_whitespace().nth(1).unwrap_or("/0/0/0");
                let p: Vec<usize> = path
                    .trim_start_matches('/')
                    .split('/')
                    .map(|x| x.parse().unwrap_or(0))
                    .collect();
                let n = p.first().copied().unwrap_or(0);
                let from = p.get(1).copied().unwrap_or(0).min(n);
                let rate = p.get(2).copied().unwrap_or(0);
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    n - from
                );
                if s.write_all(reply.as_bytes()).await.is_err() {
                    return;
                }
                let step = 64 * 1024;
                let mut at = from;
                while at < n {
                    let end = (at + step).min(n);
                    let chunk: Vec<u8> = (at..end).map(body_byte).collect();
                    if s.write_all(&chunk).await.is_err() {
                        return;
                    }
                    if rate > 0 {
                        let secs = (end - at) as f64 / rate as f64;
                        tokio::time::sleep(std::time::Duration::from_secs_f64(secs)).await;
                    }
                    at = end;
                }
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// Reads a request's head (and whatever came with it; 16 KiB or so at
/// most); `None` if the connection ends or fails first.
pub async fn read_request<S: AsyncRead + Unpin>(s: &mut S) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut b = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16384 {
        match s.read(&mut b).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&b[..n]),
        }
    }
    Some(head)
}

/// `GET /n` over an open stream; returns the body.
pub async fn get(mut s: TcpStream, n: usize) -> Vec<u8> {
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

// === apps ===

/// curl with `args` and at most 60 s; returns (exit status, stdout bytes,
/// stderr text).
pub async fn curl(args: &[String]) -> (i32, Vec<u8>, String) {
    curl_within(60, args).await
}

/// [`curl`] with at most `secs` seconds.
pub async fn curl_within(secs: u32, args: &[String]) -> (i32, Vec<u8>, String) {
    let out = tokio::process::Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", &secs.to_string()])
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
pub async fn socks_connect(socks: SocketAddr, host: &str, port: u16) -> (u8, TcpStream) {
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
