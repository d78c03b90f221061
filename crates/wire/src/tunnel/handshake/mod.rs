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

mod client;
mod server;

/// The two 32-byte halves of a Noise NK message (ephemeral key, then the
/// encrypted payload and tag), which the hello and the ServerHello carry in
/// separate fields.
pub(super) fn halves(msg: &[u8; 64]) -> ([u8; 32], [u8; 32]) {
    let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
    a.copy_from_slice(&msg[..32]);
    b.copy_from_slice(&msg[32..]);
    (a, b)
}

pub use client::{ClientHandshake, Progress, StartError};
pub use server::{accept, Accepted, Reject};

#[cfg(test)]
mod tests;
