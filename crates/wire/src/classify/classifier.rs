//! The classification procedure as a state machine the driver pumps.
//!
//! [`super::classify`] runs the three steps in one call, which is right for
//! tests and fuzzing but not for a server: a key search over thousands of
//! users must be spread over time, and the fleet's replay check is a round
//! trip to Redis. So the *order* lives here, sans-io, and the driver only
//! does what a [`Step`] asks: read more bytes, try the next chunk of users
//! (yielding to its runtime between chunks), take the replay lock for one
//! call, ask the fleet. The order is:
//!
//! 1. structure ([`super::inspect`]): more bytes, the cover, a hello or an
//!    init;
//! 2. for a hello, the samizdat transport's check first (one X25519 and a
//!    map lookup; `docs/transport.md`), then the MTProto key search;
//! 3. the local replay cache and the time window (under the driver's lock);
//! 4. with a fleet, the fleet's replay cache (one `SET NX PX`);
//! 5. done.
//!
//! Every accepted handshake of every kind passes steps 3 and 4, so a hello
//! captured at one instance and replayed to another goes to the cover.

use super::{
    admit_hello, admit_init, admit_tunnel, find_hello_user, find_init_user, inspect, CoverReason,
    Inspected, O2Accepted, Policy, ReplayState, Verdict,
};
use crate::faketls::client_hello::{ClientHello, Verified};
use crate::obfuscated2::INIT_LEN;
use crate::tunnel::handshake::{self, Reject, ServerKey};
use crate::users::Users;

/// How long a bare init is remembered fleet-wide. Bare modes carry no
/// timestamp, so some bound keeps the shared cache from growing without
/// end; the local cache (a million inits) stays the longer memory.
pub const BARE_REPLAY_TTL_SECS: u64 = 24 * 3600;

/// Which replay cache a key belongs to (they are separate namespaces).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayKind {
    /// Fake-TLS ClientHello randoms (bounded by the timestamp window).
    Tls,
    /// Bare obfuscated2 inits (no timestamp: kept [`BARE_REPLAY_TTL_SECS`]).
    Obfuscated2,
    /// samizdat transport hellos, by the client's ephemeral key; bounded by
    /// the timestamp window like fake-TLS.
    Tunnel,
}

/// What the driver must do next.
#[derive(Debug)]
pub enum Step {
    /// The first message is not complete: read more, then classify the
    /// longer buffer with a new [`Classifier`].
    NeedMore,
    /// Try users: call [`Classifier::search`] with chunks of candidate
    /// indexes (for a hello, those bound to [`Classifier::sni`] or to no
    /// domain), then [`Classifier::searched_all`] if none matched.
    Search,
    /// Call [`Classifier::admit`] with the local replay caches (a short
    /// critical section: no key search inside it).
    Admit,
    /// Ask the fleet whether `key` was seen in `kind`'s cache (remembering
    /// it for `ttl_secs`), then call [`Classifier::fleet_answer`]. Only
    /// asked when [`Classifier::with_fleet`] was set.
    FleetReplay {
        /// Which cache.
        kind: ReplayKind,
        /// The handshake's replay key.
        key: [u8; 16],
        /// How long the fleet must remember it.
        ttl_secs: u64,
    },
    /// The verdict: the cover (with the reason) or an accepted handshake.
    Done(Verdict),
}

/// What a search found, waiting for admission.
enum Found {
    Hello(Box<ClientHello>, usize, Verified),
    Init(O2Accepted, [u8; INIT_LEN]),
    Tunnel(Box<handshake::Accepted>),
}

enum Stage {
    /// Key search of a complete hello (`record_len` bytes).
    SearchHello(ClientHello, usize),
    /// Key search of a bare init.
    SearchInit([u8; INIT_LEN]),
    /// A match waits for the local replay cache.
    Admit(Found),
    /// The local cache accepted it; the fleet's answer is awaited.
    Fleet(Verdict, ReplayKind, [u8; 16], u64),
    /// The verdict, taken by the next [`Classifier::step`].
    Done(Verdict),
    /// Taken.
    Finished,
}

/// User id → (user index, user credential), for the transport check.
pub type UserLookup<'a> = &'a dyn Fn(&[u8; 8]) -> Option<(usize, [u8; 32])>;

/// The samizdat transport's server key and user lookup, when the server
/// accepts samizdat clients.
pub struct TransportCheck<'a> {
    /// The server's static key.
    pub key: &'a ServerKey,
    /// Finds a user by the id in the hello.
    pub lookup: UserLookup<'a>,
}

/// One first flight's classification. See the module doc.
pub struct Classifier<'a> {
    buf: &'a [u8],
    policy: &'a Policy,
    users: &'a Users,
    now: u64,
    fleet: bool,
    stage: Stage,
}

impl<'a> Classifier<'a> {
    /// Starts classifying `buf` (everything read so far) at unix time
    /// `now`. With `transport`, a hello is first checked as a samizdat
    /// client's.
    pub fn new(
        buf: &'a [u8],
        policy: &'a Policy,
        users: &'a Users,
        now: u64,
        transport: Option<TransportCheck<'_>>,
    ) -> Classifier<'a> {
        let stage = match inspect(buf, policy) {
            Inspected::NeedMore => Stage::Done(Verdict::NeedMore),
            Inspected::Cover(reason) => Stage::Done(Verdict::Cover(reason)),
            Inspected::Hello { hello, record_len } => {
                match transport.map(|t| check_transport(&buf[..record_len], t, now)) {
                    Some(Some(Ok(accepted))) => Stage::Admit(Found::Tunnel(Box::new(accepted))),
                    Some(Some(Err(reason))) => Stage::Done(Verdict::Cover(reason)),
                    None | Some(None) => Stage::SearchHello(hello, record_len),
                }
            }
            Inspected::Init(init) => Stage::SearchInit(init),
        };
        Classifier {
            buf,
            policy,
            users,
            now,
            fleet: false,
            stage,
        }
    }

    /// Classifies a hello record that can only be a samizdat client's (the
    /// WebSocket listener's: nothing else arrives there): the transport
    /// check, then admission; anything else goes to the cover as
    /// unrecognised.
    pub fn transport_only(
        record: &'a [u8],
        policy: &'a Policy,
        users: &'a Users,
        now: u64,
        transport: TransportCheck<'_>,
    ) -> Classifier<'a> {
        let stage = match check_transport(record, transport, now) {
            Some(Ok(accepted)) => Stage::Admit(Found::Tunnel(Box::new(accepted))),
            Some(Err(reason)) => Stage::Done(Verdict::Cover(reason)),
            None => Stage::Done(Verdict::Cover(CoverReason::Unrecognised)),
        };
        Classifier {
            buf: record,
            policy,
            users,
            now,
            fleet: false,
            stage,
        }
    }

    /// Adds step 4: every handshake the local cache accepted is also
    /// checked against the fleet's.
    pub fn with_fleet(mut self) -> Classifier<'a> {
        self.fleet = true;
        self
    }

    /// The next thing to do.
    pub fn step(&mut self) -> Step {
        match &self.stage {
            Stage::SearchHello(..) | Stage::SearchInit(_) => Step::Search,
            Stage::Admit(_) => Step::Admit,
            Stage::Fleet(_, kind, key, ttl_secs) => Step::FleetReplay {
                kind: *kind,
                key: *key,
                ttl_secs: *ttl_secs,
            },
            Stage::Done(_) | Stage::Finished => {
                match std::mem::replace(&mut self.stage, Stage::Finished) {
                    Stage::Done(Verdict::NeedMore) => Step::NeedMore,
                    Stage::Done(v) => Step::Done(v),
                    // Asked again after the verdict was taken: nothing
                    // left to accept.
                    _ => Step::Done(Verdict::Cover(CoverReason::Unrecognised)),
                }
            }
        }
    }

    /// The hello's SNI while searching (users bound to other names are
    /// never tried); `None` for a bare init.
    pub fn sni(&self) -> Option<&str> {
        match &self.stage {
            Stage::SearchHello(hello, _) => hello.sni.as_deref(),
            _ => None,
        }
    }

    /// Whether this is a bare init's search (no SNI, every user).
    pub fn is_init(&self) -> bool {
        matches!(self.stage, Stage::SearchInit(_))
    }

    /// Tries `candidates` (one HMAC, or one SHA-256 and AES block, each).
    /// True when one matched; the next step is then [`Step::Admit`].
    pub fn search(&mut self, candidates: &[usize]) -> bool {
        let found = match &self.stage {
            Stage::SearchHello(hello, len) => find_hello_user(
                &self.buf[..*len],
                hello,
                self.users,
                candidates.iter().copied(),
            )
            .map(|v| (v, *len)),
            Stage::SearchInit(init) => {
                return match find_init_user(
                    init,
                    self.policy,
                    self.users,
                    candidates.iter().copied(),
                ) {
                    Some(acc) => {
                        self.stage = Stage::Admit(Found::Init(acc, *init));
                        true
                    }
                    None => false,
                };
            }
            _ => return false,
        };
        let Some((verified, len)) = found else {
            return false;
        };
        if let Stage::SearchHello(hello, _) = std::mem::replace(&mut self.stage, Stage::Finished) {
            self.stage = Stage::Admit(Found::Hello(Box::new(hello), len, verified));
        }
        true
    }

    /// No candidate matched (or the driver gave up on a flooding source):
    /// the cover, as for a wrong key.
    pub fn searched_all(&mut self) {
        let reason = match self.stage {
            Stage::SearchHello(..) => CoverReason::BadHmac,
            Stage::SearchInit(_) => CoverReason::BadInit,
            _ => return,
        };
        self.stage = Stage::Done(Verdict::Cover(reason));
    }

    /// Step 3: the time window and the local replay caches.
    pub fn admit(&mut self, replay: &mut ReplayState) {
        let Stage::Admit(found) = std::mem::replace(&mut self.stage, Stage::Finished) else {
            return;
        };
        let (verdict, kind, key, ttl) = match found {
            Found::Hello(hello, len, verified) => {
                let key = replay_key(&hello.random);
                let v = admit_hello(
                    *hello,
                    len,
                    verified,
                    self.policy,
                    self.now,
                    &mut replay.tls,
                );
                (v, ReplayKind::Tls, key, self.window_ttl())
            }
            Found::Tunnel(accepted) => {
                let key = replay_key(&accepted.replay_key);
                let v = admit_tunnel(accepted, self.policy, self.now, &mut replay.tls);
                (v, ReplayKind::Tunnel, key, self.window_ttl())
            }
            Found::Init(accepted, init) => {
                let key = init_replay_key(&init);
                let v = admit_init(&init, accepted, self.now, &mut replay.obfuscated2);
                (v, ReplayKind::Obfuscated2, key, BARE_REPLAY_TTL_SECS)
            }
        };
        self.stage = match verdict {
            Verdict::Cover(_) => Stage::Done(verdict),
            accepted if self.fleet => Stage::Fleet(accepted, kind, key, ttl),
            accepted => Stage::Done(accepted),
        };
    }

    /// Step 4's answer: `fresh` when no instance of the fleet had seen the
    /// key (or the fleet is down and its policy accepts).
    pub fn fleet_answer(&mut self, fresh: bool) {
        if let Stage::Fleet(..) = self.stage {
            let Stage::Fleet(verdict, ..) = std::mem::replace(&mut self.stage, Stage::Finished)
            else {
                return;
            };
            self.stage = Stage::Done(if fresh {
                verdict
            } else {
                Verdict::Cover(CoverReason::Replay)
            });
        }
    }

    /// How long the fleet remembers a timestamped hello: a replay is
    /// possible while its timestamp is in the window, up to max_past +
    /// max_future after acceptance, plus a minute for clocks that differ
    /// between instances.
    fn window_ttl(&self) -> u64 {
        self.policy.max_past + self.policy.max_future + 60
    }
}

/// The transport's check of a complete hello record. `None`: not a
/// samizdat hello, so the MTProto search runs; `Some(Err)`: a samizdat
/// hello that failed (unknown user, wrong MAC), the cover at once.
fn check_transport(
    record: &[u8],
    check: TransportCheck<'_>,
    now: u64,
) -> Option<Result<handshake::Accepted, CoverReason>> {
    // The window is checked at admission, with the horizon and skew.
    match handshake::accept(record, check.key, check.lookup, now, u64::MAX) {
        Ok(accepted) => Some(Ok(accepted)),
        Err(Reject::UnknownUser | Reject::BadMac) => Some(Err(CoverReason::BadHmac)),
        Err(_) => None,
    }
}

fn replay_key(bytes: &[u8]) -> [u8; 16] {
    let mut key = [0u8; 16];
    key.copy_from_slice(&bytes[..16]);
    key
}

/// A bare init's replay key: 16 bytes of its random prefix (bytes 8..24,
/// the part that keys the stream ciphers).
pub fn init_replay_key(init: &[u8; INIT_LEN]) -> [u8; 16] {
    replay_key(&init[8..24])
}
