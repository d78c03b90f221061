//! The WebSocket carrier: the samizdat transport inside a WebSocket, so a
//! server can sit behind nginx or a CDN (`docs/fronting.md`).
//!
//! Both sides use the same pieces from here: the bounded HTTP/1.1 head
//! reader and [`carry`], which turns an upgraded connection into a plain
//! byte stream for the transport. The client's dialling (TLS to the front,
//! the upgrade request) is `client::wss`. The HTTP rules
//! themselves (what an upgrade request and its answer must say) are sans-io
//! in `wire::http1::websocket`.
//!
//! The transport's bytes ride in binary messages; message boundaries mean
//! nothing (a CDN may re-frame). Pings are answered, a close ends the
//! stream, anything else (text, oversized frames) ends the connection.

use fastwebsockets::{Frame, OpCode, Payload, Role};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use wire::http1::{self, Head};

/// Largest WebSocket frame accepted from the peer. Our own frames are at
/// most [`CHUNK`] bytes; 64 KiB leaves room for a front that coalesces.
pub(crate) const MAX_MESSAGE: usize = 64 * 1024;
/// Transport bytes per outgoing binary message.
const CHUNK: usize = 16 * 1024;
/// Bytes buffered between the transport and the pump, each way.
const PIPE: usize = 64 * 1024;
/// Largest HTTP head (request or response) read before the upgrade.
pub(crate) const MAX_HEAD: usize = 8 * 1024;
/// How often the client pings an otherwise idle WebSocket: nginx's
/// `proxy_read_timeout` (60 s by default) and CDNs (about 100 s) close
/// WebSockets that stay silent longer.
const PING_EVERY: Duration = Duration::from_secs(30);
/// Why an HTTP head could not be read.
#[derive(Debug)]
pub(crate) enum HeadError {
    /// The connection ended or failed first.
    Io(io::Error),
    /// More than [`MAX_HEAD`] bytes without the blank line.
    TooLong,
}

/// Reads until the end of an HTTP head (`\r\n\r\n`), at most [`MAX_HEAD`]
/// bytes. Returns the head and whatever followed it in the same reads.
/// The caller puts a deadline around it.
pub(crate) async fn read_head<S: AsyncRead + Unpin>(
    io: &mut S,
) -> Result<(Vec<u8>, Vec<u8>), HeadError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        match http1::find_head(&buf, MAX_HEAD) {
            Head::Complete { len } => {
                let rest = buf.split_off(len);
                return Ok((buf, rest));
            }
            Head::TooLarge => return Err(HeadError::TooLong),
            Head::NeedMore => {}
        }
        let want = (MAX_HEAD - buf.len()).min(chunk.len());
        match io.read(&mut chunk[..want]).await {
            Ok(0) => {
                return Err(HeadError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed before the end of the HTTP head",
                )))
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(HeadError::Io(e)),
        }
    }
}

/// A stream with bytes already read from it put back in front.
pub(crate) struct Prefixed<S> {
    prefix: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    /// `prefix` is returned by reads before anything from `inner`.
    pub(crate) fn new(prefix: Vec<u8>, inner: S) -> Self {
        Prefixed {
            prefix,
            at: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.at < self.prefix.len() {
            let n = (self.prefix.len() - self.at).min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.prefix[at..at + n]);
            self.at += n;
            if self.at == self.prefix.len() {
                self.prefix = Vec::new();
                self.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

crate::delegate_async_write!([S: AsyncWrite + Unpin] Prefixed<S>, inner);

/// The transport's end of a WebSocket: a byte stream whose writes leave
/// as binary messages and whose reads are the peer's messages' payloads.
/// Dropping it closes the WebSocket (with a close frame when the socket
/// takes one at once) and the connection, like dropping a socket.
pub struct Carrier {
    io: DuplexStream,
    /// Dropped with the carrier: tells the pump to stop even if the peer
    /// stopped reading (a stalled write would otherwise keep it forever).
    _alive: tokio::sync::oneshot::Sender<()>,
}

crate::delegate_async_read!([] Carrier, io);

crate::delegate_async_write!([] Carrier, io);

/// Runs the WebSocket on `io` (already upgraded) in its own task and
/// returns the transport's end. The peer's close (or any error) ends the
/// carrier with EOF.
pub(crate) fn carry<S>(io: S, role: Role) -> Carrier
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (ours, theirs) = tokio::io::duplex(PIPE);
    let (alive, dropped) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        if let Err(e) = pump(io, role, theirs, dropped).await {
            tracing::debug!(error = %e, "WebSocket carrier ended");
        }
    });
    Carrier {
        io: ours,
        _alive: alive,
    }
}

fn ws_err(e: fastwebsockets::WebSocketError) -> io::Error {
    match e {
        fastwebsockets::WebSocketError::IoError(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

/// Moves bytes between the WebSocket and `local` until either ends.
async fn pump<S>(
    io: S,
    role: Role,
    local: DuplexStream,
    dropped: tokio::sync::oneshot::Receiver<()>,
) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (r, w) = tokio::io::split(io);
    let (mut rx, tx) = fastwebsockets::after_handshake_split(r, w, role);
    rx.set_max_message_size(MAX_MESSAGE + 1);
    rx.set_auto_pong(true);
    rx.set_auto_close(true);
    let tx = Arc::new(tokio::sync::Mutex::new(tx));
    let (mut local_r, mut local_w) = tokio::io::split(local);

    let down = async {
        // Pongs and the close reply go out through the shared write half.
        let mut obligated = |frame: Frame<'static>| {
            let tx = tx.clone();
            async move {
                let mut tx = tx.lock().await;
                tx.write_frame(frame).await?;
                tx.flush().await
            }
        };
        loop {
            let frame = rx.read_frame(&mut obligated).await.map_err(ws_err)?;
            match frame.opcode {
                OpCode::Binary | OpCode::Continuation => local_w.write_all(&frame.payload).await?,
                OpCode::Close => return Ok(()),
                OpCode::Pong | OpCode::Ping => {}
                OpCode::Text => {
                    return Err(io::Error::other("a text message inside the carrier"));
                }
            }
        }
    };

    let up = async {
        let mut buf = vec![0u8; CHUNK];
        let start = tokio::time::Instant::now() + PING_EVERY;
        let mut ping = tokio::time::interval_at(start, PING_EVERY);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                n = local_r.read(&mut buf) => {
                    let n = n?;
                    let mut tx = tx.lock().await;
                    if n == 0 {
                        let _ = tx.write_frame(Frame::close(1000, b"")).await;
                        let _ = tx.flush().await;
                        return Ok(());
                    }
                    tx.write_frame(Frame::binary(Payload::BorrowedMut(&mut buf[..n])))
                        .await
                        .map_err(ws_err)?;
                    tx.flush().await.map_err(ws_err)?;
                }
                _ = ping.tick(), if role == Role::Client => {
                    let mut tx = tx.lock().await;
                    tx.write_frame(Frame::new(true, OpCode::Ping, None, Payload::Borrowed(&[])))
                        .await
                        .map_err(ws_err)?;
                    tx.flush().await.map_err(ws_err)?;
                }
            }
        }
    };

    // `up` first: when the carrier is dropped it sees EOF and sends the
    // close frame if the socket takes it now; if not, `dropped` ends it.
    tokio::select! {
        biased;
        r = up => r,
        r = down => r,
        _ = dropped => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn carrier_moves_bytes_both_ways_and_closes() {
        let (a, b) = tokio::io::duplex(4096);
        let mut client = carry(a, Role::Client);
        let mut server = carry(b, Role::Server);
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let send = big.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&send).await.unwrap();
            let mut back = vec![0u8; 5];
            client.read_exact(&mut back).await.unwrap();
            assert_eq!(&back, b"hello");
            drop(client);
        });
        let mut got = vec![0u8; big.len()];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(got, big);
        server.write_all(b"hello").await.unwrap();
        writer.await.unwrap();
        // The client's close reaches the server as EOF.
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn an_oversized_frame_ends_the_carrier() {
        let (mut raw, b) = tokio::io::duplex(256 * 1024);
        let mut server = carry(b, Role::Server);
        // A masked binary frame announcing MAX_MESSAGE + 1 bytes.
        let mut frame = vec![0x82, 0x80 | 127];
        frame.extend((MAX_MESSAGE as u64 + 1).to_be_bytes());
        frame.extend([0u8; 4]);
        frame.extend(vec![0u8; MAX_MESSAGE + 1]);
        raw.write_all(&frame).await.unwrap();
        let mut got = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(5), server.read_to_end(&mut got)).await;
        assert!(matches!(r, Ok(Ok(0))), "EOF, nothing delivered: {r:?}");
    }

    #[tokio::test]
    async fn pings_are_answered_and_text_ends_the_carrier() {
        let (mut raw, b) = tokio::io::duplex(64 * 1024);
        let mut server = carry(b, Role::Server);
        // Masked ping "hi" (mask zero), then a masked binary "ok".
        raw.write_all(&[0x89, 0x82, 0, 0, 0, 0, b'h', b'i'])
            .await
            .unwrap();
        let mut pong = [0u8; 4];
        raw.read_exact(&mut pong).await.unwrap();
        assert_eq!(pong, [0x8a, 0x02, b'h', b'i']);
        raw.write_all(&[0x82, 0x82, 0, 0, 0, 0, b'o', b'k'])
            .await
            .unwrap();
        let mut ok = [0u8; 2];
        server.read_exact(&mut ok).await.unwrap();
        assert_eq!(&ok, b"ok");
        raw.write_all(&[0x81, 0x81, 0, 0, 0, 0, b'x'])
            .await
            .unwrap();
        let mut rest = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(5), server.read_to_end(&mut rest)).await;
        assert!(matches!(r, Ok(Ok(0))), "{r:?}");
    }

    /// A socket that says when it is dropped.
    struct Watched(DuplexStream, Arc<std::sync::atomic::AtomicBool>);

    impl Drop for Watched {
        fn drop(&mut self) {
            self.1.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    impl AsyncRead for Watched {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Watched {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.0).poll_write(cx, buf)
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_flush(cx)
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_shutdown(cx)
        }
    }

    #[tokio::test]
    async fn dropping_the_carrier_ends_it_even_if_the_peer_never_reads() {
        let (_peer, b) = tokio::io::duplex(1024);
        let released = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut carrier = carry(Watched(b, released.clone()), Role::Server);
        // More than the pipe and the socket hold: the pump stalls writing
        // to a peer that never reads.
        let _ = tokio::time::timeout(
            Duration::from_millis(200),
            carrier.write_all(&vec![7u8; 4 * PIPE]),
        )
        .await;
        drop(carrier);
        let mut waited = Duration::ZERO;
        while !released.load(std::sync::atomic::Ordering::SeqCst) {
            assert!(waited < Duration::from_secs(5), "the socket is still held");
            tokio::time::sleep(Duration::from_millis(20)).await;
            waited += Duration::from_millis(20);
        }
    }

    #[tokio::test]
    async fn head_is_bounded() {
        let (mut a, mut b) = tokio::io::duplex(64 * 1024);
        a.write_all(&vec![b'a'; MAX_HEAD + 10]).await.unwrap();
        assert!(matches!(read_head(&mut b).await, Err(HeadError::TooLong)));
        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(b"GET / HTTP/1.1\r\n\r\nxyz").await.unwrap();
        let (head, rest) = read_head(&mut b).await.unwrap();
        assert_eq!(head, b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(rest, b"xyz");
    }
}
