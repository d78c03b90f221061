//! Metering: charging what a user's connections move against the user's
//! quota (which can end them) and rate cap (which pauses them). The MTProto
//! relay's pumps call [`Meter`] after each write; a samizdat client's
//! streams are wrapped in [`Metered`].

use super::users::UserState;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Accounts the payload a relay moves: a quota can end the relay, a rate
/// cap can pause it. Called after each write, so a paused pump holds no
/// buffer and the peer feels TCP backpressure.
pub trait Meter: Sync {
    /// `n` payload bytes moved. `Ok(d)`: wait `d` before reading more;
    /// `Err(())`: end the relay.
    #[allow(clippy::result_unit_err)]
    fn charge(&self, n: usize) -> Result<Duration, ()>;
}

/// No limits (cover splices).
pub struct Unmetered;

impl Meter for Unmetered {
    fn charge(&self, _n: usize) -> Result<Duration, ()> {
        Ok(Duration::ZERO)
    }
}

/// When a stream last moved a byte.
pub(super) struct Activity {
    start: tokio::time::Instant,
    /// Milliseconds after `start`.
    last: AtomicU64,
}

impl Activity {
    pub(super) fn new() -> Activity {
        Activity {
            start: tokio::time::Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last.fetch_max(ms, Ordering::Relaxed);
    }

    pub(super) fn last(&self) -> tokio::time::Instant {
        self.start + Duration::from_millis(self.last.load(Ordering::Relaxed))
    }
}

/// Charges every byte read through it to the user: the quota ends the
/// stream, the bandwidth limit delays the next read. Notes activity.
pub(super) struct Metered<T> {
    inner: T,
    user: Arc<UserState>,
    wait: Option<Pin<Box<tokio::time::Sleep>>>,
    activity: Arc<Activity>,
}

impl<T> Metered<T> {
    pub(super) fn new(inner: T, user: Arc<UserState>, activity: Arc<Activity>) -> Self {
        Metered {
            inner,
            user,
            wait: None,
            activity,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Metered<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(wait) = self.wait.as_mut() {
            ready!(wait.as_mut().poll(cx));
            self.wait = None;
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let n = buf.filled().len() - before;
        if n > 0 {
            self.activity.touch();
        }
        match self.user.charge(n) {
            Ok(delay) if !delay.is_zero() => {
                self.wait = Some(Box::pin(tokio::time::sleep(delay)));
            }
            Ok(_) => {}
            Err(_) => return Poll::Ready(Err(io::Error::other("the user's quota is used up"))),
        }
        Poll::Ready(Ok(()))
    }
}

crate::delegate_async_write!([T: AsyncWrite + Unpin] Metered<T>, inner);
