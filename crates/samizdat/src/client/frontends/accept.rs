//! What every front-end shares: the accept loop with its connection cap
//! and shutdown, the bounded read of a handshake message, and the byte
//! pump.

use crate::dial::{BoxIo, Destination, Dialer, OpenError};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Longest a client may take to finish its handshake (greeting, auth,
/// request, or the obfuscated2 init): a stalled client holds a task and a
/// socket only this long.
pub(crate) const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);
/// Longest the dialer may take to open a stream before the client is told
/// it timed out (the dialer's own timeouts are usually shorter).
pub(crate) const OPEN_DEADLINE: Duration = Duration::from_secs(30);
/// Connections served at once per listener; further ones wait in the
/// kernel's backlog, so a flood costs no memory here.
pub(crate) const MAX_CONNECTIONS: usize = 1024;
/// Buffer per relay direction.
pub(crate) const RELAY_BUF: usize = 64 * 1024;
/// Bytes read per call while a handshake message is incomplete.
const READ_CHUNK: usize = 4096;

/// Accepts until `shutdown`, running `handle` for each connection in its
/// own task; returns once every task has ended (all are ended by
/// `shutdown`, which drops their sockets).
pub(crate) async fn serve<F, Fut>(
    listener: TcpListener,
    shutdown: CancellationToken,
    what: &'static str,
    handle: F,
) where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let tracker = TaskTracker::new();
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = shutdown.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors or an aborted handshake: back off
                    // briefly instead of spinning.
                    tracing::debug!(proxy = what, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let work = handle(stream, peer);
        let stop = shutdown.clone();
        tracker.spawn(async move {
            let _permit = permit;
            tokio::select! {
                _ = work => {}
                _ = stop.cancelled() => {}
            }
        });
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
}

/// Why a handshake message could not be read.
#[derive(Debug)]
pub(crate) enum ReadFail<E> {
    /// The parser refused the bytes.
    Invalid(E),
    /// The client closed before the message was complete.
    Eof,
    /// `max` bytes and still incomplete (a parser bug guard).
    TooLong,
    /// A socket error (logged at debug level where it happened).
    Io,
}

/// Reads into `buf` until `parse` accepts or refuses what is there, never
/// holding more than `max` bytes. On success the message's bytes are
/// removed from `buf`, and what follows them stays.
pub(crate) async fn read_parsed<S, T, E>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    max: usize,
    parse: impl Fn(&[u8]) -> Result<Option<(T, usize)>, E>,
) -> Result<T, ReadFail<E>>
where
    S: AsyncRead + Unpin,
{
    loop {
        match parse(buf) {
            Ok(Some((value, used))) => {
                buf.drain(..used.min(buf.len()));
                return Ok(value);
            }
            Ok(None) => {}
            Err(e) => return Err(ReadFail::Invalid(e)),
        }
        let room = max.saturating_sub(buf.len()).min(READ_CHUNK);
        if room == 0 {
            return Err(ReadFail::TooLong);
        }
        let start = buf.len();
        buf.resize(start + room, 0);
        let n = match stream.read(&mut buf[start..]).await {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(error = %e, "handshake read failed");
                buf.truncate(start);
                return Err(ReadFail::Io);
            }
        };
        buf.truncate(start + n);
        if n == 0 {
            return Err(ReadFail::Eof);
        }
    }
}

/// Asks the dialer for a stream within [`OPEN_DEADLINE`].
pub(crate) async fn open(
    dialer: &dyn Dialer,
    dest: Destination,
    first: Vec<u8>,
) -> Result<BoxIo, OpenError> {
    match tokio::time::timeout(OPEN_DEADLINE, dialer.open(dest, first)).await {
        Ok(r) => r,
        Err(_) => Err(OpenError::TimedOut),
    }
}

/// Writes a final answer and closes our side, ignoring a peer that left.
pub(crate) async fn answer_and_close(stream: &mut TcpStream, bytes: &[u8]) {
    let _ = tokio::time::timeout(HANDSHAKE_DEADLINE, async {
        stream.write_all(bytes).await?;
        stream.shutdown().await
    })
    .await;
}

/// Relays both ways until both directions ended; a FIN in one direction is
/// passed on as a FIN (half-close), an error ends both.
pub(crate) async fn relay(mut client: TcpStream, mut upstream: BoxIo) {
    let r =
        tokio::io::copy_bidirectional_with_sizes(&mut client, &mut upstream, RELAY_BUF, RELAY_BUF)
            .await;
    if let Err(e) = r {
        tracing::debug!(error = %e, "relay ended with an error");
    }
}

/// Copies `reader` to `writer`, passing each chunk through `transform`,
/// and shuts `writer` down at the end of the stream.
pub(crate) async fn pump<R, W>(
    mut reader: R,
    mut writer: W,
    mut transform: impl FnMut(&mut [u8]),
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; RELAY_BUF];
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            return writer.shutdown().await;
        }
        transform(&mut buf[..n]);
        writer.write_all(&buf[..n]).await?;
    }
}

/// Runs two directions until both ended, or either failed; with
/// `b_ends_both`, also as soon as `b` ends (a response that was the last).
pub(crate) async fn both(
    a: impl Future<Output = io::Result<()>>,
    b: impl Future<Output = io::Result<()>>,
    b_ends_both: bool,
) {
    tokio::pin!(a, b);
    let (mut a_done, mut b_done) = (false, false);
    while !(b_done && (a_done || b_ends_both)) {
        let r = tokio::select! {
            r = &mut a, if !a_done => { a_done = true; r }
            r = &mut b, if !b_done => { b_done = true; r }
        };
        if let Err(e) = r {
            tracing::debug!(error = %e, "relay ended with an error");
            return;
        }
    }
}
