//! `samizdat serve` options: parsed once from the command line into one
//! validated, immutable [`ServeConfig`]. Every error names the option, what
//! was wrong and how to fix it.

use crate::serve::cover::{CoverConnect, CoverTarget};
use crate::serve::dc::{DcTable, IpPreference};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;
use wire::classify::{Policy, SniPolicy};
use wire::secret::{validate_domain, weak_key, Key, Mode, Secret};

/// Port used when `--listen` is not given; 443 is what a cover site uses.
pub const DEFAULT_PORT: u16 = 443;
/// Fallback when binding 443 is not permitted (not root, no CAP_NET_BIND_SERVICE).
pub const FALLBACK_PORT: u16 = 8443;
/// Fake-TLS domain when none is given. Choose your own (`--domain`): a
/// domain you control that serves a real site is much harder to spot.
pub const DEFAULT_DOMAIN: &str = "www.google.com";

/// What to do with a fake-TLS hello for an unknown SNI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnknownSni {
    /// Send it to the cover site.
    Cover,
    /// Check the HMAC anyway.
    Accept,
}

/// Command-line options of `samizdat serve`. Every option can also be set
/// in the config file (`--config`); a flag given here overrides the file.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// TOML config file with every option below and the users (see
    /// samizdat.example.toml). Flags override its values.
    #[arg(long, short = 'c', value_name = "FILE", env = "SAMIZDAT_CONFIG")]
    pub config: Option<PathBuf>,

    /// Address to listen on; repeat for several [default: 0.0.0.0:443, or
    /// 8443 if 443 may not be bound].
    #[arg(long = "listen", value_name = "ADDR")]
    pub listen: Vec<SocketAddr>,

    /// A user's secret: 32 hex digits (the key) or a full dd…/ee… secret
    /// (an ee secret also adds its domain). Repeat for several users.
    /// Without any user a key is generated once and kept in the state
    /// directory.
    #[arg(long = "secret", value_name = "SECRET")]
    pub secret: Vec<String>,

    /// Client forms to accept, comma-separated: plain, dd, ee [default: ee].
    /// Plain and dd are easy for DPI to spot (no handshake, random bytes from
    /// the first byte): enable them only where nothing filters.
    #[arg(long, value_name = "MODES", value_delimiter = ',')]
    pub modes: Vec<String>,

    /// Fake-TLS domain: the SNI clients send and, by default, the cover
    /// site. Repeat for several [default: www.google.com]. Best: a domain you
    /// control that serves a real site.
    #[arg(long = "domain", value_name = "DOMAIN")]
    pub domain: Vec<String>,

    /// Cover site address HOST:PORT [default: the first domain, port 443].
    /// When set, the domain is never looked up in DNS.
    #[arg(long, value_name = "HOST:PORT")]
    pub cover: Option<String>,

    /// When to connect to the cover: eager (on accept; preserves the
    /// cover's timing) or lazy (only for connections that fail) [default: eager].
    #[arg(long, value_enum, value_name = "WHEN")]
    pub cover_connect: Option<CoverConnect>,

    /// Send every DC id (positive, negative, IPv4 and IPv6) to ADDR.
    #[arg(long = "dc-override", value_name = "ADDR")]
    pub dc_override: Option<SocketAddr>,

    /// Send one DC id to ADDR, e.g. --dc 2=10.0.0.1:443 or --dc -2=... ;
    /// repeat for several.
    #[arg(long = "dc", value_name = "ID=ADDR", allow_hyphen_values = true)]
    pub dc: Vec<String>,

    /// Address family for Telegram DCs [default: ipv4].
    #[arg(long, value_enum, value_name = "FAMILY")]
    pub ip_preference: Option<IpPreference>,

    /// Host name or IP to put in the printed links.
    #[arg(long, value_name = "HOST")]
    pub public_host: Option<String>,

    /// Where generated state (the zero-config secret) is kept [default:
    /// $SAMIZDAT_STATE_DIR, /var/lib/samizdat for root, else
    /// ~/.local/state/samizdat].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// What to do with a fake-TLS hello whose SNI is none of our domains
    /// [default: cover].
    #[arg(long, value_enum, value_name = "POLICY")]
    pub unknown_sni: Option<UnknownSni>,

    /// Oldest accepted fake-TLS client timestamp, relative to our clock
    /// [default: 10m].
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse)]
    pub max_clock_behind: Option<Duration>,

    /// Newest accepted fake-TLS client timestamp, relative to our clock
    /// [default: 1m].
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse)]
    pub max_clock_ahead: Option<Duration>,

    /// Time an authenticating client has to finish its handshake; a
    /// connection still undecided then goes to the cover site [default: 30s].
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse)]
    pub handshake_timeout: Option<Duration>,

    /// Close a Telegram relay after this long without a byte either way
    /// [default: 10m].
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse)]
    pub idle_timeout: Option<Duration>,

    /// Deadline for connecting to a DC or to the cover site [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse)]
    pub connect_timeout: Option<Duration>,

    /// On SIGTERM, how long open connections may keep going [default: 15s].
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse)]
    pub drain_timeout: Option<Duration>,

    /// Most simultaneous client connections; more wait in the kernel's
    /// accept queue [default: 20000].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,

    /// Most unauthenticated connections (undecided, or spliced to the
    /// cover) from one IPv4 address or IPv6 /64; more are held without
    /// being read and closed at the handshake deadline
    /// [default: a quarter of --max-connections, at most 256].
    #[arg(long, value_name = "N")]
    pub max_unauthenticated_per_ip: Option<usize>,

    /// The same for one IPv4 /24 or IPv6 /48 [default: half of
    /// --max-connections, at most 1024].
    #[arg(long, value_name = "N")]
    pub max_unauthenticated_per_subnet: Option<usize>,

    /// Worker threads of each of the two runtimes (handshakes; relays)
    /// [default: one per core].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,

    /// Put client IP addresses in log lines (off by default: a seized
    /// server should not hand over its users).
    #[arg(long)]
    pub log_client_ips: bool,

    /// Serve Prometheus metrics at http://ADDR/metrics [default: off].
    /// Keep it on loopback (e.g. 127.0.0.1:9090): the numbers show who uses
    /// the proxy and how much.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,

    /// Share state with other instances through Redis: redis://[:PASSWORD@]HOST:PORT[/DB]
    /// or rediss://… for TLS. The replay cache, usage and quotas, connection
    /// and address limits and (unless fleet.shared_users = false) the user
    /// table then hold fleet-wide [default: off: everything in-process].
    /// See docs/fleet.md.
    #[arg(
        long,
        value_name = "URL",
        env = "SAMIZDAT_REDIS",
        hide_env_values = true
    )]
    pub redis: Option<String>,

    /// Deadline for every Redis call; past it the call counts as Redis being
    /// down [default: 100ms].
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse)]
    pub redis_timeout: Option<Duration>,

    /// When Redis is down or slow, a handshake that passed the local replay
    /// cache is accepted (open) or sent to the cover site (closed; with
    /// open, a replay to another instance shows that it belongs to the
    /// fleet) [default: closed].
    #[arg(long, value_enum, value_name = "CHOICE")]
    pub redis_down_replay: Option<crate::fleet::DownReplay>,

    /// When Redis is down or slow, fleet-wide connection and address limits
    /// fall back to this instance's own count (local) or refuse the
    /// connection (refuse) [default: local].
    #[arg(long, value_enum, value_name = "CHOICE")]
    pub redis_down_limits: Option<crate::fleet::DownLimits>,

    /// This instance's name in the fleet (for its connection leases)
    /// [default: $HOSTNAME, else a random name].
    #[arg(long, value_name = "NAME")]
    pub instance: Option<String>,
    /// Let samizdat clients' streams reach this prefix, which the egress
    /// policy refuses by default (loopback, private, link-local, metadata
    /// addresses); repeat for several, e.g. --egress-allow 10.1.0.0/16.
    #[arg(long = "egress-allow", value_name = "CIDR")]
    pub egress_allow: Vec<String>,

    /// Ports samizdat clients' streams may not reach on any address,
    /// comma-separated, or "none" [default: 25,465,587 (SMTP)].
    #[arg(long, value_name = "PORTS")]
    pub egress_deny_ports: Option<String>,

    /// Put samizdat clients' destinations in debug log lines (off by
    /// default: they are the users' browsing history).
    #[arg(long)]
    pub log_destinations: bool,

    /// Do not accept samizdat clients (the samizdat transport); serve
    /// Telegram apps only.
    #[arg(long)]
    pub no_tunnel: bool,

    #[command(flatten)]
    pub transport_limits: TransportLimitArgs,

    /// The samizdat transport's private key file (as `transport.toml` in the
    /// state directory). Give every instance of a fleet the same file, so
    /// one samizdat:// link works on all of them [default: generated once
    /// into the state directory].
    #[arg(long, value_name = "FILE")]
    pub transport_key: Option<PathBuf>,

    /// Also accept samizdat clients inside WebSockets on this plain-HTTP
    /// address, for a reverse proxy or CDN in front (docs/fronting.md),
    /// e.g. 127.0.0.1:8081 [default: off].
    #[arg(long, value_name = "ADDR")]
    pub ws_listen: Option<SocketAddr>,

    /// The URL path the WebSocket listener upgrades (anything else gets
    /// 404) [default: a random-looking path derived from the server's
    /// transport key, printed at start].
    #[arg(long, value_name = "/PATH")]
    pub ws_path: Option<String>,

    /// Where clients reach the WebSocket listener through the front:
    /// wss://HOST[:PORT][/PATH] (the path defaults to --ws-path). Printed
    /// links then carry it as an alternative server.
    #[arg(long, value_name = "URL")]
    pub ws_public: Option<String>,

    /// Take the client's address from --ws-client-header only when the
    /// WebSocket connection comes from this prefix (your reverse proxy or
    /// CDN); repeat for several [default: 127.0.0.0/8 and ::1].
    #[arg(long = "ws-trusted-proxy", value_name = "CIDR")]
    pub ws_trusted_proxies: Vec<String>,

    /// The request header in which a trusted front reports the client's
    /// address, e.g. CF-Connecting-IP [default: X-Real-IP].
    #[arg(long, value_name = "NAME")]
    pub ws_client_header: Option<String>,
}

/// One user: a name for logs and the key.
#[derive(Debug, Clone)]
pub struct UserEntry {
    /// Shown in logs and metrics.
    pub name: String,
    /// The key.
    pub key: Key,
    /// Fake-TLS domains this user's links name (from an ee secret); empty
    /// means any of the server's domains. Used to narrow the key search.
    pub domains: Vec<String>,
    /// Optional limits.
    pub limits: UserLimits,
}

/// A user's optional limits. Exceeding one ends or refuses only that
/// user's connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserLimits {
    /// Most simultaneous connections.
    pub max_connections: Option<usize>,
    /// Most distinct client addresses at once.
    pub max_ips: Option<usize>,
    /// Bytes (both directions) over the user's lifetime; kept across restarts.
    pub quota: Option<u64>,
    /// Unix time after which the user is refused and their connections end.
    pub expires: Option<u64>,
    /// Bytes per second, both directions together, across the user's connections.
    pub bandwidth: Option<u64>,
}

/// Parses a byte size: `1048576`, `500MB`, `10GiB`, `1.5TB` (SI and binary units).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| {
        format!("{text:?} is not a size; write e.g. 500MB, 10GiB or a number of bytes")
    })?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?}; use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB"
            ))
        }
    };
    let bytes = value * mult;
    if !bytes.is_finite() || !(1.0..=1e18).contains(&bytes) {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(bytes as u64)
}

/// Parses a rate: `1MiB/s`, `500KB/s`, `8Mbit/s`, `100Mbps`.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let lower = t.to_ascii_lowercase();
    let (size, bits) = if let Some(x) = lower
        .strip_suffix("bit/s")
        .or_else(|| lower.strip_suffix("bps"))
    {
        (x.to_string(), true)
    } else if let Some(x) = lower.strip_suffix("/s") {
        (x.to_string(), false)
    } else {
        return Err(format!(
            "{text:?} is not a rate; write e.g. 1MiB/s, 500KB/s or 8Mbit/s"
        ));
    };
    let size = if bits { format!("{size}b") } else { size };
    let n = parse_size(&size)
        .map_err(|_| format!("{text:?} is not a rate; write e.g. 1MiB/s, 500KB/s or 8Mbit/s"))?;
    Ok(if bits { (n / 8).max(1) } else { n })
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u8, d: u8) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A TOML date-time as unix seconds; a date alone is midnight UTC, a local
/// time is taken as UTC.
fn datetime_to_unix(dt: &toml::value::Datetime) -> Result<u64, String> {
    let date = dt
        .date
        .ok_or("expected a date, e.g. 2027-01-31 or 2027-01-31T12:00:00Z")?;
    let mut secs = days_from_civil(i64::from(date.year), date.month, date.day) * 86_400;
    if let Some(t) = dt.time {
        secs += i64::from(t.hour) * 3600 + i64::from(t.minute) * 60 + i64::from(t.second);
    }
    if let Some(toml::value::Offset::Custom { minutes }) = dt.offset {
        secs -= i64::from(minutes) * 60;
    }
    u64::try_from(secs).map_err(|_| "dates before 1970 are not supported".to_string())
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
    /// Caps on unauthenticated connections per source.
    pub source_caps: crate::serve::sources::SourceCaps,
    /// Runtime worker threads (`None`: one per core).
    pub threads: Option<usize>,
    /// Whether log lines may name client addresses.
    pub log_client_ips: bool,
    /// Where generated state lives.
    pub state_dir: PathBuf,
    /// Prometheus endpoint address (`None`: off).
    pub metrics: Option<SocketAddr>,
    /// Shared state through Redis (`None`: in-process).
    pub fleet: Option<crate::fleet::FleetConfig>,
    /// Whether samizdat clients are accepted (the transport of
    /// `docs/transport.md`).
    pub tunnel: bool,
    /// The transport key file, if not the state directory's.
    pub transport_key: Option<PathBuf>,
    /// Prefixes the egress policy lets tunnelled streams reach although it
    /// refuses them by default.
    pub egress_allow: Vec<ipnet::IpNet>,
    /// Ports tunnelled streams may not reach on any address (SMTP by
    /// default).
    pub egress_deny_ports: Vec<u16>,
    /// Whether log lines may name tunnelled streams' destinations.
    pub log_destinations: bool,
    /// The WebSocket listener's address (`None`: off).
    pub ws_listen: Option<SocketAddr>,
    /// The path it upgrades (`None`: derived from the transport key, see
    /// [`crate::links::default_ws_path`]).
    pub ws_path: Option<String>,
    /// The public `wss://` endpoint for links; its `ws_path` is `None` when
    /// the URL gave no path (then the listener's path is used).
    pub ws_public: Option<wire::link::Endpoint>,
    /// What one user's samizdat sessions may hold on this server.
    pub transport_limits: TransportLimits,
    /// Peers whose `ws_client_header` is believed (the front).
    pub ws_trusted_proxies: Vec<ipnet::IpNet>,
    /// The header carrying the client's address from a trusted front.
    pub ws_client_header: String,
}

/// A configuration mistake: where it is (a flag, or file, line and key),
/// what was wrong and how to fix it.
#[derive(Debug, thiserror::Error)]
#[error("{place}: {reason}")]
pub struct ConfigError {
    /// `--secret "0123…"` or `samizdat.toml:12: users.alice.secret`.
    pub place: String,
    /// What was wrong and how to fix it.
    pub reason: String,
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

/// Where a value came from, for error messages.
#[derive(Clone, Copy)]
enum From<'a> {
    Flag(&'static str),
    File { path: &'a Path, text: &'a str },
}

impl From<'_> {
    /// `place` for a value of this origin. `shown` is the value as it may
    /// appear in the message (already redacted for secrets).
    fn place(&self, key: &str, span: Option<std::ops::Range<usize>>, shown: &str) -> String {
        match self {
            From::Flag(flag) => format!("{flag} {shown:?}"),
            From::File { path, text } => {
                let line = span.map(|r| text[..r.start.min(text.len())].matches('\n').count() + 1);
                match line {
                    Some(line) => format!("{}:{line}: {key}", path.display()),
                    None => format!("{}: {key}", path.display()),
                }
            }
        }
    }
}

/// A value with where it came from.
struct Item<'a, T> {
    value: T,
    from: From<'a>,
    key: String,
    span: Option<std::ops::Range<usize>>,
}

impl<T> Item<'_, T> {
    fn fail(&self, shown: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            place: self.from.place(&self.key, self.span.clone(), shown),
            reason: reason.into(),
        }
    }
}

/// How to make a key, for error messages.
pub const MAKE_A_KEY: &str =
    "make a new one with `openssl rand -hex 16` (or `head -c16 /dev/urandom | xxd -p`)";

/// [`parse_secret`] for a user who will be served, refusing what others
/// can guess: the placeholder of samizdat.example.toml, a key published in
/// samizdat's docs and example config, an obvious pattern ([`weak_key`]).
pub fn parse_user_secret(user: &str, text: &str) -> Result<Secret, String> {
    let t = text.trim().to_ascii_lowercase();
    if t.contains("replace") || t.contains("change-me") || t.contains("changeme") {
        return Err(format!(
            "user {user}: replace {:?} with the user's own key; {MAKE_A_KEY}",
            text.trim()
        ));
    }
    let secret = parse_secret(text)?;
    check_key(user, &secret.key)?;
    Ok(secret)
}

/// Refuses `key` for `user` if [`weak_key`] does, saying why and how to
/// make a good one.
pub fn check_key(user: &str, key: &Key) -> Result<(), String> {
    match weak_key(key) {
        None => Ok(()),
        Some(why) => Err(format!(
            "user {user}'s key is {why}: anyone could guess it and use this proxy; {MAKE_A_KEY}"
        )),
    }
}

/// Parses a secret as given to `--secret` or `users.NAME.secret`: 32 hex
/// digits are a key; longer text is a full dd…/ee… secret.
pub fn parse_secret(text: &str) -> Result<Secret, String> {
    let t = text.trim();
    let short_hex = t.len() <= 32 && t.bytes().all(|b| b.is_ascii_hexdigit());
    if short_hex {
        Key::from_hex(t).map(|key| Secret {
            key,
            mode: Mode::Plain,
            domain: None,
        })
    } else {
        Secret::parse(t)
    }
    .map_err(|e| e.to_string())
}

/// Parses `HOST:PORT` or `IP:PORT` for the cover site.
pub fn parse_cover(text: &str) -> Result<CoverTarget, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(CoverTarget::Addr(addr));
    }
    let (host, port) = text
        .rsplit_once(':')
        .ok_or("expected HOST:PORT, e.g. 127.0.0.1:8443")?;
    let port: u16 = port
        .parse()
        .map_err(|_| "the port must be a number from 1 to 65535".to_string())?;
    validate_domain(host).map_err(|e| e.to_string())?;
    Ok(CoverTarget::Host(host.to_string(), port))
}

fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    text.trim()
        .parse()
        .map_err(|_| "expected IP:PORT, e.g. 127.0.0.1:443 or [::1]:443".to_string())
}

fn parse_dc_id(text: &str) -> Result<i32, String> {
    text.trim()
        .parse()
        .map_err(|_| "the DC id must be a number such as 2, -2 or 10002".to_string())
}

/// User names: 1-64 of letters, digits, `-`, `_`, `.`, `@`.
pub(crate) fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
}

/// The config file's shape. Unknown keys are errors.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    server: ServerSection,
    #[serde(default)]
    dc: DcSection,
    #[serde(default)]
    users: BTreeMap<String, UserSection>,
    #[serde(default)]
    fleet: FleetSection,
    #[serde(default)]
    transport_limits: TransportLimitsSection,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FleetSection {
    redis: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    replay_when_down: Option<crate::fleet::DownReplay>,
    limits_when_down: Option<crate::fleet::DownLimits>,
    shared_users: Option<bool>,
    instance: Option<Spanned<String>>,
    prefix: Option<Spanned<String>>,
    lease: Option<Spanned<String>>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerSection {
    listen: Option<Vec<Spanned<String>>>,
    modes: Option<Vec<Spanned<String>>>,
    domains: Option<Vec<Spanned<String>>>,
    cover: Option<Spanned<String>>,
    cover_connect: Option<CoverConnect>,
    public_host: Option<String>,
    state_dir: Option<PathBuf>,
    unknown_sni: Option<UnknownSni>,
    max_clock_behind: Option<Spanned<String>>,
    max_clock_ahead: Option<Spanned<String>>,
    handshake_timeout: Option<Spanned<String>>,
    idle_timeout: Option<Spanned<String>>,
    connect_timeout: Option<Spanned<String>>,
    drain_timeout: Option<Spanned<String>>,
    max_connections: Option<Spanned<usize>>,
    max_unauthenticated_per_ip: Option<Spanned<usize>>,
    max_unauthenticated_per_subnet: Option<Spanned<usize>>,
    threads: Option<Spanned<usize>>,
    log_client_ips: Option<bool>,
    metrics: Option<Spanned<String>>,
    tunnel: Option<bool>,
    transport_key: Option<PathBuf>,
    egress_allow: Option<Vec<Spanned<String>>>,
    egress_deny_ports: Option<Spanned<Vec<u16>>>,
    log_destinations: Option<bool>,
    ws_listen: Option<Spanned<String>>,
    ws_path: Option<Spanned<String>>,
    ws_public: Option<Spanned<String>>,
    ws_trusted_proxies: Option<Vec<Spanned<String>>>,
    ws_client_header: Option<Spanned<String>>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DcSection {
    #[serde(rename = "override")]
    override_all: Option<Spanned<String>>,
    ip_preference: Option<IpPreference>,
    #[serde(default)]
    routes: BTreeMap<String, Spanned<String>>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct UserSection {
    secret: Spanned<String>,
    max_connections: Option<Spanned<usize>>,
    max_ips: Option<Spanned<usize>>,
    quota: Option<Spanned<String>>,
    expires: Option<Spanned<toml::value::Datetime>>,
    bandwidth: Option<Spanned<String>>,
}

/// The config file as read, with its text for line numbers.
struct Loaded {
    path: PathBuf,
    text: String,
    file: FileConfig,
}

fn read_file(path: &Path) -> anyhow::Result<Loaded> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("{}: cannot read the config file: {e}", path.display()))?;
    let file: FileConfig = toml::from_str(&text).map_err(|e| {
        let line = e
            .span()
            .map(|r| text[..r.start.min(text.len())].matches('\n').count() + 1);
        let msg = e.message().trim_end().to_string();
        match line {
            Some(l) => anyhow::anyhow!("{}:{l}: {msg}", path.display()),
            None => anyhow::anyhow!("{}: {msg}", path.display()),
        }
    })?;
    Ok(Loaded {
        path: path.to_path_buf(),
        text,
        file,
    })
}

/// Flag values if given, else the file's, each with its origin.
fn pick<'a, T: Clone>(
    flag: &[T],
    flag_name: &'static str,
    file: Option<&Vec<Spanned<T>>>,
    key: &str,
    loaded: Option<&'a Loaded>,
) -> Vec<Item<'a, T>> {
    if !flag.is_empty() || loaded.is_none() {
        return flag
            .iter()
            .map(|v| Item {
                value: v.clone(),
                from: From::Flag(flag_name),
                key: key.to_string(),
                span: None,
            })
            .collect();
    }
    let l = loaded.expect("checked");
    let from = From::File {
        path: &l.path,
        text: &l.text,
    };
    file.map(|vs| {
        vs.iter()
            .map(|v| Item {
                value: v.get_ref().clone(),
                from,
                key: key.to_string(),
                span: Some(v.span()),
            })
            .collect()
    })
    .unwrap_or_default()
}

/// A single value: the flag if given, else the file's.
fn pick_one<'a, T: Clone>(
    flag: Option<&T>,
    flag_name: &'static str,
    file: Option<&Spanned<T>>,
    key: &str,
    loaded: Option<&'a Loaded>,
) -> Option<Item<'a, T>> {
    if let Some(v) = flag {
        return Some(Item {
            value: v.clone(),
            from: From::Flag(flag_name),
            key: key.to_string(),
            span: None,
        });
    }
    let (l, f) = (loaded?, file?);
    Some(Item {
        value: f.get_ref().clone(),
        from: From::File {
            path: &l.path,
            text: &l.text,
        },
        key: key.to_string(),
        span: Some(f.span()),
    })
}

fn duration_item(
    flag: Option<Duration>,
    flag_name: &'static str,
    file: Option<&Spanned<String>>,
    key: &str,
    loaded: Option<&Loaded>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    if let Some(d) = flag {
        return Ok(d);
    }
    match pick_one(None::<&String>, flag_name, file, key, loaded) {
        Some(item) => crate::duration::parse(&item.value).map_err(|e| item.fail(&item.value, e)),
        None => Ok(default),
    }
}

impl ServeConfig {
    /// Reads `--config` (if any), merges the flags over it, validates, and
    /// generates or loads the zero-config key when there are no users.
    /// Returns the configuration and, for a generated key, whether it was
    /// created just now.
    pub fn load(args: &ServeArgs) -> anyhow::Result<(ServeConfig, Option<bool>)> {
        let loaded = args.config.as_deref().map(read_file).transpose()?;
        let mut created = None;
        let state_dir = state_dir_of(args, loaded.as_ref());
        let config = Self::build(args, loaded.as_ref(), state_dir.clone(), || {
            let (key, new) = crate::state::load_or_create_key(&state_dir)?;
            created = Some(new);
            Ok(key)
        })?;
        Ok((config, created))
    }

    /// Validates the options (and `--config`, if given). `generated_key`
    /// supplies the zero-config key when there are no users (it is only
    /// called then).
    pub fn from_args(
        args: &ServeArgs,
        generated_key: impl FnOnce() -> anyhow::Result<Key>,
    ) -> anyhow::Result<ServeConfig> {
        let loaded = args.config.as_deref().map(read_file).transpose()?;
        let state_dir = state_dir_of(args, loaded.as_ref());
        Self::build(args, loaded.as_ref(), state_dir, generated_key)
    }

    fn build(
        args: &ServeArgs,
        loaded: Option<&Loaded>,
        state_dir: PathBuf,
        generated_key: impl FnOnce() -> anyhow::Result<Key>,
    ) -> anyhow::Result<ServeConfig> {
        let empty = FileConfig::default();
        let file = loaded.map(|l| &l.file).unwrap_or(&empty);
        let server = &file.server;

        let mut modes = Vec::new();
        for item in pick(
            &args.modes,
            "--modes",
            server.modes.as_ref(),
            "server.modes",
            loaded,
        ) {
            let mode =
                Mode::parse(&item.value).map_err(|e| item.fail(&item.value, e.to_string()))?;
            if !modes.contains(&mode) {
                modes.push(mode);
            }
        }
        if modes.is_empty() {
            if args.modes.is_empty() && server.modes.is_none() {
                modes.push(Mode::FakeTls);
            } else {
                return Err(ConfigError {
                    place: "modes".into(),
                    reason: "name at least one of plain, dd, ee".into(),
                }
                .into());
            }
        }

        let mut domains: Vec<String> = Vec::new();
        for item in pick(
            &args.domain,
            "--domain",
            server.domains.as_ref(),
            "server.domains",
            loaded,
        ) {
            validate_domain(&item.value).map_err(|e| item.fail(&item.value, e.to_string()))?;
            let d = item.value.to_ascii_lowercase();
            if !domains.contains(&d) {
                domains.push(d);
            }
        }

        let mut users: Vec<UserEntry> = Vec::new();
        let from_file = if loaded.is_some() {
            file.users.len()
        } else {
            0
        };
        let mut add_user =
            |name: String, secret: Secret, limits: UserLimits, domains: &mut Vec<String>| {
                let own: Vec<String> = secret
                    .domain
                    .iter()
                    .map(|d| d.to_ascii_lowercase())
                    .collect();
                for d in &own {
                    if !domains.contains(d) {
                        domains.push(d.clone());
                    }
                }
                users.push(UserEntry {
                    name,
                    key: secret.key,
                    domains: own,
                    limits,
                });
            };
        if let Some(l) = loaded {
            let from = From::File {
                path: &l.path,
                text: &l.text,
            };
            for (name, user) in &file.users {
                let key = format!("users.{name}.secret");
                let item = Item {
                    value: (),
                    from,
                    key: key.clone(),
                    span: Some(user.secret.span()),
                };
                if !valid_user_name(name) {
                    return Err(item.fail("", format!("user name {name:?}: use 1-64 letters, digits, '-', '_', '.' or '@'")).into());
                }
                let secret =
                    parse_user_secret(name, user.secret.get_ref()).map_err(|e| item.fail("", e))?;
                let at = |key: &str, span: std::ops::Range<usize>| Item {
                    value: (),
                    from,
                    key: format!("users.{name}.{key}"),
                    span: Some(span),
                };
                let mut limits = UserLimits::default();
                if let Some(v) = &user.max_connections {
                    if *v.get_ref() == 0 {
                        return Err(at("max_connections", v.span())
                            .fail("", "must be at least 1 (remove the user to refuse them)")
                            .into());
                    }
                    limits.max_connections = Some(*v.get_ref());
                }
                if let Some(v) = &user.max_ips {
                    if *v.get_ref() == 0 {
                        return Err(at("max_ips", v.span())
                            .fail("", "must be at least 1")
                            .into());
                    }
                    limits.max_ips = Some(*v.get_ref());
                }
                if let Some(v) = &user.quota {
                    limits.quota = Some(
                        parse_size(v.get_ref()).map_err(|e| at("quota", v.span()).fail("", e))?,
                    );
                }
                if let Some(v) = &user.bandwidth {
                    limits.bandwidth = Some(
                        parse_rate(v.get_ref())
                            .map_err(|e| at("bandwidth", v.span()).fail("", e))?,
                    );
                }
                if let Some(v) = &user.expires {
                    limits.expires = Some(
                        datetime_to_unix(v.get_ref())
                            .map_err(|e| at("expires", v.span()).fail("", e))?,
                    );
                }
                add_user(name.clone(), secret, limits, &mut domains);
            }
        }
        for (i, text) in args.secret.iter().enumerate() {
            let item = Item {
                value: (),
                from: From::Flag("--secret"),
                key: String::new(),
                span: None,
            };
            let name = match (from_file, args.secret.len()) {
                (0, 1) => "default".to_string(),
                (0, _) => format!("user{}", i + 1),
                _ => format!("cli{}", i + 1),
            };
            let secret = parse_user_secret(&name, text).map_err(|e| item.fail(&redact(text), e))?;
            add_user(name, secret, UserLimits::default(), &mut domains);
        }
        // A fleet that shares its user table generates no user of its own:
        // each instance would make a different one.
        let fleet = fleet_config(args, loaded)?;
        let shared_users = fleet.as_ref().is_some_and(|f| f.shared_users);
        let generated = users.is_empty() && !shared_users;
        if generated {
            users.push(UserEntry {
                name: "default".into(),
                key: generated_key()?,
                domains: Vec::new(),
                limits: UserLimits::default(),
            });
        }
        {
            let mut seen = std::collections::HashSet::new();
            for u in &users {
                if !seen.insert(u.key.0) {
                    return Err(ConfigError {
                        place: format!("user {}", u.name),
                        reason:
                            "has the same key as another user; give every user a key of their own"
                                .into(),
                    }
                    .into());
                }
            }
        }
        if domains.is_empty() {
            domains.push(DEFAULT_DOMAIN.to_string());
        }

        let cover = match pick_one(
            args.cover.as_ref(),
            "--cover",
            server.cover.as_ref(),
            "server.cover",
            loaded,
        ) {
            Some(item) => parse_cover(&item.value).map_err(|e| item.fail(&item.value, e))?,
            None => CoverTarget::Host(domains[0].clone(), 443),
        };

        let mut listen = Vec::new();
        if args.listen.is_empty() {
            if let (Some(l), Some(list)) = (loaded, &server.listen) {
                let from = From::File {
                    path: &l.path,
                    text: &l.text,
                };
                for v in list {
                    let item = Item {
                        value: (),
                        from,
                        key: "server.listen".into(),
                        span: Some(v.span()),
                    };
                    listen.push(parse_addr(v.get_ref()).map_err(|e| item.fail("", e))?);
                }
            }
        } else {
            listen = args.listen.clone();
        }

        let mut dcs = DcTable {
            preference: args
                .ip_preference
                .or(file.dc.ip_preference)
                .unwrap_or_default(),
            ..Default::default()
        };
        let override_flag = args.dc_override.map(|a| a.to_string());
        if let Some(item) = pick_one(
            override_flag.as_ref(),
            "--dc-override",
            file.dc.override_all.as_ref(),
            "dc.override",
            loaded,
        ) {
            dcs.all = Some(parse_addr(&item.value).map_err(|e| item.fail(&item.value, e))?);
        }
        if let Some(l) = loaded {
            let from = From::File {
                path: &l.path,
                text: &l.text,
            };
            for (id, addr) in &file.dc.routes {
                let item = Item {
                    value: (),
                    from,
                    key: format!("dc.routes.\"{id}\""),
                    span: Some(addr.span()),
                };
                let id = parse_dc_id(id).map_err(|e| item.fail("", e))?;
                dcs.by_id.insert(
                    id,
                    parse_addr(addr.get_ref()).map_err(|e| item.fail("", e))?,
                );
            }
        }
        for text in &args.dc {
            let item = Item {
                value: (),
                from: From::Flag("--dc"),
                key: String::new(),
                span: None,
            };
            let (id, addr) = text
                .split_once('=')
                .ok_or_else(|| item.fail(text, "expected ID=ADDR, e.g. 2=127.0.0.1:443"))?;
            let id = parse_dc_id(id).map_err(|e| item.fail(text, e))?;
            dcs.by_id
                .insert(id, parse_addr(addr).map_err(|e| item.fail(text, e))?);
        }

        let mut policy = Policy::for_modes(&modes, domains);
        policy.unknown_sni = match args
            .unknown_sni
            .or(server.unknown_sni)
            .unwrap_or(UnknownSni::Cover)
        {
            UnknownSni::Cover => SniPolicy::Cover,
            UnknownSni::Accept => SniPolicy::Accept,
        };
        let dur = |flag, name, f: &Option<Spanned<String>>, key, default| {
            duration_item(flag, name, f.as_ref(), key, loaded, default)
        };
        policy.max_past = dur(
            args.max_clock_behind,
            "--max-clock-behind",
            &server.max_clock_behind,
            "server.max_clock_behind",
            Duration::from_secs(600),
        )?
        .as_secs();
        policy.max_future = dur(
            args.max_clock_ahead,
            "--max-clock-ahead",
            &server.max_clock_ahead,
            "server.max_clock_ahead",
            Duration::from_secs(60),
        )?
        .as_secs();
        let handshake_timeout = dur(
            args.handshake_timeout,
            "--handshake-timeout",
            &server.handshake_timeout,
            "server.handshake_timeout",
            Duration::from_secs(30),
        )?;
        let idle_timeout = dur(
            args.idle_timeout,
            "--idle-timeout",
            &server.idle_timeout,
            "server.idle_timeout",
            Duration::from_secs(600),
        )?;
        let connect_timeout = dur(
            args.connect_timeout,
            "--connect-timeout",
            &server.connect_timeout,
            "server.connect_timeout",
            Duration::from_secs(10),
        )?;
        let drain_timeout = dur(
            args.drain_timeout,
            "--drain-timeout",
            &server.drain_timeout,
            "server.drain_timeout",
            Duration::from_secs(15),
        )?;

        let max_connections = match pick_one(
            args.max_connections.as_ref(),
            "--max-connections",
            server.max_connections.as_ref(),
            "server.max_connections",
            loaded,
        ) {
            Some(item) if item.value == 0 => {
                return Err(item.fail("0", "must be at least 1").into())
            }
            Some(item) => item.value,
            None => 20_000,
        };
        let mut source_caps = crate::serve::sources::SourceCaps::defaults(max_connections);
        for (flag, flag_name, file, key, cap) in [
            (
                args.max_unauthenticated_per_ip.as_ref(),
                "--max-unauthenticated-per-ip",
                server.max_unauthenticated_per_ip.as_ref(),
                "server.max_unauthenticated_per_ip",
                &mut source_caps.per_ip,
            ),
            (
                args.max_unauthenticated_per_subnet.as_ref(),
                "--max-unauthenticated-per-subnet",
                server.max_unauthenticated_per_subnet.as_ref(),
                "server.max_unauthenticated_per_subnet",
                &mut source_caps.per_subnet,
            ),
        ] {
            match pick_one(flag, flag_name, file, key, loaded) {
                Some(item) if item.value == 0 => {
                    return Err(item.fail("0", "must be at least 1").into())
                }
                Some(item) => *cap = item.value,
                None => {}
            }
        }
        let threads = match pick_one(
            args.threads.as_ref(),
            "--threads",
            server.threads.as_ref(),
            "server.threads",
            loaded,
        ) {
            Some(item) if item.value == 0 => {
                return Err(item.fail("0", "must be at least 1").into())
            }
            other => other.map(|i| i.value),
        };
        let metrics_flag = args.metrics.map(|a| a.to_string());
        let metrics = match pick_one(
            metrics_flag.as_ref(),
            "--metrics",
            server.metrics.as_ref(),
            "server.metrics",
            loaded,
        ) {
            Some(item) => Some(parse_addr(&item.value).map_err(|e| item.fail(&item.value, e))?),
            None => None,
        };

        let mut egress_allow = Vec::new();
        for text in &args.egress_allow {
            let item = Item {
                value: (),
                from: From::Flag("--egress-allow"),
                key: String::new(),
                span: None,
            };
            egress_allow.push(parse_prefix(text).map_err(|e| item.fail(text, e))?);
        }
        if args.egress_allow.is_empty() {
            if let (Some(l), Some(list)) = (loaded, &server.egress_allow) {
                for v in list {
                    let item = Item {
                        value: (),
                        from: From::File {
                            path: &l.path,
                            text: &l.text,
                        },
                        key: "server.egress_allow".into(),
                        span: Some(v.span()),
                    };
                    egress_allow.push(parse_prefix(v.get_ref()).map_err(|e| item.fail("", e))?);
                }
            }
        }

        let egress_deny_ports = match (&args.egress_deny_ports, &server.egress_deny_ports) {
            (Some(text), _) => parse_ports(text).map_err(|e| ConfigError {
                place: format!("--egress-deny-ports {text:?}"),
                reason: e,
            })?,
            (None, Some(list)) => {
                if let (Some(l), true) = (loaded, list.get_ref().contains(&0)) {
                    return Err(Item {
                        value: (),
                        from: From::File {
                            path: &l.path,
                            text: &l.text,
                        },
                        key: "server.egress_deny_ports".into(),
                        span: Some(list.span()),
                    }
                    .fail("", "ports are 1 to 65535; write [] to deny none")
                    .into());
                }
                list.get_ref().clone()
            }
            (None, None) => crate::proxy::egress::DEFAULT_DENY_PORTS.to_vec(),
        };

        let ws_trusted_proxies = prefixes(
            &args.ws_trusted_proxies,
            "--ws-trusted-proxy",
            server.ws_trusted_proxies.as_deref(),
            "server.ws_trusted_proxies",
            loaded,
        )?
        .unwrap_or_else(|| vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()]);
        let ws_client_header = match pick_one(
            args.ws_client_header.as_ref(),
            "--ws-client-header",
            server.ws_client_header.as_ref(),
            "server.ws_client_header",
            loaded,
        ) {
            Some(item) => parse_header_name(&item.value).map_err(|e| item.fail(&item.value, e))?,
            None => "X-Real-IP".to_string(),
        };

        let ws_listen_flag = args.ws_listen.map(|a| a.to_string());
        let ws_listen = match pick_one(
            ws_listen_flag.as_ref(),
            "--ws-listen",
            server.ws_listen.as_ref(),
            "server.ws_listen",
            loaded,
        ) {
            Some(item) => Some(parse_addr(&item.value).map_err(|e| item.fail(&item.value, e))?),
            None => None,
        };
        let ws_path = match pick_one(
            args.ws_path.as_ref(),
            "--ws-path",
            server.ws_path.as_ref(),
            "server.ws_path",
            loaded,
        ) {
            Some(item) => Some(parse_ws_path(&item.value).map_err(|e| item.fail(&item.value, e))?),
            None => None,
        };
        let ws_public = match pick_one(
            args.ws_public.as_ref(),
            "--ws-public",
            server.ws_public.as_ref(),
            "server.ws_public",
            loaded,
        ) {
            Some(item) => {
                Some(parse_ws_public(&item.value).map_err(|e| item.fail(&item.value, e))?)
            }
            None => None,
        };
        let tunnel = !args.no_tunnel && server.tunnel.unwrap_or(true);
        if ws_listen.is_some() && !tunnel {
            return Err(ConfigError {
                place: "--ws-listen".into(),
                reason: "the WebSocket listener carries samizdat clients only; drop --no-tunnel (or tunnel = false) or --ws-listen".into(),
            }
            .into());
        }

        Ok(ServeConfig {
            listen: (!listen.is_empty()).then_some(listen),
            users,
            generated,
            modes,
            policy,
            cover,
            cover_connect: args
                .cover_connect
                .or(server.cover_connect)
                .unwrap_or_default(),
            dcs,
            public_host: args
                .public_host
                .clone()
                .or_else(|| server.public_host.clone()),
            handshake_timeout,
            idle_timeout,
            connect_timeout,
            drain_timeout,
            max_connections,
            source_caps,
            threads,
            log_client_ips: args.log_client_ips || server.log_client_ips.unwrap_or(false),
            state_dir,
            metrics,
            fleet,
            tunnel,
            transport_key: args
                .transport_key
                .clone()
                .or_else(|| server.transport_key.clone()),
            egress_allow,
            egress_deny_ports,
            log_destinations: args.log_destinations || server.log_destinations.unwrap_or(false),
            ws_listen,
            ws_path,
            ws_public,
            transport_limits: transport_limits(&args.transport_limits, loaded)?,
            ws_trusted_proxies,
            ws_client_header,
        })
    }
}

/// The `[fleet]` section and the `--redis*` flags.
fn fleet_config(
    args: &ServeArgs,
    loaded: Option<&Loaded>,
) -> Result<Option<crate::fleet::FleetConfig>, ConfigError> {
    use crate::fleet::{redact_url, FleetConfig};
    let empty = FleetSection::default();
    let section = loaded.map(|l| &l.file.fleet).unwrap_or(&empty);
    let Some(url) = pick_one(
        args.redis.as_ref(),
        "--redis",
        section.redis.as_ref(),
        "fleet.redis",
        loaded,
    ) else {
        let set = section.timeout.is_some()
            || section.replay_when_down.is_some()
            || section.limits_when_down.is_some()
            || section.shared_users.is_some()
            || section.instance.is_some()
            || section.prefix.is_some()
            || section.lease.is_some();
        if set {
            // A fleet that silently ran alone would let replays and quotas
            // slip between instances.
            return Err(ConfigError {
                place: match loaded {
                    Some(l) => format!("{}: fleet", l.path.display()),
                    None => "fleet".into(),
                },
                reason: "[fleet] has settings but no Redis URL: set fleet.redis, --redis or SAMIZDAT_REDIS"
                    .into(),
            });
        }
        return Ok(None);
    };
    let shown = redact_url(&url.value);
    crate::fleet::check_url(&url.value).map_err(|e| url.fail(&shown, e))?;
    let mut config = FleetConfig::new(url.value.clone());
    config.timeout = duration_item(
        args.redis_timeout,
        "--redis-timeout",
        section.timeout.as_ref(),
        "fleet.timeout",
        loaded,
        config.timeout,
    )?;
    // Where a checked duration came from: the flag, or file:line: key.
    let place = |flag: Option<(&str, Duration)>, file: Option<&Spanned<String>>, key: &str| match (
        flag, loaded, file,
    ) {
        (Some((name, d)), _, _) => format!("{name} {d:?}"),
        (None, Some(l), Some(f)) => From::File {
            path: &l.path,
            text: &l.text,
        }
        .place(key, Some(f.span()), ""),
        _ => key.to_string(),
    };
    if config.timeout.is_zero() || config.timeout > Duration::from_secs(5) {
        return Err(ConfigError {
            place: place(
                args.redis_timeout.map(|d| ("--redis-timeout", d)),
                section.timeout.as_ref(),
                "fleet.timeout",
            ),
            reason: "must be between 1ms and 5s: the connection path waits for it".into(),
        });
    }
    config.lease = duration_item(
        None,
        "",
        section.lease.as_ref(),
        "fleet.lease",
        loaded,
        config.lease,
    )?;
    if config.lease < Duration::from_secs(3) {
        return Err(ConfigError {
            place: place(None, section.lease.as_ref(), "fleet.lease"),
            reason: "must be at least 3s (leases are refreshed every third of it)".into(),
        });
    }
    if let Some(v) = args.redis_down_replay.or(section.replay_when_down) {
        config.replay_when_down = v;
    }
    if let Some(v) = args.redis_down_limits.or(section.limits_when_down) {
        config.limits_when_down = v;
    }
    if let Some(v) = section.shared_users {
        config.shared_users = v;
    }
    if let Some(item) = pick_one(
        args.instance.as_ref(),
        "--instance",
        section.instance.as_ref(),
        "fleet.instance",
        loaded,
    ) {
        if !crate::fleet::valid_name(&item.value) {
            return Err(item.fail(
                &item.value,
                "use 1-64 letters, digits, '-', '_', '.' or ':'",
            ));
        }
        config.instance = item.value;
    }
    if let Some(item) = pick_one(None, "", section.prefix.as_ref(), "fleet.prefix", loaded) {
        if !crate::fleet::valid_name(&item.value) {
            return Err(item.fail(
                &item.value,
                "use 1-64 letters, digits, '-', '_', '.' or ':'",
            ));
        }
        config.prefix = item.value;
    }
    Ok(Some(config))
}

/// A WebSocket path: `/` then URL path characters, at most 200 bytes.
fn parse_ws_path(text: &str) -> Result<String, String> {
    let ok = text.starts_with('/')
        && text.len() <= 200
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-._~%!$&'()*+,;=:@".contains(&b));
    if ok {
        Ok(text.to_string())
    } else {
        Err(format!(
            "expected a URL path such as /assets/ws (starting with /, no spaces, ? or #), got {text:?}"
        ))
    }
}

/// `wss://HOST[:PORT][/PATH]`, as clients reach the front.
fn parse_ws_public(text: &str) -> Result<wire::link::Endpoint, String> {
    let bad = || {
        format!(
            "expected wss://HOST[:PORT][/PATH], e.g. wss://cdn.example.com/assets/ws, got {text:?}"
        )
    };
    let rest = text.strip_prefix("wss://").ok_or_else(bad)?;
    let has_path = rest.contains('/');
    let full = if has_path {
        text.to_string()
    } else {
        format!("{text}/")
    };
    let mut endpoint = wire::link::parse_endpoint(&full).map_err(|_| bad())?;
    if has_path {
        let path = endpoint.ws_path.take().unwrap_or_default();
        endpoint.ws_path = Some(parse_ws_path(&path)?);
    } else {
        endpoint.ws_path = None;
    }
    Ok(endpoint)
}

/// A comma-separated port list as `--egress-deny-ports` takes it; "none"
/// is the empty list.
fn parse_ports(text: &str) -> Result<Vec<u16>, String> {
    if text.trim().eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|p| match p.trim().parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!(
                "expected ports 1-65535 separated by commas (e.g. 25,465,587) or \"none\", got {p:?}"
            )),
        })
        .collect()
}

/// A list of prefixes from repeated `flag`s, else from the file's `key`
/// (`None`: given in neither place).
fn prefixes(
    flags: &[String],
    flag: &'static str,
    file: Option<&[Spanned<String>]>,
    key: &str,
    loaded: Option<&Loaded>,
) -> Result<Option<Vec<ipnet::IpNet>>, ConfigError> {
    if !flags.is_empty() {
        let item = Item {
            value: (),
            from: From::Flag(flag),
            key: String::new(),
            span: None,
        };
        return flags
            .iter()
            .map(|t| parse_prefix(t).map_err(|e| item.fail(t, e)))
            .collect::<Result<_, _>>()
            .map(Some);
    }
    let (Some(l), Some(list)) = (loaded, file) else {
        return Ok(None);
    };
    list.iter()
        .map(|v| {
            let item = Item {
                value: (),
                from: From::File {
                    path: &l.path,
                    text: &l.text,
                },
                key: key.into(),
                span: Some(v.span()),
            };
            parse_prefix(v.get_ref()).map_err(|e| item.fail("", e))
        })
        .collect::<Result<_, _>>()
        .map(Some)
}

/// An HTTP header name (a token: letters, digits and `-`), 1-64 bytes.
fn parse_header_name(text: &str) -> Result<String, String> {
    let t = text.trim();
    if t.is_empty() || t.len() > 64 || !t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(format!(
            "expected an HTTP header name such as X-Real-IP or CF-Connecting-IP, got {text:?}"
        ));
    }
    Ok(t.to_string())
}

/// An address prefix such as `10.1.0.0/16`, or one address (a /32 or /128).
fn parse_prefix(text: &str) -> Result<ipnet::IpNet, String> {
    if let Ok(net) = text.parse::<ipnet::IpNet>() {
        return Ok(net.trunc());
    }
    text.parse::<std::net::IpAddr>()
        .map(ipnet::IpNet::from)
        .map_err(|_| {
            format!("expected an address prefix such as 10.1.0.0/16 or fd00::/8, got {text:?}")
        })
}

fn state_dir_of(args: &ServeArgs, loaded: Option<&Loaded>) -> PathBuf {
    args.state_dir
        .clone()
        .or_else(|| loaded.and_then(|l| l.file.server.state_dir.clone()))
        .unwrap_or_else(crate::state::default_dir)
}

// === Per-user limits of the samizdat transport (`[transport_limits]`) ===

/// What one user's samizdat sessions may hold on this server, so that one
/// link holder cannot take the memory, sockets or ports every user needs
/// (`docs/transport.md`, "Limits per user"). With the defaults a user costs
/// at most about 64 MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportLimits {
    /// Sessions one user may have at once; a new one ends the user's oldest.
    pub sessions_per_user: usize,
    /// Streams (each one egress socket) one user may have open at once,
    /// across their sessions; more are refused.
    pub streams_per_user: usize,
    /// Bytes a user's sessions may buffer before their new streams are
    /// refused.
    pub buffer_per_user: u64,
    /// A stream that moves no byte either way for this long is closed.
    pub stream_idle_timeout: Duration,
    /// A session whose client acknowledges nothing (neither receipt nor
    /// reading) for this long while the server holds data for it is closed.
    pub ack_deadline: Duration,
}

impl Default for TransportLimits {
    fn default() -> TransportLimits {
        TransportLimits {
            sessions_per_user: 4,
            streams_per_user: 112,
            buffer_per_user: 32 << 20,
            stream_idle_timeout: Duration::from_secs(300),
            ack_deadline: Duration::from_secs(60),
        }
    }
}

/// The `--transport-*` flags of `samizdat serve`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TransportLimitArgs {
    /// Samizdat sessions one user may have at once; a new one ends that
    /// user's oldest [default: 4].
    #[arg(long, value_name = "N")]
    pub transport_sessions_per_user: Option<usize>,
    /// Streams (egress sockets) one user may have open at once, across
    /// their samizdat sessions; more are refused [default: 112].
    #[arg(long, value_name = "N")]
    pub transport_streams_per_user: Option<usize>,
    /// Bytes one user's samizdat sessions may buffer before their new
    /// streams are refused, e.g. 32MiB [default: 32MiB].
    #[arg(long, value_name = "SIZE")]
    pub transport_buffer_per_user: Option<String>,
    /// Close a samizdat stream that moved nothing either way for this long
    /// [default: 5m].
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse)]
    pub transport_stream_idle_timeout: Option<Duration>,
    /// Close a samizdat session whose client acknowledges nothing for this
    /// long while the server holds data for it [default: 60s].
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse)]
    pub transport_ack_deadline: Option<Duration>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TransportLimitsSection {
    sessions_per_user: Option<Spanned<usize>>,
    streams_per_user: Option<Spanned<usize>>,
    buffer_per_user: Option<Spanned<String>>,
    stream_idle_timeout: Option<Spanned<String>>,
    ack_deadline: Option<Spanned<String>>,
}

fn transport_limits(
    args: &TransportLimitArgs,
    loaded: Option<&Loaded>,
) -> Result<TransportLimits, ConfigError> {
    let empty = TransportLimitsSection::default();
    let file = loaded.map(|l| &l.file.transport_limits).unwrap_or(&empty);
    let d = TransportLimits::default();
    let count = |flag: Option<&usize>, name, f: Option<&Spanned<usize>>, key: &str, default| {
        match pick_one(flag, name, f, key, loaded) {
            Some(item) if item.value == 0 => Err(item.fail("0", "must be at least 1")),
            Some(item) => Ok(item.value),
            None => Ok(default),
        }
    };
    let sessions_per_user = count(
        args.transport_sessions_per_user.as_ref(),
        "--transport-sessions-per-user",
        file.sessions_per_user.as_ref(),
        "transport_limits.sessions_per_user",
        d.sessions_per_user,
    )?;
    let streams_per_user = count(
        args.transport_streams_per_user.as_ref(),
        "--transport-streams-per-user",
        file.streams_per_user.as_ref(),
        "transport_limits.streams_per_user",
        d.streams_per_user,
    )?;
    let buffer_per_user = match pick_one(
        args.transport_buffer_per_user.as_ref(),
        "--transport-buffer-per-user",
        file.buffer_per_user.as_ref(),
        "transport_limits.buffer_per_user",
        loaded,
    ) {
        Some(item) => parse_size(&item.value).map_err(|e| item.fail(&item.value, e))?,
        None => d.buffer_per_user,
    };
    let positive = |v: Duration, name: &'static str| {
        if v.is_zero() {
            Err(ConfigError {
                place: name.to_string(),
                reason: "must be longer than zero".into(),
            })
        } else {
            Ok(v)
        }
    };
    let stream_idle_timeout = positive(
        duration_item(
            args.transport_stream_idle_timeout,
            "--transport-stream-idle-timeout",
            file.stream_idle_timeout.as_ref(),
            "transport_limits.stream_idle_timeout",
            loaded,
            d.stream_idle_timeout,
        )?,
        "transport_limits.stream_idle_timeout",
    )?;
    let ack_deadline = positive(
        duration_item(
            args.transport_ack_deadline,
            "--transport-ack-deadline",
            file.ack_deadline.as_ref(),
            "transport_limits.ack_deadline",
            loaded,
            d.ack_deadline,
        )?,
        "transport_limits.ack_deadline",
    )?;
    Ok(TransportLimits {
        sessions_per_user,
        streams_per_user,
        buffer_per_user,
        stream_idle_timeout,
        ack_deadline,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_rates_and_dates() {
        assert_eq!(parse_size("10GiB").unwrap(), 10 << 30);
        assert_eq!(parse_size("500MB").unwrap(), 500_000_000);
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert!(parse_size("10 parsecs").is_err());
        assert_eq!(parse_rate("1MiB/s").unwrap(), 1 << 20);
        assert_eq!(parse_rate("8Mbit/s").unwrap(), 1_000_000);
        assert!(parse_rate("8M").is_err());
        let dt: toml::value::Datetime = "2027-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(datetime_to_unix(&dt).unwrap(), 1_798_761_600);
        let d: toml::value::Datetime = "1970-01-02".parse().unwrap();
        assert_eq!(datetime_to_unix(&d).unwrap(), 86_400);
        let off: toml::value::Datetime = "2027-01-01T02:00:00+02:00".parse().unwrap();
        assert_eq!(datetime_to_unix(&off).unwrap(), 1_798_761_600);
    }

    #[test]
    fn websocket_paths_and_public_urls() {
        assert_eq!(parse_ws_path("/assets/ws-1").unwrap(), "/assets/ws-1");
        for bad in ["assets", "/a b", "/a?b", "/a#b", ""] {
            assert!(parse_ws_path(bad).is_err(), "{bad:?}");
        }
        assert!(parse_ws_path(&format!("/{}", "a".repeat(200))).is_err());
        let e = parse_ws_public("wss://cdn.example.com").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.ws_path),
            ("cdn.example.com", 443, None)
        );
        let e = parse_ws_public("wss://cdn.example.com:8443/s/x").unwrap();
        assert_eq!(e.port, 8443);
        assert_eq!(e.ws_path.as_deref(), Some("/s/x"));
        for bad in [
            "https://cdn.example.com",
            "wss://",
            "wss://h/a b",
            "cdn.example.com",
        ] {
            assert!(parse_ws_public(bad).is_err(), "{bad:?}");
        }
    }
}
