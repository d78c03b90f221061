//! The two baselines, run as their own process (this binary's hidden
//! `relay` command) so their CPU time and memory are measured exactly as
//! samizdat's are:
//!
//! - **plain**: a TCP relay without crypto. The client speaks keyless
//!   obfuscated2 straight to the DC through it.
//! - **floor**: the least an MTProto proxy must do: accept the client's
//!   `dd` init, open its own toward the DC and pass every byte through the
//!   same two AES-256-CTR passes samizdat makes, with 64 KiB buffers held
//!   per direction (no pool, no records, no cover, no limits).
//!
//! Both are the "own read → write_all loop, 64 KiB" relay of
//! docs/dependencies.md §2.2, one task per connection, on the same tokio
//! multi-thread runtime (and thread count) as samizdat.

use socket2::SockRef;
use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use wire::cipher::Ctr;
use wire::obfuscated2::{self, INIT_LEN};
use wire::secret::Key;

/// Relay buffer per direction.
const BUF: usize = 64 * 1024;

/// Which baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// Copy only.
    Plain,
    /// Copy with the two AES-256-CTR passes of direct-mode MTProto.
    Floor,
}

/// Runs a baseline relay until killed; prints `listening on ADDR` first.
pub fn run(kind: Kind, upstream: SocketAddr, key: Key, threads: Option<usize>) -> io::Result<()> {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = threads {
        rt.worker_threads(n.max(1));
    }
    rt.build()?.block_on(async move {
        let listener = crate::dc::listen()?;
        println!("listening on {}", listener.local_addr()?);
        use std::io::Write;
        std::io::stdout().flush()?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        loop {
            let accepted = tokio::select! {
                r = listener.accept() => r,
                _ = term.recv() => return Ok(()),
            };
            let Ok((s, _)) = accepted else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let key = key.clone();
            tokio::spawn(async move {
                let _ = serve(kind, s, upstream, &key).await;
            });
        }
    })
}

async fn serve(
    kind: Kind,
    mut client: TcpStream,
    upstream: SocketAddr,
    key: &Key,
) -> io::Result<()> {
    client.set_nodelay(true)?;
    let ciphers = match kind {
        Kind::Plain => None,
        Kind::Floor => {
            let mut init = [0u8; INIT_LEN];
            client.read_exact(&mut init).await?;
            let Some(acc) = obfuscated2::accept(&init, Some(key)) else {
                return Ok(());
            };
            Some(acc)
        }
    };
    let mut server = TcpStream::connect(upstream).await?;
    server.set_nodelay(true)?;
    let (up, down) = match ciphers {
        None => (None, None),
        Some(acc) => {
            let mut random = [0u8; INIT_LEN];
            loop {
                getrandom::fill(&mut random).expect("OS randomness");
                if obfuscated2::is_safe_bare_prefix(&random) {
                    break;
                }
            }
            let ours = obfuscated2::initiate(random, acc.tag, acc.dc, None);
            server.write_all(&ours.wire).await?;
            (
                Some((acc.ciphers.decrypt, ours.ciphers.encrypt)),
                Some((ours.ciphers.decrypt, acc.ciphers.encrypt)),
            )
        }
    };
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    tokio::join!(pump(cr, sw, up), pump(sr, cw, down));
    Ok(())
}

async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut ciphers: Option<(Ctr, Ctr)>) {
    let mut buf = vec![0u8; BUF];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
            Err(e) => {
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                ) {
                    let _ = SockRef::from(to.as_ref()).set_linger(Some(Duration::ZERO));
                }
                return;
            }
        };
        if let Some((decrypt, encrypt)) = &mut ciphers {
            decrypt.apply(&mut buf[..n]);
            encrypt.apply(&mut buf[..n]);
        }
        if to.write_all(&buf[..n]).await.is_err() {
            let _ = SockRef::from(from.as_ref()).set_linger(Some(Duration::ZERO));
            return;
        }
    }
}
