//! `samizdat serve` options: parsed once from the command line into one
//! validated, immutable [`ServeConfig`]. Every error names the option, what
//! was wrong and how to fix it.
//!
//! | module | job |
//! |---|---|
//! | `args` | the command line ([`ServeArgs`], clap) |
//! | `file` | the config file's sections and where each value came from |
//! | `values` | the value parsers shared by flags and file |
//! | `limits` | `[transport_limits]` ([`TransportLimits`]) |
//! | `fleet` | `[fleet]` and `--redis` |
//! | `users` | `[users.NAME]` and `--secret` |
//! | this file | [`ServeConfig`]: `load`, and `build`, which checks and combines them |

use crate::serve::cover::{CoverConnect, CoverTarget};
use crate::serve::dc::DcTable;
use crate::state::StateError;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;
use wire::classify::{Policy, SniPolicy};
use wire::secret::{validate_domain, Key, Mode};

mod args;
mod file;
mod fleet;
mod limits;
mod users;
mod values;

pub use args::{ServeArgs, TransportLimitArgs, UnknownSni};
use file::ServerSection;
use file::{
    duration_item, pick, pick_one, read_file, FileConfig, FleetSection, Item, Loaded, Origin,
};
use fleet::fleet_config;
pub use limits::TransportLimits;
use limits::{transport_limits, TransportLimitsSection};
pub use values::{
    check_key, parse_cover, parse_rate, parse_secret, parse_size, parse_user_secret, MAKE_A_KEY,
};
use values::{
    datetime_to_unix, parse_addr, parse_dc_id, parse_header_name, parse_ports, parse_prefix,
    parse_ws_path, parse_ws_public,
};

/// Port used when `--listen` is not given; 443 is what a cover site uses.
pub const DEFAULT_PORT: u16 = 443;
/// Fallback when binding 443 is not permitted (not root, no CAP_NET_BIND_SERVICE).
pub const FALLBACK_PORT: u16 = 8443;
/// Fake-TLS domain when none is given. Choose your own (`--domain`): a
/// domain you control that serves a real site is much harder to spot.
pub const DEFAULT_DOMAIN: &str = "www.google.com";

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
    /// [`crate::serve::links::default_ws_path`]).
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

/// Why the configuration could not be loaded: a mistake in it, or a state
/// file (the zero-config key) that could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// A flag or a line of the config file.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The state directory.
    #[error(transparent)]
    State(#[from] StateError),
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

/// User names: 1-64 of letters, digits, `-`, `_`, `.`, `@`.
pub(crate) fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
}

impl ServeConfig {
    /// Reads `--config` (if any), merges the flags over it, validates, and
    /// generates or loads the zero-config key when there are no users.
    /// Returns the configuration and, for a generated key, whether it was
    /// created just now.
    pub fn load(args: &ServeArgs) -> Result<(ServeConfig, Option<bool>), LoadError> {
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
        generated_key: impl FnOnce() -> Result<Key, StateError>,
    ) -> Result<ServeConfig, LoadError> {
        let loaded = args.config.as_deref().map(read_file).transpose()?;
        let state_dir = state_dir_of(args, loaded.as_ref());
        Self::build(args, loaded.as_ref(), state_dir, generated_key)
    }

    fn build(
        args: &ServeArgs,
        loaded: Option<&Loaded>,
        state_dir: PathBuf,
        generated_key: impl FnOnce() -> Result<Key, StateError>,
    ) -> Result<ServeConfig, LoadError> {
        let empty = FileConfig::default();
        let file = loaded.map(|l| &l.file).unwrap_or(&empty);
        let server = &file.server;

        let modes = modes(args, server, loaded)?;
        let mut domains = domains(args, server, loaded)?;
        let mut users = users::users(args, file, loaded, &mut domains)?;
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
                let from = Origin::File {
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
            let from = Origin::File {
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
                from: Origin::Flag("--dc"),
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
                from: Origin::Flag("--egress-allow"),
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
                        from: Origin::File {
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
                        from: Origin::File {
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
            (None, None) => crate::serve::egress::DEFAULT_DENY_PORTS.to_vec(),
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

/// `--modes` / `server.modes`: the client forms served, fake-TLS alone by
/// default; naming none is an error.
fn modes(
    args: &ServeArgs,
    server: &ServerSection,
    loaded: Option<&Loaded>,
) -> Result<Vec<Mode>, ConfigError> {
    let mut modes = Vec::new();
    for item in pick(
        &args.modes,
        "--modes",
        server.modes.as_ref(),
        "server.modes",
        loaded,
    ) {
        let mode = Mode::parse(&item.value).map_err(|e| item.fail(&item.value, e.to_string()))?;
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
            });
        }
    }
    Ok(modes)
}

/// `--domain` / `server.domains`: the fake-TLS domains, checked and
/// lower-cased, each once.
fn domains(
    args: &ServeArgs,
    server: &ServerSection,
    loaded: Option<&Loaded>,
) -> Result<Vec<String>, ConfigError> {
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
    Ok(domains)
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
            from: Origin::Flag(flag),
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
                from: Origin::File {
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

fn state_dir_of(args: &ServeArgs, loaded: Option<&Loaded>) -> PathBuf {
    args.state_dir
        .clone()
        .or_else(|| loaded.and_then(|l| l.file.server.state_dir.clone()))
        .unwrap_or_else(crate::state::default_dir)
}

// === Per-user limits of the samizdat transport (`[transport_limits]`) ===

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
