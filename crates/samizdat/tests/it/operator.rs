//! What a new operator runs into: a closed standard output or standard
//! error never breaks `samizdat serve`, and `--no-links` keeps the secrets
//! off standard output.

use crate::common;

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

fn set_mode(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mode_of(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

/// `samizdat link` with the zero-config secret: writes state.toml and
/// transport.toml into `dir`, like `serve`, without a server.
fn link_in(dir: &std::path::Path, extra: &[&str]) -> std::process::Output {
    Command::new(bin())
        .args(["link", "--listen", "127.0.0.1:443", "--state-dir"])
        .arg(dir)
        .args(extra)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

/// A symlink planted at a state file's temporary name does not redirect
/// the write (its target stays as it was), and a stale file there does not
/// lend the new file its mode: both files end up regular and 0600.
#[test]
fn planted_temporary_files_do_not_redirect_or_loosen_state_files() {
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("victim");
    std::fs::write(&target, "untouched\n").unwrap();
    let state = tempfile::tempdir().unwrap();
    set_mode(state.path(), 0o700);
    std::os::unix::fs::symlink(&target, state.path().join("state.toml.tmp")).unwrap();
    let stale = state.path().join("transport.toml.tmp");
    std::fs::write(&stale, "stale\n").unwrap();
    set_mode(&stale, 0o666);

    let out = link_in(state.path(), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched\n");
    for name in ["state.toml", "transport.toml"] {
        let path = state.path().join(name);
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_file(), "{name} is not a regular file");
        assert_eq!(mode_of(&path), 0o600, "{name}");
        assert!(!state.path().join(format!("{name}.tmp")).exists());
    }
    // The links printed are the ones the saved files hold.
    let again = link_in(state.path(), &[]);
    assert_eq!(out.stdout, again.stdout);
}

/// A state directory other users can read and a transport key file
/// broader than 0600 are each named in one warning with the fix.
#[test]
fn loose_modes_on_state_and_key_files_are_warned_about() {
    let made = tempfile::tempdir().unwrap();
    set_mode(made.path(), 0o700);
    let out = link_in(made.path(), &[]);
    assert!(out.status.success());
    let quiet = String::from_utf8_lossy(&out.stderr);
    assert!(!quiet.contains("has mode"), "warned on 0700/0600: {quiet}");

    let key = made.path().join("shared-transport.toml");
    std::fs::copy(made.path().join("transport.toml"), &key).unwrap();
    set_mode(&key, 0o644);
    let state = tempfile::tempdir().unwrap();
    set_mode(state.path(), 0o755);
    let key_arg = key.display().to_string();
    let out = link_in(state.path(), &["--transport-key", &key_arg]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    let dir_warning = format!("state directory {} has mode 0755", state.path().display());
    let key_warning = format!("transport key file {key_arg} has mode 0644");
    assert_eq!(err.matches(&dir_warning).count(), 1, "{err}");
    assert_eq!(err.matches(&key_warning).count(), 1, "{err}");
    assert!(err.contains(&format!("chmod 600 {key_arg}")), "{err}");
    assert!(
        err.contains(&format!("chmod 700 {}", state.path().display())),
        "{err}"
    );
}

/// `samizdat client | head -1`: the client's banner into a closed pipe
/// does not stop it either (it used to panic, exit code 101), and SIGTERM
/// still ends it cleanly.
#[tokio::test]
async fn a_closed_stdout_does_not_stop_the_client() {
    // A samizdat:// link to a loopback port nothing listens on: the client
    // starts, prints its banner and keeps trying that server.
    let state = tempfile::tempdir().unwrap();
    let port = apps::free_port();
    let out = Command::new(bin())
        .args([
            "link",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--state-dir",
        ])
        .arg(state.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let link = stdout
        .split_whitespace()
        .find(|w| w.starts_with("samizdat://"))
        .expect("a samizdat:// link")
        .to_string();
    let socks = apps::free_port();
    let mut child = Command::new(bin())
        .args(["client", &link, "--socks", &format!("127.0.0.1:{socks}")])
        .args(["--http", "off", "--telegram", "off", "--state-dir"])
        .arg(state.path().join("client"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    // Serving: the SOCKS5 port takes connections.
    let start = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", socks))
        .await
        .is_err()
    {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("samizdat client exited with {status}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no SOCKS5 port after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "samizdat client exited"
    );
    kill(&child, libc::SIGTERM);
    let status = exit_within(&mut child, Duration::from_secs(5))
        .await
        .expect("no exit 5 s after SIGTERM");
    assert_eq!(status.code(), Some(0), "{status}");
}
