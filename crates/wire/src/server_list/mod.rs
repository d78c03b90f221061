//! Signed server lists: how an operator tells clients about new server
//! addresses without trusting the channel that carries them.
//!
//! The signed text is one line of base64url parts, safe in a file, an HTTP
//! body or a set of DNS TXT strings:
//!
//! ```text
//! SZL1.<base64url(body)>.<base64url(Ed25519 signature)>
//! ```
//!
//! The signature covers [`SIGNING_CONTEXT`] followed by the exact body bytes.
//! The body is printable ASCII, one `key value` field per line:
//!
//! ```text
//! version 1
//! signer 3f2a9c0d1e2b4a5c
//! serial 1764172800
//! issued 1764172800
//! expires 1766764800
//! endpoint 203.0.113.5:443
//! endpoint wss://cdn.example.net/s
//! pk 7bN1…
//! endpoint 198.51.100.7:8443
//! ```
//!
//! - `version` is first and is `1`.
//! - `signer` is the [`key_id`] of the signing key, so a list signed by
//!   another key is reported as such ([`ListError::WrongKey`]) rather than
//!   as a bad signature.
//! - `serial` rises strictly with each list; a client accepts only a list
//!   newer than the one it has, so an old list replayed by a censor is
//!   refused ([`ListError::Stale`]).
//! - `issued` and `expires` are Unix times in seconds.
//! - `endpoint` uses the link's endpoint syntax (`HOST:PORT`,
//!   `[IPV6]:PORT`, `wss://HOST[:PORT]/PATH`), in the order to try.
//! - `pk KEY` (base64url X25519) gives the server key of the endpoints that
//!   follow it; `pk -` returns to the link's own key, which is also where
//!   a list starts.
//! - Fields this version does not know are ignored, so later versions can
//!   add some; a change old clients must not misread bumps the version.
//!
//! Nothing here reads a clock: the current time is an argument.

use crate::link::Endpoint;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

mod body;
use body::parse_body;

/// The prefix of the signed text (format version 1).
pub const PREFIX: &str = "SZL1.";

/// Bytes signed before the body, so that a list signature can never be
/// mistaken for a signature over anything else made with the same key.
pub const SIGNING_CONTEXT: &[u8] = b"samizdat server list v1\0";

/// Longest signed text accepted: it must fit one DNS TXT record (65,535
/// bytes of RDATA, in strings of at most 255 bytes) and stay cheap to fetch.
pub const MAX_TEXT: usize = 64 * 1024;

/// Most endpoints in one list.
pub const MAX_ENDPOINTS: usize = 256;

/// Most lines in a body (endpoints, `pk` lines and a margin for fields a
/// later version adds).
pub const MAX_LINES: usize = 1024;

/// How far in the future `issued` may lie before the list is refused as
/// not yet valid: room for clocks that run a little behind.
pub const MAX_CLOCK_SKEW: u64 = 3600;

/// A server list's content.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ServerList {
    /// Rises strictly from one list to the next.
    pub serial: u64,
    /// When the list was signed (Unix seconds).
    pub issued: u64,
    /// When clients stop using it (Unix seconds).
    pub expires: u64,
    /// The endpoints, in the order to try; at least one.
    pub endpoints: Vec<Listed>,
}

/// One endpoint of a list.
#[derive(Clone, PartialEq, Eq, Debug, Hash)]
pub struct Listed {
    /// Where the server is.
    pub endpoint: Endpoint,
    /// Its X25519 public key, if not the link's.
    pub server_key: Option<[u8; 32]>,
}

/// Why a list was refused; each says who is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ListError {
    /// Not a well-formed list (or too large); the text says what.
    #[error("malformed server list: {0}")]
    Malformed(String),
    /// The key given to check against is not a valid Ed25519 public key.
    #[error("the list key is not a valid Ed25519 public key")]
    BadKey,
    /// The list says it was signed by another key than the one expected.
    #[error("the list is signed by key {signer}, not by this link's list key {expected}")]
    WrongKey {
        /// The signer's [`key_id`] the list names.
        signer: String,
        /// The expected key's [`key_id`].
        expected: String,
    },
    /// The signature does not match the body: altered, or forged.
    #[error("bad signature: the list was altered or not signed by the list key")]
    BadSignature,
    /// Valid, but not newer than the list the client has.
    #[error("stale list: serial {serial} is not newer than the serial {have} already known")]
    Stale {
        /// The list's serial.
        serial: u64,
        /// The serial of the list already known.
        have: u64,
    },
    /// Past its `expires` time.
    #[error("the list expired at {expires} (Unix time; now {now})")]
    Expired {
        /// The list's expiry.
        expires: u64,
        /// The time it was checked at.
        now: u64,
    },
    /// Issued further in the future than [`MAX_CLOCK_SKEW`] allows: the
    /// signer's clock (or this one) is wrong.
    #[error("the list is issued at {issued}, in the future (now {now}): check the clocks")]
    NotYetValid {
        /// The list's issue time.
        issued: u64,
        /// The time it was checked at.
        now: u64,
    },
}

fn malformed(what: impl Into<String>) -> ListError {
    ListError::Malformed(what.into())
}

/// A short, stable name for a list key: the first 8 bytes of
/// SHA-256(`"samizdat list key"` ‖ key), hex. Names saved lists and
/// tells keys apart in messages.
pub fn key_id(public: &[u8; 32]) -> String {
    let mut h = Sha256::new();
    h.update(b"samizdat list key");
    h.update(public);
    hex::encode(&h.finalize()[..8])
}

/// The public key of a 32-byte Ed25519 secret key (seed).
pub fn public_key(secret: &[u8; 32]) -> [u8; 32] {
    SigningKey::from_bytes(secret).verifying_key().to_bytes()
}

/// Signs `body` exactly as given and returns the text form. The caller is
/// responsible for the body being a valid one ([`sign`] builds it).
pub fn sign_body(body: &[u8], secret: &[u8; 32]) -> String {
    let key = SigningKey::from_bytes(secret);
    let mut message = Vec::with_capacity(SIGNING_CONTEXT.len() + body.len());
    message.extend_from_slice(SIGNING_CONTEXT);
    message.extend_from_slice(body);
    let signature = key.sign(&message);
    format!(
        "{PREFIX}{}.{}",
        URL_SAFE_NO_PAD.encode(body),
        URL_SAFE_NO_PAD.encode(signature.to_bytes())
    )
}

/// Builds the body of `list` for the key `secret` and signs it. Refuses a
/// list the verifier would refuse as malformed (no endpoints, too many, too
/// large, `expires` not after `issued`).
pub fn sign(list: &ServerList, secret: &[u8; 32]) -> Result<String, ListError> {
    let body = list.body(&key_id(&public_key(secret)))?;
    let text = sign_body(body.as_bytes(), secret);
    if text.len() > MAX_TEXT {
        return Err(malformed(format!(
            "the signed list is {} bytes, more than {MAX_TEXT}",
            text.len()
        )));
    }
    Ok(text)
}

/// Checks the signature of `text` against `public` and parses the body, but
/// not the times or the serial: for reading back a list saved earlier.
pub fn verify_signature(text: &str, public: &[u8; 32]) -> Result<ServerList, ListError> {
    let text = text.trim();
    if text.len() > MAX_TEXT {
        return Err(malformed(format!("longer than {MAX_TEXT} bytes")));
    }
    let rest = text
        .strip_prefix(PREFIX)
        .ok_or_else(|| malformed(format!("does not start with {PREFIX}")))?;
    let (body, signature) = rest
        .split_once('.')
        .ok_or_else(|| malformed("no signature part"))?;
    let body = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| malformed("the body is not base64url"))?;
    let signature: [u8; 64] = URL_SAFE_NO_PAD
        .decode(signature)
        .ok()
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| malformed("the signature is not 64 bytes of base64url"))?;
    let expected = key_id(public);
    if let Some(signer) = signer_hint(&body) {
        if signer != expected {
            return Err(ListError::WrongKey { signer, expected });
        }
    }
    let key = VerifyingKey::from_bytes(public).map_err(|_| ListError::BadKey)?;
    let mut message = Vec::with_capacity(SIGNING_CONTEXT.len() + body.len());
    message.extend_from_slice(SIGNING_CONTEXT);
    message.extend_from_slice(&body);
    key.verify_strict(&message, &Signature::from_bytes(&signature))
        .map_err(|_| ListError::BadSignature)?;
    let list = parse_body(&body)?;
    Ok(list)
}

/// Verifies a list fetched from anywhere: the signature by `public`, the
/// body, the times against `now` (Unix seconds), and that its serial is
/// above `current_serial`, the serial of the list already held.
pub fn verify(
    text: &str,
    public: &[u8; 32],
    now: u64,
    current_serial: Option<u64>,
) -> Result<ServerList, ListError> {
    let list = verify_signature(text, public)?;
    list.check(now, current_serial)?;
    Ok(list)
}

/// The signer named in an unverified body, to tell "another key" from "an
/// altered list"; `None` if the body does not parse that far.
fn signer_hint(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let value = text
        .lines()
        .take(4)
        .find_map(|l| l.strip_prefix("signer "))?;
    (value.len() == 16 && value.bytes().all(|b| b.is_ascii_hexdigit())).then(|| value.to_string())
}

impl ServerList {
    /// Checks the times against `now` and the serial against the serial of
    /// the list already held.
    pub fn check(&self, now: u64, current_serial: Option<u64>) -> Result<(), ListError> {
        if self.issued > now.saturating_add(MAX_CLOCK_SKEW) {
            return Err(ListError::NotYetValid {
                issued: self.issued,
                now,
            });
        }
        if now >= self.expires {
            return Err(ListError::Expired {
                expires: self.expires,
                now,
            });
        }
        if let Some(have) = current_serial {
            if self.serial <= have {
                return Err(ListError::Stale {
                    serial: self.serial,
                    have,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
