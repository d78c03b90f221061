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

use crate::link::{parse_endpoint, Endpoint};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use std::fmt::Write as _;

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

fn number(line: usize, field: &str, value: &str) -> Result<u64, ListError> {
    if value.is_empty() || value.len() > 20 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed(format!("line {line}: {field} is not a number")));
    }
    value
        .parse()
        .map_err(|_| malformed(format!("line {line}: {field} is out of range")))
}

fn parse_body(body: &[u8]) -> Result<ServerList, ListError> {
    if let Some(at) = body
        .iter()
        .position(|&b| b != b'\n' && !(b' '..=b'~').contains(&b))
    {
        return Err(malformed(format!(
            "byte {at} of the body is not printable ASCII"
        )));
    }
    // Only printable ASCII and newlines remain, so this cannot fail.
    let text = std::str::from_utf8(body).map_err(|_| malformed("not UTF-8"))?;
    let text = text
        .strip_suffix('\n')
        .ok_or_else(|| malformed("the body does not end with a newline"))?;
    let (mut version, mut signer, mut serial, mut issued, mut expires) =
        (false, false, None, None, None);
    let mut group_key: Option<[u8; 32]> = None;
    let mut endpoints: Vec<Listed> = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        let n = i + 1;
        if n > MAX_LINES {
            return Err(malformed(format!("more than {MAX_LINES} lines")));
        }
        let (field, value) = line
            .split_once(' ')
            .ok_or_else(|| malformed(format!("line {n}: expected FIELD VALUE")))?;
        if field.is_empty()
            || !field
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(malformed(format!("line {n}: bad field name")));
        }
        if n == 1 {
            if field != "version" {
                return Err(malformed("the first line must be `version 1`"));
            }
            if value != "1" {
                return Err(malformed(format!(
                    "version {value} is not supported by this client (it reads version 1)"
                )));
            }
            version = true;
            continue;
        }
        let once = |slot: &mut Option<u64>| -> Result<(), ListError> {
            if slot.is_some() {
                return Err(malformed(format!("line {n}: {field} given twice")));
            }
            *slot = Some(number(n, field, value)?);
            Ok(())
        };
        match field {
            "version" => return Err(malformed(format!("line {n}: version given twice"))),
            "signer" => {
                if signer {
                    return Err(malformed(format!("line {n}: signer given twice")));
                }
                if value.len() != 16 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(malformed(format!(
                        "line {n}: signer must be a key id (16 hex digits)"
                    )));
                }
                signer = true;
            }
            "serial" => once(&mut serial)?,
            "issued" => once(&mut issued)?,
            "expires" => once(&mut expires)?,
            "pk" => {
                group_key = if value == "-" {
                    None
                } else {
                    Some(
                        URL_SAFE_NO_PAD
                            .decode(value)
                            .ok()
                            .and_then(|k| <[u8; 32]>::try_from(k).ok())
                            .ok_or_else(|| {
                                malformed(format!(
                                    "line {n}: pk must be a 32-byte key in base64url, or -"
                                ))
                            })?,
                    )
                };
            }
            "endpoint" => {
                let endpoint =
                    parse_endpoint(value).map_err(|e| malformed(format!("line {n}: {e}")))?;
                let listed = Listed {
                    endpoint,
                    server_key: group_key,
                };
                if !endpoints.contains(&listed) {
                    if endpoints.len() == MAX_ENDPOINTS {
                        return Err(malformed(format!("more than {MAX_ENDPOINTS} endpoints")));
                    }
                    endpoints.push(listed);
                }
            }
            // A field of a later version: ignored.
            _ => {}
        }
    }
    if !version {
        return Err(malformed("the first line must be `version 1`"));
    }
    if !signer {
        return Err(malformed("no signer line"));
    }
    let serial = serial.ok_or_else(|| malformed("no serial line"))?;
    let issued = issued.ok_or_else(|| malformed("no issued line"))?;
    let expires = expires.ok_or_else(|| malformed("no expires line"))?;
    let list = ServerList {
        serial,
        issued,
        expires,
        endpoints,
    };
    list.validate()?;
    Ok(list)
}

impl ServerList {
    fn validate(&self) -> Result<(), ListError> {
        if self.endpoints.is_empty() {
            return Err(malformed("no endpoints"));
        }
        if self.endpoints.len() > MAX_ENDPOINTS {
            return Err(malformed(format!("more than {MAX_ENDPOINTS} endpoints")));
        }
        if self.expires <= self.issued {
            return Err(malformed("expires is not after issued"));
        }
        Ok(())
    }

    /// The body this list signs as, naming `signer` (a [`key_id`]).
    fn body(&self, signer: &str) -> Result<String, ListError> {
        self.validate()?;
        let mut out = format!(
            "version 1\nsigner {signer}\nserial {}\nissued {}\nexpires {}\n",
            self.serial, self.issued, self.expires
        );
        let mut group: Option<[u8; 32]> = None;
        for listed in &self.endpoints {
            let text = listed.endpoint.to_string();
            // Only what parses back to the same endpoint may be signed.
            if parse_endpoint(&text).as_ref() != Ok(&listed.endpoint) {
                return Err(malformed(format!("endpoint {text:?} is not valid")));
            }
            if listed.server_key != group {
                group = listed.server_key;
                match &group {
                    Some(key) => writeln!(out, "pk {}", URL_SAFE_NO_PAD.encode(key)),
                    None => writeln!(out, "pk -"),
                }
                .map_err(|_| malformed("formatting"))?;
            }
            writeln!(out, "endpoint {text}").map_err(|_| malformed("formatting"))?;
        }
        if !out
            .bytes()
            .all(|b| b == b'\n' || (b' '..=b'~').contains(&b))
        {
            return Err(malformed("an endpoint is not printable ASCII"));
        }
        Ok(out)
    }

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
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECRET: [u8; 32] = [0x42; 32];
    const NOW: u64 = 1_764_172_800;

    fn sample() -> ServerList {
        ServerList {
            serial: 7,
            issued: NOW - 60,
            expires: NOW + 30 * 86_400,
            endpoints: vec![
                Listed {
                    endpoint: Endpoint::direct("203.0.113.5", 443),
                    server_key: None,
                },
                Listed {
                    endpoint: Endpoint {
                        host: "cdn.example.net".into(),
                        port: 443,
                        ws_path: Some("/s/abc".into()),
                    },
                    server_key: None,
                },
                Listed {
                    endpoint: Endpoint::direct("2001:db8::1", 8443),
                    server_key: Some([5; 32]),
                },
                Listed {
                    endpoint: Endpoint::direct("proxy.example.org", 443),
                    server_key: None,
                },
            ],
        }
    }

    fn public() -> [u8; 32] {
        public_key(&SECRET)
    }

    #[test]
    fn signs_and_verifies() {
        let text = sign(&sample(), &SECRET).unwrap();
        assert!(text.starts_with(PREFIX));
        assert!(text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)));
        assert_eq!(verify(&text, &public(), NOW, None).unwrap(), sample());
        assert_eq!(verify(&text, &public(), NOW, Some(6)).unwrap(), sample());
        // Whitespace around (a file's newline) is fine.
        assert_eq!(
            verify(&format!("\n{text}\n"), &public(), NOW, Some(6)).unwrap(),
            sample()
        );
    }

    #[test]
    fn the_body_is_readable_and_grouped_by_key() {
        let text = sign(&sample(), &SECRET).unwrap();
        let body = URL_SAFE_NO_PAD
            .decode(text[PREFIX.len()..].split('.').next().unwrap())
            .unwrap();
        let body = String::from_utf8(body).unwrap();
        let want = format!(
            "version 1\nsigner {}\nserial 7\nissued {}\nexpires {}\n\
             endpoint 203.0.113.5:443\nendpoint wss://cdn.example.net/s/abc\n\
             pk BQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQU\nendpoint [2001:db8::1]:8443\n\
             pk -\nendpoint proxy.example.org:443\n",
            key_id(&public()),
            NOW - 60,
            NOW + 30 * 86_400
        );
        assert_eq!(body, want);
    }

    #[test]
    fn names_each_refusal() {
        let text = sign(&sample(), &SECRET).unwrap();
        let other = [0x43; 32];
        assert_eq!(
            verify(&text, &public_key(&other), NOW, None),
            Err(ListError::WrongKey {
                signer: key_id(&public()),
                expected: key_id(&public_key(&other)),
            })
        );
        assert_eq!(
            verify(&text, &public(), NOW, Some(7)),
            Err(ListError::Stale { serial: 7, have: 7 })
        );
        assert_eq!(
            verify(&text, &public(), NOW, Some(9)),
            Err(ListError::Stale { serial: 7, have: 9 })
        );
        let expires = NOW + 30 * 86_400;
        assert_eq!(
            verify(&text, &public(), expires, None),
            Err(ListError::Expired {
                expires,
                now: expires
            })
        );
        let early = NOW - 60 - MAX_CLOCK_SKEW - 1;
        assert_eq!(
            verify(&text, &public(), early, None),
            Err(ListError::NotYetValid {
                issued: NOW - 60,
                now: early
            })
        );
        // Within the allowed skew it is fine.
        assert!(verify(&text, &public(), early + 1, None).is_ok());
        // A signature from another key over a body naming our key.
        let body = sample().body(&key_id(&public())).unwrap();
        let forged = sign_body(body.as_bytes(), &other);
        assert_eq!(
            verify(&forged, &public(), NOW, None),
            Err(ListError::BadSignature)
        );
        assert!(matches!(
            verify("SZL2.abc.def", &public(), NOW, None),
            Err(ListError::Malformed(_))
        ));
        assert!(matches!(
            verify(&"A".repeat(MAX_TEXT + 1), &public(), NOW, None),
            Err(ListError::Malformed(_))
        ));
    }

    #[test]
    fn refuses_malformed_bodies_even_when_signed() {
        let id = key_id(&public());
        let head = format!("version 1\nsigner {id}\nserial 1\nissued 10\nexpires 20\n");
        let cases: Vec<(String, &str)> = vec![
            (format!("{head}endpoint h.example:443"), "newline"),
            (head.clone(), "no endpoints"),
            (
                format!("version 2\nsigner {id}\nserial 1\nissued 10\nexpires 20\nendpoint h:1\n"),
                "version 2",
            ),
            (
                format!("signer {id}\nversion 1\nserial 1\nissued 10\nexpires 20\nendpoint h:1\n"),
                "first line",
            ),
            (format!("{head}endpoint h.example:0\n"), "line 6"),
            (
                format!("{head}serial 2\nendpoint h:1\n"),
                "serial given twice",
            ),
            (format!("{head}pk AAAA\nendpoint h:1\n"), "pk must be"),
            (format!("{head}endpoint h:1\r\n"), "not printable"),
            (format!("{head}endpoint h:1\nnospace\n"), "FIELD VALUE"),
            (
                "version 1\nsigner me\nserial 1\nissued 10\nexpires 20\nendpoint h:1\n".into(),
                "signer must be a key id",
            ),
            (
                format!("version 1\nsigner {id}\nserial 1\nissued 10\nexpires 10\nendpoint h:1\n"),
                "expires is not after",
            ),
            (
                format!("version 1\nsigner {id}\nserial x\nissued 10\nexpires 20\nendpoint h:1\n"),
                "serial is not a number",
            ),
            (
                format!("version 1\nsigner {id}\nissued 10\nexpires 20\nendpoint h:1\n"),
                "no serial",
            ),
        ];
        for (body, want) in cases {
            let text = sign_body(body.as_bytes(), &SECRET);
            match verify_signature(&text, &public()) {
                Err(ListError::Malformed(what)) => {
                    assert!(what.contains(want), "{body:?}: {what:?} lacks {want:?}")
                }
                other => panic!("{body:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn ignores_unknown_fields_and_duplicate_endpoints() {
        let id = key_id(&public());
        let body = format!(
            "version 1\nsigner {id}\nserial 3\nissued 10\nexpires 20\nendpoint h:1\n\
             weight 5\nendpoint h:1\nendpoint g:2\n"
        );
        let list = verify_signature(&sign_body(body.as_bytes(), &SECRET), &public()).unwrap();
        let hosts: Vec<_> = list
            .endpoints
            .iter()
            .map(|l| l.endpoint.to_string())
            .collect();
        assert_eq!(hosts, ["h:1", "g:2"]);
    }

    #[test]
    fn bounds_the_endpoint_count_on_both_sides() {
        let mut list = sample();
        list.endpoints = (0..=MAX_ENDPOINTS)
            .map(|i| Listed {
                endpoint: Endpoint::direct(format!("h{i}.example"), 443),
                server_key: None,
            })
            .collect();
        assert!(matches!(sign(&list, &SECRET), Err(ListError::Malformed(_))));
        let body = format!(
            "version 1\nsigner {}\nserial 1\nissued 10\nexpires 20\n{}",
            key_id(&public()),
            (0..=MAX_ENDPOINTS)
                .map(|i| format!("endpoint h{i}:1\n"))
                .collect::<String>()
        );
        let text = sign_body(body.as_bytes(), &SECRET);
        assert_eq!(
            verify_signature(&text, &public()),
            Err(malformed(format!("more than {MAX_ENDPOINTS} endpoints")))
        );
        list.endpoints.truncate(MAX_ENDPOINTS);
        let text = sign(&list, &SECRET).unwrap();
        assert!(text.len() <= MAX_TEXT);
        assert_eq!(verify_signature(&text, &public()).unwrap(), list);
    }

    /// The seed corpus holds a list signed by another Ed25519
    /// implementation (Python's `cryptography`, i.e. OpenSSL) with the fuzz
    /// key: ours must accept it, so the format is plain RFC 8032 Ed25519.
    #[test]
    fn accepts_a_list_signed_elsewhere() {
        let text = include_str!("../../../fuzz/corpus/server_list/signed_simple");
        let list = verify(text, &public_key(&[0x5a; 32]), 1_800_000_000, Some(8)).unwrap();
        assert_eq!(list.serial, 9);
        assert_eq!(
            list.endpoints,
            [Listed {
                endpoint: Endpoint::direct("203.0.113.5", 443),
                server_key: None
            }]
        );
    }

    #[test]
    fn key_ids_are_stable() {
        assert_eq!(key_id(&[0; 32]).len(), 16);
        assert_ne!(key_id(&[0; 32]), key_id(&[1; 32]));
        assert_eq!(key_id(&public()), key_id(&public_key(&SECRET)));
    }

    #[test]
    fn every_single_byte_change_is_refused() {
        let text = sign(&sample(), &SECRET).unwrap();
        for i in 0..text.len() {
            for with in [b'A', b'_', b'.', b'0', b' '] {
                let mut bytes = text.clone().into_bytes();
                if bytes[i] == with {
                    continue;
                }
                bytes[i] = with;
                let changed = String::from_utf8(bytes).unwrap();
                assert!(
                    verify(&changed, &public(), NOW, None).is_err(),
                    "byte {i} set to {with}"
                );
            }
        }
    }

    fn endpoint() -> impl Strategy<Value = Listed> {
        (
            "[a-z][a-z0-9-]{0,20}(\\.[a-z]{2,5})?",
            1u16..,
            proptest::option::of("/[a-z0-9/]{0,10}"),
            proptest::option::of(any::<[u8; 32]>()),
        )
            .prop_map(|(host, port, ws_path, server_key)| Listed {
                endpoint: Endpoint {
                    host,
                    port,
                    ws_path,
                },
                server_key,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn any_list_roundtrips(
            serial in any::<u64>(),
            issued in 0u64..u64::MAX / 2,
            life in 1u64..1 << 40,
            endpoints in proptest::collection::vec(endpoint(), 1..12),
        ) {
            let mut endpoints = endpoints;
            let mut seen = std::collections::HashSet::new();
            endpoints.retain(|e| seen.insert(e.clone()));
            let list = ServerList { serial, issued, expires: issued + life, endpoints };
            let text = sign(&list, &SECRET).unwrap();
            prop_assert_eq!(verify(&text, &public(), issued, None).unwrap(), list);
        }

        #[test]
        fn any_changed_byte_is_refused(at in any::<prop::sample::Index>(), with in any::<u8>()) {
            let text = sign(&sample(), &SECRET).unwrap();
            let mut bytes = text.clone().into_bytes();
            let i = at.index(bytes.len());
            prop_assume!(bytes[i] != with);
            bytes[i] = with;
            let changed = String::from_utf8_lossy(&bytes).into_owned();
            // Whitespace at the ends is trimmed, so a space replacing the
            // first or last byte still changes the text: it must be refused.
            prop_assert!(verify(&changed, &public(), NOW, None).is_err(), "{}", changed);
        }
    }
}
