//! Harness: the real `samizdat` binary on 127.0.0.1 between a fake DC and
//! a fake cover site run in the test's own runtime.
#![allow(dead_code)]

pub mod apps;
pub mod ws;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use testkit::fake_cover::{self, CoverKind, Received};
use testkit::fake_dc::{self, Events};
use tokio::net::TcpListener;

pub const KEY: &str = "19a31a279e164085398129e8ec40976b";
pub const DOMAIN: &str = "cover.localhost";

pub struct Proxy {
    pub child: Child,
    pub addr: SocketAddr,
    pub stdout: Vec<String>,
    pub dc_events: Events,
    pub dc_addr: SocketAddr,
    pub cover_received: Received,
    pub cover_addr: SocketAddr,
    _state: tempfile::TempDir,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_samizdat")
}

pub async fn fake_dc() -> (SocketAddr, Events) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let events: Events = Arc::new(Mutex::new(Vec::new()));
    tokio::spawn(fake_dc::serve(l, events.clone(), false));
    (addr, events)
}

pub async fn fake_cover(kind: CoverKind) -> (SocketAddr, Received) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let received: Received = Arc::new(Mutex::new(Vec::new()));
    tokio::spawn(fake_cover::serve(l, kind, received.clone()));
    (addr, received)
}

/// Starts the proxy with every form enabled, the fake DC and an echo cover,
/// plus `extra` arguments.
pub async fn start(extra: &[&str]) -> Proxy {
    start_with(CoverKind::Echo, extra).await
}

pub async fn start_with(cover: CoverKind, extra: &[&str]) -> Proxy {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let (dc_addr, dc_events) = fake_dc().await;
    let (cover_addr, cover_received) = fake_cover(cover).await;
    let state = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--secret",
        KEY,
        "--modes",
        "plain,dd,ee",
        "--domain",
        DOMAIN,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(["--cover".into(), cover_addr.to_string()]);
    args.extend(["--dc-override".into(), dc_addr.to_string()]);
    args.extend(["--state-dir".into(), state.path().display().to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let (child, addr, stdout) = spawn(Command::new(bin()).args(&args)).await;
    Proxy {
        child,
        addr,
        stdout,
        dc_events,
        dc_addr,
        cover_received,
        cover_addr,
        _state: state,
    }
}

/// Spawns a `samizdat serve` command and reads its stdout up to the links.
pub async fn spawn(cmd: &mut Command) -> (Child, SocketAddr, Vec<String>) {
    spawn_logging_to(cmd, Stdio::inherit()).await
}

/// [`spawn`] with the server's log (stderr) sent to `log`.
pub async fn spawn_logging_to(cmd: &mut Command, log: Stdio) -> (Child, SocketAddr, Vec<String>) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("spawn samizdat");
    let rx = apps::lines(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    let mut addr = None;
    loop {
        let line = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => line,
            // Its standard output closed: it ended (a refused config, say);
            // what it said is in the test's log (stderr).
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => panic!(
                "samizdat ended before printing its links ({:?}); its error is in the log above",
                child.wait().map(|s| s.to_string())
            ),
            Err(e) => panic!("samizdat printed nothing for 20 s: {e}"),
        };
        if let Some(rest) = line.strip_prefix("samizdat serving on ") {
            addr = Some(rest.split(',').next().unwrap().trim().parse().unwrap());
        }
        let done = line.starts_with("cover site:");
        lines.push(line);
        if done {
            break;
        }
    }
    (child, addr.expect("no 'serving on' line"), lines)
}

pub fn secret(form: &str) -> wire::secret::Secret {
    let text = match form {
        "plain" => KEY.to_string(),
        "dd" => format!("dd{KEY}"),
        "ee" => format!("ee{KEY}{}", hex::encode(DOMAIN)),
        other => panic!("unknown form {other}"),
    };
    wire::secret::Secret::parse(&text).unwrap()
}

/// Open descriptors of a process.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Polls `f` until it is true or `limit` passes.
pub async fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f()
}
