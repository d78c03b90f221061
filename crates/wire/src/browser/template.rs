//! Parsing a captured ClientHello into a [`Template`].
//!
//! Every field the browser keeps fixed is kept as captured; every field it
//! draws per connection is reduced to its shape (a GREASE marker, a key
//! share of some group, an ECH payload length), which
//! [`Template::build`](super::Template::build) fills in afresh.

use super::keys::{MLKEM768_EK_LEN, P256_LEN, X25519_LEN};
use super::Browser;
use crate::codec::Reader;
use crate::faketls::{is_grease, HANDSHAKE};
use std::sync::OnceLock;

/// Extension type: server_name.
pub(crate) const EXT_SNI: u16 = 0x0000;
const EXT_GROUPS: u16 = 0x000a;
const EXT_SIG_ALGS: u16 = 0x000d;
const EXT_PADDING: u16 = 0x0015;
const EXT_SESSION_TICKET: u16 = 0x0023;
const EXT_PSK: u16 = 0x0029;
const EXT_EARLY_DATA: u16 = 0x002a;
const EXT_VERSIONS: u16 = 0x002b;
/// Extension type: key_share.
pub(crate) const EXT_KEY_SHARE: u16 = 0x0033;
/// Extension type: encrypted_client_hello.
pub(crate) const EXT_ECH: u16 = 0xfe0d;
/// Named group: x25519.
pub(crate) const GROUP_X25519: u16 = 0x001d;
/// Named group: secp256r1.
pub(crate) const GROUP_P256: u16 = 0x0017;
/// Named group: X25519MLKEM768 (ML-KEM-768 key, then X25519 key).
pub(crate) const GROUP_X25519_MLKEM768: u16 = 0x11ec;

/// Why a record cannot be a template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// Not one complete handshake record holding exactly one ClientHello.
    #[error("not one TLS record holding one ClientHello")]
    NotClientHello,
    /// A length field overruns its container, or a list is malformed.
    #[error("ClientHello field {0} is malformed")]
    Malformed(&'static str),
    /// Well-formed, but with something the builder cannot reproduce (a key
    /// share group it cannot make a real key for, no X25519 share, a
    /// session id that is not 32 bytes).
    #[error("ClientHello not usable as a template: {0}")]
    Unsupported(&'static str),
    /// The server name given to `try_build` is not a DNS name a browser
    /// would send: empty, longer than [`MAX_SNI`](super::MAX_SNI) bytes, not
    /// printable ASCII, or an IP literal.
    #[error("server name must be a DNS name of 1 to 253 printable ASCII bytes")]
    BadServerName,
}

/// Which TLS stack made the capture, and so which per-connection rules
/// apply. Told apart by GREASE: BoringSSL always sends it, NSS never does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stack {
    /// Chrome: GREASE, extension permutation, real X25519 ECH enc, ECH
    /// payload length drawn from four sizes.
    BoringSsl,
    /// Firefox: fixed order, random ECH enc and AEAD, fixed payload length.
    Nss,
}

/// One key share entry, by shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Share {
    /// A GREASE group with its captured (meaningless) data.
    Grease(Vec<u8>),
    /// x25519: the caller's slot.
    X25519,
    /// X25519MLKEM768: a fresh ML-KEM-768 key, then an X25519 key.
    Hybrid,
    /// secp256r1: a fresh uncompressed point.
    P256,
}

/// The captured GREASE ECH extension's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ech {
    /// HPKE KDF id, fixed per browser.
    pub(crate) kdf: u16,
    /// HPKE AEAD id as captured (BoringSSL keeps it; NSS draws it).
    pub(crate) aead: u16,
    /// Length of the encapsulated key.
    pub(crate) enc_len: usize,
    /// Length of the encrypted payload as captured.
    pub(crate) payload_len: usize,
}

/// One extension, by shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ext {
    /// A GREASE extension with its captured data.
    Grease(Vec<u8>),
    /// server_name, rewritten for each hello.
    ServerName,
    /// A list of u16 values (groups, signature algorithms) in which GREASE
    /// entries are redrawn; `vec8` is set for supported_versions' 1-byte
    /// length prefix.
    U16List {
        kind: u16,
        values: Vec<u16>,
        vec8: bool,
    },
    /// key_share entries in order.
    KeyShare(Vec<Share>),
    /// GREASE encrypted_client_hello.
    Ech(Ech),
    /// padding, sized by the browser's rule for each hello.
    Padding,
    /// Anything kept verbatim.
    Opaque { kind: u16, data: Vec<u8> },
}

/// A browser's ClientHello with the per-connection fields reduced to their
/// shape. Make one with [`Template::parse`] from a captured record or take a
/// built-in one with [`Template::builtin`]; make hellos with
/// [`Template::build`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// Record-layer version of the captured record (0x0301 for both).
    pub(crate) record_version: u16,
    /// ClientHello legacy_version.
    pub(crate) legacy_version: u16,
    /// Cipher suites; GREASE entries are redrawn.
    pub(crate) ciphers: Vec<u16>,
    /// legacy_compression_methods, verbatim.
    pub(crate) compression: Vec<u8>,
    /// Extensions in captured order (pre_shared_key and early_data dropped).
    pub(crate) extensions: Vec<Ext>,
    /// Which per-connection rules apply.
    pub(crate) stack: Stack,
    /// Whether the hybrid share's X25519 half repeats the x25519 share
    /// (Firefox does, Chrome draws a separate key), read off the capture.
    pub(crate) hybrid_reuses_x25519: bool,
}

/// The template's error for a field that overruns its container.
fn short(what: &'static str) -> TemplateError {
    TemplateError::Malformed(what)
}

/// The template's error for bytes left after a field.
fn end(r: &Reader<'_>, what: &'static str) -> Result<(), TemplateError> {
    r.expect_end().map_err(|_| TemplateError::Malformed(what))
}

fn u16_list(data: &[u8], what: &'static str) -> Result<Vec<u16>, TemplateError> {
    if data.len() % 2 != 0 {
        return Err(TemplateError::Malformed(what));
    }
    Ok(data
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect())
}

/// Key share entries, and the hybrid's X25519 half and the x25519 key as
/// captured (to tell whether the browser reuses one for the other).
type Shares<'a> = (Vec<Share>, Option<&'a [u8]>, Option<&'a [u8]>);

fn parse_shares(data: &[u8]) -> Result<Shares<'_>, TemplateError> {
    let mut r = Reader::new(data);
    let mut list = r.sub16().ok_or(short("key_share"))?;
    end(&r, "key_share")?;
    let (mut shares, mut hybrid_x, mut x) = (Vec::new(), None, None);
    while !list.is_empty() {
        let group = list.u16().ok_or(short("key_share group"))?;
        let key = list.vec16().ok_or(short("key_share key"))?;
        let share = match (group, key.len()) {
            (g, _) if is_grease(g) => Share::Grease(key.to_vec()),
            (GROUP_X25519, X25519_LEN) if x.is_none() => {
                x = Some(key);
                Share::X25519
            }
            (GROUP_X25519_MLKEM768, n) if n == MLKEM768_EK_LEN + X25519_LEN => {
                hybrid_x = Some(&key[MLKEM768_EK_LEN..]);
                Share::Hybrid
            }
            (GROUP_P256, P256_LEN) => Share::P256,
            _ => return Err(TemplateError::Unsupported("key share group or size")),
        };
        shares.push(share);
    }
    Ok((shares, hybrid_x, x))
}

fn parse_ech(data: &[u8]) -> Result<Ech, TemplateError> {
    let mut r = Reader::new(data);
    if r.u8().ok_or(short("ech type"))? != 0 {
        return Err(TemplateError::Unsupported(
            "ECH extension is not an outer hello's",
        ));
    }
    let kdf = r.u16().ok_or(short("ech kdf"))?;
    let aead = r.u16().ok_or(short("ech aead"))?;
    r.u8().ok_or(short("ech config_id"))?;
    let enc_len = r.vec16().ok_or(short("ech enc"))?.len();
    let payload_len = r.vec16().ok_or(short("ech payload"))?.len();
    end(&r, "ech")?;
    Ok(Ech {
        kdf,
        aead,
        enc_len,
        payload_len,
    })
}

impl Template {
    /// Parses one captured ClientHello record (5-byte header included).
    ///
    /// pre_shared_key and early_data are dropped and session_ticket is
    /// emptied: a template must not carry a resumption of someone's session.
    pub fn parse(record: &[u8]) -> Result<Template, TemplateError> {
        let mut rec = Reader::new(record);
        let [kind, major, minor, hi, lo] = rec.array().ok_or(short("record header"))?;
        if kind != HANDSHAKE || major != 0x03 {
            return Err(TemplateError::NotClientHello);
        }
        let record_version = u16::from_be_bytes([major, minor]);
        let body_len = u16::from_be_bytes([hi, lo]);
        let mut hs = rec.sub(body_len.into()).ok_or(short("record"))?;
        end(&rec, "record")?;
        if hs.u8().ok_or(short("handshake type"))? != 0x01 {
            return Err(TemplateError::NotClientHello);
        }
        let len = hs.u24().ok_or(short("handshake length"))?;
        let mut r = hs.sub(len as usize).ok_or(short("handshake"))?;
        end(&hs, "handshake")?;
        let legacy_version = r.u16().ok_or(short("legacy_version"))?;
        r.skip(32).ok_or(short("random"))?;
        if r.vec8().ok_or(short("session_id"))?.len() != 32 {
            return Err(TemplateError::Unsupported("session id is not 32 bytes"));
        }
        let ciphers = u16_list(r.vec16().ok_or(short("cipher_suites"))?, "cipher_suites")?;
        if ciphers.is_empty() {
            return Err(TemplateError::Malformed("cipher_suites"));
        }
        let compression = r.vec8().ok_or(short("compression_methods"))?.to_vec();
        let mut exts = r.sub16().ok_or(short("extensions"))?;
        end(&r, "extensions")?;
        let mut extensions = Vec::new();
        let (mut hybrid_x, mut x25519) = (None, None);
        while !exts.is_empty() {
            let kind = exts.u16().ok_or(short("extension type"))?;
            let data = exts.vec16().ok_or(short("extension data"))?;
            let ext = match kind {
                k if is_grease(k) => Ext::Grease(data.to_vec()),
                EXT_SNI => Ext::ServerName,
                EXT_GROUPS | EXT_SIG_ALGS => {
                    let mut d = Reader::new(data);
                    let values = u16_list(d.vec16().ok_or(short("u16 list"))?, "u16 list")?;
                    end(&d, "u16 list")?;
                    Ext::U16List {
                        kind,
                        values,
                        vec8: false,
                    }
                }
                EXT_VERSIONS => {
                    let mut d = Reader::new(data);
                    let values = u16_list(
                        d.vec8().ok_or(short("supported_versions"))?,
                        "supported_versions",
                    )?;
                    end(&d, "supported_versions")?;
                    Ext::U16List {
                        kind,
                        values,
                        vec8: true,
                    }
                }
                EXT_KEY_SHARE => {
                    let (shares, h, x) = parse_shares(data)?;
                    (hybrid_x, x25519) = (h, x);
                    Ext::KeyShare(shares)
                }
                EXT_ECH => Ext::Ech(parse_ech(data)?),
                EXT_PADDING => Ext::Padding,
                EXT_PSK | EXT_EARLY_DATA => continue,
                EXT_SESSION_TICKET => Ext::Opaque {
                    kind,
                    data: Vec::new(),
                },
                _ => Ext::Opaque {
                    kind,
                    data: data.to_vec(),
                },
            };
            extensions.push(ext);
        }
        let Some(x25519) = x25519 else {
            return Err(TemplateError::Unsupported("no x25519 key share"));
        };
        let has = |want: fn(&Ext) -> bool| extensions.iter().filter(|e| want(e)).count();
        if has(|e| matches!(e, Ext::ServerName)) != 1 {
            return Err(TemplateError::Unsupported("not exactly one server_name"));
        }
        let greasy = ciphers.iter().any(|&c| is_grease(c));
        Ok(Template {
            record_version,
            legacy_version,
            ciphers,
            compression,
            extensions,
            stack: if greasy { Stack::BoringSsl } else { Stack::Nss },
            hybrid_reuses_x25519: hybrid_x == Some(x25519),
        })
    }

    /// The built-in template of `browser`: the first capture in
    /// `templates/<browser>.hellos`, parsed once.
    pub fn builtin(browser: Browser) -> &'static Template {
        static CHROME: OnceLock<Template> = OnceLock::new();
        static FIREFOX: OnceLock<Template> = OnceLock::new();
        let cell = match browser {
            Browser::Chrome => &CHROME,
            Browser::Firefox => &FIREFOX,
        };
        cell.get_or_init(|| {
            let line = browser
                .captures()
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with('#'))
                .expect("templates/*.hellos holds a capture");
            let record = hex::decode(line).expect("templates/*.hellos is hex");
            Template::parse(&record).expect("the built-in capture is a usable template")
        })
    }

    /// Whether hellos from this template shuffle their extensions per
    /// connection (Chrome since 110), keeping GREASE extensions in place.
    pub fn permutes_extensions(&self) -> bool {
        self.stack == Stack::BoringSsl
    }

    /// Whether the X25519 half of the X25519MLKEM768 share repeats the
    /// x25519 share, so the caller must fill [`HelloSlots::x25519_in_hybrid`]
    /// with the same key (Firefox).
    ///
    /// [`HelloSlots::x25519_in_hybrid`]: super::HelloSlots::x25519_in_hybrid
    pub fn hybrid_reuses_x25519(&self) -> bool {
        self.hybrid_reuses_x25519
    }
}
