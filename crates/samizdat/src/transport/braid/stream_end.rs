//! The session's end of a braid: a byte stream (`AsyncRead` and
//! `AsyncWrite`) over the braid's send and receive buffers.

use super::*;
use std::io;

/// The inner session's connection: reads what the braid delivered in
/// order, writes into its send buffer. Dropping it ends the braid.
pub struct BraidIo {
    pub(super) braid: BraidHandle,
}

impl Drop for BraidIo {
    fn drop(&mut self) {
        self.braid.close();
    }
}

impl AsyncRead for BraidIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut st = self.braid.lock();
        if st.braid.readable() > 0 {
            let n = st.braid.read(buf.initialize_unfilled());
            buf.advance(n);
            if st.braid.ack_owed().is_some() {
                notify_all(&st);
            }
            return Poll::Ready(Ok(()));
        }
        if st.braid.is_closed() {
            return Poll::Ready(Ok(()));
        }
        st.read_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncWrite for BraidIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut st = self.braid.lock();
        if st.braid.is_closed() {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if st.braid.in_flight() == 0 {
            st.progress = Instant::now();
        }
        let n = st.braid.write(buf);
        if n > 0 {
            notify_all(&st);
            return Poll::Ready(Ok(n));
        }
        st.write_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
