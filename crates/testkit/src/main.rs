//! `samizdat-testkit`: run a fake DC or a fake cover site on loopback, for
//! the interop suite and manual testing.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(
    name = "samizdat-testkit",
    about = "Test doubles for samizdat (loopback only)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// A fake Telegram DC: answers req_pq_multi with resPQ, echoes the rest.
    FakeDc {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
    /// A fake cover site.
    FakeCover {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Echo bytes back instead of answering HTTP 400.
        #[arg(long)]
        echo: bool,
    },
    /// Connects with a tg://proxy or t.me link and checks that the proxy
    /// (not its cover site) answered: for ee secrets the server flight's
    /// HMAC proves it. Exit 0 on success.
    ProbeLink {
        /// The link, as printed by `samizdat serve`.
        link: String,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::FakeDc { listen } => {
            let l = TcpListener::bind(listen).await?;
            println!("listening {}", l.local_addr()?);
            testkit::fake_dc::serve(l, Arc::new(Mutex::new(Vec::new())), true).await;
        }
        Command::FakeCover { listen, echo } => {
            let l = TcpListener::bind(listen).await?;
            println!("listening {}", l.local_addr()?);
            let kind = if echo {
                testkit::fake_cover::CoverKind::Echo
            } else {
                testkit::fake_cover::CoverKind::Http
            };
            testkit::fake_cover::serve(l, kind, Arc::new(Mutex::new(Vec::new()))).await;
        }
        Command::ProbeLink { link } => {
            let (addr, secret) = parse_link(&link)?;
            let opts = testkit::client::Options::default();
            let fut = testkit::client::Client::connect(addr, &secret, &opts);
            match tokio::time::timeout(std::time::Duration::from_secs(10), fut).await {
                Ok(Ok(_)) => println!("ok: {addr} answered as the proxy"),
                Ok(Err(e)) => anyhow::bail!("{addr}: {e}"),
                Err(_) => anyhow::bail!("{addr}: no answer within 10 s"),
            }
        }
    }
    Ok(())
}

/// Extracts server, port and secret from a proxy link.
fn parse_link(link: &str) -> anyhow::Result<(SocketAddr, wire::secret::Secret)> {
    let query = link
        .split_once('?')
        .map(|(_, q)| q)
        .ok_or_else(|| anyhow::anyhow!("no query in link"))?;
    let (mut server, mut port, mut secret) = (None, None, None);
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("server", v)) => server = Some(v.to_string()),
            Some(("port", v)) => port = Some(v.parse::<u16>()?),
            Some(("secret", v)) => secret = Some(wire::secret::Secret::parse(v)?),
            _ => {}
        }
    }
    let (Some(server), Some(port), Some(secret)) = (server, port, secret) else {
        anyhow::bail!("link lacks server, port or secret");
    };
    let ip: std::net::IpAddr = server
        .parse()
        .map_err(|_| anyhow::anyhow!("server {server:?} is not an IP address"))?;
    Ok((SocketAddr::new(ip, port), secret))
}
