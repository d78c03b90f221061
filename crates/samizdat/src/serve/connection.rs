//! One client connection through `serve`: read the first flight while the
//! cover connection warms up, ask [`super::admit`] after each read, then
//! splice to the cover or hand the connection on: to [`super::fake_tls`]
//! (`ee`), [`super::dc`] (bare `dd`) or the transport. The protocol
//! decisions are made by `wire`; this file only moves bytes and keeps
//! deadlines.

use super::admit::{self, shown};
use super::relay::{self, Identity};
use super::users::Snapshot;
use super::ServeShared;
use std::future::Future;
use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio::time::Instant;
use wire::classify::{self, CoverReason, Verdict, MAX_FIRST_FLIGHT};
use wire::obfuscated2::INIT_LEN;

type Connecting = Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send>>;

/// Why the classification phase ended: the classifier's verdict (under
/// its names), or the connection went away first.
enum Decision {
    Cover(CoverReason),
    FakeTls(classify::TlsAccepted),
    Obfuscated2(Box<classify::O2Accepted>),
    /// A samizdat client (the transport of `docs/transport.md`).
    Tunnel(Box<wire::tunnel::handshake::Accepted>),
    /// The client reset or the server is shutting down.
    Gone,
}

/// The state of the cover connection while classifying.
struct Cover {
    pending: Option<Connecting>,
    stream: Option<TcpStream>,
    failed: bool,
    /// Bytes of the first flight already forwarded.
    sent: usize,
}

enum Event {
    Read(io::Result<usize>),
    CoverConnected(io::Result<TcpStream>),
    CoverSpoke,
    Deadline,
    Shutdown,
}

/// Serves one accepted connection to its end. `source` counts it against
/// its source's cap on unauthenticated connections until it authenticates
/// (a connection spliced to the cover keeps counting).
pub(super) async fn handle(
    client: TcpStream,
    peer: SocketAddr,
    shared: Arc<ServeShared>,
    source: Option<super::sources::SourceGuard>,
) {
    let _ = client.set_nodelay(true);
    // One configuration for the whole connection, even across a reload.
    let snap = shared.snapshot();
    let started = Instant::now();
    let deadline = started + snap.config.handshake_timeout;
    let mut first: Vec<u8> = Vec::new();
    let mut client_eof = false;
    let mut cover = Cover {
        pending: None,
        stream: None,
        failed: false,
        sent: 0,
    };
    if snap.config.cover_connect == super::cover::CoverConnect::Eager {
        let target = snap.config.cover.clone();
        let timeout = snap.config.connect_timeout;
        cover.pending = Some(Box::pin(async move { target.connect(timeout).await }));
    }

    // Grown as bytes arrive: an idle or one-byte connection holds next to
    // nothing, a full hello only its own size.
    let decision = loop {
        let verdict = if first.is_empty() {
            Verdict::NeedMore
        } else {
            super::admit::classify(&first, &shared, &snap, peer.ip()).await
        };
        match verdict {
            Verdict::NeedMore if client_eof => break Decision::Cover(CoverReason::Unrecognised),
            Verdict::NeedMore => {
                // Forward only what could not be decided on: a complete
                // authentic hello is never shown to the cover.
                if let Some(s) = &cover.stream {
                    if cover.sent < first.len()
                        && relay::write_all(s, &first[cover.sent..]).await.is_ok()
                    {
                        cover.sent = first.len();
                    }
                }
            }
            Verdict::Cover(reason) => break Decision::Cover(reason),
            Verdict::FakeTls(acc) => break Decision::FakeTls(acc),
            Verdict::Obfuscated2(acc) => break Decision::Obfuscated2(acc),
            Verdict::Tunnel(acc) => break Decision::Tunnel(acc),
        }
        let event = tokio::select! {
            r = read_some(&client, &mut first, MAX_FIRST_FLIGHT + 1) => Event::Read(r),
            r = async { cover.pending.as_mut().expect("guarded").await }, if cover.pending.is_some() => Event::CoverConnected(r),
            r = async { cover.stream.as_ref().expect("guarded").readable().await }, if cover.stream.is_some() => match r {
                Ok(()) => Event::CoverSpoke,
                Err(_) => Event::CoverSpoke,
            },
            _ = tokio::time::sleep_until(deadline) => Event::Deadline,
            _ = shared.shutdown.cancelled() => Event::Shutdown,
        };
        match event {
            Event::Read(Ok(0)) => client_eof = true,
            Event::Read(Ok(_)) => {}
            Event::Read(Err(e)) => {
                if let Some(s) = &cover.stream {
                    if is_reset(&e) {
                        relay::arm_reset(s);
                    }
                }
                break Decision::Gone;
            }
            Event::CoverConnected(r) => {
                cover.pending = None;
                match r {
                    Ok(s) => cover.stream = Some(s),
                    Err(e) => {
                        cover.failed = true;
                        shared.warn_cover_unreachable(&e);
                    }
                }
            }
            // The cover answered or closed before we decided: a hello of
            // ours is never rejected by a TLS server before it is complete,
            // so this is not one of ours. Splice now, at the cover's pace.
            Event::CoverSpoke => break Decision::Cover(CoverReason::Unrecognised),
            Event::Deadline => break Decision::Cover(CoverReason::Unrecognised),
            Event::Shutdown => break Decision::Gone,
        }
    };

    match decision {
        Decision::Gone => {}
        Decision::Cover(reason) => {
            admit::to_cover(&shared, reason);
            tracing::debug!(
                reason = reason.name(),
                bytes = first.len(),
                client = %shown(&snap, peer),
                "to cover"
            );
            splice_to_cover(client, first, cover, client_eof, &shared, &snap).await;
        }
        Decision::FakeTls(acc) => {
            drop(source);
            // The first flight's buffer (up to 16 KiB) is not needed any
            // more, and an idle relay must not keep it.
            drop((cover, first));
            let Some(admission) = admit::user(&shared, &snap, acc.user, peer).await else {
                return;
            };
            shared.metrics.handshake("ok_tls");
            super::fake_tls::serve(client, acc, deadline, &shared, &snap, admission).await;
        }
        Decision::Tunnel(acc) => {
            drop(source);
            drop(cover);
            // A client sends nothing after its hello until our flight, but
            // keep whatever did follow the hello record.
            let leftover = first.split_off(acc.record_len.min(first.len()));
            drop(first);
            super::transport::run(client, *acc, leftover, peer, &shared, &snap).await;
        }
        Decision::Obfuscated2(acc) => {
            drop(source);
            drop(cover);
            let Some(admission) = admit::user(&shared, &snap, acc.user, peer).await else {
                return;
            };
            shared.metrics.handshake("ok_obfuscated2");
            let leftover = first.split_off(INIT_LEN);
            drop(first);
            let acc = *acc;
            super::dc::serve(client, admission, acc.init, None, leftover, &shared, &snap).await;
        }
    }
}

fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
    )
}

/// Reads more bytes into `buf` without growing it past `limit` (by at least
/// one byte). `buf` grows by what arrived, never ahead of it.
async fn read_some(s: &TcpStream, buf: &mut Vec<u8>, limit: usize) -> io::Result<usize> {
    let limit = limit.max(buf.len() + 1);
    loop {
        s.readable().await?;
        // Everything that has arrived, up to the limit (one record plus a
        // byte): a burst split here would reach the cover in two writes,
        // and a cover that reads in between may close with FIN where the
        // burst sent directly would have left bytes unread (RST).
        match take_ready(s, buf, limit) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

/// Bytes read from a socket at a time, on the thread's stack (not in the
/// connection's future, which lives as long as the connection).
const CHUNK: usize = 8 * 1024;

/// Appends what `s` has received, without waiting, until `buf` holds
/// `limit` bytes: `Ok(0)` is end of stream, `WouldBlock` that nothing had
/// arrived. An error after some bytes is left for the next call to find.
fn take_ready(s: &TcpStream, buf: &mut Vec<u8>, limit: usize) -> io::Result<usize> {
    let mut chunk = [0u8; CHUNK];
    let mut total = 0;
    while buf.len() < limit {
        let want = (limit - buf.len()).min(CHUNK);
        match s.try_read(&mut chunk[..want]) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                total += n;
            }
            Err(e) if total == 0 => return Err(e),
            Err(_) => break,
        }
    }
    Ok(total)
}

/// Holds a connection whose source is over its cap on unauthenticated
/// connections: no buffer, no cover connection. What it sends is read on
/// the stack and discarded, and at the handshake deadline (or its own
/// end, or shutdown) it is closed: with FIN, since nothing was left
/// unread, as a web server closes a connection at its header timeout.
pub(super) async fn hold(client: TcpStream, shared: &ServeShared) {
    let deadline = Instant::now() + shared.snapshot().config.handshake_timeout;
    loop {
        tokio::select! {
            r = client.readable() => {
                if r.is_err() {
                    return;
                }
                if discard_ready(&client) {
                    return;
                }
            }
            _ = tokio::time::sleep_until(deadline) => break,
            _ = shared.shutdown.cancelled() => break,
        }
    }
}

/// Reads and drops what `s` has received, without waiting. True when the
/// peer has ended (end of stream or an error).
fn discard_ready(s: &TcpStream) -> bool {
    let mut chunk = [0u8; CHUNK];
    loop {
        match s.try_read(&mut chunk) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

/// Appends what `s` has already received, without waiting, up to `max`
/// more bytes. Returns true if the client's FIN was read. Errors are left
/// for the relay to find (and mirror).
fn read_ready(s: &TcpStream, buf: &mut Vec<u8>, max: usize) -> bool {
    let mut chunk = [0u8; CHUNK];
    let limit = buf.len() + max;
    while buf.len() < limit {
        let want = (limit - buf.len()).min(CHUNK);
        match s.try_read(&mut chunk[..want]) {
            Ok(0) => return true,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => break,
        }
    }
    false
}

/// Splices a connection that did not authenticate to the cover site: the
/// bytes not yet forwarded go first, then both directions until either
/// side ends, with no deadline of ours.
async fn splice_to_cover(
    client: TcpStream,
    mut first: Vec<u8>,
    mut cover: Cover,
    mut client_eof: bool,
    shared: &ServeShared,
    snap: &Snapshot,
) {
    let stream = match (cover.stream.take(), cover.pending.take(), cover.failed) {
        (Some(s), _, _) => Ok(s),
        (None, Some(pending), _) => pending.await,
        (None, None, false) => snap.config.cover.connect(snap.config.connect_timeout).await,
        (None, None, true) => Err(io::Error::other("cover unreachable")),
    };
    let stream = match stream {
        Ok(s) => s,
        Err(e) => {
            shared.warn_cover_unreachable(&e);
            return; // dropping the client closes it
        }
    };
    shared.metrics.cover_splices.inc();
    // The classifier reads at most one record, so a client's burst may be
    // only partly read. Send the rest that has already arrived in the same
    // write: a direct visitor's burst reaches the cover whole, so a cover
    // that gives up after its first read closes with bytes unread, i.e.
    // with RST, instead of closing with FIN and resetting only when the
    // rest trickles in after it (which a prober sees as FIN, not RST).
    if !client_eof {
        client_eof = read_ready(&client, &mut first, super::pool::BUF_SIZE);
    }
    if relay::write_all(&stream, &first[cover.sent.min(first.len())..])
        .await
        .is_err()
    {
        relay::arm_reset(&client);
        return;
    }
    drop(first);
    if client_eof {
        relay::shutdown_write(&stream);
    }
    let out = relay::relay(
        &client,
        &stream,
        Identity,
        Identity,
        &shared.pool,
        relay::Bounds::splice(&shared.shutdown),
    )
    .await;
    tracing::debug!(
        up = out.up,
        down = out.down,
        end = out.end.name(),
        "cover splice ended"
    );
}
