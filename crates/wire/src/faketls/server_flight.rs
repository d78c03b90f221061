//! The server flight: ServerHello, ChangeCipherSpec and one ApplicationData
//! record standing in for the encrypted certificate (spec §4.4).

use super::{CCS_RECORD, HANDSHAKE, RANDOM_LEN, RANDOM_OFFSET};
use crate::users::Users;

/// Which extension the ServerHello lists first. Real servers differ; the
/// best choice copies the cover site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExtensionOrder {
    /// key_share, then supported_versions (MTProxy's and mtprotoproxy's choice).
    KeyShareFirst,
    /// supported_versions, then key_share: what OpenSSL 3 (so nginx, the
    /// recommended cover) sends, and mtg's choice.
    #[default]
    VersionsFirst,
}

/// Everything that varies in a server flight.
#[derive(Debug, Clone)]
pub struct FlightParams<'a> {
    /// The client random exactly as received.
    pub client_random: &'a [u8; RANDOM_LEN],
    /// The client's session id, echoed.
    pub session_id: &'a [u8],
    /// The cipher suite to announce.
    pub cipher_suite: u16,
    /// A genuine X25519 public key from a fresh scalar.
    pub key_share: &'a [u8; 32],
    /// Random bytes standing in for the encrypted handshake; their length
    /// should match what the cover site sends.
    pub fake_certificate: &'a [u8],
    /// Extension order.
    pub order: ExtensionOrder,
}

/// Shortest "certificate" the flight carries.
pub const FAKE_CERTIFICATE_MIN: usize = 2500;
/// How many sizes above the shortest it may take (2,500–3,619 bytes: the
/// range of real certificate chains' encrypted flights).
pub const FAKE_CERTIFICATE_SPREAD: usize = 1120;

/// The flight's stand-in for an encrypted certificate chain: random bytes
/// of a random length in the range of real ones, from `rng`.
pub fn fake_certificate(rng: &mut dyn FnMut(&mut [u8])) -> Vec<u8> {
    let mut noise = [0u8; 2];
    rng(&mut noise);
    let len =
        FAKE_CERTIFICATE_MIN + usize::from(u16::from_le_bytes(noise)) % FAKE_CERTIFICATE_SPREAD;
    let mut cert = vec![0u8; len];
    rng(&mut cert);
    cert
}

/// Builds the flight and signs it with the user's key:
/// `random = HMAC(K, client_random || flight with random zeroed)`.
pub fn build(users: &Users, user: usize, p: &FlightParams<'_>) -> Vec<u8> {
    let sid = p.session_id;
    let ext_len = 40 + 6;
    let hello_len = 2 + RANDOM_LEN + 1 + sid.len() + 2 + 1 + 2 + ext_len;
    let mut out = Vec::with_capacity(5 + 4 + hello_len + 6 + 5 + p.fake_certificate.len());
    out.extend_from_slice(&[HANDSHAKE, 0x03, 0x03]);
    out.extend_from_slice(&((hello_len + 4) as u16).to_be_bytes());
    out.push(0x02);
    out.extend_from_slice(&(hello_len as u32).to_be_bytes()[1..]);
    out.extend_from_slice(&[0x03, 0x03]);
    out.extend_from_slice(&[0u8; RANDOM_LEN]);
    out.push(sid.len() as u8);
    out.extend_from_slice(sid);
    out.extend_from_slice(&p.cipher_suite.to_be_bytes());
    out.push(0x00);
    out.extend_from_slice(&(ext_len as u16).to_be_bytes());
    let mut key_share = [0u8; 40];
    key_share[..8].copy_from_slice(&[0x00, 0x33, 0x00, 0x24, 0x00, 0x1d, 0x00, 0x20]);
    key_share[8..].copy_from_slice(p.key_share);
    let versions = [0x00, 0x2b, 0x00, 0x02, 0x03, 0x04];
    match p.order {
        ExtensionOrder::KeyShareFirst => {
            out.extend_from_slice(&key_share);
            out.extend_from_slice(&versions);
        }
        ExtensionOrder::VersionsFirst => {
            out.extend_from_slice(&versions);
            out.extend_from_slice(&key_share);
        }
    }
    out.extend_from_slice(&CCS_RECORD);
    out.extend_from_slice(&super::app_data_header(p.fake_certificate.len()));
    out.extend_from_slice(p.fake_certificate);
    let digest = users
        .hmac(user, &[p.client_random, &out])
        .expect("user index comes from a verified hello");
    out[RANDOM_OFFSET..RANDOM_OFFSET + RANDOM_LEN].copy_from_slice(&digest);
    out
}
