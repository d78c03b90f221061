//! The fleet tests' harness: a `redis-server` of each test's own, the
//! `samizdat serve` instances of a fleet (testkit's [`Serve`] with a shared
//! Redis), and the clients, probes and Redis reads the tests use.

pub(crate) use crate::common;

pub use common::apps::tunnel_hello;
pub use common::ws::{client_frame, server_frame, upgrade};
pub use common::*;
pub use std::io::{Read, Write};
pub use std::net::SocketAddr;
pub use std::path::Path;
pub use std::process::{Child, Command, Stdio};
pub use std::time::{Duration, Instant};
pub use testkit::client::{Client, Options};
pub use testkit::fake_cover::CoverKind;
pub use testkit::process::Served;
pub use tokio::io::{AsyncReadExt, AsyncWriteExt};
pub use tokio::net::{TcpSocket, TcpStream};
pub use wire::link::Link;
pub use wire::obfuscated2::Tag;
pub use wire::secret::Secret;

pub const ALICE: &str = "b8fceb1cd98001d9089a53e9d6cd3e77";
pub const BOB: &str = "a77ae1508e507ef848128d2c83c72f26";
pub const CAROL: &str = "abec222375c47b0e8e44f4c0b8c159c6";

// === Redis ===

/// A `redis-server` of the test's own.
pub struct Redis {
    pub child: Option<Child>,
    pub port: u16,
    pub dir: tempfile::TempDir,
    /// More `redis-server` arguments (TLS, password).
    pub extra: Vec<String>,
}

impl Redis {
    /// Starts one, or returns `None` (after saying so) when `redis-server`
    /// is not installed and this is not CI.
    pub fn start() -> Option<Redis> {
        Redis::start_with(|_| Vec::new())
    }

    /// [`Redis::start`] with more arguments, made from its directory.
    pub fn start_with(extra: impl FnOnce(&Path) -> Vec<String>) -> Option<Redis> {
        let mut r = Redis::reserve(extra)?;
        r.restart();
        Some(r)
    }

    /// A port and a directory for a server not started yet.
    pub fn reserve(extra: impl FnOnce(&Path) -> Vec<String>) -> Option<Redis> {
        let present = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !present {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "redis-server is missing in CI: scripts/test installs the redis-server package"
                );
            }
            eprintln!(
                "\n!!! SKIPPED: redis-server is not installed; the fleet tests did not run.\n\
                 !!! Install it (apt-get install redis-server) or run scripts/test.\n"
            );
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let extra = extra(dir.path());
        Some(Redis {
            child: None,
            port,
            dir,
            extra,
        })
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// (Re)starts the server on the same port, empty.
    pub fn restart(&mut self) {
        self.stop();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            // PONG, or NOAUTH with a password: either way it answers.
            if self.cmd(&["PING"]).is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server did not answer PING within 10 s");
    }

    /// Sends a signal (`-STOP`, `-CONT`) to the server.
    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        assert!(Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success());
    }

    /// Stops it at once (SIGKILL: no goodbye to the clients).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// One command in RESP; the reply as text (`None`: no answer or nil).
    pub fn cmd(&self, args: &[&str]) -> Option<String> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).ok()?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = s.read(&mut chunk).ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            let Some(end) = text.find("\r\n") else {
                continue;
            };
            let (head, rest) = (&text[..end], &text[end + 2..]);
            match head.as_bytes()[0] {
                b'+' | b':' => return Some(head[1..].to_string()),
                b'-' => return Some(head.to_string()),
                b'$' => {
                    let len: i64 = head[1..].parse().ok()?;
                    if len < 0 {
                        return None;
                    }
                    if rest.len() >= len as usize + 2 {
                        return Some(rest[..len as usize].to_string());
                    }
                }
                _ => return Some(text),
            }
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

// === samizdat instances ===

/// A `samizdat serve` of the fleet (killed on drop; derefs to the
/// [`Served`] process) and its echo cover.
pub struct Instance {
    pub served: Served,
    /// Its echo cover, to compare the cover's own answer with.
    pub cover: SocketAddr,
}

impl std::ops::Deref for Instance {
    type Target = Served;
    fn deref(&self) -> &Served {
        &self.served
    }
}

impl std::ops::DerefMut for Instance {
    fn deref_mut(&mut self) -> &mut Served {
        &mut self.served
    }
}

impl Instance {
    /// The samizdat:// link it printed.
    pub fn link(&self) -> Link {
        self.stdout
            .iter()
            .find_map(|l| Link::parse(l.trim()).ok())
            .unwrap_or_else(|| panic!("no samizdat:// link: {:#?}", self.stdout))
    }

    /// Its WebSocket listener and path (with `--ws-listen`).
    pub fn ws(&self) -> (SocketAddr, String) {
        self.served
            .ws()
            .unwrap_or_else(|| panic!("no WebSocket listener line: {:#?}", self.stdout))
    }
}

/// A fresh transport key file in `dir`, for the instances of one test to
/// share (`--transport-key`), as a fleet's instances do.
pub fn transport_key_file(dir: &Path) -> String {
    let path = dir.join("transport.toml");
    let key: [u8; 32] = testkit::random();
    std::fs::write(&path, format!("private_key = \"{}\"\n", hex::encode(key))).unwrap();
    path.display().to_string()
}

/// `samizdat serve` with every form, the common key, its own fake DC and
/// echo cover, `--redis url` and `extra`.
pub async fn instance(redis: &str, config: Option<&Path>, extra: &[&str]) -> Instance {
    instance_logging_to(redis, config, extra, None).await
}

/// [`instance`] with its log (stderr) written to `log` (`None`: the
/// test's own stderr).
pub async fn instance_logging_to(
    redis: &str,
    config: Option<&Path>,
    extra: &[&str],
    log: Option<std::fs::File>,
) -> Instance {
    let (dc, _) = fake_dc().await;
    let (cover, _) = fake_cover(CoverKind::Echo).await;
    let mut cmd = serve()
        .domain(DOMAIN)
        .modes("plain,dd,ee")
        .redis(redis)
        .cover(cover)
        .dc(dc);
    cmd = match config {
        Some(path) => cmd.config(path),
        None => cmd.secret(KEY),
    };
    // A generous deadline (the default is 100 ms) unless the test picks
    // one: on a loaded 2-core CI machine a call may take longer, and a
    // fail-open miss would make a replay test flaky.
    if !extra.contains(&"--redis-timeout") {
        cmd = cmd.args(["--redis-timeout", "1s"]);
    }
    cmd = cmd.args(extra);
    if let Some(file) = log {
        cmd = cmd.log_to(file);
    }
    Instance {
        served: cmd.spawn().await.unwrap(),
        cover,
    }
}

pub fn ee(key: &str) -> Secret {
    Secret::parse(&format!("ee{key}{}", hex::encode(DOMAIN))).unwrap()
}

/// A handshake, bounded in time; `Err` when refused (closed or covered).
pub async fn connect(addr: SocketAddr, secret: &Secret) -> std::io::Result<Client> {
    connect_from(addr, "127.0.0.1", secret).await
}

/// [`connect`] from the loopback address `from` (127.0.0.0/8 all works).
pub async fn connect_from(
    addr: SocketAddr,
    from: &str,
    secret: &Secret,
) -> std::io::Result<Client> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{from}:0").parse().unwrap())?;
    let handshake = async {
        let stream = socket.connect(addr).await?;
        stream.set_nodelay(true)?;
        Client::handshake(stream, secret, &Options::default()).await
    };
    tokio::time::timeout(Duration::from_secs(5), handshake)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

/// Echoes `len` bytes through the DC; `Err` if the relay ended.
pub async fn echo(c: &mut Client, len: usize) -> std::io::Result<()> {
    let mut left = len;
    while left > 0 {
        let n = left.min(64 * 1024);
        let payload = vec![0x5a; n];
        c.send(&payload).await?;
        let mut got = 0;
        while got < n {
            let back = tokio::time::timeout(Duration::from_secs(10), c.recv())
                .await
                .map_err(|_| std::io::ErrorKind::TimedOut)??;
            got += back.len();
        }
        left -= n;
    }
    Ok(())
}

/// Sends `bytes` as a probe and reads what comes back until EOF.
pub async fn probe(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    s.shutdown().await.unwrap();
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut back))
        .await
        .expect("an answer in time")
        .unwrap();
    back
}

/// A fake-TLS hello captured from a real handshake with `a`.
pub async fn captured_hello(a: SocketAddr) -> Vec<u8> {
    let mut c = connect(a, &ee(KEY)).await.expect("handshake with A");
    echo(&mut c, 1024).await.unwrap();
    c.hello.clone().unwrap()
}

/// A samizdat client's hello, built as the client builds it, that `addr`
/// accepted: its flight completed the client's side of the handshake.
pub async fn accepted_tunnel_hello(addr: SocketAddr, link: &Link) -> Vec<u8> {
    use wire::tunnel::handshake::Progress;
    let (mut hs, hello) = tunnel_hello(link);
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&hello).await.unwrap();
    let mut flight = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("a flight within 10 s")
            .unwrap();
        assert!(n > 0, "closed instead of answering a fresh samizdat hello");
        flight.extend_from_slice(&chunk[..n]);
        match hs.read_server_flight(&flight).expect("a samizdat flight") {
            Progress::NeedMore => continue,
            Progress::Done { .. } => return hello,
        }
    }
}

/// Sends `hello` in a WebSocket to `ws` (`path`); the opcodes of the frames
/// that come back until the close or EOF.
pub async fn over_websocket(ws: SocketAddr, path: &str, hello: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(ws).await.unwrap();
    assert_eq!(upgrade(&mut s, path).await, 101);
    s.write_all(&client_frame(hello)).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        let mut ops = Vec::new();
        while let Some((op, _)) = server_frame(&mut s).await {
            ops.push(op);
            if op == 8 || op == 2 {
                break;
            }
        }
        ops
    })
    .await
    .expect("an answer or a close within 10 s")
}

/// Every key of the Redis and every value under it (members of sets and
/// sorted sets, fields and values of hashes), one per line.
pub fn redis_dump(redis: &Redis) -> Vec<String> {
    let cli = |args: &[&str]| -> Vec<String> {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &redis.port.to_string(), "--raw"])
            .args(args)
            .output()
            .expect("redis-cli (installed with redis-server)");
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    };
    let mut all = Vec::new();
    for key in cli(&["KEYS", "*"]) {
        let kind = cli(&["TYPE", &key]).join("");
        let values = match kind.as_str() {
            "string" => cli(&["GET", &key]),
            "zset" => cli(&["ZRANGE", &key, "0", "-1"]),
            "set" => cli(&["SMEMBERS", &key]),
            "hash" => cli(&["HGETALL", &key]),
            "list" => cli(&["LRANGE", &key, "0", "-1"]),
            other => panic!("{key}: unexpected type {other}"),
        };
        all.push(key);
        all.extend(values);
    }
    all
}

pub fn config_file(dir: &Path, users: &str) -> std::path::PathBuf {
    let path = dir.join("samizdat.toml");
    std::fs::write(&path, users).unwrap();
    path
}

/// Polls handshakes with `secret` until one passes or 10 s are over.
pub async fn connects_soon(addr: SocketAddr, secret: &Secret) -> bool {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        if let Ok(mut c) = connect(addr, secret).await {
            return echo(&mut c, 1024).await.is_ok();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}
