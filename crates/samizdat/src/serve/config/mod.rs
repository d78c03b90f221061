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
mod build;
mod file;
mod fleet;
mod limits;
mod users;
mod values;

pub use args::{ServeArgs, TransportLimitArgs, UnknownSni};
use file::ServerSection;
use file::{
    duration_item, flag_item, pick, pick_one, read_file, FileConfig, FleetSection, Item, Loaded,
    Origin, Sources,
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
