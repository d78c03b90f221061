//! `samizdat client`: a local proxy on the user's machine. Apps connect to
//! it on loopback (SOCKS5, an HTTP proxy, or a local Telegram endpoint),
//! and it carries their streams through one browser-shaped TLS session to a
//! samizdat server (`docs/transport.md`), failing over across the link's
//! servers.
//!
//! One stream, in file order: `frontends` (SOCKS5 / HTTP / Telegram accept
//! and parse) → `dialer` (the [`crate::dial::Dialer`] over the endpoint
//! pool) → `lanes` (the session's lane keeper) → `connect` (TCP or
//! `wss://`, the handshake) → `crate::transport` (braid, session, stream).
//!
//! | module | job |
//! |---|---|
//! | [`config`] | flags and `--config` → one validated [`ClientConfig`] |
//! | [`frontends`] | the local SOCKS5, HTTP and Telegram front-ends |
//! | [`dialer`] | `TunnelDialer`: streams through the session, over the endpoint pool |
//! | `lanes` | the lane keeper: stalls, freeze budgets, spares |
//! | [`connect`] | one connection to a server: TCP or `wss://`, the handshake |
//! | [`pool`] | endpoint ranking, racing, back-off, `pool.toml` |
//! | [`lists`] | signed server lists: file, HTTPS, DNS TXT, through the tunnel |
//! | [`tls`] | the web's roots for lists and `wss://` fronts |
//! | [`wss`] | a `wss://` endpoint: TLS to the front, the WebSocket upgrade |

pub mod config;
pub mod connect;
pub mod dialer;
pub mod frontends;
mod lanes;
pub mod lists;
pub mod pool;
pub mod tls;
pub mod wss;

use crate::dial::Dialer;
pub use config::{ClientArgs, ClientConfig};
use dialer::TunnelDialer;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use wire::browser::{Browser, Template};

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
        tasks.spawn(frontends::serve_socks5(
            l,
            dialer.clone() as Arc<dyn Dialer>,
            config.socks_auth.clone(),
            stop.clone(),
        ));
    }
    if let Some(addr) = config.http {
        let l = bind(addr, "http").await?;
        say!("HTTP proxy on {}", l.local_addr()?);
        tasks.spawn(frontends::serve_http(
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
            frontends::telegram_link(port, &key)
        );
        tasks.spawn(frontends::serve_telegram(
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
