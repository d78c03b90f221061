//! A TCP stream that keeps a copy of the first bytes each way: the raw
//! ServerHello (and our ClientHello's session id) that rustls does not
//! expose.

use crate::sync::Locked;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The raw bytes each way, for the ServerHello shape.
#[derive(Default)]
pub(super) struct Log {
    pub(super) read: Vec<u8>,
    pub(super) written: Vec<u8>,
}

/// Enough for a ServerHello and the record headers after it.
const LOG_CAP: usize = 16 * 1024;

fn keep(log: &mut Vec<u8>, bytes: &[u8]) {
    let room = LOG_CAP.saturating_sub(log.len());
    log.extend_from_slice(&bytes[..bytes.len().min(room)]);
}

/// A TCP stream that copies what passes into a [`Log`].
pub(super) struct Tap {
    pub(super) inner: TcpStream,
    pub(super) log: Arc<Mutex<Log>>,
}

impl AsyncRead for Tap {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll {
            keep(&mut self.log.locked().read, &buf.filled()[before..]);
        }
        poll
    }
}

impl AsyncWrite for Tap {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = poll {
            keep(&mut self.log.locked().written, &buf[..n]);
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
