//! The first-flight classifier: from the bytes a connection has sent so far,
//! decide whether to keep reading, send it to the cover site, or serve it.
//!
//! It is a pure function of (bytes so far, policy, users, time, replay
//! caches), re-run by the driver whenever more bytes arrive. Before the
//! whole first message is there it only inspects fixed-size headers, so a
//! peer that trickles bytes one at a time costs O(1) per byte.

use crate::faketls::client_hello::{self, ClientHello, HelloError, Probe};
use crate::obfuscated2::{self, Accepted, Tag, INIT_LEN};
use crate::replay::{ReplayCache, ReplayKey};
use crate::secret::Mode;
use crate::users::Users;

mod classifier;
pub use classifier::{
    init_replay_key, Classifier, ReplayKind, Step, TransportCheck, UserLookup, BARE_REPLAY_TTL_SECS,
};

/// What to do with a TLS hello whose SNI names none of our domains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SniPolicy {
    /// Send it to the cover site (a real site would answer for its own name only).
    #[default]
    Cover,
    /// Ignore the SNI and check the HMAC anyway.
    Accept,
}

/// The server's handshake rules.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Accept bare obfuscated2 with `ef`/`ee` tags (plain secrets).
    pub plain: bool,
    /// Accept bare obfuscated2 with the `dd` tag.
    pub padded: bool,
    /// Accept fake-TLS.
    pub fake_tls: bool,
    /// SNI names served (lower case).
    pub domains: Vec<String>,
    /// What to do when the SNI is not in `domains`.
    pub unknown_sni: SniPolicy,
    /// How far a client timestamp may lie in the past, seconds.
    pub max_past: u64,
    /// How far a client timestamp may lie in the future, seconds.
    pub max_future: u64,
}

impl Policy {
    /// A policy accepting exactly `modes`.
    pub fn for_modes(modes: &[Mode], domains: Vec<String>) -> Policy {
        Policy {
            plain: modes.contains(&Mode::Plain),
            padded: modes.contains(&Mode::Padded),
            fake_tls: modes.contains(&Mode::FakeTls),
            domains: domains
                .into_iter()
                .map(|d| d.to_ascii_lowercase())
                .collect(),
            unknown_sni: SniPolicy::Cover,
            max_past: 600,
            max_future: 60,
        }
    }
}

/// Why a connection goes to the cover site. Names are stable: they label
/// metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CoverReason {
    /// Not TLS, and bare obfuscated2 is off or did not match.
    Unrecognised,
    /// A TLS record that is not a well-formed ClientHello.
    BadHello(HelloError),
    /// The SNI names none of our domains.
    UnknownSni,
    /// No user's key produced the hello's HMAC.
    BadHmac,
    /// A valid HMAC with a timestamp outside the window; `skew` is client
    /// time minus server time, seconds.
    BadTimestamp {
        /// Client minus server time.
        skew: i64,
    },
    /// A hello or init seen before.
    Replay,
    /// Bytes after the ClientHello before the server spoke.
    TrailingData,
    /// 64 bytes that no key turned into an allowed obfuscated2 tag.
    BadInit,
}

impl CoverReason {
    /// Stable short name for metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            CoverReason::Unrecognised => "unrecognised",
            CoverReason::BadHello(_) => "bad_hello",
            CoverReason::UnknownSni => "unknown_sni",
            CoverReason::BadHmac => "bad_hmac",
            CoverReason::BadTimestamp { .. } => "bad_timestamp",
            CoverReason::Replay => "replay",
            CoverReason::TrailingData => "trailing_data",
            CoverReason::BadInit => "bad_init",
        }
    }
}

/// An authenticated fake-TLS ClientHello.
#[derive(Debug, Clone)]
pub struct TlsAccepted {
    /// Index of the user whose key matched.
    pub user: usize,
    /// The parsed hello.
    pub hello: ClientHello,
    /// Bytes of the record (all that was read).
    pub record_len: usize,
}

/// An authenticated bare obfuscated2 init.
#[derive(Debug)]
pub struct O2Accepted {
    /// Index of the user whose key matched.
    pub user: usize,
    /// Tag, DC and ciphers.
    pub init: Accepted,
}

/// The classifier's decision.
#[derive(Debug)]
pub enum Verdict {
    /// Keep reading; the first message is not complete.
    NeedMore,
    /// Splice to the cover site with every byte read so far.
    Cover(CoverReason),
    /// Answer with the server flight, then read obfuscated2 inside records.
    FakeTls(TlsAccepted),
    /// Relay: the first [`INIT_LEN`] bytes were the init, the rest is data.
    Obfuscated2(Box<O2Accepted>),
    /// A samizdat client (`docs/transport.md`): answer with the transport's
    /// server flight, then run a session.
    Tunnel(Box<crate::tunnel::handshake::Accepted>),
}

/// Largest first message the classifier waits for: one full TLS record.
pub const MAX_FIRST_FLIGHT: usize = 5 + crate::faketls::MAX_PLAINTEXT;

/// Mutable state the classifier consults: the replay caches.
#[derive(Debug)]
pub struct ReplayState {
    /// Client randoms of accepted fake-TLS hellos.
    pub tls: ReplayCache,
    /// Init packets of accepted bare obfuscated2 handshakes.
    pub obfuscated2: ReplayCache,
}

/// What the bytes are, before any key is tried.
#[derive(Debug)]
pub enum Inspected {
    /// Keep reading.
    NeedMore,
    /// Not ours, whatever the keys.
    Cover(CoverReason),
    /// A complete, well-formed ClientHello for a name we serve; the record is
    /// `buf[..record_len]`.
    Hello {
        /// Parsed fields.
        hello: ClientHello,
        /// Record length (all of the buffer).
        record_len: usize,
    },
    /// 64 bytes that may be a bare obfuscated2 init.
    Init([u8; INIT_LEN]),
}

/// Step 1: structure only. Cheap before the first message is complete
/// (fixed-size headers), one parse when it is.
pub fn inspect(buf: &[u8], policy: &Policy) -> Inspected {
    if buf.is_empty() {
        return Inspected::NeedMore;
    }
    if policy.fake_tls {
        match client_hello::probe(buf) {
            Probe::NeedMore => return Inspected::NeedMore,
            Probe::Record { len } => {
                if buf.len() < len {
                    return Inspected::NeedMore;
                }
                let hello = match client_hello::parse(&buf[..len]) {
                    Ok(h) => h,
                    Err(e) => return Inspected::Cover(CoverReason::BadHello(e)),
                };
                if buf.len() > len {
                    return Inspected::Cover(CoverReason::TrailingData);
                }
                let sni_ok = hello
                    .sni
                    .as_deref()
                    .is_some_and(|s| policy.domains.iter().any(|d| d == s));
                if !sni_ok && policy.unknown_sni == SniPolicy::Cover {
                    return Inspected::Cover(CoverReason::UnknownSni);
                }
                return Inspected::Hello {
                    hello,
                    record_len: len,
                };
            }
            Probe::NotTls => {}
        }
    }
    if policy.plain || policy.padded {
        if buf.len() < INIT_LEN {
            return Inspected::NeedMore;
        }
        let mut init = [0u8; INIT_LEN];
        init.copy_from_slice(&buf[..INIT_LEN]);
        return Inspected::Init(init);
    }
    Inspected::Cover(CoverReason::Unrecognised)
}

/// Step 2 for a hello: try `candidates` (user indexes) in order. The caller
/// may call it again with further candidates; the work is one HMAC each.
pub fn find_hello_user(
    record: &[u8],
    hello: &ClientHello,
    users: &Users,
    candidates: impl IntoIterator<Item = usize>,
) -> Option<client_hello::Verified> {
    client_hello::verify(record, &hello.random, users, candidates)
}

/// Step 2 for a bare init: try `candidates` in order; only tags the policy
/// allows count (`ef`/`ee` need plain, `dd` needs dd).
pub fn find_init_user(
    init: &[u8; INIT_LEN],
    policy: &Policy,
    users: &Users,
    candidates: impl IntoIterator<Item = usize>,
) -> Option<O2Accepted> {
    for user in candidates {
        let Some(u) = users.get(user) else { continue };
        let Some(accepted) = obfuscated2::accept(init, Some(&u.key)) else {
            continue;
        };
        let allowed = match accepted.tag {
            Tag::Abridged | Tag::Intermediate => policy.plain,
            Tag::Padded => policy.padded,
        };
        if allowed {
            return Some(O2Accepted {
                user,
                init: accepted,
            });
        }
    }
    None
}

/// Step 3 for a hello whose HMAC matched: the time window, the replay
/// cache's horizon, and the replay cache itself.
pub fn admit_hello(
    hello: ClientHello,
    record_len: usize,
    verified: client_hello::Verified,
    policy: &Policy,
    now: u64,
    cache: &mut ReplayCache,
) -> Verdict {
    let ts = u64::from(verified.timestamp);
    let skew = ts as i64 - now as i64;
    if ts + policy.max_past < now || ts > now + policy.max_future || ts < cache.horizon() {
        return Verdict::Cover(CoverReason::BadTimestamp { skew });
    }
    let mut key: ReplayKey = [0; 16];
    key.copy_from_slice(&hello.random[..16]);
    if !cache.check_and_insert_at(key, now, ts) {
        return Verdict::Cover(CoverReason::Replay);
    }
    Verdict::FakeTls(TlsAccepted {
        user: verified.user,
        hello,
        record_len,
    })
}

/// The widest clock difference [`admit_tunnel`] can accept: what to pass to
/// [`crate::tunnel::handshake::accept`] as its window.
pub fn tunnel_window(policy: &Policy) -> u64 {
    policy.max_past.max(policy.max_future)
}

/// Step 3 for an authenticated samizdat hello: the same time window,
/// horizon and replay cache as fake-TLS hellos, keyed by the client's
/// ephemeral key (fresh in every real hello).
pub fn admit_tunnel(
    accepted: Box<crate::tunnel::handshake::Accepted>,
    policy: &Policy,
    now: u64,
    cache: &mut ReplayCache,
) -> Verdict {
    let ts = accepted.client_time;
    let skew = ts as i64 - now as i64;
    if ts + policy.max_past < now || ts > now + policy.max_future || ts < cache.horizon() {
        return Verdict::Cover(CoverReason::BadTimestamp { skew });
    }
    let mut key: ReplayKey = [0; 16];
    key.copy_from_slice(&accepted.replay_key[..16]);
    if !cache.check_and_insert_at(key, now, ts) {
        return Verdict::Cover(CoverReason::Replay);
    }
    Verdict::Tunnel(accepted)
}

/// Step 3 for a bare init that matched a key: the replay cache.
pub fn admit_init(
    init: &[u8; INIT_LEN],
    accepted: O2Accepted,
    now: u64,
    cache: &mut ReplayCache,
) -> Verdict {
    let key: ReplayKey = init_replay_key(init);
    if !cache.check_and_insert(key, now) {
        return Verdict::Cover(CoverReason::Replay);
    }
    Verdict::Obfuscated2(Box::new(accepted))
}

/// The three steps in one call, trying every user (`hint` first). The
/// server runs the steps itself so that it can spread a long key search
/// over time; tests and fuzzing use this.
pub fn classify(
    buf: &[u8],
    policy: &Policy,
    users: &Users,
    now: u64,
    replay: &mut ReplayState,
    hint: Option<usize>,
) -> Verdict {
    match inspect(buf, policy) {
        Inspected::NeedMore => Verdict::NeedMore,
        Inspected::Cover(r) => Verdict::Cover(r),
        Inspected::Hello { hello, record_len } => {
            match find_hello_user(&buf[..record_len], &hello, users, order(users, hint)) {
                Some(v) => admit_hello(hello, record_len, v, policy, now, &mut replay.tls),
                None => Verdict::Cover(CoverReason::BadHmac),
            }
        }
        Inspected::Init(init) => match find_init_user(&init, policy, users, order(users, hint)) {
            Some(acc) => admit_init(&init, acc, now, &mut replay.obfuscated2),
            None => Verdict::Cover(CoverReason::BadInit),
        },
    }
}

fn order(users: &Users, hint: Option<usize>) -> impl Iterator<Item = usize> {
    let hint = hint.filter(|&h| h < users.len());
    hint.into_iter()
        .chain((0..users.len()).filter(move |&i| Some(i) != hint))
}

/// After an authenticated hello: the obfuscated2 init inside the records
/// must use the same user's key and the `dd` tag (spec §3.4).
pub fn accept_inner_init(init: &[u8; INIT_LEN], users: &Users, user: usize) -> Option<Accepted> {
    let accepted = obfuscated2::accept(init, Some(&users.get(user)?.key))?;
    (accepted.tag == Tag::Padded).then_some(accepted)
}
