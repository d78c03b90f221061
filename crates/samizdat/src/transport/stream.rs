//! One multiplexed stream: `AsyncRead + AsyncWrite` over the session's
//! per-stream queues.

use super::session::{shared_of, Control, Lifeline, SEND_BUFFER};
use std::io::{self, ErrorKind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A stream of a [`super::Session`]. `shutdown()` sends FIN once the data
/// written before it is sent; dropping a stream that has not finished both
/// ways sends RESET.
pub struct Stream {
    life: Arc<Lifeline>,
    id: u32,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream").field("id", &self.id).finish()
    }
}

fn gone() -> io::Error {
    io::Error::new(ErrorKind::ConnectionAborted, "tunnel session closed")
}

impl Stream {
    pub(crate) fn new(life: Arc<Lifeline>, id: u32) -> Stream {
        Stream { life, id }
    }

    /// The stream id (odd: opened by the client).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Aborts the stream (RESET) now.
    pub fn reset(self) {
        self.abort();
    }

    fn abort(&self) {
        let shared = shared_of(&self.life);
        let mut st = shared.lock();
        let Some(slot) = st.slots.remove(&self.id) else {
            return;
        };
        let finished = slot.fin_sent && slot.recv_fin;
        if !finished && !slot.reset && st.mux.reset(self.id) && !st.closed {
            st.push_control(Control::Reset { stream: self.id });
            drop(st);
            shared.writer.notify_one();
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.abort();
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let shared = shared_of(&self.life);
        let mut st = shared.lock();
        let closed = st.closed;
        let Some(slot) = st.slots.get_mut(&self.id) else {
            return Poll::Ready(Err(gone()));
        };
        if !slot.recv.is_empty() {
            let n = slot.recv.len().min(buf.remaining());
            let (a, b) = slot.recv.as_slices();
            let from_a = a.len().min(n);
            buf.put_slice(&a[..from_a]);
            buf.put_slice(&b[..n - from_a]);
            slot.recv.drain(..n);
            if st.consumed(self.id, n) {
                drop(st);
                shared.writer.notify_one();
            }
            return Poll::Ready(Ok(()));
        }
        if slot.recv_fin || buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if slot.reset {
            return Poll::Ready(Err(ErrorKind::ConnectionReset.into()));
        }
        if closed {
            return Poll::Ready(Err(gone()));
        }
        slot.read_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let shared = shared_of(&self.life);
        let mut st = shared.lock();
        let closed = st.closed;
        let credit = st.mux.send_credit(self.id) as usize;
        let Some(slot) = st.slots.get_mut(&self.id) else {
            return Poll::Ready(Err(gone()));
        };
        if slot.reset {
            return Poll::Ready(Err(ErrorKind::ConnectionReset.into()));
        }
        if closed {
            return Poll::Ready(Err(gone()));
        }
        if slot.fin_requested {
            return Poll::Ready(Err(ErrorKind::BrokenPipe.into()));
        }
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let room = credit.min(SEND_BUFFER.saturating_sub(slot.send.len()));
        if room == 0 {
            slot.write_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = room.min(data.len());
        slot.send.extend(&data[..n]);
        st.mux.sent(self.id, n);
        st.mark_ready(self.id);
        drop(st);
        shared.writer.notify_one();
        Poll::Ready(Ok(n))
    }

    /// Ready once everything written so far has gone to the writer task.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let shared = shared_of(&self.life);
        let mut st = shared.lock();
        let closed = st.closed;
        let Some(slot) = st.slots.get_mut(&self.id) else {
            return Poll::Ready(Err(gone()));
        };
        if slot.send.is_empty() {
            return Poll::Ready(Ok(()));
        }
        if slot.reset || closed {
            return Poll::Ready(Err(gone()));
        }
        slot.write_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Sends FIN after the data written so far; ready once it went out.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let shared = shared_of(&self.life);
        let mut st = shared.lock();
        let closed = st.closed;
        let Some(slot) = st.slots.get_mut(&self.id) else {
            return Poll::Ready(Err(gone()));
        };
        if slot.fin_sent {
            return Poll::Ready(Ok(()));
        }
        if slot.reset || closed {
            return Poll::Ready(Err(gone()));
        }
        slot.write_waker = Some(cx.waker().clone());
        if !slot.fin_requested {
            slot.fin_requested = true;
            st.mark_ready(self.id);
            drop(st);
            shared.writer.notify_one();
        }
        Poll::Pending
    }
}
