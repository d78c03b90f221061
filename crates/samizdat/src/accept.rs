//! Accepting within a connection limit, shared by the proxy's listeners
//! and the metrics endpoint.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// Waits for a slot of `limit`, then for a connection on `listener`.
///
/// The slot comes first: when every slot is taken, connections wait in the
/// kernel's accept queue (the listen backlog) instead of being accepted
/// and closed, which a prober would see and which locks out real clients.
/// A failed accept (EMFILE and friends) is passed to `failed` and retried
/// after 50 ms instead of spinning. `None` once `stop` fires or `limit` is
/// closed.
pub async fn accept_within(
    listener: &TcpListener,
    limit: &Arc<Semaphore>,
    stop: &CancellationToken,
    failed: impl Fn(&std::io::Error),
) -> Option<(OwnedSemaphorePermit, TcpStream, SocketAddr)> {
    let permit = tokio::select! {
        p = limit.clone().acquire_owned() => p.ok()?,
        _ = stop.cancelled() => return None,
    };
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.cancelled() => return None,
        };
        match accepted {
            Ok((stream, peer)) => return Some((permit, stream, peer)),
            Err(e) => {
                failed(&e);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
