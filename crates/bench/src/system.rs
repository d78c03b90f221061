//! Systems under test, each its own process: `samizdat serve` (the real
//! release binary), `samizdat client` in front of it, or a baseline relay
//! (this binary's `relay` command), optionally under callgrind.

use crate::client::Proto;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use wire::secret::Key;

/// The key every system and client uses.
pub const KEY: &str = "91e4a973be97fee5db4b1752eb03586c";
/// The fake-TLS domain.
pub const DOMAIN: &str = "bench.localhost";

/// The shared key.
pub fn key() -> Key {
    Key::from_hex(KEY).expect("valid key")
}

/// What to start.
#[derive(Clone, Debug)]
pub enum Spec {
    /// A baseline relay.
    Baseline(crate::baseline::Kind),
    /// `samizdat serve`, with extra arguments.
    Samizdat(Vec<String>),
    /// `samizdat client` with this `samizdat://` link: SOCKS5 only.
    Client(String),
}

/// Where the binaries are and how to run them.
#[derive(Clone, Debug)]
pub struct Env {
    /// The `samizdat` release binary.
    pub samizdat: PathBuf,
    /// This binary (for the baselines).
    pub bench: PathBuf,
    /// `--threads` for every system (None: the default, one per core).
    pub threads: Option<usize>,
    /// Scratch directory (state dirs, callgrind output).
    pub scratch: PathBuf,
    /// The core to pin the systems under test to (`taskset`).
    pub pin: Option<usize>,
}

/// A running system; killed when dropped.
pub struct Running {
    child: Child,
    /// Its listening address.
    pub addr: SocketAddr,
    /// Its process id (valgrind's when under callgrind: same process).
    pub pid: u32,
    /// The `samizdat://` link `samizdat serve` printed, if any.
    pub link: Option<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        // SIGTERM first, so a process under valgrind writes its profile.
        if !self.stop(Duration::from_secs(10)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Running {
    /// Asks the process to stop (SIGTERM) and waits at most `limit`.
    pub fn terminate(mut self, limit: Duration) -> bool {
        self.stop(limit)
    }

    fn stop(&mut self, limit: Duration) -> bool {
        if let Ok(Some(_)) = self.child.try_wait() {
            return true;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        let end = std::time::Instant::now() + limit;
        while std::time::Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

/// Starts `spec` with its DC and cover at the given addresses. With
/// `callgrind`, runs it under `valgrind --tool=callgrind` writing to that
/// file.
pub fn start(
    env: &Env,
    spec: &Spec,
    dc: SocketAddr,
    cover: SocketAddr,
    callgrind: Option<&PathBuf>,
) -> anyhow::Result<Running> {
    let (program, mut args, marker): (PathBuf, Vec<String>, &str) = match spec {
        Spec::Baseline(kind) => {
            let mut a = vec![
                "relay".to_string(),
                "--kind".into(),
                format!("{kind:?}").to_lowercase(),
                "--upstream".into(),
                dc.to_string(),
            ];
            if let Some(n) = env.threads {
                a.extend(["--threads".into(), n.to_string()]);
            }
            (env.bench.clone(), a, "listening on ")
        }
        Spec::Samizdat(extra) => {
            let state = env.scratch.join(format!("state-{}", unique()));
            std::fs::create_dir_all(&state)?;
            let mut a: Vec<String> = [
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--secret",
                KEY,
                "--modes",
                "plain,dd,ee",
                "--domain",
                DOMAIN,
                "--max-connections",
                "60000",
                "--log",
                "warn",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            a.extend(["--cover".into(), cover.to_string()]);
            a.extend(["--dc-override".into(), dc.to_string()]);
            a.extend(["--state-dir".into(), state.display().to_string()]);
            if let Some(n) = env.threads {
                a.extend(["--threads".into(), n.to_string()]);
            }
            a.extend(extra.iter().cloned());
            (env.samizdat.clone(), a, "samizdat serving on ")
        }
        Spec::Client(link) => {
            let state = env.scratch.join(format!("client-{}", unique()));
            std::fs::create_dir_all(&state)?;
            let mut a: Vec<String> = ["client", link, "--socks", "127.0.0.1:0"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            a.extend(["--http", "off", "--telegram", "off", "--log", "warn"].map(String::from));
            a.extend(["--state-dir".into(), state.display().to_string()]);
            (env.samizdat.clone(), a, "SOCKS5 proxy on ")
        }
    };
    let mut cmd = match callgrind {
        None => match env.pin {
            Some(core) => {
                let mut c = Command::new("taskset");
                c.args(["-c", &core.to_string()]).arg(&program);
                c
            }
            None => Command::new(&program),
        },
        Some(out) => {
            let mut c = Command::new("valgrind");
            c.args([
                "--tool=callgrind",
                "--quiet",
                &format!("--callgrind-out-file={}", out.display()),
                &format!("{}", program.display()),
            ]);
            c
        }
    };
    cmd.args(args.drain(..))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot start {}: {e}", program.display()))?;
    let pid = child.id();
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let wait = if callgrind.is_some() { 120 } else { 20 };
    let mut addr = None;
    let mut running = Running {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        pid,
        link: None,
    };
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(wait))
            .map_err(|_| anyhow::anyhow!("{} printed no address in {wait} s", program.display()))?;
        if let Some(rest) = line.strip_prefix(marker) {
            addr = rest.split(',').next().and_then(|a| a.trim().parse().ok());
        }
        if line.trim().starts_with("samizdat://") {
            running.link = Some(line.trim().to_string());
        }
        let done = match spec {
            Spec::Baseline(_) | Spec::Client(_) => addr.is_some(),
            Spec::Samizdat(_) => line.starts_with("cover site:"),
        };
        if done {
            break;
        }
    }
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in rx {});
    running.addr = addr.ok_or_else(|| anyhow::anyhow!("no address line"))?;
    Ok(running)
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// The client protocol for a system: plain relays carry keyless
/// obfuscated2 to the DC, the floor takes `dd`, samizdat `dd` or `ee`.
pub fn proto(spec: &Spec, tls: bool) -> Proto {
    match spec {
        Spec::Baseline(crate::baseline::Kind::Plain) => Proto::Raw,
        Spec::Baseline(crate::baseline::Kind::Floor) => Proto::Dd(key()),
        Spec::Samizdat(_) if tls => Proto::Ee(key(), DOMAIN.to_string()),
        Spec::Samizdat(_) => Proto::Dd(key()),
        Spec::Client(_) => Proto::Raw,
    }
}
