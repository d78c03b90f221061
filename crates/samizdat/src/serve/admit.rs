//! Admission: the one path from a connection's first bytes to a served
//! connection, used by the MTProto listener, the samizdat transport over
//! TCP and the transport over a WebSocket carrier.
//!
//! 1. **Classify** ([`classify`], [`transport_hello`]): the procedure is
//!    `wire::classify::Classifier` (structure, the transport check, the key
//!    search, the local replay cache, the fleet's); this driver only
//!    spreads the key search over time and a budget ([`super::auth`]),
//!    holds the replay lock for one call, and asks the fleet
//!    ([`crate::fleet::SharedState`]).
//! 2. **The user's limits** ([`user`]): this instance's counts, then (with
//!    a fleet) the fleet's leases.
//! 3. **Accounting**: what goes to the cover is counted and logged once,
//!    here ([`to_cover`]).

use super::users::{Admission, Snapshot};
use super::ServeShared;
use crate::clock::unix_now;
use crate::fleet::ReplayAnswer;
use crate::sync::Locked;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use wire::classify::{Classifier, CoverReason, Step, TransportCheck, UserLookup, Verdict};

/// Classifies everything a TCP connection has sent so far. See the module
/// doc and `wire::classify::Classifier` for the order.
pub(super) async fn classify(
    buf: &[u8],
    shared: &ServeShared,
    snap: &Snapshot,
    peer: IpAddr,
) -> Verdict {
    let lookup = |id: &[u8; 8]| snap.tunnel.get(id).copied();
    let classifier = Classifier::new(
        buf,
        &snap.config.policy,
        &snap.users,
        unix_now(),
        transport_check(shared, snap, &lookup),
    );
    run(classifier, shared, snap, peer).await
}

/// Classifies the hello record a WebSocket carrier brought: only a
/// samizdat client's can be admitted there.
pub(super) async fn transport_hello(
    record: &[u8],
    shared: &ServeShared,
    snap: &Snapshot,
    peer: IpAddr,
) -> Verdict {
    let lookup = |id: &[u8; 8]| snap.tunnel.get(id).copied();
    let Some(check) = transport_check(shared, snap, &lookup) else {
        return Verdict::Cover(CoverReason::Unrecognised);
    };
    let classifier =
        Classifier::transport_only(record, &snap.config.policy, &snap.users, unix_now(), check);
    run(classifier, shared, snap, peer).await
}

/// The transport's key and user lookup, when this server accepts samizdat
/// clients.
fn transport_check<'a>(
    shared: &'a ServeShared,
    snap: &Snapshot,
    lookup: UserLookup<'a>,
) -> Option<TransportCheck<'a>> {
    let key = shared.tunnel_key.as_ref().filter(|_| snap.config.tunnel)?;
    Some(TransportCheck { key, lookup })
}

/// Does what the classifier asks until it decides.
async fn run(
    mut classifier: Classifier<'_>,
    shared: &ServeShared,
    snap: &Snapshot,
    peer: IpAddr,
) -> Verdict {
    // In-process, the fleet's answer is the local cache's (immediate).
    classifier = classifier.with_fleet();
    loop {
        match classifier.step() {
            Step::NeedMore => return Verdict::NeedMore,
            Step::Search => {
                let sni = classifier.sni().map(str::to_owned);
                let order = snap.auth.order(peer, sni.as_deref());
                let found = super::auth::bounded_search(shared, peer, order, |chunk| {
                    classifier.search(chunk).then_some(())
                })
                .await;
                if found.is_none() {
                    classifier.searched_all();
                }
            }
            Step::Admit => {
                let mut replay = shared.replay.locked();
                classifier.admit(&mut replay);
            }
            Step::FleetReplay {
                kind,
                key,
                ttl_secs,
            } => {
                let answer = shared
                    .state
                    .check_replay(kind, key, Duration::from_secs(ttl_secs))
                    .await;
                classifier.fleet_answer(answer == ReplayAnswer::Fresh);
            }
            Step::Done(verdict) => {
                match &verdict {
                    Verdict::FakeTls(acc) => snap.auth.remember(peer, acc.user),
                    Verdict::Obfuscated2(acc) => snap.auth.remember(peer, acc.user),
                    _ => {}
                }
                return verdict;
            }
        }
    }
}

/// Applies the user's limits to a connection that authenticated. A refused
/// connection is closed (the peer proved it holds the key, so this reveals
/// nothing to a prober) and logged by user name.
pub(super) async fn user(
    shared: &ServeShared,
    snap: &Snapshot,
    user: usize,
    peer: SocketAddr,
) -> Option<Admission> {
    let state = snap.states.get(user)?;
    // This instance's count first, then (with a fleet) the fleet's.
    let admitted = match state.admit(peer.ip(), unix_now()) {
        Ok(a) => shared
            .state
            .admit(&state.name, peer.ip(), &state.limits())
            .await
            .map(|lease| a.with_lease(lease)),
        Err(r) => Err(r),
    };
    match admitted {
        Ok(a) => Some(a),
        Err(refusal) => {
            shared.metrics.handshake(refusal.name());
            tracing::info!(
                user = %state.name,
                limit = refusal.name(),
                client = %shown(snap, peer),
                "connection refused by the user's limits"
            );
            None
        }
    }
}

/// Counts a handshake that did not authenticate (the caller splices it to
/// the cover, or closes a WebSocket carrier), and warns when the reason is
/// a clock that differs from ours.
pub(super) fn to_cover(shared: &ServeShared, reason: CoverReason) {
    shared.metrics.handshake(reason.name());
    if let CoverReason::BadTimestamp { skew } = reason {
        shared.warn_clock_skew(skew);
    }
}

/// The client's address as logs may show it: only with `--log-client-ips`.
pub(super) fn shown(snap: &Snapshot, peer: SocketAddr) -> String {
    if snap.config.log_client_ips {
        peer.ip().to_string()
    } else {
        "hidden".to_string()
    }
}
