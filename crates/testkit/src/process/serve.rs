//! `samizdat serve` as a child process: the builder and the running server.

use super::*;

/// Builder for `samizdat serve --listen 127.0.0.1:0 …`.
#[derive(Debug)]
#[must_use = "a builder does nothing until spawned"]
pub struct Serve {
    spec: Spec,
    /// Arguments before the `serve` subcommand (`--log debug`).
    global: Vec<OsString>,
    /// `--listen` (`None`: the binary's default).
    listen: Option<String>,
}

impl Serve {
    /// `bin serve --listen 127.0.0.1:0` with a fresh state directory; the
    /// other methods add arguments in the order they are called.
    pub fn new(bin: impl Into<PathBuf>) -> Serve {
        Serve {
            spec: Spec::new(bin.into()),
            global: Vec::new(),
            listen: Some("127.0.0.1:0".into()),
        }
    }

    /// An argument before the `serve` subcommand (`--log`, `debug`).
    pub fn global_arg(mut self, a: impl Into<OsString>) -> Self {
        self.global.push(a.into());
        self
    }

    /// `--listen ADDR` instead of `127.0.0.1:0` (`None`: no `--listen`).
    pub fn listen(mut self, addr: Option<&str>) -> Self {
        self.listen = addr.map(str::to_string);
        self
    }

    /// `--secret KEY`.
    pub fn secret(self, key: &str) -> Self {
        self.args(["--secret", key])
    }

    /// `--modes MODES` (`"ee"`, `"plain,dd,ee"`).
    pub fn modes(self, modes: &str) -> Self {
        self.args(["--modes", modes])
    }

    /// `--domain DOMAIN` (the fake-TLS name).
    pub fn domain(self, domain: &str) -> Self {
        self.args(["--domain", domain])
    }

    /// `--cover ADDR`.
    pub fn cover(self, addr: SocketAddr) -> Self {
        self.args(["--cover".to_string(), addr.to_string()])
    }

    /// `--dc-override ADDR`: every DC is this address (a fake DC).
    pub fn dc(self, addr: SocketAddr) -> Self {
        self.args(["--dc-override".to_string(), addr.to_string()])
    }

    /// `--redis URL`.
    pub fn redis(self, url: &str) -> Self {
        self.args(["--redis", url])
    }

    /// `--config FILE`.
    pub fn config(self, file: impl AsRef<Path>) -> Self {
        self.arg("--config").arg(file.as_ref())
    }

    common_setters!();

    /// Starts it and waits (blocking) until it has printed its links, up
    /// to the `cover site:` line.
    pub fn start(self) -> io::Result<Served> {
        let Serve {
            mut spec,
            mut global,
            listen,
        } = self;
        global.push("serve".into());
        if let Some(l) = listen {
            global.extend(["--listen".into(), l.into()]);
        }
        global.append(&mut spec.args);
        spec.args = global;
        let mut addr = None;
        let (child, stdout, log, state) = spec.run("links", |line| {
            if let Some(rest) = line.strip_prefix("samizdat serving on ") {
                addr = rest.split(',').next().and_then(|a| a.trim().parse().ok());
            }
            line.starts_with("cover site:")
        })?;
        let mut served = Served {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            stdout,
            log,
            _state: state,
        };
        match addr {
            Some(a) => served.addr = a,
            None => {
                return Err(io::Error::other(
                    "samizdat serve printed no 'serving on' line",
                ))
            }
        }
        Ok(served)
    }

    /// [`Serve::start`] on the runtime's blocking pool.
    pub async fn spawn(self) -> io::Result<Served> {
        tokio::task::spawn_blocking(move || self.start())
            .await
            .map_err(io::Error::other)?
    }
}

/// A running `samizdat serve`; killed on drop.
#[derive(Debug)]
pub struct Served {
    /// The process (for signals, `try_wait`, its pid).
    pub child: Child,
    /// Its first listen address.
    pub addr: SocketAddr,
    /// What it printed up to and including the `cover site:` line.
    pub stdout: Vec<String>,
    log: Arc<Mutex<Vec<String>>>,
    _state: Option<TempDir>,
}

impl Served {
    /// The first `samizdat://` link it printed.
    pub fn link(&self) -> Option<&str> {
        self.links(wire::link::SCHEME).next()
    }

    /// The `tg://proxy?…` links it printed, one per secret form.
    pub fn tg_links(&self) -> Vec<&str> {
        self.links("tg://").collect()
    }

    fn links<'a>(&'a self, scheme: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.stdout
            .iter()
            .map(|l| l.trim())
            .filter(move |l| l.starts_with(scheme))
    }

    /// Its WebSocket listener and path (with `--ws-listen`).
    pub fn ws(&self) -> Option<(SocketAddr, String)> {
        self.stdout.iter().find_map(|l| {
            let rest = l.strip_prefix("WebSocket listener on http://")?;
            let (addr, tail) = rest.split_once('/')?;
            let path = format!("/{}", tail.split_whitespace().next().unwrap_or(""));
            Some((addr.parse().ok()?, path))
        })
    }

    /// Its log lines so far (with [`Serve::collect_log`]).
    pub fn log(&self) -> Vec<String> {
        lock(&self.log).clone()
    }

    /// Sends `signal` (`"-TERM"`, `"-HUP"`, `"-STOP"`…) to it.
    pub fn signal(&self, signal: &str) -> io::Result<()> {
        signal_pid(self.child.id(), signal)
    }

    /// SIGTERM, then waits at most `limit` for it to end; whether it did.
    pub fn terminate(&mut self, limit: Duration) -> bool {
        terminate(&mut self.child, limit)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
