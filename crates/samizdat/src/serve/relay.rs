//! The byte pump: two directions, each with its own transform (cipher
//! state, record framing) and a buffer borrowed only while bytes move.
//!
//! Both directions run as futures inside the connection's one task and
//! share the sockets by reference (`readable`/`try_read`, `writable`/
//! `try_write`), so nothing is shut down behind our back when a half is
//! dropped and a reset can be mirrored exactly: a reset on one side becomes
//! a reset (SO_LINGER 0) on the other, a FIN becomes a FIN.

use super::pool::BufferPool;
use socket2::SockRef;
use std::io::{self, ErrorKind};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;
use wire::cipher::Ctr;
use wire::faketls::{self, records::RecordDecoder};

/// What one direction does to the bytes it moves.
pub trait Transform {
    /// Bytes to leave free in front of the data (room for a record header).
    fn headroom(&self) -> usize {
        0
    }
    /// Most bytes to read at once.
    fn max_read(&self) -> usize {
        usize::MAX
    }
    /// Transforms `buf[headroom..headroom + n]` in place and returns the
    /// range of `buf` to write.
    fn apply(&mut self, buf: &mut [u8], n: usize) -> io::Result<Range<usize>>;
    /// The source ended the stream inside the protocol (a TLS alert).
    fn closed(&self) -> bool {
        false
    }
}

/// Bytes pass unchanged (cover splice).
pub struct Identity;

impl Transform for Identity {
    fn apply(&mut self, _buf: &mut [u8], n: usize) -> io::Result<Range<usize>> {
        Ok(0..n)
    }
}

/// Client → DC: strip fake-TLS records (if any), decrypt with the client's
/// key, encrypt with ours toward the DC.
pub struct ClientToDc {
    /// Record decoder for `ee` clients.
    pub records: Option<RecordDecoder>,
    /// Client's outgoing keystream.
    pub decrypt: Ctr,
    /// Our keystream toward the DC.
    pub encrypt: Ctr,
}

impl Transform for ClientToDc {
    fn apply(&mut self, buf: &mut [u8], n: usize) -> io::Result<Range<usize>> {
        let n = match &mut self.records {
            Some(dec) => dec
                .decode_in_place(&mut buf[..n])
                .map_err(|e| io::Error::new(ErrorKind::InvalidData, e))?,
            None => n,
        };
        self.decrypt.apply(&mut buf[..n]);
        self.encrypt.apply(&mut buf[..n]);
        Ok(0..n)
    }
    fn closed(&self) -> bool {
        self.records.as_ref().is_some_and(|d| d.is_closed())
    }
}

/// DC → client: decrypt the DC's stream, encrypt with the client's key,
/// wrap in ApplicationData records for `ee` clients.
pub struct DcToClient {
    /// DC's outgoing keystream.
    pub decrypt: Ctr,
    /// Client's incoming keystream.
    pub encrypt: Ctr,
    /// Wrap into TLS records.
    pub tls: bool,
}

impl Transform for DcToClient {
    fn headroom(&self) -> usize {
        if self.tls {
            5
        } else {
            0
        }
    }
    fn max_read(&self) -> usize {
        if self.tls {
            faketls::MAX_PLAINTEXT
        } else {
            usize::MAX
        }
    }
    fn apply(&mut self, buf: &mut [u8], n: usize) -> io::Result<Range<usize>> {
        let h = self.headroom();
        let data = &mut buf[h..h + n];
        self.decrypt.apply(data);
        self.encrypt.apply(data);
        if self.tls {
            buf[..5].copy_from_slice(&faketls::app_data_header(n));
        }
        Ok(0..h + n)
    }
}

/// How a relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Both sides closed (FIN) in turn.
    Closed,
    /// One side reset; the other was reset too.
    Reset,
    /// No bytes moved for the idle timeout.
    Idle,
    /// The client broke the record or cipher framing.
    Protocol,
    /// The server is shutting down.
    Shutdown,
}

impl End {
    /// Stable name for logs.
    pub fn name(self) -> &'static str {
        match self {
            End::Closed => "closed",
            End::Reset => "reset",
            End::Idle => "idle_timeout",
            End::Protocol => "protocol_error",
            End::Shutdown => "shutdown",
        }
    }
}

/// Byte counts and how the relay ended.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// Payload bytes client → server.
    pub up: u64,
    /// Payload bytes server → client.
    pub down: u64,
    /// How it ended.
    pub end: End,
}

/// Writes all of `data` using readiness, so the stream can be shared.
pub async fn write_all(stream: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        stream.writable().await?;
        match stream.try_write(data) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Sends FIN (errors ignored: the peer may be gone already).
pub fn shutdown_write(stream: &TcpStream) {
    let _ = SockRef::from(stream).shutdown(std::net::Shutdown::Write);
}

/// Makes the next close of `stream` send RST instead of FIN.
pub fn arm_reset(stream: &TcpStream) {
    let _ = SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
    )
}

enum PumpEnd {
    Eof,
    Reset,
    Protocol,
}

/// Milliseconds since the relay started of the last byte moved.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }
    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

async fn pump<T: Transform>(
    src: &TcpStream,
    dst: &TcpStream,
    t: &mut T,
    pool: &BufferPool,
    activity: &Activity,
    count: &AtomicU64,
) -> PumpEnd {
    loop {
        if src.readable().await.is_err() {
            arm_reset(dst);
            return PumpEnd::Reset;
        }
        let mut buf = pool.take();
        let h = t.headroom();
        let max = t.max_read().min(buf.len() - h);
        let n = match src.try_read(&mut buf[h..h + max]) {
            Ok(0) => {
                pool.give(buf);
                shutdown_write(dst);
                return PumpEnd::Eof;
            }
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                pool.give(buf);
                continue;
            }
            Err(e) => {
                pool.give(buf);
                if is_reset(&e) {
                    arm_reset(dst);
                }
                return PumpEnd::Reset;
            }
        };
        activity.touch();
        let range = match t.apply(&mut buf, n) {
            Ok(r) => r,
            Err(_) => {
                pool.give(buf);
                return PumpEnd::Protocol;
            }
        };
        let moved = range.len() - t.headroom().min(range.len());
        let written = write_all(dst, &buf[range]).await;
        pool.give(buf);
        if written.is_err() {
            // The destination reset us: tell the source the same way.
            arm_reset(src);
            return PumpEnd::Reset;
        }
        count.fetch_add(moved as u64, Ordering::Relaxed);
        if t.closed() {
            shutdown_write(dst);
            return PumpEnd::Eof;
        }
    }
}

/// Relays until both directions have closed, one side resets, the idle
/// timeout passes (if any) or `shutdown` fires.
pub async fn relay<U: Transform, D: Transform>(
    client: &TcpStream,
    server: &TcpStream,
    mut up: U,
    mut down: D,
    pool: &BufferPool,
    idle: Option<Duration>,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Outcome {
    let activity = Activity {
        start: Instant::now(),
        last_ms: AtomicU64::new(0),
    };
    let (up_bytes, down_bytes) = (AtomicU64::new(0), AtomicU64::new(0));
    let up_fut = pump(client, server, &mut up, pool, &activity, &up_bytes);
    let down_fut = pump(server, client, &mut down, pool, &activity, &down_bytes);
    tokio::pin!(up_fut, down_fut);
    let (mut up_done, mut down_done) = (false, false);
    let end = loop {
        let idle_at = idle.map(|d| activity.last() + d);
        tokio::select! {
            r = &mut up_fut, if !up_done => match r {
                PumpEnd::Eof => { up_done = true; if down_done { break End::Closed } }
                PumpEnd::Reset => break End::Reset,
                PumpEnd::Protocol => break End::Protocol,
            },
            r = &mut down_fut, if !down_done => match r {
                PumpEnd::Eof => { down_done = true; if up_done { break End::Closed } }
                PumpEnd::Reset => break End::Reset,
                PumpEnd::Protocol => break End::Protocol,
            },
            _ = sleep_until_opt(idle_at) => {
                if idle_at.is_some_and(|t| t <= Instant::now()) && activity.last() + idle.unwrap_or_default() <= Instant::now() {
                    break End::Idle;
                }
            }
            _ = shutdown.cancelled() => break End::Shutdown,
        }
    };
    Outcome {
        up: up_bytes.load(Ordering::Relaxed),
        down: down_bytes.load(Ordering::Relaxed),
        end,
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
