//! JA3 and JA4 fingerprints of a ClientHello record.
//!
//! - JA3 (Salesforce, 2017; salesforce/ja3 README): the decimal
//!   `version,ciphers,extensions,groups,point_formats` of the hello, lists in
//!   wire order joined by `-`, GREASE (RFC 8701) removed, then MD5. Because
//!   the extension order is kept, a client that permutes its extensions
//!   (Chrome since 110) gets a new JA3 on every connection.
//! - JA4 (FoxIO, `technical_details/JA4.md`), TLS over TCP only:
//!   `t` + version + `d`/`i` + cipher count + extension count + ALPN
//!   first/last character, `_`, 12 hex of SHA-256 of the *sorted* cipher
//!   list, `_`, 12 hex of SHA-256 of the *sorted* extension list without SNI
//!   and ALPN, `_`, signature algorithms in wire order. Sorting makes it
//!   independent of extension order.
//!
//! The input is one complete handshake record, 5-byte header included,
//! holding one ClientHello; anything else gives `None`. The parser here
//! keeps every list the fingerprints need, which the proxy's own parser
//! ([`wire::faketls::client_hello`]) deliberately does not.

use md5::Md5;
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use wire::codec::Reader;
use wire::faketls::{is_grease, HANDSHAKE};

/// The parts of a ClientHello that JA3 and JA4 read, GREASE removed.
struct Hello {
    /// `legacy_version` of the ClientHello body (JA3's "SSLVersion").
    legacy_version: u16,
    ciphers: Vec<u16>,
    /// Extension types in wire order.
    extensions: Vec<u16>,
    /// supported_groups (0x000a), wire order.
    groups: Vec<u16>,
    /// ec_point_formats (0x000b).
    point_formats: Vec<u8>,
    /// signature_algorithms (0x000d), wire order.
    sig_algs: Vec<u16>,
    /// supported_versions (0x002b), if the extension is present.
    versions: Option<Vec<u16>>,
    /// The first ALPN protocol name, if any.
    alpn: Option<Vec<u8>>,
}

/// A list of big-endian u16 values with GREASE removed; `None` if odd.
fn u16s(data: &[u8]) -> Option<Vec<u16>> {
    if data.len() % 2 != 0 {
        return None;
    }
    Some(
        data.chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .filter(|&v| !is_grease(v))
            .collect(),
    )
}

fn parse(record: &[u8]) -> Option<Hello> {
    let mut rec = Reader::new(record);
    let [kind, major, _minor] = rec.array()?;
    if kind != HANDSHAKE || major != 0x03 {
        return None;
    }
    let mut hs = rec.sub16()?;
    rec.expect_end().ok()?;
    if hs.u8()? != 0x01 {
        return None;
    }
    let len = hs.u24()?;
    let mut r = hs.sub(len as usize)?;
    let legacy_version = r.u16()?;
    r.skip(32)?; // random
    r.vec8()?; // legacy_session_id
    let ciphers = u16s(r.vec16()?)?;
    r.vec8()?; // legacy_compression_methods
    let mut hello = Hello {
        legacy_version,
        ciphers,
        extensions: Vec::new(),
        groups: Vec::new(),
        point_formats: Vec::new(),
        sig_algs: Vec::new(),
        versions: None,
        alpn: None,
    };
    if r.is_empty() {
        return Some(hello);
    }
    let mut exts = r.sub16()?;
    r.expect_end().ok()?;
    while !exts.is_empty() {
        let kind = exts.u16()?;
        let mut data = exts.sub16()?;
        if is_grease(kind) {
            continue;
        }
        hello.extensions.push(kind);
        match kind {
            0x000a => hello.groups = u16s(data.vec16()?)?,
            0x000b => hello.point_formats = data.vec8()?.to_vec(),
            0x000d => hello.sig_algs = u16s(data.vec16()?)?,
            0x002b => hello.versions = Some(u16s(data.vec8()?)?),
            0x0010 => {
                let mut list = data.sub16()?;
                hello.alpn = match list.is_empty() {
                    true => None,
                    false => Some(list.vec8()?.to_vec()),
                };
            }
            _ => {}
        }
    }
    Some(hello)
}

fn join<T: ToString>(values: &[T], sep: &str) -> String {
    values
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(sep)
}

/// The JA3 string: `771,4865-4866-…,0-23-65281-…,29-23-24,0`, GREASE
/// removed from ciphers, extensions and groups, empty lists left empty.
pub fn ja3_string(record: &[u8]) -> Option<String> {
    parse(record).map(|h| ja3_fields(&h))
}

/// The five JA3 fields of a parsed hello, comma-separated.
fn ja3_fields(h: &Hello) -> String {
    format!(
        "{},{},{},{},{}",
        h.legacy_version,
        join(&h.ciphers, "-"),
        join(&h.extensions, "-"),
        join(&h.groups, "-"),
        join(&h.point_formats, "-"),
    )
}

/// JA3: the lowercase hex MD5 of [`ja3_string`].
pub fn ja3(record: &[u8]) -> Option<String> {
    Some(hex::encode(Md5::digest(ja3_string(record)?.as_bytes())))
}

/// JA3N, the normalised JA3: the [`ja3_string`] with its extension list
/// sorted ascending, so it stays the same across Chrome's per-connection
/// extension permutation (which gives a new JA3 on every connection).
pub fn ja3n_string(record: &[u8]) -> Option<String> {
    let mut h = parse(record)?;
    h.extensions.sort_unstable();
    Some(ja3_fields(&h))
}

/// JA3N: the lowercase hex MD5 of [`ja3n_string`].
pub fn ja3n(record: &[u8]) -> Option<String> {
    Some(hex::encode(Md5::digest(ja3n_string(record)?.as_bytes())))
}

/// JA4's two-character TLS version (JA4.md, "TLS and DTLS Version"): the
/// highest supported_versions entry if the extension is there, else the
/// ClientHello's legacy_version.
fn version_code(h: &Hello) -> &'static str {
    let v = match &h.versions {
        Some(list) => list.iter().copied().max().unwrap_or(0),
        None => h.legacy_version,
    };
    match v {
        0x0304 => "13",
        0x0303 => "12",
        0x0302 => "11",
        0x0301 => "10",
        0x0300 => "s3",
        0x0002 => "s2",
        0xfeff => "d1",
        0xfefd => "d2",
        0xfefc => "d3",
        _ => "00",
    }
}

/// JA4's ALPN pair (JA4.md, "ALPN Extension Value"): first and last byte of
/// the first protocol if both are ASCII alphanumeric, else first and last
/// character of its hex; `00` without one.
fn alpn_code(alpn: Option<&[u8]>) -> String {
    let Some(alpn) = alpn.filter(|a| !a.is_empty()) else {
        return "00".to_string();
    };
    let (first, last) = (alpn[0], alpn[alpn.len() - 1]);
    if first.is_ascii_alphanumeric() && last.is_ascii_alphanumeric() {
        format!("{}{}", first as char, last as char)
    } else {
        let hex = hex::encode(alpn);
        format!("{}{}", &hex[..1], &hex[hex.len() - 1..])
    }
}

fn hex4_list(values: &[u16]) -> String {
    let mut out = String::with_capacity(values.len() * 5);
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{v:04x}");
    }
    out
}

/// First 12 hex characters of SHA-256, or twelve zeros for an empty list
/// (JA4+ general rule: "if a hashed field is empty, the output is 000s").
fn hash12(list_empty: bool, text: &str) -> String {
    if list_empty {
        return "0".repeat(12);
    }
    hex::encode(Sha256::digest(text.as_bytes()))[..12].to_string()
}

/// The three JA4 parts: `a`, then the raw cipher and extension strings.
fn ja4_parts(h: &Hello) -> (String, String, String) {
    let a = format!(
        "t{}{}{:02}{:02}{}",
        version_code(h),
        if h.extensions.contains(&0x0000) {
            'd'
        } else {
            'i'
        },
        h.ciphers.len().min(99),
        h.extensions.len().min(99),
        alpn_code(h.alpn.as_deref()),
    );
    let mut ciphers = h.ciphers.clone();
    ciphers.sort_unstable();
    let mut exts: Vec<u16> = h
        .extensions
        .iter()
        .copied()
        .filter(|&e| e != 0x0000 && e != 0x0010)
        .collect();
    exts.sort_unstable();
    let mut c = hex4_list(&exts);
    if !h.sig_algs.is_empty() {
        c.push('_');
        c.push_str(&hex4_list(&h.sig_algs));
    }
    (a, hex4_list(&ciphers), c)
}

/// JA4 (TCP), e.g. `t13d1516h2_8daaf6152771_d8a2da3f94cd`.
pub fn ja4(record: &[u8]) -> Option<String> {
    let h = parse(record)?;
    let (a, b, c) = ja4_parts(&h);
    let c_empty = !h.extensions.iter().any(|&e| e != 0x0000 && e != 0x0010);
    Some(format!(
        "{a}_{}_{}",
        hash12(h.ciphers.is_empty(), &b),
        hash12(c_empty, &c)
    ))
}

/// JA4_r, the unhashed JA4 (JA4.md, "Raw Output"): `a_ciphers_exts_sigalgs`
/// with sorted lists, for explaining why two fingerprints differ.
pub fn ja4_r(record: &[u8]) -> Option<String> {
    let h = parse(record)?;
    let (a, b, c) = ja4_parts(&h);
    Some(format!("{a}_{b}_{c}"))
}
