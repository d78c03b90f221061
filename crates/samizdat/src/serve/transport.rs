//! A samizdat client's connection after its hello authenticated: answer
//! with a flight shaped like the cover site's, then run a multiplexed
//! session whose streams go out through the egress policy (or to a Telegram
//! DC through the same routing the MTProto path uses). See
//! `docs/transport.md`.

use super::dc::DcDialer;
use super::meter::{Activity, Metered};
use super::users::{Admission, Snapshot, UserState};
use super::ServeShared;
use crate::dial::Dialer;
use crate::serve::egress::{DirectDialer, EgressPolicy};
use crate::sync::Locked;
use crate::transport::braid::BraidHandle;
use crate::transport::{IncomingStream, Session, SessionConfig, Status};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::task::JoinSet;
use wire::tunnel::handshake::Accepted;
use wire::tunnel::lanes::{Opening, Token};
use wire::tunnel::mux::Role;

/// Each direction's copy buffer of an egress stream (the stream's receive
/// window and send buffer hold the rest).
const COPY_BUF: usize = 16 * 1024;

/// How long a new connection may take to send its lane opening.
const OPENING_DEADLINE: Duration = Duration::from_secs(10);
/// Sessions (braids) this instance keeps joinable at most.
const MAX_BRAIDS: usize = 65_536;

/// The sessions later lanes may join, by token. Each entry is an admitted
/// session; it leaves when the session ends. Also what each user's sessions
/// hold, for the per-user limits (`[transport_limits]`).
#[derive(Default)]
pub struct Braids {
    map: Mutex<HashMap<Token, (String, BraidHandle)>>,
    users: Mutex<HashMap<String, Arc<UserTunnels>>>,
}

/// One user's samizdat sessions on this instance.
#[derive(Default)]
struct UserTunnels {
    /// Live sessions, oldest first.
    sessions: Mutex<Vec<LiveSession>>,
    /// Streams (egress sockets) open or being connected.
    streams: AtomicUsize,
}

struct LiveSession {
    id: u64,
    braid: BraidHandle,
    session: Option<Session>,
}

impl UserTunnels {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<LiveSession>> {
        self.sessions.locked()
    }

    /// Registers a new session; beyond `max`, the oldest ones end.
    fn add(&self, id: u64, braid: BraidHandle, max: usize) {
        let mut live = self.lock();
        while live.len() >= max.max(1) {
            let old = live.remove(0);
            tracing::debug!("a user's oldest samizdat session ends: too many sessions");
            old.braid.close();
        }
        live.push(LiveSession {
            id,
            braid,
            session: None,
        });
    }

    fn set_session(&self, id: u64, session: &Session) {
        if let Some(l) = self.lock().iter_mut().find(|l| l.id == id) {
            l.session = Some(session.clone());
        }
    }

    fn remove(&self, id: u64) {
        self.lock().retain(|l| l.id != id);
    }

    /// Bytes the user's sessions buffer now.
    fn buffered(&self) -> u64 {
        self.lock()
            .iter()
            .map(|l| {
                l.braid.buffered() as u64 + l.session.as_ref().map_or(0, |s| s.buffered() as u64)
            })
            .sum()
    }

    /// Takes a stream slot, if fewer than `max` are taken.
    fn take_stream(self: &Arc<Self>, max: usize) -> Option<StreamSlot> {
        self.streams
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| StreamSlot(self.clone()))
    }
}

/// One of a user's stream slots; freed on drop.
struct StreamSlot(Arc<UserTunnels>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Numbers sessions for [`UserTunnels`].
static SESSION_IDS: AtomicU64 = AtomicU64::new(0);

impl Braids {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Token, (String, BraidHandle)>> {
        self.map.locked()
    }

    fn insert(&self, token: Token, user: &str, braid: BraidHandle) -> bool {
        let mut map = self.lock();
        if map.len() >= MAX_BRAIDS || map.contains_key(&token) {
            return false;
        }
        map.insert(token, (user.to_string(), braid));
        true
    }

    fn get(&self, token: &Token, user: &str) -> Option<BraidHandle> {
        let map = self.lock();
        let (owner, braid) = map.get(token)?;
        (owner == user && !braid.is_closed()).then(|| braid.clone())
    }

    fn remove(&self, token: &Token) {
        self.lock().remove(token);
    }

    /// Sessions joinable now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn user(&self, name: &str) -> Arc<UserTunnels> {
        let mut users = self.users.locked();
        users.entry(name.to_string()).or_default().clone()
    }
}

/// A samizdat client whose hello authenticated, on either listener (TCP,
/// or a WebSocket carrier): answers with the cover-shaped flight, then
/// reads the connection's lane opening: a new session (admitted under the
/// user's limits) or a lane joining one of the user's sessions.
pub(super) async fn run<S>(
    mut client: S,
    acc: Accepted,
    leftover: Vec<u8>,
    peer: SocketAddr,
    shared: &Arc<ServeShared>,
    snap: &Arc<Snapshot>,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let user = acc.user;
    let Some(name) = snap.states.get(user).map(|s| s.name.clone()) else {
        return;
    };
    let shape = shared.flight_shape.ready().await;
    let mut fill = |b: &mut [u8]| {
        crate::random::fill(b);
    };
    let (flight, established) = acc.respond(&shape, &mut fill);
    let sent = async {
        client.write_all(&flight).await?;
        client.flush().await
    };
    if sent.await.is_err() {
        return;
    }
    drop(flight);
    let (sealer, mut opener) = established.into_split();
    let opened =
        BraidHandle::read_opening(&mut client, &mut opener, &leftover, OPENING_DEADLINE).await;
    let (opening, rest) = match opened {
        Ok(o) => o,
        Err(why) => {
            tracing::debug!(user = %name, reason = why, "samizdat connection without a lane opening");
            return;
        }
    };
    match opening {
        Opening::New {
            secret,
            lane,
            budget,
        } => {
            let Some(admission) = super::admit::user(shared, snap, user, peer).await else {
                return;
            };
            shared.metrics.handshake("ok_tunnel");
            let braid = BraidHandle::new(Role::Server, None);
            let token = secret.token();
            if !braid.add_lane(lane, budget) || !shared.braids.insert(token, &name, braid.clone()) {
                return;
            }
            let tunnels = shared.braids.user(&name);
            let id = SESSION_IDS.fetch_add(1, Ordering::Relaxed);
            let limits = snap.config.transport_limits;
            tunnels.add(id, braid.clone(), limits.sessions_per_user);
            let session = {
                let (braid, shared, snap) = (braid.clone(), shared.clone(), snap.clone());
                async move {
                    let user = UserSession {
                        tunnels: tunnels.clone(),
                        id,
                    };
                    serve(braid.clone(), &shared, &snap, admission, &user).await;
                    tunnels.remove(id);
                    shared.braids.remove(&token);
                    braid.close();
                }
            };
            tokio::spawn(session);
            let why = braid
                .run_lane(lane, client, sealer, opener, &rest, None)
                .await;
            tracing::debug!(user = %name, lane, reason = why, "first lane ended");
        }
        Opening::Join {
            token,
            lane,
            budget,
            received,
        } => {
            let Some(braid) = shared.braids.get(&token, &name) else {
                tracing::debug!(user = %name, "a lane for a session that ended or never was");
                return;
            };
            if braid.peer_received(received).is_err() || !braid.add_lane(lane, budget) {
                tracing::debug!(user = %name, lane, "lane refused (bad acknowledgement, duplicate id or too many lanes)");
                return;
            }
            shared.metrics.handshake("ok_tunnel_lane");
            let why = braid
                .run_lane(lane, client, sealer, opener, &rest, None)
                .await;
            tracing::debug!(user = %name, lane, ?budget, reason = why, "lane ended");
        }
    }
}

/// A session among its user's others.
struct UserSession {
    tunnels: Arc<UserTunnels>,
    id: u64,
}

/// Serves one admitted samizdat session (over its braid of lanes) until it
/// ends, the user is removed or expires, the client acknowledges nothing
/// for the ack deadline while we hold data for it, or the server shuts
/// down. New streams beyond the user's limits are refused.
async fn serve(
    braid: BraidHandle,
    shared: &Arc<ServeShared>,
    snap: &Arc<Snapshot>,
    admission: Admission,
    mine: &UserSession,
) {
    let limits = snap.config.transport_limits;
    let user = admission.user.clone();
    let name = user.name.clone();
    let user_metrics = shared.metrics.user(&name);
    user_metrics.connections.inc();
    let _user_open = crate::metrics::GaugeGuard::new(&user_metrics.active);
    let (session, mut incoming) = Session::server_on_braid(braid.io(), SessionConfig::default());
    mine.tunnels.set_session(mine.id, &session);
    let dialer: Arc<dyn Dialer> = Arc::new(egress_dialer(shared, snap, &name));
    let mut streams = JoinSet::new();
    let mut check = tokio::time::interval((limits.ack_deadline / 8).max(Duration::from_millis(50)));
    loop {
        tokio::select! {
            next = incoming.next() => match next {
                Some(stream) => {
                    let Some(slot) = mine.tunnels.take_stream(limits.streams_per_user) else {
                        tracing::debug!(user = %name, "stream refused: the user has transport_limits.streams_per_user streams open");
                        stream.refuse(Status::GeneralFailure);
                        continue;
                    };
                    if mine.tunnels.buffered() > limits.buffer_per_user {
                        tracing::debug!(user = %name, "stream refused: the user's sessions buffer more than transport_limits.buffer_per_user");
                        stream.refuse(Status::GeneralFailure);
                        continue;
                    }
                    let idle = limits.stream_idle_timeout;
                    streams.spawn(serve_stream(stream, dialer.clone(), user.clone(), idle, slot));
                }
                None => break,
            },
            _ = check.tick() => {
                if braid.stalled_for() > limits.ack_deadline {
                    tracing::info!(user = %name, deadline = ?limits.ack_deadline, "samizdat session closed: the client acknowledged nothing in time");
                    break;
                }
            }
            Some(_) = streams.join_next(), if !streams.is_empty() => {}
            _ = user.ended.cancelled() => {
                tracing::info!(user = %name, "user removed, expired or out of quota; their samizdat session ends");
                break;
            }
            _ = shared.shutdown.cancelled() => break,
        }
    }
    // Dropping the session and aborting the streams closes every socket.
    streams.shutdown().await;
    drop(session);
    drop(admission);
    tracing::debug!(user = %name, "samizdat session ended");
}

/// The egress dialer of one session of `user`: the policy with the
/// operator's exceptions and denied ports, the server's egress (its own
/// addresses and ports, the resolver, the user's lookup slots), and
/// Telegram DCs through the DC table.
fn egress_dialer(shared: &Arc<ServeShared>, snap: &Arc<Snapshot>, user: &str) -> DirectDialer {
    let mut policy = EgressPolicy::with_allow(snap.config.egress_allow.clone());
    policy.deny_ports = snap.config.egress_deny_ports.clone();
    let mut dialer = DirectDialer::for_user(policy, &shared.egress, user);
    dialer.connect_timeout = snap.config.connect_timeout;
    dialer.log_destinations = snap.config.log_destinations;
    dialer.telegram = Some(Arc::new(DcDialer {
        shared: shared.clone(),
        snap: snap.clone(),
        user: user.to_string(),
    }));
    dialer
}

/// One stream: connect where it asks (or refuse with the reason), then
/// relay, charging the user's quota and bandwidth for both directions,
/// until either side ends or nothing moves for `idle`. `_slot` is the
/// user's stream (and egress socket) count.
async fn serve_stream(
    mut stream: IncomingStream,
    dialer: Arc<dyn Dialer>,
    user: Arc<UserState>,
    idle: Duration,
    _slot: StreamSlot,
) {
    let dest = stream.destination().clone();
    let first = stream.take_first();
    if user.charge(first.len()).is_err() {
        stream.refuse(Status::NotAllowed);
        return;
    }
    match dialer.open(dest.clone(), first).await {
        Ok(remote) => {
            let activity = Arc::new(Activity::new());
            let mut local = Metered::new(stream.accept(), user.clone(), activity.clone());
            let mut remote = Metered::new(remote, user, activity.clone());
            let copy = tokio::io::copy_bidirectional_with_sizes(
                &mut local,
                &mut remote,
                COPY_BUF,
                COPY_BUF,
            );
            tokio::pin!(copy);
            loop {
                let quiet_until = activity.last() + idle;
                tokio::select! {
                    r = &mut copy => {
                        tracing::trace!(result = ?r.map_err(|e| e.kind()), "stream ended");
                        break;
                    }
                    _ = tokio::time::sleep_until(quiet_until) => {
                        if activity.last() + idle <= tokio::time::Instant::now() {
                            tracing::debug!(?idle, "stream closed: idle");
                            break;
                        }
                    }
                }
            }
        }
        Err(e) => {
            tracing::debug!(error = %e, "stream refused");
            stream.refuse(Status::from_code(e.code()));
        }
    }
}
