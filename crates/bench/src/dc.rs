//! The bench's Telegram DC and cover site, on loopback in the bench
//! process. The DC accepts the relay's obfuscated2 init (no key, as a real
//! DC), reads one command, acknowledges it encrypted and then sinks,
//! sources, echoes or holds bytes without crypto. The greeter is the
//! destination of streams through a `samizdat client`.

use crate::client::{Command, Op, ACK, GREETING, STREAM};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use wire::obfuscated2;

/// Binds 127.0.0.1:0 with a backlog deep enough for connection bursts.
pub fn listen() -> io::Result<TcpListener> {
    let s = TcpSocket::new_v4()?;
    s.set_reuseaddr(true)?;
    s.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    s.listen(4096)
}

/// A running DC.
pub struct Dc {
    /// Where it listens.
    pub addr: SocketAddr,
    go: watch::Sender<u64>,
    epoch: AtomicU64,
    noise: Arc<Vec<u8>>,
}

impl Dc {
    /// Starts the DC on the current runtime.
    pub fn start() -> io::Result<Arc<Dc>> {
        let listener = listen()?;
        let (go, _) = watch::channel(0);
        let mut noise = vec![0u8; 256 * 1024];
        getrandom::fill(&mut noise).expect("OS randomness");
        let dc = Arc::new(Dc {
            addr: listener.local_addr()?,
            go,
            epoch: AtomicU64::new(0),
            noise: Arc::new(noise),
        });
        let d = dc.clone();
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = listener.accept().await else {
                    continue;
                };
                let go = d.go.subscribe();
                let noise = d.noise.clone();
                tokio::spawn(async move {
                    let _ = handle(s, go, noise).await;
                });
            }
        });
        Ok(dc)
    }

    /// A fresh epoch for a phase's go signal.
    pub fn next_epoch(&self) -> u64 {
        self.epoch.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Lets every source connection of `epoch` start sending.
    pub fn go(&self, epoch: u64) {
        self.go.send_replace(epoch);
    }
}

async fn handle(
    mut s: TcpStream,
    mut go: watch::Receiver<u64>,
    noise: Arc<Vec<u8>>,
) -> io::Result<()> {
    s.set_nodelay(true)?;
    let mut init = [0u8; 64];
    s.read_exact(&mut init).await?;
    let Some(acc) = obfuscated2::accept(&init, None) else {
        return Ok(());
    };
    let mut ciphers = acc.ciphers;
    let mut cmd = [0u8; 24];
    s.read_exact(&mut cmd).await?;
    ciphers.decrypt.apply(&mut cmd);
    let Some(cmd) = Command::decode(&cmd) else {
        return Ok(());
    };
    let mut ack = ACK;
    ciphers.encrypt.apply(&mut ack);
    s.write_all(&ack).await?;
    let mut buf = vec![0u8; 256 * 1024];
    match cmd.op {
        Op::Sink => {
            let mut total = 0u64;
            loop {
                let n = s.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            let mut count = total.to_le_bytes();
            ciphers.encrypt.apply(&mut count);
            s.write_all(&count).await?;
            s.shutdown().await?;
        }
        Op::Source => {
            while *go.borrow_and_update() < cmd.epoch {
                if go.changed().await.is_err() {
                    return Ok(());
                }
            }
            let mut left = cmd.arg as usize;
            while left > 0 {
                let n = left.min(noise.len());
                s.write_all(&noise[..n]).await?;
                left -= n;
            }
            s.shutdown().await?;
            while s.read(&mut buf).await? > 0 {}
        }
        Op::Echo => loop {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                s.shutdown().await?;
                break;
            }
            s.write_all(&buf[..n]).await?;
        },
        Op::Stream => {
            drop(buf);
            stream_on_load_runtime(s, noise).await?;
        }
        Op::Hold => {
            drop(buf);
            let mut small = [0u8; 64];
            while s.read(&mut small).await? > 0 {}
        }
    }
    Ok(())
}

/// Streams both ways ([`stream_both`]) on the load runtime when there is
/// one, so that the streams do not delay this runtime's answers to the
/// connections timed; here otherwise.
async fn stream_on_load_runtime(s: TcpStream, noise: Arc<Vec<u8>>) -> io::Result<()> {
    let load = STREAM_RUNTIME.lock().ok().and_then(|h| h.clone());
    match load {
        Some(h) => {
            let std = s.into_std()?;
            h.spawn(async move {
                if let Ok(s) = TcpStream::from_std(std) {
                    let _ = stream_both(s, noise).await;
                }
            });
            Ok(())
        }
        None => stream_both(s, noise).await,
    }
}

/// Starts the greeter on the current runtime: the destination of streams
/// through a `samizdat client` ([`crate::client::Route::Socks`]). It sends
/// [`GREETING`] at once on accept, as a server speaking first would, so the
/// client's first byte marks the stream's set-up; then one byte from the
/// client picks: [`STREAM`] streams noise both ways, anything else holds
/// until EOF. Returns its address.
pub fn greeter() -> io::Result<SocketAddr> {
    let listener = listen()?;
    let addr = listener.local_addr()?;
    let mut noise = vec![0u8; 64 * 1024];
    getrandom::fill(&mut noise).expect("OS randomness");
    let noise = Arc::new(noise);
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                continue;
            };
            let noise = noise.clone();
            tokio::spawn(async move {
                let _ = greet(s, noise).await;
            });
        }
    });
    Ok(addr)
}

async fn greet(mut s: TcpStream, noise: Arc<Vec<u8>>) -> io::Result<()> {
    s.set_nodelay(true)?;
    s.write_all(&GREETING).await?;
    let mut pick = [0u8; 1];
    s.read_exact(&mut pick).await?;
    if pick == STREAM {
        return stream_on_load_runtime(s, noise).await;
    }
    let mut small = [0u8; 64];
    while s.read(&mut small).await? > 0 {}
    Ok(())
}

/// Where the DC runs its [`Op::Stream`] connections (`None`: here).
pub static STREAM_RUNTIME: std::sync::Mutex<Option<tokio::runtime::Handle>> =
    std::sync::Mutex::new(None);

/// Sends noise without end while reading and dropping what comes, until
/// EOF or an error; yields after each 64 KiB.
async fn stream_both(s: TcpStream, noise: Arc<Vec<u8>>) -> io::Result<()> {
    let (mut rd, mut wr) = s.into_split();
    let reading = async {
        let mut b = vec![0u8; 64 * 1024];
        while rd.read(&mut b).await? > 0 {
            tokio::task::yield_now().await;
        }
        io::Result::Ok(())
    };
    let writing = async {
        loop {
            wr.write_all(&noise[..64 * 1024]).await?;
            tokio::task::yield_now().await;
        }
    };
    tokio::select! {
        r = reading => r,
        r = writing => r,
    }
}

/// A cover site that holds each connection until the other side closes.
/// Returns its address and a count of connections accepted.
pub fn cover() -> io::Result<(SocketAddr, Arc<AtomicU64>)> {
    let listener = listen()?;
    let addr = listener.local_addr()?;
    let accepted = Arc::new(AtomicU64::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            count.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let mut b = [0u8; 1024];
                while let Ok(n) = s.read(&mut b).await {
                    if n == 0 {
                        break;
                    }
                }
            });
        }
    });
    Ok((addr, accepted))
}
