//! `samizdat client` as a child process: the builder and the running client.

use super::*;

/// Builder for `samizdat client LINK --socks 127.0.0.1:0 --http off
/// --telegram off …`.
#[derive(Debug)]
#[must_use = "a builder does nothing until spawned"]
pub struct Client {
    spec: Spec,
    link: String,
    socks: String,
    http: String,
    telegram: String,
}

impl Client {
    /// `bin client LINK`, SOCKS5 on an ephemeral loopback port, the HTTP
    /// proxy and the Telegram endpoint off, a fresh state directory.
    pub fn new(bin: impl Into<PathBuf>, link: impl ToString) -> Client {
        Client {
            spec: Spec::new(bin.into()),
            link: link.to_string(),
            socks: "127.0.0.1:0".into(),
            http: "off".into(),
            telegram: "off".into(),
        }
    }

    /// Also opens the HTTP proxy and the Telegram endpoint on ephemeral
    /// loopback ports, and waits for both.
    pub fn all_ports(mut self) -> Self {
        self.http = "127.0.0.1:0".into();
        self.telegram = "127.0.0.1:0".into();
        self
    }

    common_setters!();

    /// Starts it and waits (blocking) for the ports it opened.
    pub fn start(self) -> io::Result<Running> {
        let Client {
            mut spec,
            link,
            socks,
            http,
            telegram,
        } = self;
        let mut args: Vec<OsString> = ["client", &link, "--socks", &socks, "--http", &http]
            .into_iter()
            .chain(["--telegram", &telegram])
            .map(OsString::from)
            .collect();
        args.append(&mut spec.args);
        spec.args = args;
        let (want_http, want_tg) = (http != "off", telegram != "off");
        let (mut s, mut h, mut t) = (None, None, None);
        let (child, _, log, state) = spec.run("local ports", |line| {
            if let Some(a) = line.strip_prefix("SOCKS5 proxy on ") {
                s = a.trim().parse::<SocketAddr>().ok();
            } else if let Some(a) = line.strip_prefix("HTTP proxy on ") {
                h = a.trim().parse::<SocketAddr>().ok();
            } else if line.trim().starts_with("tg://proxy?") {
                t = Some(line.trim().to_string());
            }
            s.is_some() && (!want_http || h.is_some()) && (!want_tg || t.is_some())
        })?;
        let Some(socks) = s else {
            return Err(io::Error::other(
                "samizdat client printed no SOCKS5 address",
            ));
        };
        Ok(Running {
            child,
            socks,
            http: h,
            telegram_link: t,
            log,
            _state: state,
        })
    }

    /// [`Client::start`] on the runtime's blocking pool.
    pub async fn spawn(self) -> io::Result<Running> {
        tokio::task::spawn_blocking(move || self.start())
            .await
            .map_err(io::Error::other)?
    }
}

/// A running `samizdat client`; killed on drop.
#[derive(Debug)]
pub struct Running {
    /// The process (for signals, `try_wait`, its pid).
    pub child: Child,
    /// Its SOCKS5 address.
    pub socks: SocketAddr,
    /// Its HTTP proxy (with [`Client::all_ports`]).
    pub http: Option<SocketAddr>,
    /// The `tg://proxy?…` link of its Telegram endpoint (with
    /// [`Client::all_ports`]).
    pub telegram_link: Option<String>,
    log: Arc<Mutex<Vec<String>>>,
    _state: Option<TempDir>,
}

impl Running {
    /// Its log lines so far (with [`Client::collect_log`]).
    pub fn log(&self) -> Vec<String> {
        lock(&self.log).clone()
    }

    /// Whether a log line so far contains `what`.
    pub fn logged(&self, what: &str) -> bool {
        lock(&self.log).iter().any(|l| l.contains(what))
    }

    /// The local Telegram endpoint and the secret of its printed link
    /// (with [`Client::all_ports`]); `None` if it printed none or a bad one.
    pub fn telegram(&self) -> Option<(SocketAddr, wire::secret::Secret)> {
        let query = self.telegram_link.as_ref()?.split_once('?')?.1;
        let (mut port, mut secret) = (None, None);
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some(("port", p)) => port = p.parse::<u16>().ok(),
                Some(("secret", s)) => secret = wire::secret::Secret::parse(s).ok(),
                _ => {}
            }
        }
        Some((SocketAddr::from(([127, 0, 0, 1], port?)), secret?))
    }

    /// Sends `signal` (`"-TERM"`, `"-HUP"`…) to it.
    pub fn signal(&self, signal: &str) -> io::Result<()> {
        signal_pid(self.child.id(), signal)
    }

    /// SIGTERM, then waits at most `limit` for it to end; whether it did.
    pub fn terminate(&mut self, limit: Duration) -> bool {
        terminate(&mut self.child, limit)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
