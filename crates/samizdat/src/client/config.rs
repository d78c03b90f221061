//! `samizdat client`'s options: flags and the `--config` file, validated
//! into one [`ClientConfig`].

use std::net::SocketAddr;
use std::path::PathBuf;
use wire::browser::Browser;
use wire::link::Link;

/// Command-line options of `samizdat client`.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// The samizdat:// link from the server's operator (or set `link` in
    /// --config).
    #[arg(value_name = "LINK")]
    pub link: Option<String>,

    /// A TOML file with `link` and any of the options below (flags win).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// SOCKS5 proxy address [default: 127.0.0.1:1080]. "off" disables it.
    #[arg(long, value_name = "ADDR")]
    pub socks: Option<String>,

    /// HTTP proxy address (CONNECT and plain http:// requests)
    /// [default: 127.0.0.1:8080]. "off" disables it.
    #[arg(long, value_name = "ADDR")]
    pub http: Option<String>,

    /// Local Telegram endpoint [default: 127.0.0.1:1443]: point the Telegram
    /// app at the tg://proxy link printed at start. "off" disables it.
    #[arg(long, value_name = "ADDR")]
    pub telegram: Option<String>,

    /// Require this SOCKS5 username and password (USER:PASS).
    #[arg(long, value_name = "USER:PASS")]
    pub socks_auth: Option<String>,

    /// Where the local Telegram secret is kept [default: the samizdat state
    /// directory's `client` folder].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// The DNS server (ADDR:PORT) for the link's dns: server-list sources
    /// [default: the system's resolver].
    #[arg(long, value_name = "ADDR:PORT")]
    pub list_dns: Option<SocketAddr>,
}

/// The `--config` file of `samizdat client`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientFile {
    link: Option<String>,
    socks: Option<String>,
    http: Option<String>,
    telegram: Option<String>,
    socks_auth: Option<String>,
    state_dir: Option<PathBuf>,
    list_dns: Option<SocketAddr>,
}

/// The validated client configuration.
#[derive(Debug)]
pub struct ClientConfig {
    /// The server set and credentials.
    pub link: Link,
    /// SOCKS5 listen address.
    pub socks: Option<SocketAddr>,
    /// HTTP proxy listen address.
    pub http: Option<SocketAddr>,
    /// Local Telegram endpoint address.
    pub telegram: Option<SocketAddr>,
    /// SOCKS5 credentials.
    pub socks_auth: Option<(String, String)>,
    /// Where the local Telegram secret lives.
    pub state_dir: PathBuf,
    /// DNS server for `dns:` server-list sources; `None`: the system's.
    pub list_dns: Option<SocketAddr>,
}

fn listen_addr(
    value: Option<String>,
    default: &str,
    what: &str,
) -> anyhow::Result<Option<SocketAddr>> {
    let text = value.unwrap_or_else(|| default.to_string());
    if text == "off" {
        return Ok(None);
    }
    let addr: SocketAddr = text.parse().map_err(|_| {
        anyhow::anyhow!("--{what} {text:?}: expected ADDR:PORT such as {default}, or off")
    })?;
    if !addr.ip().is_loopback() {
        tracing::warn!(
            "--{what} {addr} is not a loopback address: anyone who can reach it can use your samizdat server"
        );
    }
    Ok(Some(addr))
}

impl ClientConfig {
    /// Reads flags and the optional file into one configuration.
    pub fn load(args: &ClientArgs) -> anyhow::Result<ClientConfig> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
                toml::from_str::<ClientFile>(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
            }
            None => ClientFile::default(),
        };
        let text = args.link.clone().or(file.link).ok_or_else(|| {
            anyhow::anyhow!("no link: run `samizdat client 'samizdat://…'` with the link your server's operator gave you (or set link in --config)")
        })?;
        let link = Link::parse(&text).map_err(|e| anyhow::anyhow!("the link: {e}"))?;
        if Browser::parse(&link.fingerprint).is_none() {
            anyhow::bail!(
                "the link's fp={:?} names no browser template this client has (chrome, firefox)",
                link.fingerprint
            );
        }
        let socks_auth = match args.socks_auth.clone().or(file.socks_auth) {
            Some(pair) => {
                let (u, p) = pair
                    .split_once(':')
                    .filter(|(u, p)| {
                        !u.is_empty() && !p.is_empty() && u.len() < 256 && p.len() < 256
                    })
                    .ok_or_else(|| {
                        anyhow::anyhow!("--socks-auth: expected USER:PASS, each 1 to 255 bytes")
                    })?;
                Some((u.to_string(), p.to_string()))
            }
            None => None,
        };
        Ok(ClientConfig {
            link,
            socks: listen_addr(args.socks.clone().or(file.socks), "127.0.0.1:1080", "socks")?,
            http: listen_addr(args.http.clone().or(file.http), "127.0.0.1:8080", "http")?,
            telegram: listen_addr(
                args.telegram.clone().or(file.telegram),
                "127.0.0.1:1443",
                "telegram",
            )?,
            socks_auth,
            state_dir: args
                .state_dir
                .clone()
                .or(file.state_dir)
                .unwrap_or_else(|| crate::state::default_dir().join("client")),
            list_dns: args.list_dns.or(file.list_dns),
        })
    }
}
