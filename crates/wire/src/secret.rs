//! Secrets and proxy links (spec §1).
//!
//! A secret is a 16-byte key plus a form that tells the client how to speak:
//! plain (bare obfuscated2), `dd` (bare obfuscated2 with padded intermediate
//! framing) or `ee` (fake-TLS with an SNI domain). The proxy itself only needs
//! the key and, for `ee`, the domain.

use base64::Engine as _;
use std::fmt;
use zeroize::Zeroize;

/// Length of the shared key inside every secret form.
pub const KEY_LEN: usize = 16;

/// The longest domain we put into an `ee` secret. TDLib truncates longer
/// ones so that its ClientHello stays 517 bytes; refusing them up front is
/// clearer than a client silently using a different SNI.
pub const MAX_DOMAIN_LEN: usize = 182;

/// The 16-byte key shared by the proxy and its clients.
///
/// `Debug` never prints the bytes, so a key cannot reach a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Key(pub [u8; KEY_LEN]);

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl Key {
    /// Parses exactly 32 hex digits (case-insensitive).
    pub fn from_hex(text: &str) -> Result<Key, SecretError> {
        let text = text.trim();
        if text.len() != KEY_LEN * 2 {
            return Err(SecretError::KeyLength { got: text.len() });
        }
        let mut key = [0u8; KEY_LEN];
        hex::decode_to_slice(text, &mut key).map_err(|_| SecretError::NotHex)?;
        Ok(Key(key))
    }

    /// A fresh key from `rng`, never starting with 0xdd or 0xee: Telethon
    /// strips a leading dd/ee byte from any secret, so such a key (1 in 128)
    /// would fail there.
    pub fn generate(rng: &mut dyn FnMut(&mut [u8])) -> Key {
        let mut bytes = [0xddu8; KEY_LEN];
        while bytes[0] == 0xdd || bytes[0] == 0xee {
            rng(&mut bytes);
        }
        Key(bytes)
    }

    /// Lower-case hex of the key. Only for building links and the state file.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// Which handshake a client uses with a secret (spec §1.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Bare obfuscated2 with abridged or intermediate framing (plain secret).
    Plain,
    /// Bare obfuscated2 with padded intermediate framing (`dd` secret).
    Padded,
    /// Fake-TLS, then obfuscated2 with padded intermediate framing (`ee` secret).
    FakeTls,
}

impl Mode {
    /// The name used on the command line and in the config: `plain`, `dd`, `ee`.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Plain => "plain",
            Mode::Padded => "dd",
            Mode::FakeTls => "ee",
        }
    }

    /// Parses `plain`, `dd` (or `secure`/`padded`), `ee` (or `tls`/`faketls`).
    pub fn parse(text: &str) -> Result<Mode, SecretError> {
        match text.trim().to_ascii_lowercase().as_str() {
            "plain" | "classic" => Ok(Mode::Plain),
            "dd" | "secure" | "padded" => Ok(Mode::Padded),
            "ee" | "tls" | "faketls" | "fake-tls" => Ok(Mode::FakeTls),
            other => Err(SecretError::UnknownMode(other.to_string())),
        }
    }
}

/// A decoded secret as a client holds it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    /// The shared key.
    pub key: Key,
    /// How the client speaks.
    pub mode: Mode,
    /// The SNI domain of an `ee` secret, `None` for the other forms.
    pub domain: Option<String>,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("mode", &self.mode)
            .field("domain", &self.domain)
            .finish_non_exhaustive()
    }
}

/// Why a secret or key was refused. Each message says what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// A bare key of the wrong length.
    #[error("expected 32 hex characters (a 16-byte key), got {got}")]
    KeyLength {
        /// Characters received.
        got: usize,
    },
    /// Not hex digits.
    #[error("expected hex digits 0-9a-f")]
    NotHex,
    /// Neither hex nor base64url.
    #[error("not valid hex or base64url text")]
    Encoding,
    /// Decoded to fewer than 16 bytes.
    #[error("secret decodes to {0} bytes; a secret holds at least a 16-byte key")]
    TooShort(usize),
    /// `dd` secret of the wrong length.
    #[error("a dd secret is exactly 17 bytes (dd + 16-byte key), got {0}")]
    PaddedLength(usize),
    /// `ee` secret without a domain.
    #[error("an ee secret needs a domain after the 16-byte key (ee + key + domain)")]
    MissingDomain,
    /// Unknown first byte.
    #[error("secret starts with 0x{0:02x}; expected 16 bytes (plain), dd… or ee…")]
    UnknownForm(u8),
    /// Domain is not a plausible host name.
    #[error(
        "domain {0:?} is not a valid host name (letters, digits, '-', '.', at most 182 bytes)"
    )]
    BadDomain(String),
    /// Domain is an IP address: browsers send no server name for one.
    #[error(
        "{0:?} is an IP address; a domain name is needed (it is sent as the TLS server name, which browsers never send for an IP address)"
    )]
    IpDomain(String),
    /// Unknown mode name.
    #[error("unknown mode {0:?}; expected plain, dd or ee")]
    UnknownMode(String),
}

/// Checks that `domain` can be used verbatim as a TLS SNI host name: a DNS
/// name, not an IP address. A browser sends no server name for an IP
/// address, and takes a name whose last label is a number (`10.0.0.1`,
/// `1.2.3`, `0x7f.1`) as an IPv4 address (the WHATWG URL rules), so those
/// are refused too.
pub fn validate_domain(domain: &str) -> Result<(), SecretError> {
    if is_ip_literal(domain) {
        return Err(SecretError::IpDomain(domain.to_string()));
    }
    let ok = !domain.is_empty()
        && domain.len() <= MAX_DOMAIN_LEN
        && domain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        && !domain.starts_with('.')
        && !domain.ends_with('.');
    if ok {
        Ok(())
    } else {
        Err(SecretError::BadDomain(domain.to_string()))
    }
}

/// An IP address as a browser reads a host: an IPv6 or IPv4 literal (with
/// or without brackets), or a name whose last label is a decimal or `0x`
/// hexadecimal number.
fn is_ip_literal(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    let last = host.trim_end_matches('.').rsplit('.').next().unwrap_or("");
    let hex = last
        .strip_prefix("0x")
        .or_else(|| last.strip_prefix("0X"))
        .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
    !last.is_empty() && (last.bytes().all(|b| b.is_ascii_digit()) || hex)
}

/// Keys printed in samizdat's own README, docs and example config (now or
/// in earlier versions). Anyone who read them could use a proxy that kept
/// one, so [`weak_key`] refuses them.
pub const PUBLISHED_KEYS: [&str; 4] = [
    "00112233445566778899aabbccddeeff",
    "ffeeddccbbaa99887766554433221100",
    "0123456789abcdef0123456789abcdef",
    "fedcba9876543210fedcba9876543210",
];

/// Why `key` must not be a proxy key (a phrase: "the key is …"), or `None` for a key that looks like
/// one made by a random generator.
///
/// Refused: the [`PUBLISHED_KEYS`], and keys with a pattern a person types
/// or a guesser tries first: one byte or hex digit repeated, counting up or
/// down by bytes or by hex digits, a pattern of up to 8 bytes or 16 hex
/// digits repeated, or too few distinct hex digits. Every test is set so
/// that a key from a random generator trips one with a probability below
/// 10^-12 (at most 5 distinct hex digits of 32: 3·10^-13; one hex digit
/// 18 times or more: 7·10^-13; the same step between neighbouring hex
/// digits in 20 of 31 places: 6·10^-16, the same size of step either way in
/// 24: 2·10^-15; between bytes in 10 of 15: 3·10^-16).
pub fn weak_key(key: &Key) -> Option<&'static str> {
    let hex = key.to_hex();
    if PUBLISHED_KEYS.contains(&hex.as_str()) {
        return Some("published in samizdat's README or example config");
    }
    let bytes = &key.0;
    let nibbles: Vec<u8> = bytes.iter().flat_map(|b| [b >> 4, b & 15]).collect();
    // Repeats with a short period: one byte, "abab…", "deadbeefdeadbeef".
    if (1..=16).any(|p| nibbles.iter().skip(p).zip(&nibbles).all(|(a, b)| a == b)) {
        return Some("a short pattern repeated");
    }
    let mut counts = [0usize; 16];
    for n in &nibbles {
        counts[usize::from(*n)] += 1;
    }
    let distinct = counts.iter().filter(|&&c| c > 0).count();
    if distinct <= 5 || counts.iter().any(|&c| c >= 18) {
        return Some("mostly the same few hex digits (a random key has about 14 different ones)");
    }
    // Steps between neighbours: 00 11 22 … (+0x11), ff ee dd … (-0x11),
    // 01 23 45 … and 0123456789abcdef… (+1 hex digit), or up then down
    // (0123…fedc…: +1 and -1). The most common step, and the most common
    // step size either way.
    let steps = |values: &[u8], modulus: usize| -> (usize, usize) {
        let mut counts = vec![0usize; modulus];
        for w in values.windows(2) {
            counts[(usize::from(w[1]) + modulus - usize::from(w[0])) % modulus] += 1;
        }
        let one_way = counts.iter().copied().max().unwrap_or(0);
        let both_ways = (1..modulus / 2)
            .map(|d| counts[d] + counts[modulus - d])
            .max()
            .unwrap_or(0);
        (one_way, both_ways)
    };
    let (byte_steps, byte_sizes) = steps(bytes, 256);
    let (digit_steps, digit_sizes) = steps(&nibbles, 16);
    if byte_steps >= 10 || byte_sizes >= 10 || digit_steps >= 20 || digit_sizes >= 24 {
        return Some("counting up or down");
    }
    None
}

impl Secret {
    /// Decodes secret text the way clients do: hex first, then base64url
    /// (we also tolerate `=` padding and the standard `+/` alphabet).
    pub fn parse(text: &str) -> Result<Secret, SecretError> {
        let text = text.trim();
        let raw = if text.len() % 2 == 0 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(text).map_err(|_| SecretError::NotHex)?
        } else {
            let unpadded = text.trim_end_matches('=');
            let url = unpadded.replace('+', "-").replace('/', "_");
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(url.as_bytes())
                .map_err(|_| SecretError::Encoding)?
        };
        Secret::from_bytes(&raw)
    }

    /// Decodes the raw secret bytes (spec §1.2 rules, as TDLib applies them).
    pub fn from_bytes(raw: &[u8]) -> Result<Secret, SecretError> {
        let key_at = |offset: usize| {
            let mut key = [0u8; KEY_LEN];
            key.copy_from_slice(&raw[offset..offset + KEY_LEN]);
            Key(key)
        };
        match raw.len() {
            n if n < KEY_LEN => Err(SecretError::TooShort(n)),
            KEY_LEN => Ok(Secret {
                key: key_at(0),
                mode: Mode::Plain,
                domain: None,
            }),
            n => match raw[0] {
                0xdd if n == KEY_LEN + 1 => Ok(Secret {
                    key: key_at(1),
                    mode: Mode::Padded,
                    domain: None,
                }),
                0xdd => Err(SecretError::PaddedLength(n)),
                0xee if n == KEY_LEN + 1 => Err(SecretError::MissingDomain),
                0xee => {
                    let domain = String::from_utf8(raw[KEY_LEN + 1..].to_vec())
                        .map_err(|_| SecretError::BadDomain("<not UTF-8>".into()))?;
                    validate_domain(&domain)?;
                    Ok(Secret {
                        key: key_at(1),
                        mode: Mode::FakeTls,
                        domain: Some(domain),
                    })
                }
                other => Err(SecretError::UnknownForm(other)),
            },
        }
    }

    /// The raw bytes of this secret as a client holds them.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(KEY_LEN + 1 + self.domain.as_ref().map_or(0, |d| d.len()));
        match self.mode {
            Mode::Plain => {}
            Mode::Padded => out.push(0xdd),
            Mode::FakeTls => out.push(0xee),
        }
        out.extend_from_slice(&self.key.0);
        if let (Mode::FakeTls, Some(domain)) = (self.mode, &self.domain) {
            out.extend_from_slice(domain.as_bytes());
        }
        out
    }

    /// Lower-case hex text, the form we put in links by default.
    pub fn to_hex(&self) -> String {
        hex::encode(self.to_bytes())
    }

    /// base64url text without padding (the form mtg prints).
    pub fn to_base64url(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.to_bytes())
    }
}

/// Encodes a query-string value: unreserved characters stay, the rest is %XX.
fn query_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The two forms of a proxy link (spec §1.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Links {
    /// `tg://proxy?...`, opens the app directly.
    pub tg: String,
    /// `https://t.me/proxy?...`, works from a browser.
    pub tme: String,
}

/// Builds `tg://proxy` and `https://t.me/proxy` links. `secret_text` is the
/// secret as text (hex or base64url); `host` a DNS name or an IP literal
/// (IPv6 without brackets, as the apps expect).
pub fn links(host: &str, port: u16, secret_text: &str) -> Links {
    let query = format!(
        "server={}&port={}&secret={}",
        query_escape(host),
        port,
        query_escape(secret_text)
    );
    Links {
        tg: format!("tg://proxy?{query}"),
        tme: format!("https://t.me/proxy?{query}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_never_start_with_dd_or_ee() {
        // A generator whose first draws start with the bytes Telethon strips.
        let mut firsts = [0xdd, 0xee, 0xdd, 0x42].into_iter();
        let mut rng = |buf: &mut [u8]| {
            buf.fill(7);
            buf[0] = firsts.next().expect("no more than four draws");
        };
        let key = Key::generate(&mut rng);
        assert_eq!(key.0[0], 0x42);
        assert_eq!(key.0[1..], [7; KEY_LEN - 1]);
    }

    #[test]
    fn ip_addresses_are_not_domains() {
        for ip in [
            "10.0.0.1",
            "127.0.0.1",
            "1.2.3",
            "3232235777",
            "0x7f.1",
            "a.b.0X1F",
            "10.0.0.1.",
            "::1",
            "[2001:db8::1]",
        ] {
            let err = validate_domain(ip).unwrap_err();
            assert_eq!(err, SecretError::IpDomain(ip.to_string()), "{ip}");
            assert!(err.to_string().contains("a domain name is needed"), "{err}");
        }
        for name in [
            "www.example.com",
            "1.example",
            "10.0.0.1x",
            "x-1.example.0a",
            "a_b.c",
        ] {
            assert_eq!(validate_domain(name), Ok(()), "{name}");
        }
        // The ee secret's domain goes through the same check.
        let mut raw = vec![0xee];
        raw.extend_from_slice(&[7; 16]);
        raw.extend_from_slice(b"10.0.0.1");
        assert_eq!(
            Secret::from_bytes(&raw).unwrap_err(),
            SecretError::IpDomain("10.0.0.1".into())
        );
    }
}

#[cfg(test)]
mod weak_key_tests {
    use super::{weak_key, Key, PUBLISHED_KEYS};

    fn key(hex: &str) -> Key {
        Key::from_hex(hex).unwrap()
    }

    #[test]
    fn published_and_patterned_keys_are_refused() {
        for k in PUBLISHED_KEYS {
            assert!(weak_key(&key(k)).unwrap().contains("published"), "{k}");
        }
        for k in [
            "00000000000000000000000000000000",
            "ffffffffffffffffffffffffffffffff",
            "abababababababababababababababab",
            "deadbeefdeadbeefdeadbeefdeadbeef",
            "0123456789abcdeffedcba9876543210",
            "5a0123456789abcdef0123456789abcd",
            "0102030405060708090a0b0c0d0e0f10",
            "a11ce000000000000000000000000001",
            "11112222333344441111222233334444",
        ] {
            assert!(weak_key(&key(k)).is_some(), "{k} accepted");
        }
    }

    #[test]
    fn keys_from_a_random_generator_pass() {
        // Fixed keys made with `openssl rand -hex 16`, and a deterministic
        // stream of 100,000 more (splitmix64).
        for k in [
            "9f3c27d1e84b6a05c2f17e9d40ab8356",
            "5e81c0a4f7392bd66d0e1f8a2c947b3e",
        ] {
            assert_eq!(weak_key(&key(k)), None, "{k}");
        }
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        for _ in 0..100_000 {
            let mut b = [0u8; 16];
            b[..8].copy_from_slice(&next().to_le_bytes());
            b[8..].copy_from_slice(&next().to_le_bytes());
            let k = Key(b);
            assert_eq!(weak_key(&k), None, "{}", k.to_hex());
        }
    }
}
