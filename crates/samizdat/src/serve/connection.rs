//! One client connection through `serve`: classify → (cover | fake-TLS
//! answer → inner init) → DC → relay. The protocol decisions are made by
//! `wire`; this file only moves bytes and keeps deadlines.

use super::admit::{self, shown};
use super::relay::{self, ClientToDc, DcToClient, Identity};
use super::users::{Admission, Snapshot};
use super::ServeShared;
use std::future::Future;
use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio::time::Instant;
use wire::classify::{self, CoverReason, Verdict, MAX_FIRST_FLIGHT};
use wire::faketls::records::RecordDecoder;
use wire::faketls::server_flight::{self, ExtensionOrder, FlightParams};
use wire::obfuscated2::{self, Accepted, INIT_LEN};

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
            serve_tls(client, acc, deadline, &shared, &snap, admission).await;
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
            serve_dc(client, admission, acc.init, None, leftover, &shared, &snap).await;
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

/// The ServerHello's X25519 key share: a real public key of a fresh
/// private key, as a TLS server sends (a random string would be off the
/// curve half the time, which a prober can test). No one ever uses the
/// private key. aws-lc-rs's fixed-base multiplication costs about 91,000
/// instructions under callgrind, half of x25519-dalek's: this was the
/// `ee` handshake's largest single cost (BENCHMARKS.md, issue 14 item 9).
/// Its generator is seeded once, at start ([`super::Server::bind`]).
pub(super) fn fresh_key_share() -> [u8; 32] {
    use aws_lc_rs::agreement::{PrivateKey, X25519};
    let public = PrivateKey::generate(&X25519)
        .and_then(|key| key.compute_public_key())
        // Only a failing system random generator gets here; a key share
        // from a broken generator must not be sent (as random::fill).
        .expect("aws-lc-rs could not make an X25519 key: the system's random generator failed");
    let mut out = [0u8; 32];
    out.copy_from_slice(public.as_ref());
    out
}

/// After an authenticated ClientHello: answer with the server flight, then
/// read the obfuscated2 init from inside the records.
async fn serve_tls(
    client: TcpStream,
    acc: classify::TlsAccepted,
    deadline: Instant,
    shared: &Arc<ServeShared>,
    snap: &Snapshot,
    admission: Admission,
) {
    let key_share = fresh_key_share();
    let mut len_noise = [0u8; 2];
    crate::random::fill(&mut len_noise);
    let cert_len = 2500 + (u16::from_le_bytes(len_noise) as usize % 1120);
    let mut cert = vec![0u8; cert_len];
    crate::random::fill(&mut cert);
    let flight = server_flight::build(
        &snap.users,
        acc.user,
        &FlightParams {
            client_random: &acc.hello.random,
            session_id: &acc.hello.session_id,
            cipher_suite: acc.hello.cipher_suite,
            key_share: &key_share,
            fake_certificate: &cert,
            order: ExtensionOrder::VersionsFirst,
        },
    );
    if relay::write_all(&client, &flight).await.is_err() {
        return;
    }
    drop((flight, cert));
    let mut records = RecordDecoder::new();
    let mut payload = Vec::with_capacity(INIT_LEN);
    let mut chunk = vec![0u8; 4096];
    while payload.len() < INIT_LEN {
        let read = tokio::time::timeout_at(deadline, async {
            loop {
                client.readable().await?;
                match client.try_read(&mut chunk) {
                    Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
                    other => return other,
                }
            }
        })
        .await;
        let n = match read {
            Ok(Ok(n)) if n > 0 => n,
            _ => {
                tracing::debug!("authenticated fake-TLS client left or stalled before its init");
                return;
            }
        };
        match records.decode_in_place(&mut chunk[..n]) {
            Ok(m) => payload.extend_from_slice(&chunk[..m]),
            Err(e) => {
                tracing::debug!(error = %e, "authenticated fake-TLS client broke the record layer");
                return;
            }
        }
        if records.is_closed() && payload.len() < INIT_LEN {
            return;
        }
    }
    drop(chunk);
    let init: [u8; INIT_LEN] = payload[..INIT_LEN].try_into().expect("length checked");
    let Some(accepted) = classify::accept_inner_init(&init, &snap.users, acc.user) else {
        tracing::debug!("authenticated fake-TLS client sent an init that is not dd under its key");
        return;
    };
    let leftover = payload.split_off(INIT_LEN);
    serve_dc(
        client,
        admission,
        accepted,
        Some(records),
        leftover,
        shared,
        snap,
    )
    .await;
}

/// Connects to the client's DC, opens our own obfuscated2 toward it and
/// relays until either side ends.
async fn serve_dc(
    client: TcpStream,
    admission: Admission,
    init: Accepted,
    records: Option<RecordDecoder>,
    mut leftover: Vec<u8>,
    shared: &Arc<ServeShared>,
    snap: &Snapshot,
) {
    let user = admission.user.clone();
    let peer_ip = admission.ip();
    let name = user.name.as_str();
    let tls = records.is_some();
    // Resolved once per connection: no label lookup while relaying.
    let user_metrics = shared.metrics.user(name);
    user_metrics.connections.inc();
    let _user_open = crate::metrics::GaugeGuard::new(&user_metrics.active);
    let Ok(server) = super::dc::connect(shared, snap, init.dc, name).await else {
        return;
    };
    let ours = obfuscated2::initiate(
        obfuscated2::safe_init_random(&mut crate::random::fill),
        init.tag,
        init.dc.saturating_abs(),
        None,
    );
    if relay::write_all(&server, &ours.wire).await.is_err() {
        return;
    }
    let mut up = ClientToDc {
        records,
        decrypt: init.ciphers.decrypt,
        encrypt: ours.ciphers.encrypt,
    };
    if !leftover.is_empty() {
        up.decrypt.apply(&mut leftover);
        up.encrypt.apply(&mut leftover);
        if relay::write_all(&server, &leftover).await.is_err() {
            return;
        }
    }
    let down = DcToClient {
        decrypt: ours.ciphers.decrypt,
        encrypt: init.ciphers.encrypt,
        tls,
    };
    let started = Instant::now();
    let relaying = crate::metrics::GaugeGuard::new(&shared.metrics.relays_active);
    let out = relay_dc(
        client,
        server,
        up,
        down,
        shared,
        &user,
        snap.config.idle_timeout,
    )
    .await;
    let _ = user.charge(leftover.len());
    if out.end == relay::RelayEnd::Quota {
        tracing::info!(user = name, "quota used up; the user's connections end");
    }
    drop(relaying);
    // Bytes are added once, when the relay ends.
    user_metrics
        .from_client
        .inc_by(out.up + leftover.len() as u64);
    user_metrics.to_client.inc_by(out.down);
    drop(admission);
    tracing::debug!(
        user = name,
        dc = init.dc,
        tag = init.tag.name(),
        tls,
        up = out.up + leftover.len() as u64,
        down = out.down,
        end = out.end.name(),
        secs = started.elapsed().as_secs_f32(),
        client = %shown(snap, SocketAddr::new(peer_ip, 0)),
        "relay ended"
    );
}

/// Relays an authenticated client and its DC until either ends, on the
/// relay runtime when there is one ([`super::Server::relay_on`]): the
/// sockets leave this runtime's reactor and join that one's.
async fn relay_dc(
    client: TcpStream,
    server: TcpStream,
    up: ClientToDc,
    down: DcToClient,
    shared: &Arc<ServeShared>,
    user: &Arc<super::users::UserState>,
    idle: std::time::Duration,
) -> relay::Outcome {
    let relay_here = {
        let (shared, user) = (shared.clone(), user.clone());
        move |client: TcpStream, server: TcpStream| async move {
            relay::relay(
                &client,
                &server,
                up,
                down,
                &shared.pool,
                relay::Bounds {
                    idle: Some(idle),
                    stall: None,
                    stop: &user.ended,
                    meter: &*user,
                },
            )
            .await
        }
    };
    let Some(rt) = shared.relay_runtime.get() else {
        return relay_here(client, server).await;
    };
    let broken = relay::Outcome {
        up: 0,
        down: 0,
        end: relay::RelayEnd::Reset,
    };
    // `into_std` leaves the sockets non-blocking, as `from_std` needs.
    let (Ok(client), Ok(server)) = (client.into_std(), server.into_std()) else {
        return broken;
    };
    let task = rt.spawn(async move {
        match (TcpStream::from_std(client), TcpStream::from_std(server)) {
            (Ok(client), Ok(server)) => Some(relay_here(client, server).await),
            _ => None,
        }
    });
    match task.await {
        Ok(Some(out)) => out,
        Ok(None) => {
            tracing::warn!("cannot move a connection to the relay runtime (its reactor is gone?)");
            broken
        }
        // The relay runtime shut down under it (the process is ending).
        Err(_) => broken,
    }
}
