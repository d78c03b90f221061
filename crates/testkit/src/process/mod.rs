//! The real `samizdat` binary as a child process: [`Serve`] and [`Client`]
//! builders that start it on loopback, read back what it prints (the listen
//! address, the `samizdat://` and `tg://` links, the client's local ports)
//! and kill it when dropped, so no test or benchmark leaks a process.
//!
//! ```no_run
//! # async fn f() -> std::io::Result<()> {
//! use testkit::process::{Client, Serve};
//! let server = Serve::new("target/debug/samizdat")
//!     .secret("19a31a279e164085398129e8ec40976b")
//!     .modes("ee")
//!     .spawn()
//!     .await?;
//! let link = server.link().expect("serve printed a samizdat:// link");
//! let client = Client::new("target/debug/samizdat", link).spawn().await?;
//! println!("SOCKS5 on {}", client.socks);
//! # Ok(()) }
//! ```
//!
//! Both builders wait on a thread for the lines they need (20 s per line by
//! default, [`Serve::wait`]), so [`Serve::start`] works outside a runtime
//! and [`Serve::spawn`] inside one without blocking it.

use std::ffi::OsString;
use std::io::{self, BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where a child's log (its stderr) goes.
#[derive(Debug, Default)]
enum Log {
    /// To the parent's stderr (a test's captured output).
    #[default]
    Inherit,
    /// Nowhere.
    Discard,
    /// To a file.
    File(std::fs::File),
    /// Kept line by line ([`Served::log`], [`Running::log`]) and echoed to
    /// the parent's stderr with this prefix (`None`: not echoed).
    Collect(Option<String>),
}

/// A started child: the process, the stdout lines it printed up to what
/// was needed, its collected log and its temporary state directory.
type Started = (Child, Vec<String>, Arc<Mutex<Vec<String>>>, Option<TempDir>);

/// The parts [`Serve`] and [`Client`] share: the program, its arguments,
/// environment, state directory and log.
#[derive(Debug)]
struct Spec {
    program: PathBuf,
    /// Programs put in front of it (`taskset -c 1`, `valgrind …`).
    wrapper: Vec<OsString>,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    /// Variables removed from the inherited environment.
    env_removes: Vec<OsString>,
    /// `None`: a fresh temporary directory, removed on drop.
    state: Option<PathBuf>,
    /// Whether to pass `--state-dir` at all.
    with_state: bool,
    log: Log,
    wait: Duration,
}

impl Spec {
    fn new(program: PathBuf) -> Spec {
        Spec {
            program,
            wrapper: Vec::new(),
            args: Vec::new(),
            envs: Vec::new(),
            env_removes: Vec::new(),
            state: None,
            with_state: true,
            log: Log::Inherit,
            wait: Duration::from_secs(20),
        }
    }

    fn command(&mut self) -> io::Result<(Command, Option<TempDir>)> {
        let mut cmd = match self.wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&self.program);
                c
            }
            None => Command::new(&self.program),
        };
        cmd.args(&self.args);
        let mut temp = None;
        if self.with_state {
            let dir = match &self.state {
                Some(dir) => dir.clone(),
                None => {
                    let t = TempDir::new()?;
                    let p = t.0.clone();
                    temp = Some(t);
                    p
                }
            };
            cmd.arg("--state-dir").arg(dir);
        }
        for k in &self.env_removes {
            cmd.env_remove(k);
        }
        cmd.envs(self.envs.iter().map(|(k, v)| (k, v)));
        cmd.stdin(Stdio::null()).stdout(Stdio::piped());
        cmd.stderr(match &self.log {
            Log::Inherit => Stdio::inherit(),
            Log::Discard => Stdio::null(),
            Log::File(f) => Stdio::from(f.try_clone()?),
            Log::Collect(_) => Stdio::piped(),
        });
        Ok((cmd, temp))
    }

    /// Starts the program and feeds its stdout lines to `read` until it
    /// says it has what it needs (`true`), for at most `self.wait` a line.
    fn run(mut self, what: &str, mut read: impl FnMut(&str) -> bool) -> io::Result<Started> {
        let (mut cmd, temp) = self.command()?;
        let mut child = cmd.spawn().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot start {}: {e}", self.program.display()),
            )
        })?;
        let log = Arc::new(Mutex::new(Vec::new()));
        if let (Log::Collect(prefix), Some(err)) = (&self.log, child.stderr.take()) {
            let (sink, prefix) = (log.clone(), prefix.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    if let Some(p) = &prefix {
                        eprintln!("{p}{line}");
                    }
                    lock(&sink).push(line);
                }
            });
        }
        let Some(out) = child.stdout.take() else {
            return Err(io::Error::other("stdout not piped"));
        };
        let rx = lines(out);
        let mut printed = Vec::new();
        let fail = |child: &mut Child, why: String| {
            let _ = child.kill();
            let _ = child.wait();
            io::Error::other(format!("{} {why}", self.program.display()))
        };
        loop {
            let line = match rx.recv_timeout(self.wait) {
                Ok(line) => line,
                // Its stdout closed: it ended (a refused config, say); what
                // it said is in its log.
                Err(RecvTimeoutError::Disconnected) => {
                    let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                    return Err(fail(
                        &mut child,
                        format!(
                            "ended ({status}) before printing its {what}; its error is in its log"
                        ),
                    ));
                }
                Err(RecvTimeoutError::Timeout) => {
                    let secs = self.wait.as_secs();
                    return Err(fail(&mut child, format!("printed no {what} for {secs} s")));
                }
            };
            let done = read(&line);
            printed.push(line);
            if done {
                break;
            }
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in rx {});
        Ok((child, printed, log, temp))
    }
}

/// The lines of `from` (a child's stdout), read on a thread.
pub fn lines(from: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A temporary directory of our own, removed on drop (no `tempfile`
/// dependency for the lab and the benchmark).
#[derive(Debug)]
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> io::Result<TempDir> {
        let name = format!(
            "samizdat-testkit-{}-{}",
            std::process::id(),
            hex(&crate::random::<8>())
        );
        let path = std::env::temp_dir().join(name);
        // Owner-only, as `tempfile` makes them: samizdat warns about a
        // state directory others can read (it holds keys).
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Methods every builder has, for the shared [`Spec`].
macro_rules! common_setters {
    () => {
        /// One more command-line argument (after the builder's own).
        pub fn arg(mut self, a: impl Into<OsString>) -> Self {
            self.spec.args.push(a.into());
            self
        }

        /// More command-line arguments.
        pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, a: I) -> Self {
            self.spec.args.extend(a.into_iter().map(Into::into));
            self
        }

        /// An environment variable for the child.
        pub fn env(mut self, k: impl Into<OsString>, v: impl Into<OsString>) -> Self {
            self.spec.envs.push((k.into(), v.into()));
            self
        }

        /// Removes `k` from the environment it inherits.
        pub fn env_remove(mut self, k: impl Into<OsString>) -> Self {
            self.spec.env_removes.push(k.into());
            self
        }

        /// Its state directory (else a fresh temporary one, removed on drop).
        pub fn state_dir(mut self, dir: impl AsRef<Path>) -> Self {
            self.spec.state = Some(dir.as_ref().to_path_buf());
            self
        }

        /// No `--state-dir` argument at all (the binary's default).
        pub fn no_state_dir(mut self) -> Self {
            self.spec.with_state = false;
            self
        }

        /// Runs it under `wrapper` (`["taskset", "-c", "1"]`, valgrind…).
        pub fn wrap<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, wrapper: I) -> Self {
            self.spec.wrapper = wrapper.into_iter().map(Into::into).collect();
            self
        }

        /// How long to wait for each line it must print (20 s by default).
        pub fn wait(mut self, limit: Duration) -> Self {
            self.spec.wait = limit;
            self
        }

        /// Discards its log (stderr).
        pub fn quiet(mut self) -> Self {
            self.spec.log = Log::Discard;
            self
        }

        /// Writes its log (stderr) to `file`.
        pub fn log_to(mut self, file: std::fs::File) -> Self {
            self.spec.log = Log::File(file);
            self
        }

        /// Keeps its log (stderr) line by line, echoing each line to the
        /// parent's stderr after `prefix` (`None`: silently).
        pub fn collect_log(mut self, prefix: Option<&str>) -> Self {
            self.spec.log = Log::Collect(prefix.map(str::to_string));
            self
        }
    };
}

mod client;
mod serve;
pub use client::{Client, Running};
pub use serve::{Serve, Served};

/// `kill SIGNAL PID` (no `libc` here: `forbid(unsafe_code)`).
pub fn signal_pid(pid: u32, signal: &str) -> io::Result<()> {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("kill {signal} {pid}: {status}")))
    }
}

/// SIGTERM to `child`, then waits at most `limit`; whether it ended.
pub fn terminate(child: &mut Child, limit: Duration) -> bool {
    if let Ok(Some(_)) = child.try_wait() {
        return true;
    }
    let _ = signal_pid(child.id(), "-TERM");
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for `samizdat serve`: a shell script printing what the
    /// real one prints, then sleeping.
    fn fake_serve(dir: &Path) -> PathBuf {
        let path = dir.join("fake-samizdat");
        std::fs::write(
            &path,
            "#!/bin/sh\n\
             echo \"args: $*\" >&2\n\
             echo 'samizdat serving on 127.0.0.1:4433, [::1]:4433'\n\
             echo '  tg://proxy?server=127.0.0.1&port=4433&secret=ee00'\n\
             echo '  samizdat://example'\n\
             echo 'WebSocket listener on http://127.0.0.1:8080/abc (behind a CDN)'\n\
             echo 'cover site: 127.0.0.1:1'\n\
             case \"$1\" in client) echo 'SOCKS5 proxy on 127.0.0.1:1080';; esac\n\
             exec sleep 30\n",
        )
        .unwrap();
        let mut perm = std::fs::metadata(&path).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
        std::fs::set_permissions(&path, perm).unwrap();
        path
    }

    #[test]
    fn serve_reads_the_address_and_links_and_kills_the_child_on_drop() {
        let dir = TempDir::new().unwrap();
        let bin = fake_serve(&dir.0);
        let served = Serve::new(&bin)
            .secret("00")
            .collect_log(None)
            .start()
            .unwrap();
        assert_eq!(served.addr, "127.0.0.1:4433".parse().unwrap());
        assert_eq!(served.link(), Some("samizdat://example"));
        assert_eq!(
            served.tg_links(),
            ["tg://proxy?server=127.0.0.1&port=4433&secret=ee00"]
        );
        assert_eq!(
            served.ws(),
            Some(("127.0.0.1:8080".parse().unwrap(), "/abc".into()))
        );
        let pid = served.child.id();
        // The arguments arrive in order, with a fresh state directory.
        let log = (0..100)
            .find_map(|_| {
                std::thread::sleep(Duration::from_millis(10));
                served.log().into_iter().next()
            })
            .unwrap();
        assert!(
            log.starts_with("args: serve --listen 127.0.0.1:0 --secret 00 --state-dir /"),
            "{log}"
        );
        assert!(Path::new(&format!("/proc/{pid}")).exists());
        drop(served);
        let gone = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true);
        assert!(gone, "the child outlived its handle");
    }

    #[test]
    fn client_waits_for_its_socks_port() {
        let dir = TempDir::new().unwrap();
        let bin = fake_serve(&dir.0);
        let c = Client::new(&bin, "samizdat://x").quiet().start().unwrap();
        assert_eq!(c.socks, "127.0.0.1:1080".parse().unwrap());
        assert_eq!(c.http, None);
    }

    #[test]
    fn a_child_that_ends_early_is_an_error_naming_the_program() {
        let e = Serve::new("/bin/true").no_state_dir().start().unwrap_err();
        assert!(e.to_string().contains("/bin/true ended"), "{e}");
    }

    #[test]
    fn a_child_that_prints_nothing_times_out() {
        let dir = TempDir::new().unwrap();
        let bin = dir.0.join("silent");
        std::fs::write(&bin, "#!/bin/sh\nexec sleep 30\n").unwrap();
        let mut perm = std::fs::metadata(&bin).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
        std::fs::set_permissions(&bin, perm).unwrap();
        let e = Serve::new(&bin)
            .wait(Duration::from_millis(200))
            .start()
            .unwrap_err();
        assert!(e.to_string().contains("printed no links for 0 s"), "{e}");
    }
}
