//! Browser ClientHello templates: a first flight byte-for-byte in the shape
//! of a current Chrome or Firefox.
//!
//! A censor fingerprints the ClientHello (JA3/JA4, extension set and order,
//! key share sizes, GREASE) and can also check that values which a browser
//! draws per connection really are fresh and really are what they claim to
//! be (an ML-KEM key whose coefficients are all below 3329, an X25519 key
//! that is a curve point). So a template is a *captured* hello
//! (`templates/*.hellos`, made by `scripts/capture-hello/capture.sh`) plus
//! the per-connection rules of the browser's TLS stack, learned by comparing
//! ~20 captures field by field:
//!
//! | field | Chrome 156 (BoringSSL) | Firefox 153 (NSS) |
//! |---|---|---|
//! | extension order | shuffled, GREASE first/last fixed | fixed |
//! | GREASE | cipher, ext first, ext last (≠ first), groups = key share entry, versions, signature algorithms, each independent | none |
//! | X25519MLKEM768 share | fresh ML-KEM-768 key + its own fresh X25519 key | fresh ML-KEM-768 key + the standalone X25519 key again |
//! | secp256r1 share | — | fresh P-256 point |
//! | GREASE ECH | config id, X25519 enc (a real key), payload of 144/176/208/240 random bytes | config id, enc (random bytes), AEAD AES-128-GCM or ChaCha20-Poly1305, payload of fixed length |
//! | random, session id, X25519 share | fresh | fresh |
//!
//! The caller (the transport) owns the 32-byte random, the 32-byte
//! legacy_session_id and the X25519 key share (and, for Firefox, the X25519
//! half of the hybrid share, which must repeat it): [`Template::build`]
//! leaves them zero and says where they are ([`HelloSlots`]).
//!
//! Sans-io like the rest of the crate: randomness comes in as a filler
//! function.
//!
//! # Layout
//!
//! | module | job |
//! |---|---|
//! | `template` | [`Template`]: parse a captured hello, the built-in templates |
//! | `build` | [`Template::build`]: draw the per-connection values, encode |
//! | `keys` | real ML-KEM-768, X25519 and P-256 public keys from seed bytes |

mod build;
mod keys;
mod template;

pub use build::{BuiltHello, HelloSlots};
pub use template::{Template, TemplateError};

/// Longest server name [`Template::build`] accepts (a DNS name's limit).
pub const MAX_SNI: usize = 253;

/// A browser whose hello we imitate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Browser {
    /// Chromium / Chrome (BoringSSL).
    Chrome,
    /// Firefox (NSS).
    Firefox,
}

impl Browser {
    /// Every browser with a built-in template.
    pub const ALL: [Browser; 2] = [Browser::Chrome, Browser::Firefox];

    /// `"chrome"` or `"firefox"` (ASCII case-insensitive), as in configs.
    pub fn parse(name: &str) -> Option<Browser> {
        Browser::ALL
            .into_iter()
            .find(|b| b.name().eq_ignore_ascii_case(name))
    }

    /// The lowercase name [`Browser::parse`] reads back.
    pub fn name(self) -> &'static str {
        match self {
            Browser::Chrome => "chrome",
            Browser::Firefox => "firefox",
        }
    }

    /// The captured hellos this browser's template comes from: a `#` header
    /// line (version, date, command), then one hex record per line.
    pub fn captures(self) -> &'static str {
        match self {
            Browser::Chrome => include_str!("../../templates/chrome.hellos"),
            Browser::Firefox => include_str!("../../templates/firefox.hellos"),
        }
    }
}
