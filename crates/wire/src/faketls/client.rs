//! The client side of fake-TLS: building an authenticated ClientHello and
//! checking the server flight. Used by our test client, the benchmark load
//! generator and the lab; a Telegram app does the same on its side.

use super::{is_grease, CCS_RECORD, HANDSHAKE, RANDOM_LEN, RANDOM_OFFSET};
use crate::users::hmac_sha256;
use subtle::ConstantTimeEq;

/// Which real client's hello to imitate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HelloShape {
    /// The classic 517-byte TDLib/tdesktop template (fixed extension order).
    Classic517,
    /// A modern Chrome-like hello (~1.8 KB) with an X25519MLKEM768 key
    /// share, as TDLib 1.8.69 sends.
    PostQuantum,
}

fn ext(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(data);
}

fn grease(random: u8) -> u16 {
    let nibble = (random & 0xf0) | 0x0a;
    u16::from_be_bytes([nibble, nibble])
}

/// Builds a ClientHello record authenticated with `key` for `domain` at
/// unix time `now`. `fill` supplies randomness (session id, key shares,
/// GREASE).
pub fn build_hello(
    key: &[u8; 16],
    domain: &str,
    now: u32,
    shape: HelloShape,
    fill: &mut dyn FnMut(&mut [u8]),
) -> Vec<u8> {
    let mut rnd = [0u8; 4];
    fill(&mut rnd);
    let (g0, g1, g2) = (grease(rnd[0]), grease(rnd[1] ^ 0x10), grease(rnd[2] ^ 0x20));
    let mut session_id = [0u8; 32];
    fill(&mut session_id);
    let mut x25519 = [0u8; 32];
    fill(&mut x25519);

    let mut exts = Vec::with_capacity(2048);
    ext(&mut exts, g0, &[]);
    let name = domain.as_bytes();
    let mut sni = Vec::new();
    sni.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
    sni.push(0);
    sni.extend_from_slice(&(name.len() as u16).to_be_bytes());
    sni.extend_from_slice(name);
    ext(&mut exts, 0x0000, &sni);
    ext(&mut exts, 0x0017, &[]);
    ext(&mut exts, 0xff01, &[0x00]);
    let mut groups = vec![0x00, 0x08];
    groups.extend_from_slice(&g1.to_be_bytes());
    groups.extend_from_slice(&[0x00, 0x1d, 0x00, 0x17, 0x00, 0x18]);
    if shape == HelloShape::PostQuantum {
        groups[1] = 0x0a;
        groups.splice(4..4, [0x11, 0xec]);
    }
    ext(&mut exts, 0x000a, &groups);
    ext(&mut exts, 0x000b, &[0x01, 0x00]);
    ext(&mut exts, 0x0023, &[]);
    ext(&mut exts, 0x0010, b"\x00\x0c\x02h2\x08http/1.1");
    ext(&mut exts, 0x0005, &[0x01, 0x00, 0x00, 0x00, 0x00]);
    ext(
        &mut exts,
        0x000d,
        &[0x00, 0x10, 4, 3, 8, 4, 4, 1, 5, 3, 8, 5, 5, 1, 8, 6, 6, 1],
    );
    ext(&mut exts, 0x0012, &[]);
    let mut shares = Vec::new();
    shares.extend_from_slice(&g1.to_be_bytes());
    shares.extend_from_slice(&[0x00, 0x01, 0x00]);
    if shape == HelloShape::PostQuantum {
        let mut pq = vec![0u8; 1216];
        fill(&mut pq);
        shares.extend_from_slice(&[0x11, 0xec, 0x04, 0xc0]);
        shares.extend_from_slice(&pq);
    }
    shares.extend_from_slice(&[0x00, 0x1d, 0x00, 0x20]);
    shares.extend_from_slice(&x25519);
    let mut key_share = (shares.len() as u16).to_be_bytes().to_vec();
    key_share.extend_from_slice(&shares);
    ext(&mut exts, 0x0033, &key_share);
    ext(&mut exts, 0x002d, &[0x01, 0x01]);
    let mut versions = vec![0x06];
    versions.extend_from_slice(&g2.to_be_bytes());
    versions.extend_from_slice(&[0x03, 0x04, 0x03, 0x03]);
    ext(&mut exts, 0x002b, &versions);
    ext(&mut exts, 0x001b, &[0x02, 0x00, 0x02]);
    if shape == HelloShape::PostQuantum {
        ext(&mut exts, 0x4469, b"\x00\x03\x02h2");
    }
    ext(&mut exts, grease(rnd[3] ^ 0x30), &[0x00]);

    let suites: [u16; 15] = [
        0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc013, 0xc014,
        0x009c, 0x009d, 0x002f, 0x0035,
    ];
    let fixed = 2 + RANDOM_LEN + 1 + 32 + 2 + 2 + suites.len() * 2 + 2 + 2;
    // Pad the classic shape to exactly 517 bytes, as the apps do.
    if shape == HelloShape::Classic517 {
        let so_far = 5 + 4 + fixed + exts.len();
        if so_far + 4 <= 517 {
            ext(&mut exts, 0x0015, &vec![0u8; 517 - so_far - 4]);
        }
    }
    let body_len = fixed + exts.len();
    let mut record = Vec::with_capacity(9 + body_len);
    record.extend_from_slice(&[HANDSHAKE, 0x03, 0x01]);
    record.extend_from_slice(&((body_len + 4) as u16).to_be_bytes());
    record.push(0x01);
    record.extend_from_slice(&(body_len as u32).to_be_bytes()[1..]);
    record.extend_from_slice(&[0x03, 0x03]);
    record.extend_from_slice(&[0u8; RANDOM_LEN]);
    record.push(32);
    record.extend_from_slice(&session_id);
    record.extend_from_slice(&(((suites.len() + 1) * 2) as u16).to_be_bytes());
    record.extend_from_slice(&g0.to_be_bytes());
    debug_assert!(is_grease(g0));
    for s in suites {
        record.extend_from_slice(&s.to_be_bytes());
    }
    record.extend_from_slice(&[0x01, 0x00]);
    record.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    record.extend_from_slice(&exts);
    sign_hello(key, now, &mut record);
    record
}

/// Writes the authenticating random into a hello whose random is zero
/// (spec §4.2): `HMAC(K, record) XOR (0^28 || u32le(now))`.
pub fn sign_hello(key: &[u8; 16], now: u32, record: &mut [u8]) {
    record[RANDOM_OFFSET..RANDOM_OFFSET + RANDOM_LEN].fill(0);
    let mut digest = hmac_sha256(key, &[record]);
    for (d, t) in digest[28..].iter_mut().zip(now.to_le_bytes()) {
        *d ^= t;
    }
    record[RANDOM_OFFSET..RANDOM_OFFSET + RANDOM_LEN].copy_from_slice(&digest);
}

/// How long the server flight at the front of `buf` is, once its three
/// records are all there. `Err` if the bytes are not a flight's shape.
pub fn flight_len(buf: &[u8]) -> Result<Option<usize>, &'static str> {
    if buf.len() < 5 {
        return Ok(None);
    }
    if buf[..3] != [HANDSHAKE, 0x03, 0x03] {
        return Err("first record is not a TLS 1.2-versioned handshake");
    }
    let first = 5 + u16::from_be_bytes([buf[3], buf[4]]) as usize;
    let app = first + CCS_RECORD.len();
    if buf.len() < app + 5 {
        return Ok(None);
    }
    if buf[first..app] != CCS_RECORD || buf[app..app + 3] != [0x17, 0x03, 0x03] {
        return Err("ServerHello is not followed by ChangeCipherSpec and ApplicationData");
    }
    let total = app + 5 + u16::from_be_bytes([buf[app + 3], buf[app + 4]]) as usize;
    Ok((buf.len() >= total).then_some(total))
}

/// Checks the server's random: `HMAC(K, client_random || flight with random
/// zeroed)`, compared in constant time. This is how a client knows it
/// reached the proxy and not the cover site.
pub fn verify_flight(key: &[u8; 16], client_random: &[u8; RANDOM_LEN], flight: &[u8]) -> bool {
    if flight.len() < RANDOM_OFFSET + RANDOM_LEN {
        return false;
    }
    let mut zeroed = flight.to_vec();
    zeroed[RANDOM_OFFSET..RANDOM_OFFSET + RANDOM_LEN].fill(0);
    let digest = hmac_sha256(key, &[client_random, &zeroed]);
    bool::from(digest.ct_eq(&flight[RANDOM_OFFSET..RANDOM_OFFSET + RANDOM_LEN]))
}
