//! The Noise NK handshake carried in a ClientHello and a ServerHello.
//!
//! ```text
//! client                                             server
//! ClientHello  random     = HMAC(auth_key, hello with random zeroed)[..24]
//!                           || hello tag (HMAC(server public, session_id)[..8])
//!              session_id = Noise msg 1 payload (user id, time) + tag
//!              x25519     = Noise e               ──►  accept(): the hello
//!                                                      tag (no DH), then one
//!                                                      DH, O(1) user lookup,
//!                                                      one HMAC
//! ServerHello  random     = Noise msg 2 payload (flight shape) + tag
//!              x25519     = Noise e          ◄──  respond()
//! CCS, app-data records of the cover's flight sizes
//! CCS, Finished-sized record (key confirmation) ──►
//! AEAD records with the Noise split keys     ◄──►
//! ```
//!
//! The prologue is `b"samizdat/v1"` followed by the ClientHello record
//! with every slot (random, session id, X25519 share, hybrid X25519 tail)
//! zeroed, so any change to any byte of the hello fails the handshake (the
//! hello HMAC covers the hybrid tail, whatever key it holds).
//!
//! The hybrid share's X25519 tail follows the browser the hello imitates
//! ([`crate::browser::HelloSlots::x25519_in_hybrid`]): Firefox repeats its
//! X25519 key there, so the client writes `e` twice; Chrome draws a second
//! independent key, which the template builder has already put there and
//! the client leaves alone. The server accepts either.
//!
//! The hello tag lets the server turn away a hello that is not a samizdat
//! client's (every MTProto fake-TLS hello) for two SHA-256 compressions
//! instead of an X25519 operation ([`precheck`]). Only a link holder knows
//! the server's public key, so to anyone else the tag is 8 more random bytes
//! of the random field (`docs/transport.md`).

use super::flight::{self, finished_record_len, FlightShape, ServerFlightError, ServerShare};
use super::hello::{
    locate, LocateError, Located, GROUP_X25519_MLKEM768, MLKEM768_KEY_LEN, SESSION_ID_LEN,
};
use super::record::{Opener, Sealer, TAG_LEN};
use crate::browser::BuiltHello;
use crate::codec::Reader;
use crate::faketls::{APPLICATION_DATA, CCS_RECORD, RANDOM_LEN};
use crate::users::hmac_sha256;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use snow::HandshakeState;
use std::fmt;
use std::sync::{Arc, Mutex};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

/// The Noise protocol name.
pub const NOISE_PARAMS: &str = "Noise_NK_25519_AESGCM_SHA256";
/// Prologue prefix (protocol and version).
pub const PROLOGUE_PREFIX: &[u8] = b"samizdat/v1";
/// Handshake version in payload 1 and payload 2. 2: the session's records
/// inside a braid are no longer sealed on their own (`len u16 | frames`,
/// `lanes::InnerReader`); a version-1 peer would read them as garbage, so
/// each side refuses the other's hello or ServerHello instead (the server
/// treats a version-1 hello as not ours: the cover answers it).
pub const VERSION: u8 = 2;
/// Fill randomness: the caller's RNG (wire never reads OS randomness).
pub type Rng<'a> = &'a mut dyn FnMut(&mut [u8]);

// === credentials and keys ===

/// A user's credential, derived from the 16-byte secret in their link.
#[derive(Clone)]
pub struct UserCredential {
    user_id: [u8; 8],
    auth_key: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for UserCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UserCredential(<redacted>)")
    }
}

impl UserCredential {
    /// `user_id = SHA-256("samizdat/v1 user-id" || k)[..8]`,
    /// `auth_key = HMAC-SHA256(k, "samizdat/v1 auth")`.
    pub fn from_secret(k: &[u8; 16]) -> UserCredential {
        let digest = Sha256::new()
            .chain_update(b"samizdat/v1 user-id")
            .chain_update(k)
            .finalize();
        let mut user_id = [0u8; 8];
        user_id.copy_from_slice(&digest[..8]);
        UserCredential {
            user_id,
            auth_key: Zeroizing::new(hmac_sha256(k, &[b"samizdat/v1 auth"])),
        }
    }

    /// The 8-byte id the server looks the user up by.
    pub fn user_id(&self) -> [u8; 8] {
        self.user_id
    }

    /// The key of the hello's HMAC (the server's lookup returns it).
    pub fn auth_key(&self) -> [u8; 32] {
        *self.auth_key
    }
}

/// The server's static X25519 key.
#[derive(Clone)]
pub struct ServerKey {
    secret: Zeroizing<[u8; 32]>,
    public: [u8; 32],
    tag: HelloTagKey,
}

impl fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerKey")
            .field("public", &hex::encode(self.public))
            .finish_non_exhaustive()
    }
}

impl ServerKey {
    /// The key with this secret scalar (generate 32 random bytes once and
    /// keep them in the state directory).
    pub fn from_secret(secret: [u8; 32]) -> ServerKey {
        let secret = Zeroizing::new(secret);
        let mut dh = DefaultResolver
            .resolve_dh(&DHChoice::Curve25519)
            .expect("snow built with curve25519");
        dh.set(&secret[..]);
        let mut public = [0u8; 32];
        public.copy_from_slice(dh.pubkey());
        ServerKey {
            secret,
            public,
            tag: HelloTagKey::new(&public),
        }
    }

    /// The public key that goes into users' links.
    pub fn public(&self) -> [u8; 32] {
        self.public
    }
}

// === the hello tag ===

/// Bytes of the hello tag, at the end of the ClientHello random.
pub const TAG_BYTES: usize = 8;
/// Bytes of the hello HMAC kept in the random, before the tag.
const MAC_BYTES: usize = RANDOM_LEN - TAG_BYTES;
/// Where the random starts in a ClientHello record (5-byte record header,
/// 4-byte handshake header, 2-byte legacy_version).
const RANDOM_AT: usize = 11;
/// Where the legacy_session_id contents start (after its length byte).
const SESSION_ID_AT: usize = RANDOM_AT + RANDOM_LEN + 1;

/// The key of the hello tag: HMAC-SHA256 keyed with the server's public
/// key, its pads hashed once (so one tag is two SHA-256 compressions).
#[derive(Clone)]
struct HelloTagKey(Hmac<Sha256>);

impl HelloTagKey {
    fn new(server_public: &[u8; 32]) -> HelloTagKey {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(server_public)
            .expect("HMAC takes any key length");
        mac.update(b"samizdat/v1 hello tag");
        HelloTagKey(mac)
    }

    /// `HMAC(server public, "samizdat/v1 hello tag" || session_id)[..8]`.
    fn tag(&self, session_id: &[u8]) -> [u8; TAG_BYTES] {
        let mut mac = self.0.clone();
        mac.update(session_id);
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; TAG_BYTES];
        out.copy_from_slice(&full[..TAG_BYTES]);
        out
    }
}

/// The check [`accept`] makes before any Diffie-Hellman: does `record`
/// start like a ClientHello with a 32-byte session id, and do the last
/// [`TAG_BYTES`] bytes of its random hold the tag of that session id under
/// this server's public key? Fixed offsets, no parse, no allocation: two
/// SHA-256 compressions and a constant-time compare. Every hello that is
/// not a samizdat client's for this server fails it (but for a 2^-64
/// chance), and so goes on to the MTProto checks at no cost of ours.
pub fn precheck(record: &[u8], key: &ServerKey) -> bool {
    let Some(session_id) = record.get(SESSION_ID_AT..SESSION_ID_AT + SESSION_ID_LEN) else {
        return false;
    };
    if record[0] != crate::faketls::HANDSHAKE
        || record[5] != 0x01
        || usize::from(record[SESSION_ID_AT - 1]) != SESSION_ID_LEN
    {
        return false;
    }
    let tag = key.tag.tag(session_id);
    bool::from(tag.ct_eq(&record[RANDOM_AT + MAC_BYTES..RANDOM_AT + RANDOM_LEN]))
}

#[cfg(test)]
thread_local! {
    /// Diffie-Hellman setups [`accept`] began on this thread (tests only).
    static DH_ATTEMPTS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

// === snow plumbing: our randomness, snow's primitives ===

/// One ephemeral key's worth of randomness, filled by us before snow
/// generates the ephemeral; snow gets no other randomness.
type Slot = Arc<Mutex<Option<Zeroizing<[u8; 32]>>>>;

struct SlotRng(Slot);

impl Random for SlotRng {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        let seed = self.0.lock().map_err(|_| snow::Error::Rng)?.take();
        match seed {
            Some(seed) if dest.len() == seed.len() => {
                dest.copy_from_slice(&seed[..]);
                Ok(())
            }
            _ => Err(snow::Error::Rng),
        }
    }
}

struct Resolver(Slot);

impl CryptoResolver for Resolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(SlotRng(self.0.clone())))
    }
    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        DefaultResolver.resolve_dh(choice)
    }
    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }
    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        DefaultResolver.resolve_cipher(choice)
    }
}

fn seed(slot: &Slot, rng: Rng<'_>) {
    let mut bytes = Zeroizing::new([0u8; 32]);
    rng(&mut bytes[..]);
    *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(bytes);
}

fn builder(slot: &Slot) -> snow::Builder<'static> {
    snow::Builder::with_resolver(
        NOISE_PARAMS.parse().expect("valid Noise params"),
        Box::new(Resolver(slot.clone())),
    )
}

/// `b"samizdat/v1" || record` with every slot zeroed.
fn prologue(record: &[u8], at: &Located) -> Vec<u8> {
    let mut p = Vec::with_capacity(PROLOGUE_PREFIX.len() + record.len());
    p.extend_from_slice(PROLOGUE_PREFIX);
    p.extend_from_slice(record);
    for slot in at.slots() {
        p[PROLOGUE_PREFIX.len() + slot.start..PROLOGUE_PREFIX.len() + slot.end].fill(0);
    }
    p
}

/// HMAC over the record with its random zeroed.
fn hello_mac(auth_key: &[u8; 32], record: &[u8], random_at: usize) -> [u8; 32] {
    let end = random_at + RANDOM_LEN;
    hmac_sha256(
        auth_key,
        &[&record[..random_at], &[0u8; RANDOM_LEN], &record[end..]],
    )
}

/// Transport keys and the key-confirmation plaintext from a finished
/// handshake: (client→server key, server→client key, confirmation).
struct Split {
    c2s: Zeroizing<[u8; 32]>,
    s2c: Zeroizing<[u8; 32]>,
    hash: Zeroizing<[u8; 32]>,
}

fn split(hs: &mut HandshakeState) -> Split {
    let mut hash = Zeroizing::new([0u8; 32]);
    hash.copy_from_slice(&hs.get_handshake_hash()[..32]);
    let (mut a, mut b) = hs.dangerously_get_raw_split();
    let s = Split {
        c2s: Zeroizing::new(a),
        s2c: Zeroizing::new(b),
        hash,
    };
    a.zeroize();
    b.zeroize();
    s
}

/// The plaintext of the client's Finished-sized confirmation record:
/// `HMAC(h, "samizdat/v1 client finished")`, zero padding, then 0x16 as the
/// TLS inner content type a real Finished carries.
fn confirmation(hash: &[u8; 32], record_len: usize) -> Zeroizing<Vec<u8>> {
    let mut p = Zeroizing::new(vec![0u8; record_len - TAG_LEN]);
    p[..32].copy_from_slice(&hmac_sha256(hash, &[b"samizdat/v1 client finished"]));
    let last = p.len() - 1;
    p[last] = 0x16;
    p
}

// === established session keys ===

/// A finished handshake: the record sealer and opener of the transport.
pub struct Established {
    /// Seals what we send.
    pub sealer: Sealer,
    /// Opens what we receive.
    pub opener: Opener,
}

impl fmt::Debug for Established {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Established")
            .field("sealer", &self.sealer)
            .field("opener", &self.opener)
            .finish()
    }
}

impl Established {
    /// Splits into the two halves, one per task.
    pub fn into_split(self) -> (Sealer, Opener) {
        (self.sealer, self.opener)
    }

    /// A matching (client, server) pair of record keys derived from
    /// `secret`, with no handshake and no key confirmation: for tests and
    /// benchmarks that run lanes without a TLS look-alike in front. The
    /// transport's keys come only from the Noise split.
    #[doc(hidden)]
    pub fn pair_for_tests(secret: &[u8; 32]) -> (Established, Established) {
        let c2s = hmac_sha256(secret, &[b"samizdat test c2s"]);
        let s2c = hmac_sha256(secret, &[b"samizdat test s2c"]);
        let client = Established {
            sealer: Sealer::new(&c2s, 0),
            opener: Opener::new(&s2c, None),
        };
        let server = Established {
            sealer: Sealer::new(&s2c, 0),
            opener: Opener::new(&c2s, None),
        };
        (client, server)
    }
}

// === client ===

/// Why the client could not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The hello template has no slot for the handshake.
    #[error("hello template: {0}")]
    Hello(#[from] LocateError),
    /// The server public key is not usable.
    #[error("Noise handshake setup failed")]
    Noise,
    /// The hello's slots are not where its own parse finds the fields.
    #[error("hello slots do not match the record")]
    Slots,
}

/// The client half of a handshake in progress.
pub struct ClientHandshake {
    hs: Option<HandshakeState>,
    session_id: [u8; 32],
    suites: Vec<u16>,
    /// Whether the hello offered an X25519MLKEM768 share (the only case in
    /// which the server may answer in that group).
    offered_hybrid: bool,
    /// Payload 2 once the ServerHello authenticated.
    announced: Option<(usize, usize, u16)>,
}

impl fmt::Debug for ClientHandshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientHandshake").finish_non_exhaustive()
    }
}

/// Progress of reading the server flight.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Progress {
    /// Feed more bytes (the whole buffer again, with more at its end).
    NeedMore,
    /// The flight is complete and authenticated.
    Done {
        /// Bytes of the buffer the flight took; the rest is transport.
        consumed: usize,
        /// The transport keys.
        established: Established,
        /// Send this before anything else: CCS + Finished-sized record.
        reply: Vec<u8>,
    },
}

impl ClientHandshake {
    /// Fills a hello made by [`crate::browser::Template::build`] (slots may
    /// hold anything; they are zeroed first) with Noise message 1, the
    /// hello tag and the user's HMAC. The X25519 share gets `e`, and so does
    /// the hybrid share's X25519 half when the browser repeats its key there
    /// (`hello.slots.x25519_in_hybrid`); otherwise the builder's own key
    /// stays there. Returns the handshake state and the record to send.
    pub fn start(
        hello: &BuiltHello,
        server_public: &[u8; 32],
        cred: &UserCredential,
        now_unix: u64,
        rng: Rng<'_>,
    ) -> Result<(ClientHandshake, Vec<u8>), StartError> {
        let at = locate(&hello.record)?;
        let slots = &hello.slots;
        let hybrid_ok = match slots.x25519_in_hybrid {
            None => true,
            Some(h) => at.hybrid_x25519 == Some(h),
        };
        if at.random != RANDOM_AT
            || slots.random != at.random
            || slots.session_id != at.session_id
            || slots.x25519 != at.x25519
            || !hybrid_ok
        {
            return Err(StartError::Slots);
        }
        let prologue = prologue(&hello.record, &at);
        let slot: Slot = Arc::default();
        seed(&slot, rng);
        let mut hs = builder(&slot)
            .prologue(&prologue)
            .and_then(|b| b.remote_public_key(server_public))
            .and_then(|b| b.build_initiator())
            .map_err(|_| StartError::Noise)?;
        let mut payload = [0u8; 16];
        payload[..8].copy_from_slice(&cred.user_id);
        payload[8..12].copy_from_slice(&(now_unix as u32).to_be_bytes());
        payload[12] = VERSION;
        let mut msg = [0u8; 64];
        let n = hs
            .write_message(&payload, &mut msg)
            .map_err(|_| StartError::Noise)?;
        debug_assert_eq!(n, 64);
        // The record as built, with the slots we own zeroed: a browser
        // that draws its own hybrid X25519 key keeps the builder's key.
        let mut record = hello.record.clone();
        record[at.random..at.random + RANDOM_LEN].fill(0);
        for x in [Some(at.x25519), slots.x25519_in_hybrid]
            .into_iter()
            .flatten()
        {
            record[x..x + 32].copy_from_slice(&msg[..32]);
        }
        record[at.session_id..at.session_id + 32].copy_from_slice(&msg[32..]);
        let tag = HelloTagKey::new(server_public).tag(&msg[32..]);
        let mac = hello_mac(&cred.auth_key, &record, at.random);
        record[at.random..at.random + MAC_BYTES].copy_from_slice(&mac[..MAC_BYTES]);
        record[at.random + MAC_BYTES..at.random + RANDOM_LEN].copy_from_slice(&tag);
        let suites = at.suites(&record).collect();
        Ok((
            ClientHandshake {
                hs: Some(hs),
                session_id: halves(&msg).1,
                suites,
                offered_hybrid: at.hybrid_x25519.is_some(),
                announced: None,
            },
            record,
        ))
    }

    /// Reads the server flight from the front of `buf` (everything received
    /// so far). Any error means we did not reach our server: close.
    pub fn read_server_flight(&mut self, buf: &[u8]) -> Result<Progress, ServerFlightError> {
        let result = self.read_inner(buf);
        if result.is_err() {
            self.hs = None;
        }
        result
    }

    fn read_inner(&mut self, buf: &[u8]) -> Result<Progress, ServerFlightError> {
        let Some(sh) = flight::parse_server_hello(buf)? else {
            return Ok(Progress::NeedMore);
        };
        let hs = self.hs.as_mut().ok_or(ServerFlightError::Finished)?;
        if sh.session_id != self.session_id
            || !self.suites.contains(&sh.suite)
            || (sh.group == GROUP_X25519_MLKEM768 && !self.offered_hybrid)
        {
            return Err(ServerFlightError::Mismatch);
        }
        let (count, total, suite) = match self.announced {
            Some(a) => a,
            None => {
                let mut msg = [0u8; 64];
                msg[..32].copy_from_slice(&sh.share);
                msg[32..].copy_from_slice(&sh.random);
                let mut payload = [0u8; 16];
                let n = hs
                    .read_message(&msg, &mut payload)
                    .map_err(|_| ServerFlightError::NotOurServer)?;
                // version, record count, total length, ten zero bytes
                let mut p = Reader::new(&payload[..n]);
                let (Some(VERSION), Some(count), Some(total), Some(zeros)) =
                    (p.u8(), p.u8(), p.u32(), p.array::<10>())
                else {
                    return Err(ServerFlightError::NotOurServer);
                };
                if zeros != [0; 10] || !p.is_empty() {
                    return Err(ServerFlightError::NotOurServer);
                }
                let a = (count as usize, total as usize, sh.suite);
                self.announced = Some(a);
                a
            }
        };
        let Some(flight_len) = flight::skip_flight(&buf[sh.len..], count, total)? else {
            return Ok(Progress::NeedMore);
        };
        let mut hs = self.hs.take().ok_or(ServerFlightError::Finished)?;
        let keys = split(&mut hs);
        let size = finished_record_len(suite);
        let mut sealer = Sealer::new(&keys.c2s, 0);
        let mut reply = CCS_RECORD.to_vec();
        sealer
            .seal_record(&confirmation(&keys.hash, size), &mut reply)
            .map_err(|_| ServerFlightError::Finished)?;
        Ok(Progress::Done {
            consumed: sh.len + flight_len,
            established: Established {
                sealer,
                opener: Opener::new(&keys.s2c, None),
            },
            reply,
        })
    }
}

// === server ===

/// Why a hello is not an authenticated samizdat hello. The caller splices
/// the connection to the cover for every variant; none carries secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Reject {
    /// No hello tag for this server (see [`precheck`]): every hello
    /// that is not a samizdat client's. No Diffie-Hellman was done.
    #[error("no hello tag")]
    Untagged,
    /// Not a ClientHello with the slots we need.
    #[error("not a usable ClientHello: {0}")]
    Malformed(LocateError),
    /// Noise message 1 did not decrypt: not a samizdat client (or not
    /// for this server key).
    #[error("not a samizdat hello")]
    NotOurs,
    /// Decrypted, but the user id is unknown.
    #[error("unknown user")]
    UnknownUser,
    /// The user's HMAC over the hello does not match.
    #[error("hello MAC mismatch")]
    BadMac,
    /// The timestamp is outside the window.
    #[error("hello timestamp outside the window")]
    Stale,
}

/// An authenticated hello, ready for the server flight.
pub struct Accepted {
    /// The user index the lookup returned.
    pub user: usize,
    /// The client's ephemeral key: check it in the replay cache.
    pub replay_key: [u8; 32],
    /// The unix time the client wrote.
    pub client_time: u64,
    /// Bytes of the hello record: what follows it in the connection's
    /// first read already belongs to the session.
    pub record_len: usize,
    hs: HandshakeState,
    slot: Slot,
    session_id: [u8; 32],
    suites: Vec<u16>,
    /// The client's ML-KEM-768 encapsulation key, if it offered the hybrid
    /// group: the server answers in that group when the cover does.
    mlkem_key: Option<Vec<u8>>,
}

impl fmt::Debug for Accepted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Accepted")
            .field("user", &self.user)
            .field("client_time", &self.client_time)
            .finish_non_exhaustive()
    }
}

/// Authenticates a ClientHello record: the hello tag ([`precheck`], no
/// DH), then one DH, one HMAC and one lookup by user id (`lookup` returns
/// the user index and auth key). The hybrid share's X25519 half may repeat
/// the X25519 share (Firefox) or hold another key (Chrome).
pub fn accept(
    record: &[u8],
    key: &ServerKey,
    lookup: impl Fn(&[u8; 8]) -> Option<(usize, [u8; 32])>,
    now_unix: u64,
    window_secs: u64,
) -> Result<Accepted, Reject> {
    if !precheck(record, key) {
        return Err(Reject::Untagged);
    }
    let at = locate(record).map_err(Reject::Malformed)?;
    // locate() checked that the share is 32 bytes inside the record.
    let e: [u8; 32] = Reader::new(&record[at.x25519..])
        .array()
        .ok_or(Reject::NotOurs)?;
    #[cfg(test)]
    DH_ATTEMPTS.with(|n| n.set(n.get() + 1));
    let prologue = prologue(record, &at);
    let slot: Slot = Arc::default();
    let mut hs = builder(&slot)
        .prologue(&prologue)
        .and_then(|b| b.local_private_key(&key.secret[..]))
        .and_then(|b| b.build_responder())
        .map_err(|_| Reject::NotOurs)?;
    let mut msg = [0u8; 64];
    msg[..32].copy_from_slice(&e);
    msg[32..].copy_from_slice(&record[at.session_id..at.session_id + 32]);
    let mut payload = Zeroizing::new([0u8; 16]);
    let n = hs
        .read_message(&msg, &mut payload[..])
        .map_err(|_| Reject::NotOurs)?;
    // user id, client time, version, three zero bytes
    let mut p = Reader::new(&payload[..n]);
    let (Some(user_id), Some(client_time), Some(VERSION), Some([0, 0, 0])) =
        (p.array::<8>(), p.u32(), p.u8(), p.array::<3>())
    else {
        return Err(Reject::NotOurs);
    };
    if !p.is_empty() {
        return Err(Reject::NotOurs);
    }
    let (user, auth_key) = lookup(&user_id).ok_or(Reject::UnknownUser)?;
    let auth_key = Zeroizing::new(auth_key);
    let mac = hello_mac(&auth_key, record, at.random);
    if !bool::from(mac[..MAC_BYTES].ct_eq(&record[at.random..at.random + MAC_BYTES])) {
        return Err(Reject::BadMac);
    }
    let client_time = u64::from(client_time);
    if client_time.abs_diff(now_unix) > window_secs {
        return Err(Reject::Stale);
    }
    Ok(Accepted {
        user,
        replay_key: e,
        client_time,
        record_len: record.len(),
        hs,
        slot,
        session_id: halves(&msg).1,
        suites: at.suites(record).collect(),
        mlkem_key: at
            .hybrid_x25519
            .and_then(|h| record.get(h.checked_sub(MLKEM768_KEY_LEN)?..h))
            .map(<[u8]>::to_vec),
    })
}

impl Accepted {
    /// The cipher suite the server flight will name for `shape`.
    pub fn suite(&self, shape: &FlightShape) -> u16 {
        flight::choose_suite(shape.cipher_suite, &self.suites)
    }

    /// Writes the server flight (ServerHello with Noise message 2, CCS,
    /// the shape's application-data records) and returns it with the
    /// transport keys. The returned opener first expects the client's
    /// key-confirmation record.
    pub fn respond(mut self, shape: &FlightShape, rng: Rng<'_>) -> (Vec<u8>, Established) {
        let suite = self.suite(shape);
        let sizes: Vec<usize> = shape.sizes().collect();
        let total: usize = sizes.iter().map(|n| 5 + n).sum();
        let mut payload = [0u8; 16];
        payload[0] = VERSION;
        payload[1] = sizes.len() as u8;
        payload[2..6].copy_from_slice(&(total as u32).to_be_bytes());
        seed(&self.slot, rng);
        let mut msg = [0u8; 64];
        // The slot was just filled with 32 bytes, the only thing that can
        // fail in an NK responder's second message.
        self.hs
            .write_message(&payload, &mut msg)
            .expect("Noise NK message 2 with a seeded ephemeral");
        let (share, random) = halves(&msg);
        // Answer in the cover's group: a hybrid cover's ServerHello is
        // about 1.2 KB, an X25519 one 122 bytes, and an observer sees which.
        let pq = match (shape.group, &self.mlkem_key) {
            (GROUP_X25519_MLKEM768, Some(ek)) => flight::mlkem768_encapsulate(ek),
            _ => None,
        };
        let server_share = match &pq {
            Some((ciphertext, _)) => ServerShare::Hybrid {
                ciphertext,
                x25519: &share,
            },
            None => ServerShare::X25519(&share),
        };
        let mut out = Vec::with_capacity(128 + 1120 + 6 + total);
        flight::server_hello(
            &mut out,
            &random,
            &self.session_id,
            suite,
            shape.ext_order,
            server_share,
        );
        out.extend_from_slice(&CCS_RECORD);
        let keys = split(&mut self.hs);
        // The fake flight is AEAD output (zeros sealed under a key only
        // the two ends can derive), so it looks like the real ciphertext.
        let flight_key = Zeroizing::new(hmac_sha256(&keys.hash[..], &[b"samizdat/v1 flight"]));
        let mut fake = Sealer::new(&flight_key, 0);
        for n in sizes {
            let start = out.len();
            fake.seal_record(&vec![0u8; n - TAG_LEN], &mut out)
                .expect("flight record sizes are clamped");
            out[start] = APPLICATION_DATA;
        }
        let size = finished_record_len(suite);
        let established = Established {
            sealer: Sealer::new(&keys.s2c, 0),
            opener: Opener::new(&keys.c2s, Some((confirmation(&keys.hash, size), size))),
        };
        (out, established)
    }
}

/// The two 32-byte halves of a Noise NK message (ephemeral key, then the
/// encrypted payload and tag), which the hello and the ServerHello carry in
/// separate fields.
fn halves(msg: &[u8; 64]) -> ([u8; 32], [u8; 32]) {
    let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
    a.copy_from_slice(&msg[..32]);
    b.copy_from_slice(&msg[32..]);
    (a, b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::browser::{Browser, Template};
    use crate::faketls::client::{build_hello, HelloShape};

    const NOW: u64 = 1_790_000_000;

    fn fill(seed: u64) -> impl FnMut(&mut [u8]) {
        crate::testing::seeded_fill(seed)
    }

    fn dh_attempts() -> usize {
        DH_ATTEMPTS.with(|n| n.get())
    }

    fn transport_hello(browser: Browser, key: &ServerKey, cred: &UserCredential) -> Vec<u8> {
        let built = Template::builtin(browser).build("cover.example", &mut fill(3));
        ClientHandshake::start(&built, &key.public(), cred, NOW, &mut fill(4))
            .unwrap()
            .1
    }

    /// What every MTProto `ee` client sends, and a browser's own hello: the
    /// precheck turns both away before any Diffie-Hellman.
    #[test]
    fn a_hello_that_is_not_a_transport_hello_costs_no_dh() {
        let key = ServerKey::from_secret([0x42; 32]);
        let cred = UserCredential::from_secret(&[9; 16]);
        let lookup = |id: &[u8; 8]| (*id == cred.user_id()).then(|| (0, cred.auth_key()));
        let ee = build_hello(
            &[7; 16],
            "cover.example",
            NOW as u32,
            HelloShape::Classic517,
            &mut fill(1),
        );
        let mut chrome = Template::builtin(Browser::Chrome)
            .build("cover.example", &mut fill(2))
            .record;
        fill(5)(&mut chrome[RANDOM_AT..SESSION_ID_AT + SESSION_ID_LEN]);
        chrome[SESSION_ID_AT - 1] = 32;
        for (what, hello) in [("ee", &ee), ("chrome", &chrome)] {
            assert!(locate(hello).is_ok(), "{what}: a usable hello shape");
            assert!(!precheck(hello, &key), "{what}");
            let before = dh_attempts();
            assert_eq!(
                accept(hello, &key, lookup, NOW, 60).unwrap_err(),
                Reject::Untagged,
                "{what}"
            );
            assert_eq!(dh_attempts(), before, "{what}: no DH");
        }
        // Short, empty and non-TLS input.
        for junk in [&[][..], &[0x16; 75][..], &[0u8; 2000][..]] {
            assert!(!precheck(junk, &key));
        }
        // A real transport hello does reach the DH, and is accepted.
        let good = transport_hello(Browser::Chrome, &key, &cred);
        assert!(precheck(&good, &key));
        let before = dh_attempts();
        assert!(accept(&good, &key, lookup, NOW, 60).is_ok());
        assert_eq!(dh_attempts(), before + 1);
    }

    /// A samizdat client's hello with a wrong tag (any bit of it, or one
    /// meant for another server) is turned away by the precheck, without
    /// a DH: a prober's tampered replay gets the same answer as random bytes.
    #[test]
    fn a_wrong_tag_is_rejected_before_the_dh() {
        let key = ServerKey::from_secret([0x42; 32]);
        let other = ServerKey::from_secret([0x43; 32]);
        let cred = UserCredential::from_secret(&[9; 16]);
        let lookup = |id: &[u8; 8]| (*id == cred.user_id()).then(|| (0, cred.auth_key()));
        for browser in Browser::ALL {
            let good = transport_hello(browser, &key, &cred);
            assert!(accept(&good, &key, lookup, NOW, 60).is_ok());
            let before = dh_attempts();
            assert_eq!(
                accept(&good, &other, lookup, NOW, 60).unwrap_err(),
                Reject::Untagged
            );
            for bit in 0..TAG_BYTES * 8 {
                let mut bad = good.clone();
                bad[RANDOM_AT + MAC_BYTES + bit / 8] ^= 1 << (bit % 8);
                assert_eq!(
                    accept(&bad, &key, lookup, NOW, 60).unwrap_err(),
                    Reject::Untagged
                );
            }
            // The tag covers the session id: change it and the tag is wrong.
            let mut bad = good.clone();
            bad[SESSION_ID_AT + 5] ^= 0x20;
            assert_eq!(
                accept(&bad, &key, lookup, NOW, 60).unwrap_err(),
                Reject::Untagged
            );
            assert_eq!(dh_attempts(), before, "{browser:?}: no DH");
        }
    }

    /// The hybrid share's X25519 half on the wire: Chrome's own key, not
    /// `e`; Firefox's `e`. The server accepts both.
    #[test]
    fn the_hybrid_x25519_half_follows_the_browser_and_both_are_accepted() {
        let key = ServerKey::from_secret([0x42; 32]);
        let cred = UserCredential::from_secret(&[9; 16]);
        let lookup = |id: &[u8; 8]| (*id == cred.user_id()).then(|| (0, cred.auth_key()));
        for browser in Browser::ALL {
            let hello = transport_hello(browser, &key, &cred);
            let at = locate(&hello).unwrap();
            let tail = at.hybrid_x25519.unwrap();
            let same = hello[tail..tail + 32] == hello[at.x25519..at.x25519 + 32];
            assert_eq!(same, browser == Browser::Firefox, "{browser:?}");
            let acc = accept(&hello, &key, lookup, NOW, 60).unwrap();
            assert_eq!(acc.replay_key[..], hello[at.x25519..at.x25519 + 32]);
            // The hello HMAC covers the hybrid half.
            let mut bad = hello.clone();
            bad[tail + 7] ^= 1;
            assert_eq!(
                accept(&bad, &key, lookup, NOW, 60).unwrap_err(),
                Reject::BadMac
            );
        }
    }

    #[test]
    fn slots_that_disagree_with_the_record_are_refused() {
        let key = ServerKey::from_secret([0x42; 32]);
        let cred = UserCredential::from_secret(&[9; 16]);
        let mut built = Template::builtin(Browser::Firefox).build("a.example", &mut fill(3));
        built.slots.x25519_in_hybrid = Some(built.slots.x25519_in_hybrid.unwrap() - 1);
        assert_eq!(
            ClientHandshake::start(&built, &key.public(), &cred, NOW, &mut fill(4)).unwrap_err(),
            StartError::Slots
        );
    }
}
