//! `samizdat client`: a local proxy on the user's machine. Apps connect to
//! it on loopback (SOCKS5, an HTTP proxy, or a local Telegram endpoint),
//! and it carries their streams through one browser-shaped TLS session to a
//! samizdat server (`docs/transport.md`), failing over across the link's
//! servers.

pub mod connect;
pub mod dialer;
mod lanes;
pub mod lists;
pub mod pool;
pub mod tls;

use crate::proxy::{self, Dialer};
use dialer::TunnelDialer;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use wire::browser::{Browser, Template};
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

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!("cannot listen on {addr} for {what}: {e}; pick another with --{what} ADDR or --{what} off")
    })
}

/// A line of the start-up banner on standard output. It is informational:
/// a closed or full stdout (`samizdat client | head -3`) loses it and never
/// panics.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// Runs the client until `stop` fires. Prints where apps should connect.
pub async fn run(config: ClientConfig, stop: CancellationToken) -> anyhow::Result<()> {
    let browser = Browser::parse(&config.link.fingerprint).unwrap_or(Browser::Chrome);
    let dialer = Arc::new(TunnelDialer::with_state(
        config.link.clone(),
        Template::builtin(browser),
        config.state_dir.clone(),
    ));
    // Servers from signed lists (lists.rs): the saved list's now, fresh
    // lists from the link's sources in the background.
    let saved = lists::load_at_start(&config.link, &config.state_dir);
    let mut learned = None;
    if config.link.list_key.is_some() && !config.link.list_sources.is_empty() {
        learned = Some(lists::spawn_refresh(
            config.link.clone(),
            saved,
            Some(dialer.clone() as Arc<dyn Dialer>),
            config.state_dir.clone(),
            lists::FetchOptions::new(config.list_dns),
            stop.clone(),
        ));
    } else if config.link.list_key.is_none() && !config.link.list_sources.is_empty() {
        tracing::warn!("the link has lu= list sources but no lk= list key: lists cannot be checked, so none are fetched");
    } else if saved.is_some() {
        dialer.set_servers(lists::usable_servers(&config.link, saved.as_ref()));
    }
    if let Some(mut rx) = learned {
        dialer.set_servers(rx.borrow_and_update().clone());
        let dialer = dialer.clone();
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let servers = rx.borrow_and_update().clone();
                tracing::info!(
                    "servers now: {}",
                    servers
                        .iter()
                        .map(|s| s.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                dialer.set_servers(servers);
            }
        });
    }
    let mut tasks = tokio::task::JoinSet::new();
    let servers: Vec<String> = config.link.servers.iter().map(|s| s.to_string()).collect();
    say!(
        "samizdat client: servers {} as {} ({} hello)",
        servers.join(", "),
        config.link.sni,
        browser.name()
    );
    if let Some(addr) = config.socks {
        let l = bind(addr, "socks").await?;
        say!("SOCKS5 proxy on {}", l.local_addr()?);
        tasks.spawn(proxy::socks5::serve_socks5(
            l,
            dialer.clone() as Arc<dyn Dialer>,
            config.socks_auth.clone(),
            stop.clone(),
        ));
    }
    if let Some(addr) = config.http {
        let l = bind(addr, "http").await?;
        say!("HTTP proxy on {}", l.local_addr()?);
        tasks.spawn(proxy::http::serve_http(
            l,
            dialer.clone() as Arc<dyn Dialer>,
            stop.clone(),
        ));
    }
    if let Some(addr) = config.telegram {
        let l = bind(addr, "telegram").await?;
        let port = l.local_addr()?.port();
        let (key, _) = crate::state::load_or_create_key(&config.state_dir)?;
        say!(
            "Telegram: open this link on this device (it points the app at this client):\n  {}",
            proxy::telegram::telegram_link(port, &key)
        );
        tasks.spawn(proxy::telegram::serve_telegram(
            l,
            dialer.clone() as Arc<dyn Dialer>,
            key,
            stop.clone(),
        ));
    }
    if tasks.is_empty() {
        anyhow::bail!("--socks, --http and --telegram are all off: nothing to serve");
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    // Connect once now, so a wrong link or a blocked server shows at start;
    // the client keeps running and retries when an app opens a stream.
    tokio::select! {
        r = dialer.session() => {
            if let Err(e) = r {
                tracing::warn!("{e}; will retry when an app connects");
            }
            stop.cancelled().await;
        }
        _ = stop.cancelled() => {}
    }
    tasks.shutdown().await;
    dialer.shutdown();
    Ok(())
}
