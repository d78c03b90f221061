//! The server's egress seen from a real `samizdat client`: what a user can
//! reach on the server itself (security review M1, L5), whether one user's
//! name lookups can stall another's (M2), and what the debug log says about
//! where users go (L4).
//!
//! The first two run again inside network namespaces they create
//! (`unshare`), where `lo` also carries 198.51.100.7 as the host's "public"
//! address and /etc/resolv.conf points at a name server the test runs on
//! loopback. No packet leaves the namespace.

mod common;

use common::apps::{free_port, web_server, ClientOptions, ClientProc};
use common::{bin, start, Proxy};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use wire::link::Link;

/// The host's "public" address inside the namespace.
const PUBLIC: &str = "198.51.100.7";
const IN_NS: &str = "SAMIZDAT_TEST_IN_NAMESPACE";

/// Runs `test` again in new namespaces (`unshare FLAGS`) and returns false,
/// or returns true when already inside them (then the caller runs the
/// body). Fails when the namespaces cannot be made, or the inner run did
/// not run exactly this one test and pass.
fn in_namespace(test: &str, flags: &str) -> bool {
    if std::env::var_os(IN_NS).is_some() {
        return true;
    }
    let out = Command::new("unshare")
        .arg(flags)
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads", "1"])
        .env(IN_NS, "1")
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run unshare {flags} (util-linux): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    print!("{stdout}");
    assert!(
        stdout.contains("running 1 test"),
        "`unshare {flags}` could not run {test}: it needs user, network and mount namespaces \
         (root, or unprivileged user namespaces enabled)"
    );
    assert!(
        out.status.success() && stdout.contains("test result: ok. 1 passed"),
        "{test} failed inside `unshare {flags}` (its output is above)"
    );
    false
}

/// Inside the namespace: checks that it is a fresh one (only `lo`), brings
/// `lo` up and gives it [`PUBLIC`].
fn set_up_network() {
    let links = std::fs::read_to_string("/proc/net/dev").unwrap();
    let names: Vec<&str> = links
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(names, ["lo"], "not in a fresh network namespace");
    for args in [
        vec!["link", "set", "lo", "up"],
        vec!["addr", "add", &format!("{PUBLIC}/32"), "dev", "lo"],
    ] {
        let ok = Command::new("ip").args(&args).status().unwrap().success();
        assert!(ok, "ip {args:?}");
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A service that answers `hello` to every connection, bound to `addr`.
async fn greeter(addr: &str, hello: &'static [u8]) -> SocketAddr {
    let l = TcpListener::bind(addr).await.unwrap();
    let bound = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let _ = s.write_all(hello).await;
        }
    });
    bound
}

/// A SOCKS5 CONNECT through `socks`: the reply code and, when it is 0,
/// the first bytes the destination sent.
async fn reach(socks: SocketAddr, host: &str, port: u16) -> (u8, Vec<u8>) {
    let (code, mut s) = common::apps::socks_connect(socks, host, port).await;
    let mut got = vec![0u8; 64];
    if code != 0 {
        return (code, Vec::new());
    }
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut got))
        .await
        .expect("the destination's greeting within 10 s")
        .unwrap_or(0);
    got.truncate(n);
    (code, got)
}

/// SOCKS5's "connection not allowed by ruleset".
const NOT_ALLOWED: u8 = 2;

#[test]
fn the_host_itself_is_out_of_reach() {
    if !in_namespace("the_host_itself_is_out_of_reach", "-rn") {
        return;
    }
    set_up_network();
    runtime().block_on(async {
        // An "internal admin service" on every address, an SMTP server,
        // and samizdat's metrics on every address, as the review found.
        let admin = greeter("0.0.0.0:0", b"admin panel").await.port();
        greeter("0.0.0.0:25", b"220 smtp").await;
        let metrics = free_port();
        // The operator allows loopback and the whole documentation range
        // the host's address is in: only an entry naming exactly the
        // host's address could let it through.
        let proxy = start(&[
            "--egress-allow",
            "127.0.0.0/8",
            "--egress-allow",
            "198.51.100.0/24",
            "--metrics",
            &format!("0.0.0.0:{metrics}"),
        ])
        .await;
        let client = ClientProc::start(&common::apps::printed_link(&proxy), Default::default());

        // Everything below is really there: the test reaches it directly.
        for (host, port) in [(PUBLIC, admin), (PUBLIC, metrics), ("127.0.0.1", 25)] {
            TcpStream::connect((host, port))
                .await
                .unwrap_or_else(|e| panic!("{host}:{port} is not listening: {e}"));
        }

        // A permitted destination still works, by address and by name.
        assert_eq!(
            reach(client.socks, "127.0.0.1", admin).await,
            (0, b"admin panel".to_vec())
        );
        assert_eq!(
            reach(client.socks, "localhost", admin).await,
            (0, b"admin panel".to_vec())
        );
        let listen = proxy.addr.port();
        for (host, port, what) in [
            (PUBLIC, admin, "the host's public address"),
            (
                "::ffff:198.51.100.7",
                admin,
                "the host's address, IPv4-mapped",
            ),
            ("127.0.0.1", metrics, "the metrics port on loopback"),
            (PUBLIC, metrics, "the metrics port on the public address"),
            ("127.0.0.1", listen, "samizdat's own listen port"),
            ("127.0.0.1", 25, "SMTP on an allowed address"),
            ("localhost", 25, "SMTP on an allowed name"),
            (PUBLIC, 25, "SMTP on the public address"),
        ] {
            let (code, got) = reach(client.socks, host, port).await;
            assert_eq!(
                code,
                NOT_ALLOWED,
                "{what} ({host}:{port}) was reached: {:?}",
                String::from_utf8_lossy(&got)
            );
        }
        // And the permitted one once more: nothing above broke the session.
        assert_eq!(reach(client.socks, "127.0.0.1", admin).await.0, 0);
    });
}

// === name lookups ===

/// Every query a [`name_server`] received: name (lower case, no final
/// dot) and type.
type Queries = Arc<Mutex<Vec<(String, u16)>>>;

/// A name server on 127.0.0.1:53 that answers `fast.test` (A 127.0.0.1,
/// no AAAA) and `gone.test` (NXDOMAIN) at once and never answers anything
/// else. It keeps every query it received.
async fn name_server() -> Queries {
    let sock = UdpSocket::bind("127.0.0.1:53").await.unwrap();
    let queries = Queries::default();
    let seen = queries.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        loop {
            let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                continue;
            };
            let Some((name, qtype, end)) = question(&buf[..n]) else {
                continue;
            };
            let reply = answer(&buf[..end], &name, qtype);
            seen.lock().unwrap().push((name, qtype));
            if let Some(reply) = reply {
                let _ = sock.send_to(&reply, from).await;
            }
        }
    });
    queries
}

/// The name and type of a query's one question, and where the question
/// ends.
fn question(q: &[u8]) -> Option<(String, u16, usize)> {
    if q.len() < 12 || q[4..6] != [0, 1] {
        return None;
    }
    let mut i = 12;
    let mut labels = Vec::new();
    while *q.get(i)? != 0 {
        let n = q[i] as usize;
        labels.push(String::from_utf8_lossy(q.get(i + 1..i + 1 + n)?).to_ascii_lowercase());
        i += 1 + n;
    }
    let qtype = u16::from_be_bytes([*q.get(i + 1)?, *q.get(i + 2)?]);
    let end = i + 5;
    (end <= q.len()).then(|| (labels.join("."), qtype, end))
}

/// The reply to a query (its header and question in `q`), or `None` to
/// stay silent.
fn answer(q: &[u8], name: &str, qtype: u16) -> Option<Vec<u8>> {
    let (rcode, a) = match name {
        "fast.test" => (0, qtype == 1),
        "gone.test" => (3, false),
        _ => return None,
    };
    let mut r = Vec::new();
    r.extend_from_slice(&q[0..2]); // id
    r.extend_from_slice(&[0x81, 0x80 | rcode]); // a response, recursion available
    r.extend_from_slice(&[0, 1, 0, u8::from(a), 0, 0, 0, 0]);
    r.extend_from_slice(&q[12..]);
    if a {
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1]);
    }
    Some(r)
}

/// Inside a mount namespace: the resolver files the server will read.
fn set_up_resolver(dir: &std::path::Path) {
    let resolv = dir.join("resolv.conf");
    std::fs::write(
        &resolv,
        "nameserver 127.0.0.1\noptions timeout:8 attempts:1\n",
    )
    .unwrap();
    let hosts = dir.join("hosts");
    std::fs::write(&hosts, "127.0.0.1 localhost\n::1 localhost\n").unwrap();
    for (file, target) in [(&resolv, "/etc/resolv.conf"), (&hosts, "/etc/hosts")] {
        let ok = Command::new("mount")
            .arg("--bind")
            .arg(file)
            .arg(target)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount --bind {} {target}", file.display());
    }
}

/// The `samizdat://` links `serve` printed, one per user.
fn links(proxy: &Proxy) -> Vec<Link> {
    proxy
        .stdout
        .iter()
        .map(|l| l.trim())
        .filter(|l| l.starts_with("samizdat://"))
        .map(|l| Link::parse(l).unwrap())
        .collect()
}

/// How long one SOCKS CONNECT to `host:port` takes to be answered; panics
/// unless it succeeds.
async fn time_connect(socks: SocketAddr, host: &str, port: u16) -> Duration {
    let t = Instant::now();
    let (code, _s) = common::apps::socks_connect(socks, host, port).await;
    let took = t.elapsed();
    assert_eq!(code, 0, "{host}:{port} failed (code {code}) after {took:?}");
    took
}

/// Opens a SOCKS5 CONNECT to `host:80` and holds it, without waiting for
/// the answer.
async fn hold_connect(socks: SocketAddr, host: String) -> Option<TcpStream> {
    let mut s = TcpStream::connect(socks).await.ok()?;
    s.write_all(&[5, 1, 0]).await.ok()?;
    let mut m = [0u8; 2];
    s.read_exact(&mut m).await.ok()?;
    let mut req = vec![5, 1, 0, 3, host.len() as u8];
    req.extend(host.as_bytes());
    req.extend(80u16.to_be_bytes());
    s.write_all(&req).await.ok()?;
    Some(s)
}

#[test]
fn one_users_silent_lookups_do_not_stall_anothers() {
    if !in_namespace("one_users_silent_lookups_do_not_stall_anothers", "-rnm") {
        return;
    }
    set_up_network();
    let dir = tempfile::tempdir().unwrap();
    set_up_resolver(dir.path());
    runtime().block_on(async {
        let queries = name_server().await;
        let swallowed = || {
            let q = queries.lock().unwrap();
            let silent: Vec<&str> = q
                .iter()
                .map(|(n, _)| n.as_str())
                .filter(|n| n.ends_with(".silent.test"))
                .collect();
            let mut names = silent.clone();
            names.sort_unstable();
            names.dedup();
            (silent.len(), names.len())
        };
        let web = web_server().await;
        let proxy = start(&[
            "--secret",
            "48dd9dc2d67ef128ac8213b820414476",
            "--egress-allow",
            "127.0.0.0/8",
        ])
        .await;
        let links = links(&proxy);
        assert_eq!(links.len(), 2, "one link per user: {:#?}", proxy.stdout);
        // User A runs three clients (three sessions), user B one.
        let a: Vec<ClientProc> = (0..3)
            .map(|_| ClientProc::start(&links[0], ClientOptions::default()))
            .collect();
        let b = ClientProc::start(&links[1], ClientOptions::default());

        let (socks_b, port) = (b.socks, web.port());
        let probe = |label: &'static str| async move {
            let mut worst = Duration::ZERO;
            for _ in 0..3 {
                for host in ["localhost", "fast.test"] {
                    let took = time_connect(socks_b, host, port).await;
                    eprintln!("{label}: {host} answered in {took:?}");
                    worst = worst.max(took);
                }
            }
            worst
        };
        let before = probe("before").await;

        // User A: 1,000 streams to names nobody answers, all asked for
        // before user B asks again.
        let mut asking = Vec::new();
        for i in 0..1000 {
            asking.push(tokio::spawn(hold_connect(
                a[i % 3].socks,
                format!("n{i}.silent.test"),
            )));
        }
        let mut held = Vec::new();
        for h in asking {
            held.extend(h.await.unwrap());
        }
        assert_eq!(held.len(), 1000, "user A's client took every stream");
        let flooding = common::eventually(Duration::from_secs(20), || swallowed().1 >= 16).await;
        assert!(flooding, "user A's lookups never reached the name server");
        // Time for the streams to cross the tunnel and start their lookups.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let during = probe("during").await;
        let (queries, names) = swallowed();
        eprintln!(
            "worst before {before:?}, during {during:?}; {queries} queries for {names} silent names"
        );
        assert!(
            during < before + Duration::from_millis(100),
            "user A's silent lookups delayed user B's by {:?}",
            during.saturating_sub(before)
        );
        // No lookup ended yet (the name server's timeout is 8 s), so the
        // names asked are the lookups in flight: three sessions may have
        // 16 each, the user 32 in all.
        assert!(
            names <= samizdat::serve::egress::USER_LOOKUPS,
            "user A had {names} lookups in flight"
        );
        drop((held, a, b));
    });
}

#[test]
fn answers_are_cached_and_failures_too() {
    if !in_namespace("answers_are_cached_and_failures_too", "-rnm") {
        return;
    }
    set_up_network();
    let dir = tempfile::tempdir().unwrap();
    set_up_resolver(dir.path());
    runtime().block_on(async {
        let queries = name_server().await;
        let web = web_server().await;
        let proxy = start(&["--egress-allow", "127.0.0.0/8"]).await;
        let client = ClientProc::start(&common::apps::printed_link(&proxy), Default::default());
        for _ in 0..3 {
            time_connect(client.socks, "fast.test", web.port()).await;
            let (code, _) =
                common::apps::socks_connect(client.socks, "gone.test", web.port()).await;
            assert_eq!(
                code, 4,
                "gone.test does not resolve: SOCKS \"host unreachable\""
            );
        }
        let asked = |name: &str| {
            let q = queries.lock().unwrap();
            q.iter().filter(|(n, _)| n == name).count()
        };
        eprintln!(
            "name server asked: fast.test {}, gone.test {}",
            asked("fast.test"),
            asked("gone.test")
        );
        // One A and one AAAA query each, for three lookups.
        assert!(
            asked("fast.test") <= 2,
            "fast.test asked {} times",
            asked("fast.test")
        );
        assert!(
            asked("gone.test") <= 2,
            "gone.test (NXDOMAIN) asked {} times",
            asked("gone.test")
        );
        assert!(asked("fast.test") >= 1 && asked("gone.test") >= 1);
    });
}

// === logs ===

/// Starts a server logging at debug level into a file, sends one stream to
/// a name and one to an address through a real client, refuses one, and
/// returns the log and the destination's port.
async fn debug_log_of_streams(extra: &[&str]) -> (String, u16) {
    let web = web_server().await;
    let log = tempfile::NamedTempFile::new().unwrap();
    let state = tempfile::tempdir().unwrap();
    let (dc, _) = common::fake_dc().await;
    let (cover, _) = common::fake_cover(testkit::fake_cover::CoverKind::Echo).await;
    let mut cmd = Command::new(bin());
    cmd.args(["--log", "debug", "serve", "--listen", "127.0.0.1:0"])
        .args(["--secret", common::KEY, "--domain", common::DOMAIN])
        .args(["--cover", &cover.to_string()])
        .args(["--dc-override", &dc.to_string()])
        .arg("--state-dir")
        .arg(state.path())
        .args(["--egress-allow", "127.0.0.0/8"])
        .args(extra)
        .env_remove("RUST_LOG");
    let (mut child, _addr, stdout) =
        common::spawn_logging_to(&mut cmd, Stdio::from(log.reopen().unwrap())).await;
    let link = stdout
        .iter()
        .map(|l| l.trim())
        .find(|l| l.starts_with("samizdat://"))
        .map(|l| Link::parse(l).unwrap())
        .unwrap();
    let client = ClientProc::start(&link, ClientOptions::default());
    for host in ["localhost", "127.0.0.1"] {
        time_connect(client.socks, host, web.port()).await;
    }
    // Refused by the address table, old and new: nothing is sent.
    let (code, _) = common::apps::socks_connect(client.socks, "10.0.0.1", 80).await;
    assert_eq!(code, NOT_ALLOWED);
    // Let the server write its lines.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = child.kill();
    let _ = child.wait();
    (std::fs::read_to_string(log.path()).unwrap(), web.port())
}

/// Whether `log` has `what` not followed by another digit (so that
/// 127.0.0.1:25 is not found in 127.0.0.1:2571).
fn mentions(log: &str, what: &str) -> bool {
    log.match_indices(what).any(|(i, _)| {
        !log[i + what.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_log_names_no_destination_unless_asked() {
    let (log, port) = debug_log_of_streams(&[]).await;
    assert!(
        log.contains("egress connected"),
        "the server logged no stream at debug level:\n{log}"
    );
    for secret in [format!(":{port}"), "10.0.0.1".into()] {
        assert!(
            !mentions(&log, &secret),
            "the debug log names a destination ({secret}):\n{log}"
        );
    }
    // With --log-destinations they are there, as the operator asked.
    let (log, port) = debug_log_of_streams(&["--log-destinations"]).await;
    for wanted in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        "10.0.0.1:80".into(),
    ] {
        assert!(mentions(&log, &wanted), "no {wanted} in:\n{log}");
    }
}
