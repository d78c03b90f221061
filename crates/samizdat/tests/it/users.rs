//! Users from the config file: limits, quota kept across restarts, expiry,
//! and live reload under load.

use crate::common;

use common::*;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use testkit::client::{Client, Options};
use testkit::fake_cover::CoverKind;
use tokio::net::TcpSocket;
use wire::secret::Secret;

const ALICE: &str = "b8fceb1cd98001d9089a53e9d6cd3e77";
const BOB: &str = "a77ae1508e507ef848128d2c83c72f26";
const CAROL: &str = "abec222375c47b0e8e44f4c0b8c159c6";

fn ee(key: &str) -> Secret {
    Secret::parse(&format!("ee{key}{}", hex::encode(DOMAIN))).unwrap()
}

/// A fake DC, an echo cover and a config file with `users`.
struct Setup {
    dc: SocketAddr,
    cover: SocketAddr,
    dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl Setup {
    async fn new(config_text: &str) -> Setup {
        let (dc, _) = fake_dc().await;
        let (cover, _) = fake_cover(CoverKind::Echo).await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("samizdat.toml");
        std::fs::write(&path, config_text).unwrap();
        Setup {
            dc,
            cover,
            dir,
            path,
        }
    }

    async fn serve(&self) -> Server {
        serve(
            &self.path,
            self.dir.path(),
            self.dc,
            self.cover,
            "127.0.0.1:0",
        )
        .await
    }
}

type Server = testkit::process::Served;

async fn serve(
    config: &Path,
    state: &Path,
    dc: SocketAddr,
    cover: SocketAddr,
    listen: &str,
) -> Server {
    common::serve()
        .listen(Some(listen))
        .config(config)
        .state_dir(state)
        .cover(cover)
        .dc(dc)
        .spawn()
        .await
        .unwrap()
}

fn config(users: &str) -> String {
    format!("[server]\nmodes = [\"ee\"]\ndomains = [\"{DOMAIN}\"]\n{users}")
}

/// A handshake from a chosen loopback source address.
async fn connect_from(proxy: SocketAddr, from: &str, secret: &Secret) -> std::io::Result<Client> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{from}:0").parse().unwrap())?;
    let stream = socket.connect(proxy).await?;
    tokio::time::timeout(
        Duration::from_secs(5),
        Client::handshake(stream, secret, &Options::default()),
    )
    .await
    .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

async fn echo(c: &mut Client, len: usize) -> std::io::Result<()> {
    let payload = vec![0x5a; len];
    c.send(&payload).await?;
    let back = tokio::time::timeout(Duration::from_secs(10), c.recv())
        .await
        .map_err(|_| std::io::ErrorKind::TimedOut)??;
    assert_eq!(back, payload);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_and_address_limits_refuse_only_that_user() {
    let setup = Setup::new(&config(&format!(
            "[users.alice]\nsecret = \"{ALICE}\"\nmax_connections = 2\nmax_ips = 1\n[users.bob]\nsecret = \"{BOB}\"\n"
        ))).await;
    let s = setup.serve().await;
    let mut a1 = connect_from(s.addr, "127.0.0.1", &ee(ALICE)).await.unwrap();
    let mut a2 = connect_from(s.addr, "127.0.0.1", &ee(ALICE)).await.unwrap();
    echo(&mut a1, 64).await.unwrap();
    echo(&mut a2, 64).await.unwrap();
    assert!(
        connect_from(s.addr, "127.0.0.1", &ee(ALICE)).await.is_err(),
        "a third connection passes max_connections = 2"
    );
    drop(a2);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        connect_from(s.addr, "127.0.0.2", &ee(ALICE)).await.is_err(),
        "a second address passes max_ips = 1"
    );
    let mut a3 = connect_from(s.addr, "127.0.0.1", &ee(ALICE))
        .await
        .expect("a freed slot is usable again");
    echo(&mut a3, 64).await.unwrap();
    // Bob has no limits and is not affected by Alice's.
    for from in ["127.0.0.1", "127.0.0.2", "127.0.0.3"] {
        let mut b = connect_from(s.addr, from, &ee(BOB)).await.unwrap();
        echo(&mut b, 64).await.unwrap();
    }
    echo(&mut a1, 64).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_survives_a_restart_and_expiry_refuses() {
    let setup = Setup::new(&config(&format!(
            "[users.alice]\nsecret = \"{ALICE}\"\nquota = \"100KB\"\n[users.bob]\nsecret = \"{BOB}\"\nexpires = 2001-01-01T00:00:00Z\n"
        ))).await;
    let s = setup.serve().await;
    assert!(
        connect_from(s.addr, "127.0.0.1", &ee(BOB)).await.is_err(),
        "an expired user is refused"
    );
    // 40 KB each way: 80 KB of the 100 KB quota.
    let mut a = connect_from(s.addr, "127.0.0.1", &ee(ALICE)).await.unwrap();
    echo(&mut a, 40_000).await.unwrap();
    drop(a);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Restart (SIGTERM saves usage).
    let mut s = s;
    Command::new("kill")
        .args(["-TERM", &s.child.id().to_string()])
        .status()
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || matches!(
            s.child.try_wait(),
            Ok(Some(_))
        ))
        .await
    );
    let usage = std::fs::read_to_string(setup.dir.path().join("usage.toml"))
        .expect("usage saved at shutdown");
    assert!(usage.contains("alice = 8"), "{usage}");
    let s = setup.serve().await;
    // 80 KB < 100 KB: admitted; it uses the rest and more.
    let mut a = connect_from(s.addr, "127.0.0.1", &ee(ALICE))
        .await
        .expect("quota not yet used up");
    echo(&mut a, 40_000).await.ok();
    drop(a);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        connect_from(s.addr, "127.0.0.1", &ee(ALICE)).await.is_err(),
        "usage from before the restart counts: the quota is used up"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_and_removes_users_without_interrupting_others() {
    let setup = Setup::new(&config(&format!(
        "[users.alice]\nsecret = \"{ALICE}\"\n[users.bob]\nsecret = \"{BOB}\"\n"
    )))
    .await;
    let s = setup.serve().await;
    let mut bob = connect_from(s.addr, "127.0.0.1", &ee(BOB)).await.unwrap();
    echo(&mut bob, 64).await.unwrap();
    assert!(
        connect_from(s.addr, "127.0.0.1", &ee(CAROL)).await.is_err(),
        "carol is not a user yet"
    );

    // Alice transfers continuously while the users change twice.
    let addr = s.addr;
    let alice = tokio::spawn(async move {
        let mut a = connect_from(addr, "127.0.0.1", &ee(ALICE)).await.unwrap();
        let end = tokio::time::Instant::now() + Duration::from_secs(9);
        let mut rounds = 0;
        while tokio::time::Instant::now() < end {
            echo(&mut a, 16 * 1024)
                .await
                .expect("alice's transfer was interrupted by a reload");
            rounds += 1;
        }
        rounds
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Remove bob, add carol: picked up from the file without a signal.
    let next =
        format!("[users.alice]\nsecret = \"{ALICE}\"\n[users.carol]\nsecret = \"{CAROL}\"\n");
    std::fs::write(&setup.path, config(&next)).unwrap();
    let mut carol = None;
    for _ in 0..40 {
        if let Ok(c) = connect_from(s.addr, "127.0.0.1", &ee(CAROL)).await {
            carol = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut carol = carol.expect("carol added by the reload");
    echo(&mut carol, 64).await.unwrap();
    assert!(
        echo(&mut bob, 64).await.is_err(),
        "bob was removed: his connection ends"
    );
    assert!(
        connect_from(s.addr, "127.0.0.1", &ee(BOB)).await.is_err(),
        "bob is refused now"
    );

    // An invalid file is refused; the previous users keep working (SIGHUP).
    std::fs::write(&setup.path, "[server]\nmodes = [\"xx\"]\n").unwrap();
    Command::new("kill")
        .args(["-HUP", &s.child.id().to_string()])
        .status()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut c2 = connect_from(s.addr, "127.0.0.1", &ee(CAROL))
        .await
        .expect("the old config keeps serving");
    echo(&mut c2, 64).await.unwrap();
    let rounds = alice.await.unwrap();
    assert!(rounds > 10, "alice moved data throughout ({rounds} rounds)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bandwidth_cap_slows_only_its_user_and_quota_ends_a_running_connection() {
    let setup = Setup::new(&config(&format!(
        "[users.alice]\nsecret = \"{ALICE}\"\nbandwidth = \"100KB/s\"\n\
             [users.bob]\nsecret = \"{BOB}\"\n\
             [users.carol]\nsecret = \"{CAROL}\"\nquota = \"200KB\"\n"
    )))
    .await;
    let s = setup.serve().await;
    // 160 KB each way = 320 KB through a 100 KB/s cap (25 KB burst): ≥ 2.5 s.
    let mut a = connect_from(s.addr, "127.0.0.1", &ee(ALICE)).await.unwrap();
    let t = std::time::Instant::now();
    for _ in 0..10 {
        echo(&mut a, 16_000).await.unwrap();
    }
    let capped = t.elapsed();
    assert!(
        capped >= Duration::from_millis(2500),
        "the cap did not slow alice: {capped:?}"
    );
    // Bob, without a cap, moves the same at once meanwhile.
    let mut b = connect_from(s.addr, "127.0.0.1", &ee(BOB)).await.unwrap();
    let t = std::time::Instant::now();
    for _ in 0..10 {
        echo(&mut b, 16_000).await.unwrap();
    }
    assert!(
        t.elapsed() < capped / 2,
        "bob was slowed too: {:?}",
        t.elapsed()
    );
    // Carol's connection ends when her quota is used up mid-transfer.
    let mut c = connect_from(s.addr, "127.0.0.1", &ee(CAROL)).await.unwrap();
    let mut moved = 0;
    while echo(&mut c, 16_000).await.is_ok() {
        moved += 32_000;
        assert!(moved < 400_000, "the quota did not end the connection");
    }
    assert!(moved >= 160_000, "ended before the quota was used: {moved}");
    assert!(
        connect_from(s.addr, "127.0.0.1", &ee(CAROL)).await.is_err(),
        "refused once the quota is used up"
    );
}

/// Runs a refused connection, a probe and a relay from 127.0.0.7 and
/// returns the server's debug log.
async fn log_of_a_session(extra: &[&str]) -> String {
    let (dc, _) = fake_dc().await;
    let (cover, _) = fake_cover(CoverKind::Echo).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("samizdat.toml");
    std::fs::write(
        &path,
        config(&format!(
            "[users.alice]\nsecret = \"{ALICE}\"\nmax_connections = 1\n"
        )),
    )
    .unwrap();
    let log = dir.path().join("log");
    let s = common::serve()
        .args(["--log", "debug"])
        .config(&path)
        .state_dir(dir.path())
        .cover(cover)
        .dc(dc)
        .args(extra)
        .log_to(std::fs::File::create(&log).unwrap())
        .spawn()
        .await
        .unwrap();
    let mut a = connect_from(s.addr, "127.0.0.7", &ee(ALICE)).await.unwrap();
    echo(&mut a, 64).await.unwrap();
    assert!(connect_from(s.addr, "127.0.0.7", &ee(ALICE)).await.is_err());
    drop(a);
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.7:0".parse().unwrap()).unwrap();
    let mut probe = socket.connect(s.addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    probe.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    probe.shutdown().await.unwrap();
    let mut sink = Vec::new();
    let _ = probe.read_to_end(&mut sink).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(s);
    std::fs::read_to_string(log).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_addresses_stay_out_of_logs_unless_asked_for() {
    let quiet = log_of_a_session(&[]).await;
    assert!(
        quiet.contains("connection refused by the user's limits"),
        "{quiet}"
    );
    assert!(
        quiet.contains("relay ended") && quiet.contains("to cover"),
        "{quiet}"
    );
    assert!(
        !quiet.contains("127.0.0.7"),
        "a client address reached the log:\n{quiet}"
    );
    assert!(!quiet.contains(ALICE), "a key reached the log");
    let loud = log_of_a_session(&["--log-client-ips"]).await;
    assert!(loud.contains("client=127.0.0.7"), "{loud}");
}
