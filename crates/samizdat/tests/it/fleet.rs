//! Fleets: two real `samizdat serve` instances sharing one real
//! `redis-server` (started here on 127.0.0.1, on a free port, without
//! persistence, in its own temporary directory, and stopped afterwards).
//!
//! Without `redis-server` these tests say so loudly and pass, unless `CI`
//! is set: there it must be installed (scripts/test installs it).

use crate::common;

use common::apps::tunnel_hello;
use common::ws::{client_frame, server_frame, upgrade};
use common::*;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use testkit::client::{Client, Options};
use testkit::fake_cover::CoverKind;
use testkit::process::Served;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use wire::link::Link;
use wire::obfuscated2::Tag;
use wire::secret::Secret;

const ALICE: &str = "b8fceb1cd98001d9089a53e9d6cd3e77";
const BOB: &str = "a77ae1508e507ef848128d2c83c72f26";
const CAROL: &str = "abec222375c47b0e8e44f4c0b8c159c6";

// === Redis ===

/// A `redis-server` of the test's own.
struct Redis {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    /// More `redis-server` arguments (TLS, password).
    extra: Vec<String>,
}

impl Redis {
    /// Starts one, or returns `None` (after saying so) when `redis-server`
    /// is not installed and this is not CI.
    fn start() -> Option<Redis> {
        Redis::start_with(|_| Vec::new())
    }

    /// [`Redis::start`] with more arguments, made from its directory.
    fn start_with(extra: impl FnOnce(&Path) -> Vec<String>) -> Option<Redis> {
        let mut r = Redis::reserve(extra)?;
        r.restart();
        Some(r)
    }

    /// A port and a directory for a server not started yet.
    fn reserve(extra: impl FnOnce(&Path) -> Vec<String>) -> Option<Redis> {
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

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// (Re)starts the server on the same port, empty.
    fn restart(&mut self) {
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
    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        assert!(Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success());
    }

    /// Stops it at once (SIGKILL: no goodbye to the clients).
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// One command in RESP; the reply as text (`None`: no answer or nil).
    fn cmd(&self, args: &[&str]) -> Option<String> {
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
struct Instance {
    served: Served,
    /// Its echo cover, to compare the cover's own answer with.
    cover: SocketAddr,
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
    fn link(&self) -> Link {
        self.stdout
            .iter()
            .find_map(|l| Link::parse(l.trim()).ok())
            .unwrap_or_else(|| panic!("no samizdat:// link: {:#?}", self.stdout))
    }

    /// Its WebSocket listener and path (with `--ws-listen`).
    fn ws(&self) -> (SocketAddr, String) {
        self.served
            .ws()
            .unwrap_or_else(|| panic!("no WebSocket listener line: {:#?}", self.stdout))
    }
}

/// A fresh transport key file in `dir`, for the instances of one test to
/// share (`--transport-key`), as a fleet's instances do.
fn transport_key_file(dir: &Path) -> String {
    let path = dir.join("transport.toml");
    let key: [u8; 32] = testkit::random();
    std::fs::write(&path, format!("private_key = \"{}\"\n", hex::encode(key))).unwrap();
    path.display().to_string()
}

/// `samizdat serve` with every form, the common key, its own fake DC and
/// echo cover, `--redis url` and `extra`.
async fn instance(redis: &str, config: Option<&Path>, extra: &[&str]) -> Instance {
    instance_logging_to(redis, config, extra, None).await
}

/// [`instance`] with its log (stderr) written to `log` (`None`: the
/// test's own stderr).
async fn instance_logging_to(
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

fn ee(key: &str) -> Secret {
    Secret::parse(&format!("ee{key}{}", hex::encode(DOMAIN))).unwrap()
}

/// A handshake, bounded in time; `Err` when refused (closed or covered).
async fn connect(addr: SocketAddr, secret: &Secret) -> std::io::Result<Client> {
    connect_from(addr, "127.0.0.1", secret).await
}

/// [`connect`] from the loopback address `from` (127.0.0.0/8 all works).
async fn connect_from(addr: SocketAddr, from: &str, secret: &Secret) -> std::io::Result<Client> {
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
async fn echo(c: &mut Client, len: usize) -> std::io::Result<()> {
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
async fn probe(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
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
async fn captured_hello(a: SocketAddr) -> Vec<u8> {
    let mut c = connect(a, &ee(KEY)).await.expect("handshake with A");
    echo(&mut c, 1024).await.unwrap();
    c.hello.clone().unwrap()
}

/// A samizdat client's hello, built as the client builds it, that `addr`
/// accepted: its flight completed the client's side of the handshake.
async fn accepted_tunnel_hello(addr: SocketAddr, link: &Link) -> Vec<u8> {
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
async fn over_websocket(ws: SocketAddr, path: &str, hello: &[u8]) -> Vec<u8> {
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
fn redis_dump(redis: &Redis) -> Vec<String> {
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

fn config_file(dir: &Path, users: &str) -> std::path::PathBuf {
    let path = dir.join("samizdat.toml");
    std::fs::write(&path, users).unwrap();
    path
}

// === tests ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_captured_at_one_instance_is_refused_by_the_other() {
    let Some(redis) = Redis::start() else { return };
    let a = instance(&redis.url(), None, &[]).await;
    let b = instance(&redis.url(), None, &[]).await;

    // Fake-TLS: B has never seen this hello, and still refuses it.
    let hello = captured_hello(a.addr).await;
    assert_eq!(
        probe(b.addr, &hello).await,
        hello,
        "B must send A's replayed hello to its cover site"
    );
    // A fresh hello still works on B.
    let mut c = connect(b.addr, &ee(KEY)).await.expect("a fresh hello on B");
    echo(&mut c, 1024).await.unwrap();

    // Bare obfuscated2: an init accepted by A, replayed to B.
    let dd = Secret::parse(&format!("dd{KEY}")).unwrap();
    let init = wire::obfuscated2::initiate(testkit::random(), Tag::Padded, 2, Some(&dd.key));
    let mut s = TcpStream::connect(a.addr).await.unwrap();
    s.write_all(&init.wire).await.unwrap();
    let key = format!("samizdat:replay:o2:{}", hex::encode(&init.wire[8..24]));
    assert!(
        eventually(Duration::from_secs(5), || redis
            .cmd(&["EXISTS", &key])
            .as_deref()
            == Some("1"))
        .await,
        "A recorded the init in Redis"
    );
    assert_eq!(
        probe(b.addr, &init.wire).await,
        init.wire.to_vec(),
        "B must send A's replayed init to its cover site"
    );
    // Fake-TLS keys expire with the timestamp window (10m + 1m + 1m here).
    let ttl: i64 = redis
        .cmd(&[
            "PTTL",
            &format!("samizdat:replay:tls:{}", hex::encode(&hello[11..27])),
        ])
        .unwrap()
        .parse()
        .unwrap();
    assert!((600_000..=720_000).contains(&ttl), "ttl {ttl} ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_samizdat_hello_captured_at_one_instance_lands_at_the_others_cover() {
    let Some(redis) = Redis::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let key = transport_key_file(dir.path());
    let args = ["--transport-key", &key, "--ws-listen", "127.0.0.1:0"];
    let a = instance(&redis.url(), None, &args).await;
    let b = instance(&redis.url(), None, &args).await;
    let link = a.link();
    assert_eq!(link.server_key, b.link().server_key, "one transport key");

    // Over TCP: B has never seen the hello A accepted, and still answers
    // exactly as its cover answers those bytes.
    let hello = accepted_tunnel_hello(a.addr, &link).await;
    let from_cover = probe(b.cover, &hello).await;
    assert_eq!(from_cover, hello, "the echo cover answers with the bytes");
    let from_b = probe(b.addr, &hello).await;
    assert!(
        from_b == from_cover,
        "B must send A's replayed samizdat hello to its cover site; it answered \
         {} bytes starting {:02x?}",
        from_b.len(),
        &from_b[..from_b.len().min(12)]
    );
    // A fresh hello still works on B.
    accepted_tunnel_hello(b.addr, &link).await;

    // Over B's WebSocket listener: a fresh hello gets the flight (binary
    // frames), one that A accepted is closed without one.
    let (ws, path) = b.ws();
    let (_, fresh) = tunnel_hello(&link);
    let ops = over_websocket(ws, &path, &fresh).await;
    assert_eq!(
        ops.first(),
        Some(&2),
        "a fresh hello gets the flight: {ops:?}"
    );
    let hello = accepted_tunnel_hello(a.addr, &link).await;
    let ops = over_websocket(ws, &path, &hello).await;
    assert!(
        !ops.contains(&2),
        "no flight for A's hello replayed to B's WebSocket listener: {ops:?}"
    );

    // The fleet keys expire with the timestamp window (10m + 1m + 1m).
    let keys = redis_dump(&redis)
        .into_iter()
        .filter(|k| k.starts_with("samizdat:replay:nk:"))
        .collect::<Vec<_>>();
    assert_eq!(
        keys.len(),
        4,
        "one key per accepted samizdat hello: {keys:?}"
    );
    let ttl: i64 = redis.cmd(&["PTTL", &keys[0]]).unwrap().parse().unwrap();
    assert!((600_000..=720_000).contains(&ttl), "ttl {ttl} ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_addresses_never_reach_redis_and_max_ips_holds_across_the_fleet() {
    let Some(redis) = Redis::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let key = transport_key_file(dir.path());
    let config = config_file(
        dir.path(),
        &format!("[users.carol]\nsecret = \"{CAROL}\"\nmax_ips = 1\n"),
    );
    let a = instance(&redis.url(), Some(&config), &["--transport-key", &key]).await;
    let b = instance(&redis.url(), Some(&config), &["--transport-key", &key]).await;
    let mut held = connect_from(a.addr, "127.0.0.1", &ee(CAROL))
        .await
        .expect("carol on A");
    echo(&mut held, 1024).await.unwrap();
    // B knows A's lease: a second address is refused, the same one is not
    // (both instances hash an address alike).
    assert!(
        connect_from(b.addr, "127.0.0.2", &ee(CAROL)).await.is_err(),
        "B admits a second address while A holds carol's only one"
    );
    let mut c = connect_from(b.addr, "127.0.0.1", &ee(CAROL))
        .await
        .expect("carol's own address on B");
    echo(&mut c, 1024).await.unwrap();

    let dump = redis_dump(&redis);
    assert!(
        dump.iter().any(|k| k == "samizdat:ips:carol"),
        "the address leases are in Redis: {dump:?}"
    );
    for text in &dump {
        assert!(
            !text.contains("127.0.0."),
            "a client address in Redis: {text}"
        );
        for part in text.split(['|', ':']) {
            assert!(
                part.parse::<IpAddr>().is_err(),
                "a client address in Redis: {text}"
            );
        }
    }
    echo(&mut held, 1024).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_with_another_transport_key_says_its_address_hashes_differ() {
    let Some(redis) = Redis::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let shared = transport_key_file(dir.path());
    let other_dir = tempfile::tempdir().unwrap();
    let other = transport_key_file(other_dir.path());
    let log_of = |name: &str| dir.path().join(name);
    let logged = |name: &str| Some(std::fs::File::create(log_of(name)).unwrap());
    let a = instance_logging_to(
        &redis.url(),
        None,
        &["--transport-key", &shared],
        logged("a"),
    )
    .await;
    let b = instance_logging_to(
        &redis.url(),
        None,
        &["--transport-key", &shared],
        logged("b"),
    )
    .await;
    let c = instance_logging_to(
        &redis.url(),
        None,
        &["--transport-key", &other],
        logged("c"),
    )
    .await;
    const WARNING: &str = "different transport key";
    assert!(
        eventually(Duration::from_secs(5), || std::fs::read_to_string(log_of(
            "c"
        ))
        .unwrap()
        .contains(WARNING))
        .await,
        "the instance with another key did not warn"
    );
    for name in ["a", "b"] {
        let log = std::fs::read_to_string(log_of(name)).unwrap();
        assert!(
            !log.contains(WARNING),
            "{name} shares the key and warned:\n{log}"
        );
    }
    drop((a, b, c));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_holds_across_the_fleet() {
    let Some(redis) = Redis::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    // 1 MB, counted both ways: 300 KB echoed through each instance is
    // 600 KB each, under the quota alone and over it together.
    let config = config_file(
        dir.path(),
        &format!("[users.alice]\nsecret = \"{ALICE}\"\nquota = \"1MB\"\n"),
    );
    let a = instance(&redis.url(), Some(&config), &[]).await;
    let b = instance(&redis.url(), Some(&config), &[]).await;

    let mut c = connect(a.addr, &ee(ALICE)).await.expect("alice on A");
    echo(&mut c, 300_000).await.unwrap();
    drop(c);
    assert!(
        eventually(Duration::from_secs(5), || {
            redis
                .cmd(&["GET", "samizdat:usage:alice"])
                .and_then(|v| v.parse::<u64>().ok())
                .is_some_and(|n| n >= 600_000)
        })
        .await,
        "A pushed alice's usage to Redis"
    );
    // B has not relayed a byte of alice's yet, but knows the fleet's total.
    let mut c = connect(b.addr, &ee(ALICE)).await.expect("alice on B");
    // The quota runs out during this transfer: the relay may end early.
    let _ = echo(&mut c, 300_000).await;
    drop(c);
    for (name, at) in [("A", a.addr), ("B", b.addr)] {
        let started = Instant::now();
        let mut refused = false;
        while started.elapsed() < Duration::from_secs(8) {
            match connect(at, &ee(ALICE)).await {
                Err(_) => {
                    refused = true;
                    break;
                }
                Ok(c) => drop(c),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(
            refused,
            "instance {name} still admits alice past the fleet-wide quota"
        );
    }
    let used: u64 = redis
        .cmd(&["GET", "samizdat:usage:alice"])
        .unwrap()
        .parse()
        .unwrap();
    assert!(used >= 1_000_000, "fleet usage {used}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_added_to_the_shared_table_works_on_every_instance() {
    let Some(redis) = Redis::start() else { return };
    let a = instance(&redis.url(), None, &[]).await;
    let b = instance(&redis.url(), None, &[]).await;
    assert!(
        connect(a.addr, &ee(BOB)).await.is_err(),
        "bob is unknown yet"
    );

    let out = Command::new(bin())
        .args(["users", "add", "bob", "--key", BOB, "--redis", &redis.url()])
        .args(["--domain", DOMAIN, "--public-host", "127.0.0.1"])
        .args(["--listen", "127.0.0.1:8443"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(&ee(BOB).to_hex()) && text.contains("tg://proxy?server=127.0.0.1&port=8443"),
        "users add prints bob's links: {text}"
    );

    let started = Instant::now();
    let mut held = Vec::new();
    for at in [a.addr, b.addr] {
        let mut ok = None;
        while started.elapsed() < Duration::from_secs(8) {
            if let Ok(c) = connect(at, &ee(BOB)).await {
                ok = Some(c);
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut c = ok.expect("bob connects to every instance within seconds");
        echo(&mut c, 4096).await.unwrap();
        held.push(c);
    }
    let list = Command::new(bin())
        .args(["users", "list", "--redis", &redis.url()])
        .output()
        .unwrap();
    let list = String::from_utf8(list.stdout).unwrap();
    assert!(list.starts_with("bob\t"), "{list}");
    assert!(!list.contains(BOB), "users list must not show keys");

    // Removed: refused everywhere within seconds, open relays end.
    let out = Command::new(bin())
        .args(["users", "remove", "bob", "--redis", &redis.url()])
        .output()
        .unwrap();
    assert!(out.status.success());
    for c in &mut held {
        let ended = tokio::time::timeout(Duration::from_secs(8), async {
            loop {
                if echo(c, 16).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await;
        assert!(ended.is_ok(), "a removed user's relay goes on");
    }
    assert!(connect(a.addr, &ee(BOB)).await.is_err());
    assert!(connect(b.addr, &ee(BOB)).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limits_hold_across_the_fleet() {
    let Some(redis) = Redis::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(
        dir.path(),
        &format!("[users.carol]\nsecret = \"{CAROL}\"\nmax_connections = 1\n"),
    );
    let a = instance(&redis.url(), Some(&config), &[]).await;
    let b = instance(&redis.url(), Some(&config), &[]).await;
    let mut held = connect(a.addr, &ee(CAROL)).await.expect("carol on A");
    echo(&mut held, 1024).await.unwrap();
    assert!(
        connect(b.addr, &ee(CAROL)).await.is_err(),
        "B admits a second connection while A holds carol's only one"
    );
    drop(held);
    assert!(
        eventually(Duration::from_secs(5), || redis
            .cmd(&["ZCARD", "samizdat:conns:carol"])
            .as_deref()
            == Some("0"))
        .await,
        "A released the lease"
    );
    let mut c = connect(b.addr, &ee(CAROL))
        .await
        .expect("carol on B after A closed");
    echo(&mut c, 1024).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_gives_the_chosen_fallback_fast_and_its_return_is_picked_up() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    // A: fail-open; B: the default (fail-closed).
    // A deadline short enough that a hung Redis costs a handshake little.
    let a = instance(
        &redis.url(),
        None,
        &["--redis-timeout", "300ms", "--redis-down-replay", "open"],
    )
    .await;
    let b = instance(&redis.url(), None, &["--redis-timeout", "300ms"]).await;
    for at in [a.addr, b.addr] {
        let mut c = connect(at, &ee(KEY))
            .await
            .expect("both serve with Redis up");
        echo(&mut c, 1024).await.unwrap();
    }

    // Hung (SIGSTOP: connections stay open, nothing answers): every call
    // runs into the deadline (100 ms), none hangs a handshake.
    redis.signal("-STOP");
    fallbacks_hold(a.addr, b.addr).await;
    redis.signal("-CONT");
    // Dead (SIGKILL: connections refused).
    redis.stop();
    fallbacks_hold(a.addr, b.addr).await;
    // The local replay cache still works meanwhile.
    let hello = captured_hello(a.addr).await;
    assert_eq!(probe(a.addr, &hello).await, hello);
    // Usage keeps counting locally while Redis is down.
    let mut c = connect(a.addr, &ee(KEY)).await.unwrap();
    echo(&mut c, 200_000).await.unwrap();
    drop(c);

    // Back: B accepts again, and replays are shared again.
    redis.restart();
    let started = Instant::now();
    let mut back = false;
    while started.elapsed() < Duration::from_secs(10) {
        if let Ok(mut c) = connect(b.addr, &ee(KEY)).await {
            back = echo(&mut c, 1024).await.is_ok();
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(back, "B did not pick Redis up again within 10 s");
    // A pushes what it counted while Redis was down (this Redis restarted
    // empty, so those bytes are all its counter holds).
    assert!(
        eventually(Duration::from_secs(5), || {
            redis
                .cmd(&["GET", "samizdat:usage:default"])
                .and_then(|v| v.parse::<u64>().ok())
                .is_some_and(|n| n >= 400_000)
        })
        .await,
        "usage counted while Redis was down was not pushed when it came back"
    );
    let hello = captured_hello(a.addr).await;
    assert_eq!(
        probe(b.addr, &hello).await,
        hello,
        "after Redis came back, A's hello replayed to B must be refused"
    );
}

/// With Redis unavailable: A (fail-open) accepts, B (fail-closed) sends to
/// the cover, and neither takes long about it.
async fn fallbacks_hold(a: SocketAddr, b: SocketAddr) {
    for _ in 0..3 {
        let started = Instant::now();
        let mut c = connect(a, &ee(KEY))
            .await
            .expect("fail-open accepts with Redis down");
        echo(&mut c, 1024).await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        let started = Instant::now();
        assert!(
            connect(b, &ee(KEY)).await.is_err(),
            "fail-closed refuses with Redis down"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_password_is_verified_and_the_password_stays_out_of_logs() {
    const PASSWORD: &str = "pw-7f3a9c1e5b";
    let tls_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let Some(redis) = Redis::start_with(|dir| {
        testkit::pki::localhost_ca().write_to(dir).unwrap();
        let p = |f: &str| dir.join(f).display().to_string();
        vec![
            "--tls-port".into(),
            tls_port.to_string(),
            "--tls-cert-file".into(),
            p("cert.pem"),
            "--tls-key-file".into(),
            p("key.pem"),
            "--tls-ca-cert-file".into(),
            p("ca.pem"),
            "--tls-auth-clients".into(),
            "no".into(),
            "--requirepass".into(),
            PASSWORD.into(),
        ]
    }) else {
        return;
    };
    let ca = redis.dir.path().join("ca.pem");
    let url = format!("rediss://:{PASSWORD}@localhost:{tls_port}");
    let users = |url: &str, with_ca: bool, args: &[&str]| {
        let mut cmd = Command::new(bin());
        cmd.args(["users"]).args(args).args(["--redis", url]);
        if with_ca {
            cmd.env("SSL_CERT_FILE", &ca);
        }
        cmd.output().unwrap()
    };
    // The server's certificate is checked: unknown CA, refused.
    let out = users(&url, false, &["list"]);
    assert!(
        !out.status.success(),
        "a certificate from an unknown CA was accepted"
    );
    // A wrong password is refused too.
    let wrong = format!("rediss://:wrong@localhost:{tls_port}");
    assert!(!users(&wrong, true, &["list"]).status.success());
    let out = users(
        &url,
        true,
        &["add", "bob", "--key", BOB, "--domain", DOMAIN],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!printed.contains(PASSWORD), "{printed}");

    // An instance over TLS picks bob up; its log never shows the password.
    let (dc, _) = fake_dc().await;
    let (cover, _) = fake_cover(CoverKind::Echo).await;
    let state = tempfile::tempdir().unwrap();
    let log_path = state.path().join("log");
    let log = std::fs::File::create(&log_path).unwrap();
    let server = serve()
        .domain(DOMAIN)
        .cover(cover)
        .dc(dc)
        .state_dir(state.path())
        .args(["--redis-timeout", "1s"])
        .env("SAMIZDAT_REDIS", &url)
        .env("SSL_CERT_FILE", &ca)
        .env("RUST_LOG", "debug")
        .log_to(log)
        .spawn()
        .await
        .unwrap();
    let (addr, stdout) = (server.addr, server.stdout.clone());
    let mut c = None;
    let started = Instant::now();
    while c.is_none() && started.elapsed() < Duration::from_secs(8) {
        c = connect(addr, &ee(BOB)).await.ok();
        if c.is_none() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let mut c = c.expect("bob, added over TLS, connects");
    echo(&mut c, 4096).await.unwrap();
    drop(c);
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("sharing replay cache"), "{log}");
    assert!(
        !log.contains(PASSWORD),
        "the Redis password reached the log"
    );
    assert!(!stdout.join("\n").contains(PASSWORD));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_started_before_redis_serves_and_then_picks_it_up() {
    let Some(mut redis) = Redis::reserve(|_| Vec::new()) else {
        return;
    };
    // Nothing listens there yet: start-up is not delayed, handshakes pass
    // (fail-open) without waiting.
    let started = Instant::now();
    let a = instance(&redis.url(), None, &["--redis-down-replay", "open"]).await;
    let mut c = connect(a.addr, &ee(KEY))
        .await
        .expect("serves without Redis");
    echo(&mut c, 1024).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    redis.restart();
    let out = Command::new(bin())
        .args(["users", "add", "bob", "--key", BOB, "--redis", &redis.url()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let started = Instant::now();
    let mut ok = false;
    while !ok && started.elapsed() < Duration::from_secs(10) {
        ok = connect(a.addr, &ee(BOB)).await.is_ok();
        if !ok {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert!(
        ok,
        "the instance did not read the shared table once Redis was up"
    );
    // And the replay cache is shared from then on.
    let hello = captured_hello(a.addr).await;
    let key = format!("samizdat:replay:tls:{}", hex::encode(&hello[11..27]));
    assert_eq!(redis.cmd(&["EXISTS", &key]).as_deref(), Some("1"));
}

/// `GET path` on the metrics listener: (status line, body), or `None` if
/// nothing answers.
async fn http_get(addr: SocketAddr, path: &str) -> Option<(String, String)> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut back))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&back).to_string();
    let (head, body) = text.split_once("\r\n\r\n")?;
    Some((head.lines().next()?.to_string(), body.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_endpoints_report_liveness_readiness_and_redis() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let metrics_arg = metrics.to_string();
    let args = ["--metrics", &metrics_arg, "--redis-down-replay", "open"];
    let mut a = instance(&redis.url(), None, &args).await;
    let (status, body) = http_get(metrics, "/healthz").await.expect("/healthz");
    assert!(status.contains("200"), "{status}");
    assert_eq!(body, "ok\n");
    let (status, body) = http_get(metrics, "/readyz").await.expect("/readyz");
    assert!(
        status.contains("200") && body.contains("redis up"),
        "{status} {body}"
    );

    // Redis down: still ready (the fallbacks serve), and it says why.
    redis.stop();
    let mut said = false;
    let started = Instant::now();
    while !said && started.elapsed() < Duration::from_secs(8) {
        let (status, body) = http_get(metrics, "/readyz").await.expect("/readyz");
        assert!(status.contains("200"), "{status}");
        said = body.contains("redis down");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(said, "/readyz never reported Redis down");

    // SIGTERM: no longer ready (503, or the listener is gone), while an
    // open connection drains.
    let mut c = connect(a.addr, &ee(KEY)).await.unwrap();
    echo(&mut c, 1024).await.unwrap();
    let pid = a.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let mut not_ready = false;
    let started = Instant::now();
    while !not_ready && started.elapsed() < Duration::from_secs(5) {
        not_ready = match http_get(metrics, "/readyz").await {
            None => true,
            Some((status, _)) => status.contains("503"),
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(not_ready, "still ready after SIGTERM");
    echo(&mut c, 1024)
        .await
        .expect("the open connection drains");
    drop(c);
    let _ = a.child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_when_down_refuse_refuses_only_users_with_fleet_limits() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(
        dir.path(),
        &format!(
            "[users.carol]\nsecret = \"{CAROL}\"\nmax_connections = 5\n[users.alice]\nsecret = \"{ALICE}\"\n"
        ),
    );
    let a = instance(
        &redis.url(),
        Some(&config),
        &[
            "--redis-down-limits",
            "refuse",
            "--redis-timeout",
            "300ms",
            "--redis-down-replay",
            "open",
        ],
    )
    .await;
    let mut c = connect(a.addr, &ee(CAROL))
        .await
        .expect("carol with Redis up");
    echo(&mut c, 1024).await.unwrap();
    redis.stop();
    assert!(
        connect(a.addr, &ee(CAROL)).await.is_err(),
        "carol's fleet-wide limit cannot be checked: refused"
    );
    let mut c = connect(a.addr, &ee(ALICE))
        .await
        .expect("alice has no fleet-wide limit: served");
    echo(&mut c, 1024).await.unwrap();
    // Back: carol again.
    redis.restart();
    let started = Instant::now();
    let mut ok = false;
    while !ok && started.elapsed() < Duration::from_secs(10) {
        ok = connect(a.addr, &ee(CAROL)).await.is_ok();
        if !ok {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert!(ok, "carol still refused after Redis came back");
}

/// Polls handshakes with `secret` until one passes or 10 s are over.
async fn connects_soon(addr: SocketAddr, secret: &Secret) -> bool {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        if let Ok(mut c) = connect(addr, secret).await {
            return echo(&mut c, 1024).await.is_ok();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_reload_keeps_the_shared_users() {
    let Some(redis) = Redis::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(
        dir.path(),
        &format!("[users.alice]\nsecret = \"{ALICE}\"\n"),
    );
    let a = instance(&redis.url(), Some(&config), &[]).await;
    let out = Command::new(bin())
        .args(["users", "add", "bob", "--key", BOB, "--redis", &redis.url()])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        connects_soon(a.addr, &ee(BOB)).await,
        "bob from the shared table"
    );
    // The file gains carol: file users and shared users both serve.
    std::fs::write(
        &config,
        format!("[users.alice]\nsecret = \"{ALICE}\"\n[users.carol]\nsecret = \"{CAROL}\"\n"),
    )
    .unwrap();
    assert!(
        connects_soon(a.addr, &ee(CAROL)).await,
        "carol from the reloaded file"
    );
    assert!(
        connect(a.addr, &ee(BOB)).await.is_ok(),
        "the reload dropped bob"
    );
    assert!(connect(a.addr, &ee(ALICE)).await.is_ok());
}

/// `samizdat doctor --json` against local fakes; the findings of `check`.
async fn doctor_findings(redis: &str, check: &str) -> Vec<serde_json::Value> {
    let (dc, _) = fake_dc().await;
    let (cover, _) = fake_cover(CoverKind::Echo).await;
    let out = tokio::process::Command::new(bin())
        // localhost and 127.0.0.1: the DNS check stays in /etc/hosts.
        .args([
            "doctor",
            "--json",
            "--timeout",
            "2s",
            "--domain",
            "localhost",
        ])
        .args(["--public-host", "127.0.0.1"])
        .args([
            "--cover",
            &cover.to_string(),
            "--dc-override",
            &dc.to_string(),
        ])
        .args(["--secret", KEY, "--listen", "127.0.0.1:0", "--redis", redis])
        .output()
        .await
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["check"] == check)
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_checks_the_fleet_redis() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let found = doctor_findings(&redis.url(), "redis").await;
    assert!(!found.is_empty(), "no redis finding");
    assert!(found.iter().all(|f| f["level"] != "fail"), "{found:?}");
    assert!(
        found[0]["found"]
            .as_str()
            .unwrap()
            .starts_with("answers in"),
        "{found:?}"
    );
    redis.stop();
    let found = doctor_findings(&redis.url(), "redis").await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["level"], "fail", "{found:?}");
    // Without --redis there is no such check.
    let (dc, _) = fake_dc().await;
    let out = Command::new(bin())
        // localhost and 127.0.0.1: the DNS check stays in /etc/hosts.
        .args([
            "doctor",
            "--json",
            "--timeout",
            "2s",
            "--domain",
            "localhost",
        ])
        .args(["--public-host", "127.0.0.1"])
        .args(["--cover", "127.0.0.1:1", "--dc-override", &dc.to_string()])
        .args(["--secret", KEY, "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("\"redis\""));
}
