//! `samizdat serve` options: parsed once from the command line into one
//! validated, immutable [`ServeConfig`]. Every error names the option, what
//! was wrong and how to fix it.

use crate::serve::cover::{CoverConnect, CoverTarget};
use crate::serve::dc::{DcTable, IpPreference};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use wire::classify::{Policy, SniPolicy};
use wire::secret::{validate_domain, Key, Mode, Secret};

/// Port used when `--listen` is not given; 443 is what a cover site uses.
pub const DEFAULT_PORT: u16 = 443;
/// Fallback when binding 443 is not permitted (not root, no CAP_NET_BIND_SERVICE).
pub const FALLBACK_PORT: u16 = 8443;
/// Fake-TLS domain when none is given. Choose your own (`--domain`): a
/// domain you control that serves a real site is much harder to spot.
pub const DEFAULT_DOMAIN: &str = "www.google.com";

/// What to do with a fake-TLS hello for an unknown SNI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum UnknownSni {
    /// Send it to the cover site.
    Cover,
    /// Check the HMAC anyway.
    Accept,
}

/// Command-line options of `samizdat serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on; repeat for several. Default 0.0.0.0:443 (8443
    /// if 443 may not be bound).
    #[arg(long = "listen", value_name = "ADDR")]
    pub listen: Vec<SocketAddr>,

    /// A user's secret: 32 hex digits (the key) or a full dd…/ee… secret
    /// (an ee secret also adds its domain). Repeat for several users.
    /// Without it a key is generated once and kept in the state directory.
    #[arg(long = "secret", value_name = "SECRET")]
    pub secret: Vec<String>,

    /// Client forms to accept, comma-separated: plain, dd, ee. Plain and dd
    /// are easy for DPI to spot (no handshake, random bytes from the first
    /// byte): enable them only where nothing filters.
    #[arg(
        long,
        value_name = "MODES",
        value_delimiter = ',',
        default_value = "ee"
    )]
    pub modes: Vec<String>,

    /// Fake-TLS domain (the SNI clients send and, by default, the cover
    /// site). Repeat for several. Best: a domain you control that serves a
    /// real site.
    #[arg(long = "domain", value_name = "DOMAIN")]
    pub domain: Vec<String>,

    /// Cover site address HOST:PORT. Default: the first domain on port 443.
    /// When set, the domain is never looked up in DNS.
    #[arg(long, value_name = "HOST:PORT")]
    pub cover: Option<String>,

    /// When to connect to the cover: eager (on accept; preserves the
    /// cover's timing) or lazy (only for connections that fail).
    #[arg(long, value_enum, default_value = "eager")]
    pub cover_connect: CoverConnect,

    /// Send every DC id (positive, negative, IPv4 and IPv6) to ADDR.
    #[arg(long = "dc-override", value_name = "ADDR")]
    pub dc_override: Option<SocketAddr>,

    /// Send one DC id to ADDR, e.g. --dc 2=10.0.0.1:443 or --dc -2=... ;
    /// repeat for several.
    #[arg(long = "dc", value_name = "ID=ADDR", allow_hyphen_values = true)]
    pub dc: Vec<String>,

    /// Which address family to use for Telegram DCs.
    #[arg(long, value_enum, default_value = "ipv4")]
    pub ip_preference: IpPreference,

    /// Host name or IP to put in the printed links.
    #[arg(long, value_name = "HOST")]
    pub public_host: Option<String>,

    /// Where generated state (the zero-config secret) is kept.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// What to do with a fake-TLS hello whose SNI is none of our domains.
    #[arg(long, value_enum, default_value = "cover")]
    pub unknown_sni: UnknownSni,

    /// Oldest accepted fake-TLS client timestamp, relative to our clock.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = crate::duration::parse)]
    pub max_clock_behind: Duration,

    /// Newest accepted fake-TLS client timestamp, relative to our clock.
    #[arg(long, value_name = "DURATION", default_value = "1m", value_parser = crate::duration::parse)]
    pub max_clock_ahead: Duration,

    /// Time an authenticating client has to finish its handshake; a
    /// connection still undecided then goes to the cover site.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = crate::duration::parse)]
    pub handshake_timeout: Duration,

    /// Close a Telegram relay after this long without a byte either way.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = crate::duration::parse)]
    pub idle_timeout: Duration,

    /// Deadline for connecting to a DC or to the cover site.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = crate::duration::parse)]
    pub connect_timeout: Duration,

    /// On SIGTERM, how long open connections may keep going.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = crate::duration::parse)]
    pub drain_timeout: Duration,

    /// Most simultaneous client connections; more are closed at once.
    #[arg(long, value_name = "N", default_value_t = 20_000)]
    pub max_connections: usize,

    /// Runtime worker threads (default: one per core).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

/// One user: a name for logs and the key.
#[derive(Debug, Clone)]
pub struct UserEntry {
    /// Shown in logs and metrics.
    pub name: String,
    /// The key.
    pub key: Key,
}

/// The validated configuration of a server.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Listen addresses; `None` means the default (443, falling back to 8443).
    pub listen: Option<Vec<SocketAddr>>,
    /// Users in the order their keys are tried.
    pub users: Vec<UserEntry>,
    /// Whether the users' key was generated (zero-config).
    pub generated: bool,
    /// Accepted forms.
    pub modes: Vec<Mode>,
    /// Handshake rules for the classifier.
    pub policy: Policy,
    /// Where failures go.
    pub cover: CoverTarget,
    /// When to connect to the cover.
    pub cover_connect: CoverConnect,
    /// DC routing.
    pub dcs: DcTable,
    /// Host for links, if given.
    pub public_host: Option<String>,
    /// Handshake deadline for authenticating clients.
    pub handshake_timeout: Duration,
    /// Relay idle timeout.
    pub idle_timeout: Duration,
    /// DC and cover connect deadline.
    pub connect_timeout: Duration,
    /// Drain time on shutdown.
    pub drain_timeout: Duration,
    /// Connection cap.
    pub max_connections: usize,
}

/// A configuration mistake, naming the option and the fix.
#[derive(Debug, thiserror::Error)]
#[error("{option} {value:?}: {reason}")]
pub struct ConfigError {
    /// The option, e.g. `--secret`.
    pub option: &'static str,
    /// What was given (never a whole secret).
    pub value: String,
    /// What was wrong and how to fix it.
    pub reason: String,
}

fn err(option: &'static str, value: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        option,
        value: value.into(),
        reason: reason.into(),
    }
}

/// Shows at most the first 6 characters of a secret in an error message.
fn redact(secret: &str) -> String {
    let head: String = secret.chars().take(6).collect();
    if secret.chars().count() > 6 {
        format!("{head}…")
    } else {
        head
    }
}

impl ServeConfig {
    /// Validates the options. `generated_key` supplies the zero-config key
    /// when no `--secret` is given (it is only called then).
    pub fn from_args(
        args: &ServeArgs,
        generated_key: impl FnOnce() -> anyhow::Result<Key>,
    ) -> anyhow::Result<ServeConfig> {
        let mut modes = Vec::new();
        for m in &args.modes {
            let mode = Mode::parse(m).map_err(|e| err("--modes", m, e.to_string()))?;
            if !modes.contains(&mode) {
                modes.push(mode);
            }
        }
        if modes.is_empty() {
            return Err(err("--modes", "", "name at least one of plain, dd, ee").into());
        }
        let mut domains: Vec<String> = Vec::new();
        for d in &args.domain {
            validate_domain(d).map_err(|e| err("--domain", d, e.to_string()))?;
            domains.push(d.to_ascii_lowercase());
        }
        let mut users = Vec::new();
        for (i, text) in args.secret.iter().enumerate() {
            let t = text.trim();
            let short_hex = t.len() <= 32 && t.bytes().all(|b| b.is_ascii_hexdigit());
            let secret = if short_hex {
                Key::from_hex(text).map(|key| Secret {
                    key,
                    mode: Mode::Plain,
                    domain: None,
                })
            } else {
                Secret::parse(text)
            }
            .map_err(|e| err("--secret", redact(text), e.to_string()))?;
            if let Some(d) = &secret.domain {
                let d = d.to_ascii_lowercase();
                if !domains.contains(&d) {
                    domains.push(d);
                }
            }
            let name = if args.secret.len() == 1 {
                "default".to_string()
            } else {
                format!("user{}", i + 1)
            };
            users.push(UserEntry {
                name,
                key: secret.key,
            });
        }
        let generated = users.is_empty();
        if generated {
            users.push(UserEntry {
                name: "default".into(),
                key: generated_key()?,
            });
        }
        if domains.is_empty() {
            domains.push(DEFAULT_DOMAIN.to_string());
        }
        let cover = match &args.cover {
            Some(text) => parse_cover(text)?,
            None => CoverTarget::Host(domains[0].clone(), 443),
        };
        let mut dcs = DcTable {
            all: args.dc_override,
            preference: args.ip_preference,
            ..Default::default()
        };
        for item in &args.dc {
            let (id, addr) = item
                .split_once('=')
                .ok_or_else(|| err("--dc", item, "expected ID=ADDR, e.g. 2=127.0.0.1:443"))?;
            let id: i32 = id.trim().parse().map_err(|_| {
                err(
                    "--dc",
                    item,
                    "the DC id must be a number such as 2, -2 or 10002",
                )
            })?;
            let addr: SocketAddr = addr.trim().parse().map_err(|_| {
                err(
                    "--dc",
                    item,
                    "the address must be IP:PORT, e.g. 127.0.0.1:443",
                )
            })?;
            dcs.by_id.insert(id, addr);
        }
        let mut policy = Policy::for_modes(&modes, domains);
        policy.unknown_sni = match args.unknown_sni {
            UnknownSni::Cover => SniPolicy::Cover,
            UnknownSni::Accept => SniPolicy::Accept,
        };
        policy.max_past = args.max_clock_behind.as_secs();
        policy.max_future = args.max_clock_ahead.as_secs();
        if args.max_connections == 0 {
            return Err(err("--max-connections", "0", "must be at least 1").into());
        }
        Ok(ServeConfig {
            listen: (!args.listen.is_empty()).then(|| args.listen.clone()),
            users,
            generated,
            modes,
            policy,
            cover,
            cover_connect: args.cover_connect,
            dcs,
            public_host: args.public_host.clone(),
            handshake_timeout: args.handshake_timeout,
            idle_timeout: args.idle_timeout,
            connect_timeout: args.connect_timeout,
            drain_timeout: args.drain_timeout,
            max_connections: args.max_connections,
        })
    }
}

fn parse_cover(text: &str) -> Result<CoverTarget, ConfigError> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(CoverTarget::Addr(addr));
    }
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| err("--cover", text, "expected HOST:PORT, e.g. 127.0.0.1:8443"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| err("--cover", text, "the port must be a number from 1 to 65535"))?;
    validate_domain(host).map_err(|e| err("--cover", text, e.to_string()))?;
    Ok(CoverTarget::Host(host.to_string(), port))
}
