//! Obfuscated2: the 64-byte init packet and its AES-256-CTR key derivation
//! (spec §2).
//!
//! The same code serves both ends: a Telegram client (or our test client)
//! is the initiator toward the proxy, the proxy is the initiator toward a
//! DC, and the proxy is the responder toward clients. With a secret key the
//! key material is hashed with it (client ↔ proxy); without (proxy ↔ DC) it
//! is used raw.

use crate::cipher::Ctr;
use crate::secret::Key;
use sha2::{Digest, Sha256};

/// Length of the init packet.
pub const INIT_LEN: usize = 64;

/// The protocol tag at offset 56: which framing follows (spec §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tag {
    /// `ef ef ef ef`
    Abridged,
    /// `ee ee ee ee`
    Intermediate,
    /// `dd dd dd dd`
    Padded,
}

impl Tag {
    /// The four bytes on the wire.
    pub fn bytes(self) -> [u8; 4] {
        match self {
            Tag::Abridged => [0xef; 4],
            Tag::Intermediate => [0xee; 4],
            Tag::Padded => [0xdd; 4],
        }
    }

    /// The tag these bytes name, if any.
    pub fn from_bytes(bytes: [u8; 4]) -> Option<Tag> {
        match bytes {
            [0xef, 0xef, 0xef, 0xef] => Some(Tag::Abridged),
            [0xee, 0xee, 0xee, 0xee] => Some(Tag::Intermediate),
            [0xdd, 0xdd, 0xdd, 0xdd] => Some(Tag::Padded),
            _ => None,
        }
    }

    /// Short name for logs and metrics: `ef`, `ee`, `dd`.
    pub fn name(self) -> &'static str {
        match self {
            Tag::Abridged => "ef",
            Tag::Intermediate => "ee",
            Tag::Padded => "dd",
        }
    }
}

/// The two keystreams of one side of an obfuscated2 connection.
#[derive(Debug)]
pub struct Ciphers {
    /// Applied to bytes this side sends.
    pub encrypt: Ctr,
    /// Applied to bytes this side receives.
    pub decrypt: Ctr,
}

/// Key and IV of one direction, before a cipher is made from them.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyIv {
    /// AES-256 key (already hashed with the secret where one is used).
    pub key: [u8; 32],
    /// Initial counter block.
    pub iv: [u8; 16],
}

impl std::fmt::Debug for KeyIv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyIv(<redacted>)")
    }
}

impl KeyIv {
    fn cipher(&self) -> Ctr {
        Ctr::new(&self.key, &self.iv)
    }
}

/// Derives (initiator→responder, responder→initiator) key material from an
/// init packet (spec §2.3). Only bytes 8..56 are used.
pub fn derive(init: &[u8; INIT_LEN], secret: Option<&Key>) -> (KeyIv, KeyIv) {
    let pre: &[u8] = &init[8..56];
    let mut rev = [0u8; 48];
    rev.copy_from_slice(pre);
    rev.reverse();
    let make = |material: &[u8]| {
        let mut key = [0u8; 32];
        match secret {
            Some(k) => {
                let mut h = Sha256::new();
                h.update(&material[..32]);
                h.update(k.0);
                key.copy_from_slice(&h.finalize());
            }
            None => key.copy_from_slice(&material[..32]),
        }
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&material[32..48]);
        KeyIv { key, iv }
    };
    (make(pre), make(&rev))
}

/// Whether 64 random bytes may be sent bare on TCP without looking like
/// another protocol a server might sniff (spec §2.2). Only the first eight
/// bytes matter; the tag and DC are written afterwards.
pub fn is_safe_bare_prefix(random: &[u8; INIT_LEN]) -> bool {
    const FORBIDDEN: [u32; 7] = [
        0x4441_4548, // "HEAD"
        0x5453_4f50, // "POST"
        0x2054_4547, // "GET "
        0x4954_504f, // "OPTI"
        0x0201_0316, // 16 03 01 02, a TLS ClientHello
        0xdddd_dddd,
        0xeeee_eeee,
    ];
    let first = u32::from_le_bytes([random[0], random[1], random[2], random[3]]);
    random[0] != 0xef && !FORBIDDEN.contains(&first) && random[4..8] != [0, 0, 0, 0]
}

/// 64 random bytes from `rng` that [`is_safe_bare_prefix`] accepts, for an
/// init sent bare on TCP: draws again until they are (about one draw in
/// 2^24 is refused, so this loops once in practice).
pub fn safe_init_random(rng: &mut dyn FnMut(&mut [u8])) -> [u8; INIT_LEN] {
    let mut random = [0u8; INIT_LEN];
    loop {
        rng(&mut random);
        if is_safe_bare_prefix(&random) {
            return random;
        }
    }
}

/// What an initiator sends and the ciphers it keeps.
#[derive(Debug)]
pub struct Initiated {
    /// The 64 bytes to send: plaintext 0..56, ciphertext 56..64 (spec §2.4).
    pub wire: [u8; INIT_LEN],
    /// `encrypt` is positioned after the init (offset 64); `decrypt` at 0.
    pub ciphers: Ciphers,
}

/// Builds an init packet from 64 random bytes (spec §2.4). The caller makes
/// sure the bytes satisfy [`is_safe_bare_prefix`] when sending bare on TCP.
pub fn initiate(random: [u8; INIT_LEN], tag: Tag, dc: i16, secret: Option<&Key>) -> Initiated {
    let mut plain = random;
    plain[56..60].copy_from_slice(&tag.bytes());
    plain[60..62].copy_from_slice(&dc.to_le_bytes());
    let (c2s, s2c) = derive(&plain, secret);
    let mut encrypt = c2s.cipher();
    let mut encrypted = plain;
    encrypt.apply(&mut encrypted);
    let mut wire = plain;
    wire[56..].copy_from_slice(&encrypted[56..]);
    Initiated {
        wire,
        ciphers: Ciphers {
            encrypt,
            decrypt: s2c.cipher(),
        },
    }
}

/// A responder's view of an init packet that carried a valid tag.
#[derive(Debug)]
pub struct Accepted {
    /// Framing the initiator announced.
    pub tag: Tag,
    /// The DC id at offset 60 (spec §5.2).
    pub dc: i16,
    /// `decrypt` is positioned after the init (offset 64); `encrypt` at 0.
    pub ciphers: Ciphers,
    /// Key and IV toward the initiator, kept for fast mode (spec §2.6).
    pub reply: KeyIv,
}

/// Tries to accept an init packet with one key (spec §2.5). `None` means the
/// tag did not decrypt to one of the three tags: wrong key, or not obfuscated2.
///
/// The check costs one SHA-256 and one AES block; the reply direction is
/// derived only on success, so trying many keys stays cheap.
pub fn accept(wire: &[u8; INIT_LEN], secret: Option<&Key>) -> Option<Accepted> {
    let (c2s, s2c) = derive(wire, secret);
    let mut decrypt = c2s.cipher();
    let mut plain = *wire;
    decrypt.apply(&mut plain);
    let tag = Tag::from_bytes([plain[56], plain[57], plain[58], plain[59]])?;
    let dc = i16::from_le_bytes([plain[60], plain[61]]);
    Some(Accepted {
        tag,
        dc,
        ciphers: Ciphers {
            encrypt: s2c.cipher(),
            decrypt,
        },
        reply: s2c,
    })
}

/// The proxy→DC init of fast mode (spec §2.6): bytes 8..56 are
/// `rev(client reply key || client reply iv)`, so the DC→proxy keystream
/// equals the proxy→client one and DC bytes can pass through unchanged.
pub fn fast_mode_random(mut random: [u8; INIT_LEN], client_reply: &KeyIv) -> [u8; INIT_LEN] {
    let mut material = [0u8; 48];
    material[..32].copy_from_slice(&client_reply.key);
    material[32..].copy_from_slice(&client_reply.iv);
    material.reverse();
    random[8..56].copy_from_slice(&material);
    random
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_init_random_draws_again_until_the_prefix_is_safe() {
        // A generator that first yields an init looking like "GET ", then
        // one starting with 0xef, then a safe one.
        let mut draws = 0u8;
        let mut rng = |buf: &mut [u8]| {
            draws += 1;
            buf.fill(draws);
            match draws {
                1 => buf[..4].copy_from_slice(b"GET "),
                2 => buf[0] = 0xef,
                _ => {}
            }
        };
        let random = safe_init_random(&mut rng);
        assert_eq!(random, [3; INIT_LEN]);
        assert!(is_safe_bare_prefix(&random));
    }
}
