//! The command line of `samizdat serve` (clap): every option can also be
//! set in the config file, and a flag overrides the file.

use crate::serve::cover::CoverConnect;
use crate::serve::dc::IpPreference;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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

    /// `[transport_limits]` as flags.
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
