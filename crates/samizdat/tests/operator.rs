//! What a new operator runs into: a closed standard output or standard
//! error never breaks `samizdat serve`, and `--no-links` keeps the secrets
//! off standard output.

mod common;

use common::{apps, bin, fake_cover, fake_dc, secret, DOMAIN, KEY};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use testkit::client::{Client, Options};
use testkit::fake_cover::CoverKind;

/// `samizdat serve` on a free loopback port between a fake DC and an echo
/// cover, with stdout and stderr as given. Returns the child, the port and
/// the state directory (kept alive by the caller).
async fn serve(
    stdout: Stdio,
    stderr: Stdio,
    extra: &[&str],
) -> (Child, std::net::SocketAddr, tempfile::TempDir) {
    let (dc, _events) = fake_dc().await;
    let (cover, _received) = fake_cover(CoverKind::Echo).await;
    let state = tempfile::tempdir().unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", apps::free_port()).parse().unwrap();
    let child = Command::new(bin())
        .args(["serve", "--listen", &addr.to_string(), "--secret", KEY])
        .args(["--modes", "ee", "--domain", DOMAIN, "--log", "debug"])
        .args([
            "--cover",
            &cover.to_string(),
            "--dc-override",
            &dc.to_string(),
        ])
        .arg("--state-dir")
        .arg(state.path())
        .args(extra)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("spawn samizdat");
    (child, addr, state)
}

/// An `ee` client through the proxy, echoed by the fake DC.
async fn round_trip(addr: std::net::SocketAddr) -> Result<(), String> {
    let mut c = Client::connect(addr, &secret("ee"), &Options::default())
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let payload: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
    c.send(&payload).await.map_err(|e| format!("send: {e}"))?;
    let back = tokio::time::timeout(Duration::from_secs(10), c.recv())
        .await
        .map_err(|_| "no echo in 10 s".to_string())?
        .map_err(|e| format!("recv: {e}"))?;
    if back == payload {
        Ok(())
    } else {
        Err("echo differs".into())
    }
}

/// Waits until `addr` takes a working client, or the child exits.
async fn until_serving(child: &mut Child, addr: std::net::SocketAddr) {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("samizdat exited with {status} instead of serving");
        }
        if round_trip(addr).await.is_ok() {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "not serving after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits up to `limit` for the child to exit (the fake DC and cover keep
/// running meanwhile: they live on this runtime).
async fn exit_within(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

fn kill(child: &Child, signal: i32) {
    // SAFETY: kill(2) takes no pointers; the pid is our own child's.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
}

/// `samizdat serve | head -3`: the reader of standard output goes away.
/// The banner is informational, so the server keeps serving (it used to
/// panic on the first `println!` into the closed pipe, exit code 101).
#[tokio::test]
async fn a_closed_stdout_does_not_stop_the_server() {
    let (mut child, addr, _state) = serve(Stdio::piped(), Stdio::null(), &[]).await;
    // Read a line the way `head -1` would, then close the pipe: every line
    // after the first meets a reader that has gone.
    let mut out = child.stdout.take().unwrap();
    let mut first = Vec::new();
    let mut byte = [0u8; 1];
    while std::io::Read::read(&mut out, &mut byte).unwrap() == 1 && byte[0] != b'\n' {
        first.push(byte[0]);
    }
    assert!(
        String::from_utf8_lossy(&first).starts_with("samizdat serving on"),
        "{first:?}"
    );
    drop(out);
    until_serving(&mut child, addr).await;
    // Still up a moment later (the banner's writes have all been tried).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(child.try_wait().unwrap().is_none(), "samizdat exited");
    round_trip(addr).await.unwrap();
    kill(&child, libc::SIGTERM);
    let status = exit_within(&mut child, Duration::from_secs(5))
        .await
        .expect("no exit 5 s after SIGTERM");
    assert_eq!(status.code(), Some(0), "{status}");
}

/// With nobody reading standard error, SIGTERM and SIGINT still stop the
/// server promptly and cleanly. It used to ignore both: the "shutting
/// down" log line panicked the signal task before it cancelled.
#[tokio::test]
async fn a_closed_stderr_does_not_block_shutdown() {
    for (name, signal) in [("SIGTERM", libc::SIGTERM), ("SIGINT", libc::SIGINT)] {
        let (mut child, addr, _state) = serve(Stdio::null(), Stdio::piped(), &[]).await;
        drop(child.stderr.take());
        // Debug logging: connections write log lines into the closed pipe.
        until_serving(&mut child, addr).await;
        round_trip(addr).await.unwrap();
        kill(&child, signal);
        let status = match exit_within(&mut child, Duration::from_secs(3)).await {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{name} ignored: still running 3 s later");
            }
        };
        assert_eq!(status.code(), Some(0), "{name}: {status}");
    }
}

/// `--no-links` prints no secret: not the key, not a link.
#[tokio::test]
async fn no_links_keeps_secrets_off_stdout() {
    let with = common::start(&[]).await;
    assert!(
        with.stdout.iter().any(|l| l.contains(KEY)),
        "without --no-links the links (and so the key) are printed: {:?}",
        with.stdout
    );
    let without = common::start(&["--no-links"]).await;
    for line in &without.stdout {
        assert!(!line.contains(KEY), "key printed: {line}");
        for scheme in ["tg://", "t.me/proxy", "samizdat://"] {
            assert!(!line.contains(scheme), "link printed: {line}");
        }
    }
    assert!(
        without.stdout.iter().any(|l| l.contains("samizdat link")),
        "says where the links are: {:?}",
        without.stdout
    );
    // The server itself is unchanged.
    round_trip(without.addr).await.unwrap();
}
