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
use std::io::{self, ErrorKind, IoSliceMut};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::Instant;
use wire::cipher::Ctr;
use wire::faketls::{self, records::RecordDecoder};

/// Bytes ready to be written after a transform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    /// The range of the buffer to write.
    pub write: Range<usize>,
    /// Payload bytes among them (for the byte counters).
    pub payload: usize,
}

/// What one direction does to the bytes it moves.
pub trait Transform {
    /// Reads what `src` has into `buf` without waiting (`WouldBlock` when
    /// nothing is there) and returns the bytes read; the layout inside
    /// `buf` is the transform's own (see [`DcToClient`]).
    fn read(&mut self, src: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
        src.try_read(buf)
    }
    /// Transforms the `n` bytes just read, in place, and says what to write.
    fn apply(&mut self, buf: &mut [u8], n: usize) -> io::Result<Ready>;
    /// The source ended the stream inside the protocol (a TLS alert).
    fn closed(&self) -> bool {
        false
    }
}

pub use super::meter::{Meter, Unmetered};

/// Bytes pass unchanged (cover splice).
pub struct Identity;

impl Transform for Identity {
    fn apply(&mut self, _buf: &mut [u8], n: usize) -> io::Result<Ready> {
        Ok(Ready {
            write: 0..n,
            payload: n,
        })
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
    fn apply(&mut self, buf: &mut [u8], n: usize) -> io::Result<Ready> {
        let n = match &mut self.records {
            Some(dec) => dec
                .decode_in_place(&mut buf[..n])
                .map_err(|e| io::Error::new(ErrorKind::InvalidData, e))?,
            None => n,
        };
        self.decrypt.apply(&mut buf[..n]);
        self.encrypt.apply(&mut buf[..n]);
        Ok(Ready {
            write: 0..n,
            payload: n,
        })
    }
    fn closed(&self) -> bool {
        self.records.as_ref().is_some_and(|d| d.is_closed())
    }
}

/// Payload bytes per ApplicationData record toward `ee` clients.
pub const RECORD: usize = faketls::MAX_PLAINTEXT;
/// A record header and its payload.
const RECORD_SLOT: usize = 5 + RECORD;
/// Records one read fills at most: as many as fit in a pool buffer.
const RECORDS_PER_READ: usize = super::pool::BUF_SIZE / RECORD_SLOT;

/// DC → client: decrypt the DC's stream, encrypt with the client's key,
/// wrap in ApplicationData records for `ee` clients.
///
/// For `ee` one vectored read scatters the DC's bytes into record-sized
/// slots of the buffer with a 5-byte gap before each, the headers are
/// written into the gaps, and the records go out in one write: no copy,
/// and a 64 KiB read and write instead of four 16 KiB ones.
pub struct DcToClient {
    /// DC's outgoing keystream.
    pub decrypt: Ctr,
    /// Client's incoming keystream.
    pub encrypt: Ctr,
    /// Wrap into TLS records.
    pub tls: bool,
}

impl Transform for DcToClient {
    fn read(&mut self, src: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
        if !self.tls {
            return src.try_read(buf);
        }
        let mut slots = buf.chunks_mut(RECORD_SLOT);
        let mut parts: [IoSliceMut<'_>; RECORDS_PER_READ] = std::array::from_fn(|_| {
            IoSliceMut::new(slots.next().map(|s| &mut s[5..]).unwrap_or_default())
        });
        src.try_read_vectored(&mut parts)
    }
    fn apply(&mut self, buf: &mut [u8], n: usize) -> io::Result<Ready> {
        if !self.tls {
            self.decrypt.apply(&mut buf[..n]);
            self.encrypt.apply(&mut buf[..n]);
            return Ok(Ready {
                write: 0..n,
                payload: n,
            });
        }
        let mut left = n;
        let mut end = 0;
        for slot in buf.chunks_mut(RECORD_SLOT) {
            if left == 0 {
                break;
            }
            let len = left.min(RECORD);
            let (header, data) = slot.split_at_mut(5);
            header.copy_from_slice(&faketls::app_data_header(len));
            self.decrypt.apply(&mut data[..len]);
            self.encrypt.apply(&mut data[..len]);
            end += 5 + len;
            left -= len;
        }
        Ok(Ready {
            write: 0..end,
            payload: n,
        })
    }
}

/// How a relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayEnd {
    /// Both sides closed (FIN) in turn.
    Closed,
    /// One side reset; the other was reset too.
    Reset,
    /// No bytes moved for the idle timeout.
    Idle,
    /// A write made no progress for the send timeout (the peer stopped
    /// reading).
    Stalled,
    /// The client broke the record or cipher framing.
    Protocol,
    /// The server is shutting down, or the user was removed or expired.
    Shutdown,
    /// The user's quota is used up.
    Quota,
}

impl RelayEnd {
    /// Stable name for logs.
    pub fn name(self) -> &'static str {
        match self {
            RelayEnd::Closed => "closed",
            RelayEnd::Reset => "reset",
            RelayEnd::Idle => "idle_timeout",
            RelayEnd::Stalled => "send_timeout",
            RelayEnd::Protocol => "protocol_error",
            RelayEnd::Shutdown => "shutdown",
            RelayEnd::Quota => "quota",
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
    pub end: RelayEnd,
}

/// Writes all of `data` using readiness, so the stream can be shared.
pub async fn write_all(stream: &TcpStream, data: &[u8]) -> io::Result<()> {
    write_all_within(stream, data, None).await
}

/// [`write_all`], failing with `TimedOut` when the stream takes no byte
/// for `stall` (a peer that stopped reading).
async fn write_all_within(
    stream: &TcpStream,
    mut data: &[u8],
    stall: Option<Duration>,
) -> io::Result<()> {
    while !data.is_empty() {
        match stall {
            None => stream.writable().await?,
            Some(d) => tokio::time::timeout(d, stream.writable())
                .await
                .map_err(|_| io::Error::from(ErrorKind::TimedOut))??,
        }
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

/// Bytes a pump moves before it lets the scheduler run something else.
///
/// A pump waits only when its source is empty or its destination full; a
/// connection streaming at full speed meets neither, so without a turn its
/// task would keep its worker thread for as long as the bytes keep coming,
/// and the accept loop and new handshakes would wait behind every such
/// connection (seconds with a hundred of them). One buffer per turn: a
/// yield costs far less than the 64 KiB of crypto and copying before it,
/// and the wait of anything new is about one buffer per busy connection.
const TURN: usize = 64 * 1024;

enum PumpEnd {
    Eof,
    Reset,
    Protocol,
    Quota,
    Stalled,
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

// One direction's sockets, transform and shared accounting, each needed.
#[allow(clippy::too_many_arguments)]
async fn pump<T: Transform>(
    src: &TcpStream,
    dst: &TcpStream,
    t: &mut T,
    pool: &BufferPool,
    activity: &Activity,
    count: &AtomicU64,
    meter: &dyn Meter,
    stall: Option<Duration>,
) -> PumpEnd {
    // Bytes moved since this pump last gave the scheduler its turn.
    let mut turn = 0usize;
    loop {
        // Readiness futures and `try_*` calls do not count against tokio's
        // cooperative budget: count each round here.
        tokio::task::consume_budget().await;
        if src.readable().await.is_err() {
            arm_reset(dst);
            return PumpEnd::Reset;
        }
        let mut buf = pool.take();
        let n = match t.read(src, &mut buf) {
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
        let ready = match t.apply(&mut buf, n) {
            Ok(r) => r,
            Err(_) => {
                pool.give(buf);
                return PumpEnd::Protocol;
            }
        };
        let moved = ready.payload;
        let written = write_all_within(dst, &buf[ready.write], stall).await;
        pool.give(buf);
        if matches!(&written, Err(e) if e.kind() == ErrorKind::TimedOut) {
            return PumpEnd::Stalled;
        }
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
        match meter.charge(moved) {
            Ok(pause) if !pause.is_zero() => tokio::time::sleep(pause).await,
            Ok(_) => {}
            Err(()) => return PumpEnd::Quota,
        }
        turn += n;
        if turn >= TURN {
            // While the source keeps having bytes and the destination keeps
            // taking them, nothing here waits: give other connections, the
            // accept loop and new handshakes their turn (see TURN).
            turn = 0;
            tokio::task::yield_now().await;
        }
    }
}

/// What ends or slows a relay besides its two peers.
pub struct Bounds<'a> {
    /// End after this long without a byte either way (`None`: never).
    pub idle: Option<Duration>,
    /// End when a write takes no byte for this long (`None`: never).
    pub stall: Option<Duration>,
    /// End when this fires (server shutdown, user removed or expired).
    pub stop: &'a tokio_util::sync::CancellationToken,
    /// Quota and rate accounting.
    pub meter: &'a dyn Meter,
}

/// How long a cover splice may go without a byte either way: longer than
/// the keep-alive and header timeouts of common web servers (nginx 75 s and
/// 60 s, Apache 5 s and 60 s), so a real cover closes first.
pub const SPLICE_IDLE: Duration = Duration::from_secs(120);
/// How long a write into a cover splice may take no byte: nginx's
/// `send_timeout` (60 s), after which it closes a client that stopped
/// reading, as this does.
pub const SPLICE_STALL: Duration = Duration::from_secs(60);

impl<'a> Bounds<'a> {
    /// The bounds of a cover splice: a web server's idle and send
    /// timeouts (see `docs/cover.md`), no metering.
    pub fn splice(stop: &'a tokio_util::sync::CancellationToken) -> Bounds<'a> {
        Bounds {
            idle: Some(SPLICE_IDLE),
            stall: Some(SPLICE_STALL),
            stop,
            meter: &Unmetered,
        }
    }
}

/// Relays until both directions have closed, one side resets, the idle
/// timeout passes (if any) or `stop` fires.
pub async fn relay<U: Transform, D: Transform>(
    client: &TcpStream,
    server: &TcpStream,
    mut up: U,
    mut down: D,
    pool: &BufferPool,
    bounds: Bounds<'_>,
) -> Outcome {
    let Bounds {
        idle,
        stall,
        stop: shutdown,
        meter,
    } = bounds;
    let activity = Activity {
        start: Instant::now(),
        last_ms: AtomicU64::new(0),
    };
    let (up_bytes, down_bytes) = (AtomicU64::new(0), AtomicU64::new(0));
    let up_fut = pump(
        client, server, &mut up, pool, &activity, &up_bytes, meter, stall,
    );
    let down_fut = pump(
        server,
        client,
        &mut down,
        pool,
        &activity,
        &down_bytes,
        meter,
        stall,
    );
    tokio::pin!(up_fut, down_fut);
    let (mut up_done, mut down_done) = (false, false);
    let end = loop {
        let idle_at = idle.map(|d| activity.last() + d);
        tokio::select! {
            r = &mut up_fut, if !up_done => match r {
                PumpEnd::Eof => { up_done = true; if down_done { break RelayEnd::Closed } }
                PumpEnd::Reset => break RelayEnd::Reset,
                PumpEnd::Protocol => break RelayEnd::Protocol,
                PumpEnd::Quota => break RelayEnd::Quota,
                PumpEnd::Stalled => break RelayEnd::Stalled,
            },
            r = &mut down_fut, if !down_done => match r {
                PumpEnd::Eof => { down_done = true; if up_done { break RelayEnd::Closed } }
                PumpEnd::Reset => break RelayEnd::Reset,
                PumpEnd::Protocol => break RelayEnd::Protocol,
                PumpEnd::Quota => break RelayEnd::Quota,
                PumpEnd::Stalled => break RelayEnd::Stalled,
            },
            // A side that sent FIN is no longer read, yet it can still reset
            // (it had closed completely and we forwarded more bytes to it).
            // Someone talking to it directly would get that reset: mirror it.
            _ = reset_after_fin(server), if down_done => { arm_reset(client); break RelayEnd::Reset }
            _ = reset_after_fin(client), if up_done => { arm_reset(server); break RelayEnd::Reset }
            _ = sleep_until_opt(idle_at) => {
                if idle_at.is_some_and(|t| t <= Instant::now()) && activity.last() + idle.unwrap_or_default() <= Instant::now() {
                    break RelayEnd::Idle;
                }
            }
            _ = shutdown.cancelled() => break RelayEnd::Shutdown,
        }
    };
    Outcome {
        up: up_bytes.load(Ordering::Relaxed),
        down: down_bytes.load(Ordering::Relaxed),
        end,
    }
}

/// Resolves once `stream` has a pending error (it was reset). Used only
/// after its FIN, when nothing reads it any more.
async fn reset_after_fin(stream: &TcpStream) {
    loop {
        if stream.ready(Interest::ERROR).await.is_err() {
            return;
        }
        if !matches!(stream.take_error(), Ok(None)) {
            return;
        }
        // Spurious: clear the readiness and wait again.
        let _ = stream.try_io(Interest::ERROR, || {
            Err::<(), _>(ErrorKind::WouldBlock.into())
        });
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;
    use tokio_util::sync::CancellationToken;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        (a, b)
    }

    /// A visitor spliced to the cover who stops reading while the cover
    /// sends is closed after the send timeout, as nginx's `send_timeout`
    /// closes it, instead of holding a connection and a buffer for ever.
    /// A cover splice between `client_side` and `cover_side` with the
    /// splice bounds; panics if it is still running after an hour.
    async fn splice_within_an_hour(client_side: &TcpStream, cover_side: &TcpStream) -> Outcome {
        let stop = CancellationToken::new();
        let pool = BufferPool::new(4);
        tokio::time::timeout(
            Duration::from_secs(3600),
            relay(
                client_side,
                cover_side,
                Identity,
                Identity,
                &pool,
                Bounds::splice(&stop),
            ),
        )
        .await
        .expect("a splice outlived an hour")
    }

    #[tokio::test(start_paused = true)]
    async fn a_splice_ends_when_the_visitor_stops_reading() {
        let (visitor, client_side) = pair().await;
        let (cover_side, mut cover) = pair().await;
        let sender = tokio::spawn(async move {
            let chunk = vec![7u8; 64 * 1024];
            while cover.write_all(&chunk).await.is_ok() {}
        });
        let t0 = Instant::now();
        let out = splice_within_an_hour(&client_side, &cover_side).await;
        assert_eq!(out.end, RelayEnd::Stalled);
        assert!(
            out.down > 0,
            "the cover's bytes were relayed until the stall"
        );
        let took = t0.elapsed();
        assert!(
            took >= SPLICE_STALL && took < SPLICE_STALL + Duration::from_secs(5),
            "ended after {took:?}"
        );
        sender.abort();
        drop(visitor);
    }

    /// A splice where nothing moves either way ends after the idle timeout.
    #[tokio::test(start_paused = true)]
    async fn an_idle_splice_ends_after_the_idle_timeout() {
        let (_visitor, client_side) = pair().await;
        let (cover_side, _cover) = pair().await;
        let t0 = Instant::now();
        let out = splice_within_an_hour(&client_side, &cover_side).await;
        assert_eq!(out.end, RelayEnd::Idle);
        assert!(t0.elapsed() >= SPLICE_IDLE);
    }
}
