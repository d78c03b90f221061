//! Systems under test, each its own process: `samizdat serve` (the real
//! release binary), `samizdat client` in front of it, or a baseline relay
//! (this binary's `relay` command), optionally under callgrind.

use crate::client::Proto;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use testkit::process::{Client, Serve, Served};
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

/// The process behind a [`Running`]: samizdat's through testkit's
/// harness, or a baseline relay of this binary.
enum Proc {
    Serve(Served),
    Client(testkit::process::Running),
    Baseline(Child),
}

impl Proc {
    fn child(&mut self) -> &mut Child {
        match self {
            Proc::Serve(s) => &mut s.child,
            Proc::Client(c) => &mut c.child,
            Proc::Baseline(c) => c,
        }
    }
}

/// A running system; killed when dropped.
pub struct Running {
    proc: Proc,
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
            let _ = self.proc.child().kill();
            let _ = self.proc.child().wait();
        }
    }
}

impl Running {
    /// Asks the process to stop (SIGTERM) and waits at most `limit`.
    pub fn terminate(mut self, limit: Duration) -> bool {
        self.stop(limit)
    }

    fn stop(&mut self, limit: Duration) -> bool {
        testkit::process::terminate(self.proc.child(), limit)
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
    let wrapper: Vec<String> = match callgrind {
        None => match env.pin {
            Some(core) => vec!["taskset".into(), "-c".into(), core.to_string()],
            None => Vec::new(),
        },
        Some(out) => vec![
            "valgrind".into(),
            "--tool=callgrind".into(),
            "--quiet".into(),
            format!("--callgrind-out-file={}", out.display()),
        ],
    };
    let wait = Duration::from_secs(if callgrind.is_some() { 120 } else { 20 });
    let threads: Vec<String> = match env.threads {
        Some(n) => vec!["--threads".into(), n.to_string()],
        None => Vec::new(),
    };
    let (proc, addr, link) = match spec {
        Spec::Baseline(kind) => {
            let mut cmd = match wrapper.split_first() {
                Some((first, rest)) => {
                    let mut c = Command::new(first);
                    c.args(rest).arg(&env.bench);
                    c
                }
                None => Command::new(&env.bench),
            };
            cmd.args(["relay", "--kind", &format!("{kind:?}").to_lowercase()])
                .args(["--upstream", &dc.to_string()])
                .args(&threads)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            let mut child = cmd
                .spawn()
                .map_err(|e| anyhow::anyhow!("cannot start {}: {e}", env.bench.display()))?;
            let stdout = child.stdout.take().expect("piped");
            let rx = testkit::process::lines(stdout);
            let addr = loop {
                let line = rx.recv_timeout(wait).map_err(|_| {
                    anyhow::anyhow!("{} printed no address in {wait:?}", env.bench.display())
                })?;
                let addr = line
                    .strip_prefix("listening on ")
                    .and_then(|rest| rest.split(',').next())
                    .and_then(|a| a.trim().parse().ok());
                if let Some(addr) = addr {
                    break addr;
                }
            };
            // Keep draining stdout so the child never blocks on a full pipe.
            std::thread::spawn(move || for _ in rx {});
            (Proc::Baseline(child), addr, None)
        }
        Spec::Samizdat(extra) => {
            let state = env.scratch.join(format!("state-{}", unique()));
            std::fs::create_dir_all(&state)?;
            let served = Serve::new(&env.samizdat)
                .wrap(&wrapper)
                .wait(wait)
                .secret(KEY)
                .modes("plain,dd,ee")
                .domain(DOMAIN)
                .args(["--max-connections", "60000", "--log", "warn"])
                .cover(cover)
                .dc(dc)
                .state_dir(&state)
                .args(&threads)
                .args(extra)
                .start()?;
            let (addr, link) = (served.addr, served.link().map(str::to_string));
            (Proc::Serve(served), addr, link)
        }
        Spec::Client(link) => {
            let state = env.scratch.join(format!("client-{}", unique()));
            std::fs::create_dir_all(&state)?;
            let client = Client::new(&env.samizdat, link)
                .wrap(&wrapper)
                .wait(wait)
                .args(["--log", "warn"])
                .state_dir(&state)
                .start()?;
            let socks = client.socks;
            (Proc::Client(client), socks, None)
        }
    };
    let mut proc = proc;
    let pid = proc.child().id();
    Ok(Running {
        proc,
        addr,
        pid,
        link,
    })
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
