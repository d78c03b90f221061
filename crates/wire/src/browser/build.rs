//! Making a fresh hello from a [`Template`].
//!
//! All per-connection values are drawn first, into a [`Draw`], in a fixed
//! order from the caller's filler; encoding is then a pure function of the
//! template, the server name and the draw, so it can run twice when the
//! padding extension's length depends on the rest of the hello.

use super::keys::{mlkem768_public, p256_public, x25519_public, X25519_LEN};
use super::template::{Ech, Ext, Share, Stack, Template, TemplateError};
use super::MAX_SNI;
use crate::faketls::{is_grease, HANDSHAKE, RANDOM_LEN, RANDOM_OFFSET};

/// A hello made by [`Template::build`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltHello {
    /// The whole TLS record, 5-byte header included, with the slots zero.
    pub record: Vec<u8>,
    /// Where the caller's 32-byte fields are.
    pub slots: HelloSlots,
}

/// Byte offsets inside [`BuiltHello::record`] of the 32-byte fields the
/// transport fills in; each range is zero as built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HelloSlots {
    /// The ClientHello random.
    pub random: usize,
    /// The legacy_session_id contents (after its length byte).
    pub session_id: usize,
    /// The key of the x25519 key share entry.
    pub x25519: usize,
    /// The X25519 half of the X25519MLKEM768 share, when the browser puts
    /// the same key there (Firefox): the caller writes its key twice. `None`
    /// when the browser draws a separate key (Chrome), which the builder has
    /// already filled with a real one.
    pub x25519_in_hybrid: Option<usize>,
}

impl BuiltHello {
    /// A hello that no template built (a captured or hand-made record), with
    /// its slots where [`crate::tunnel::locate`] finds them and the
    /// hybrid share's X25519 half, if any, taken as a repeat of the X25519
    /// share (as Firefox and Go send it). Hellos a client sends come from
    /// [`Template::build`], which knows what the browser does there.
    pub fn from_record(record: Vec<u8>) -> Result<BuiltHello, crate::tunnel::LocateError> {
        let at = crate::tunnel::locate(&record)?;
        Ok(BuiltHello {
            slots: HelloSlots {
                random: at.random,
                session_id: at.session_id,
                x25519: at.x25519,
                x25519_in_hybrid: at.hybrid_x25519,
            },
            record,
        })
    }
}

/// BoringSSL's GREASE indexes (`ssl_grease_index_t`), one random byte each.
#[derive(Clone, Copy)]
enum Grease {
    Cipher = 0,
    Group = 1,
    Ext1 = 2,
    Ext2 = 3,
    Version = 4,
    SigAlg = 5,
}

/// Every per-connection value of one hello.
struct Draw {
    /// GREASE codepoints by [`Grease`] index.
    grease: [u16; 6],
    /// Extension order: indexes into the template's extension list.
    order: Vec<usize>,
    /// The ML-KEM-768 encapsulation key of the hybrid share.
    mlkem: Vec<u8>,
    /// The hybrid share's own X25519 key, when it is not the caller's.
    hybrid_x25519: Option<[u8; X25519_LEN]>,
    /// The secp256r1 share.
    p256: Vec<u8>,
    /// The GREASE ECH extension's body.
    ech: Vec<u8>,
}

/// A uniform-enough index below `n` (n ≤ 64, so the bias of a 32-bit
/// modulus is under 2^-26).
fn below(n: usize, rng: &mut dyn FnMut(&mut [u8])) -> usize {
    let mut b = [0u8; 4];
    rng(&mut b);
    u32::from_be_bytes(b) as usize % n
}

fn grease_value(seed: u8) -> u16 {
    let b = (seed & 0xf0) | 0x0a;
    u16::from_be_bytes([b, b])
}

fn draw_ech(t: &Template, ech: &Ech, rng: &mut dyn FnMut(&mut [u8])) -> Vec<u8> {
    // BoringSSL: AEAD as configured; payload 32·{4..7} bytes plus the
    // 16-byte tag, so a GREASE ECH looks like a padded inner hello. NSS:
    // AES-128-GCM or ChaCha20-Poly1305 by a coin flip, fixed payload size.
    let boring_sizes = ech.payload_len >= 16
        && (ech.payload_len - 16) % 32 == 0
        && (128..=224).contains(&(ech.payload_len - 16));
    let (aead, payload_len) = match t.stack {
        Stack::BoringSsl if boring_sizes => (ech.aead, 32 * (4 + below(4, rng)) + 16),
        Stack::BoringSsl => (ech.aead, ech.payload_len),
        Stack::Nss => {
            let mut coin = [0u8; 1];
            rng(&mut coin);
            (
                if coin[0] & 1 == 0 { 0x0001 } else { 0x0003 },
                ech.payload_len,
            )
        }
    };
    let mut config_id = [0u8; 1];
    rng(&mut config_id);
    // BoringSSL's GREASE enc is a real X25519 key; NSS's is random bytes.
    let mut enc = vec![0u8; ech.enc_len];
    rng(&mut enc);
    if t.stack == Stack::BoringSsl && ech.enc_len == X25519_LEN {
        let mut secret = [0u8; 32];
        secret.copy_from_slice(&enc);
        enc = x25519_public(secret).to_vec();
    }
    let mut payload = vec![0u8; payload_len];
    rng(&mut payload);
    let mut out = Vec::with_capacity(8 + enc.len() + payload.len());
    out.push(0); // outer ClientHello
    out.extend_from_slice(&ech.kdf.to_be_bytes());
    out.extend_from_slice(&aead.to_be_bytes());
    out.push(config_id[0]);
    out.extend_from_slice(&(enc.len() as u16).to_be_bytes());
    out.extend_from_slice(&enc);
    out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    out.extend_from_slice(&payload);
    out
}

fn draw(t: &Template, rng: &mut dyn FnMut(&mut [u8])) -> Draw {
    let mut seeds = [0u8; 6];
    rng(&mut seeds);
    let mut grease = seeds.map(grease_value);
    if grease[Grease::Ext2 as usize] == grease[Grease::Ext1 as usize] {
        // BoringSSL never sends the same GREASE extension twice.
        grease[Grease::Ext2 as usize] ^= 0x1010;
    }
    // Chrome shuffles every extension except GREASE (and pre_shared_key,
    // which templates never carry): Fisher-Yates over the movable ones.
    let mut order: Vec<usize> = (0..t.extensions.len()).collect();
    if t.permutes_extensions() {
        let movable: Vec<usize> = order
            .iter()
            .copied()
            .filter(|&i| !matches!(t.extensions[i], Ext::Grease(_)))
            .collect();
        let mut shuffled = movable.clone();
        for i in (1..shuffled.len()).rev() {
            shuffled.swap(i, below(i + 1, rng));
        }
        for (slot, ext) in movable.into_iter().zip(shuffled) {
            order[slot] = ext;
        }
    }
    let mut d = Draw {
        grease,
        order,
        mlkem: Vec::new(),
        hybrid_x25519: None,
        p256: Vec::new(),
        ech: Vec::new(),
    };
    for ext in &t.extensions {
        match ext {
            Ext::KeyShare(shares) => {
                for share in shares {
                    match share {
                        Share::Hybrid => {
                            let mut seed = [0u8; 64];
                            rng(&mut seed);
                            d.mlkem = mlkem768_public(seed);
                            if !t.hybrid_reuses_x25519 {
                                let mut secret = [0u8; 32];
                                rng(&mut secret);
                                d.hybrid_x25519 = Some(x25519_public(secret));
                            }
                        }
                        Share::P256 => {
                            let mut secret = [0u8; 32];
                            rng(&mut secret);
                            d.p256 = p256_public(secret).to_vec();
                        }
                        Share::Grease(_) | Share::X25519 => {}
                    }
                }
            }
            Ext::Ech(ech) => d.ech = draw_ech(t, ech, rng),
            _ => {}
        }
    }
    d
}

/// Appends a big-endian length prefix of `width` bytes around what `body`
/// writes.
fn prefixed(out: &mut Vec<u8>, width: usize, body: impl FnOnce(&mut Vec<u8>)) {
    let at = out.len();
    out.resize(at + width, 0);
    body(out);
    let len = (out.len() - at - width) as u32;
    out[at..at + width].copy_from_slice(&len.to_be_bytes()[4 - width..]);
}

fn u16s(out: &mut Vec<u8>, values: &[u16], grease: u16) {
    for &v in values {
        let v = if is_grease(v) { grease } else { v };
        out.extend_from_slice(&v.to_be_bytes());
    }
}

/// Where the caller's key went, found while encoding.
#[derive(Default)]
struct KeyOffsets {
    x25519: usize,
    hybrid_x25519: Option<usize>,
}

fn key_share(out: &mut Vec<u8>, shares: &[Share], d: &Draw, offs: &mut KeyOffsets) {
    prefixed(out, 2, |out| {
        for share in shares {
            let (group, key): (u16, &[u8]) = match share {
                Share::Grease(data) => (d.grease[Grease::Group as usize], data),
                Share::X25519 => (super::template::GROUP_X25519, &[0; X25519_LEN]),
                Share::Hybrid => (super::template::GROUP_X25519_MLKEM768, &[]),
                Share::P256 => (super::template::GROUP_P256, &d.p256),
            };
            out.extend_from_slice(&group.to_be_bytes());
            prefixed(out, 2, |out| match share {
                Share::X25519 => {
                    offs.x25519 = out.len();
                    out.extend_from_slice(key);
                }
                Share::Hybrid => {
                    out.extend_from_slice(&d.mlkem);
                    match d.hybrid_x25519 {
                        Some(own) => out.extend_from_slice(&own),
                        None => {
                            offs.hybrid_x25519 = Some(out.len());
                            out.extend_from_slice(&[0; X25519_LEN]);
                        }
                    }
                }
                _ => out.extend_from_slice(key),
            });
        }
    });
}

/// Encodes the hello; `padding` is the padding extension's data length
/// (`None`: leave the extension out).
fn encode(t: &Template, sni: &[u8], d: &Draw, padding: Option<usize>) -> BuiltHello {
    let mut out = Vec::with_capacity(2100);
    out.push(HANDSHAKE);
    out.extend_from_slice(&t.record_version.to_be_bytes());
    let mut offs = KeyOffsets::default();
    let mut session_id = 0;
    prefixed(&mut out, 2, |out| {
        out.push(0x01); // client_hello
        prefixed(out, 3, |out| {
            out.extend_from_slice(&t.legacy_version.to_be_bytes());
            out.extend_from_slice(&[0; RANDOM_LEN]);
            out.push(32);
            session_id = out.len();
            out.extend_from_slice(&[0; 32]);
            prefixed(out, 2, |out| {
                u16s(out, &t.ciphers, d.grease[Grease::Cipher as usize])
            });
            prefixed(out, 1, |out| out.extend_from_slice(&t.compression));
            prefixed(out, 2, |out| {
                let mut greases = 0;
                for &i in &d.order {
                    let ext = &t.extensions[i];
                    let kind = match ext {
                        Ext::Grease(_) => {
                            greases += 1;
                            let which = if greases == 1 {
                                Grease::Ext1
                            } else {
                                Grease::Ext2
                            };
                            d.grease[which as usize]
                        }
                        Ext::ServerName => super::template::EXT_SNI,
                        Ext::U16List { kind, .. } | Ext::Opaque { kind, .. } => *kind,
                        Ext::KeyShare(_) => super::template::EXT_KEY_SHARE,
                        Ext::Ech(_) => super::template::EXT_ECH,
                        Ext::Padding if padding.is_none() => continue,
                        Ext::Padding => 0x0015,
                    };
                    out.extend_from_slice(&kind.to_be_bytes());
                    prefixed(out, 2, |out| match ext {
                        Ext::Grease(data) | Ext::Opaque { data, .. } => out.extend_from_slice(data),
                        Ext::ServerName => prefixed(out, 2, |out| {
                            out.push(0); // host_name
                            prefixed(out, 2, |out| out.extend_from_slice(sni));
                        }),
                        Ext::U16List { kind, values, vec8 } => {
                            let grease = match *kind {
                                0x000a => d.grease[Grease::Group as usize],
                                0x002b => d.grease[Grease::Version as usize],
                                _ => d.grease[Grease::SigAlg as usize],
                            };
                            prefixed(out, if *vec8 { 1 } else { 2 }, |out| {
                                u16s(out, values, grease)
                            });
                        }
                        Ext::KeyShare(shares) => key_share(out, shares, d, &mut offs),
                        Ext::Ech(_) => out.extend_from_slice(&d.ech),
                        Ext::Padding => out.resize(out.len() + padding.unwrap_or(0), 0),
                    });
                }
            });
        });
    });
    BuiltHello {
        record: out,
        slots: HelloSlots {
            random: RANDOM_OFFSET,
            session_id,
            x25519: offs.x25519,
            x25519_in_hybrid: offs.hybrid_x25519,
        },
    }
}

/// The padding extension's data length by BoringSSL's rule (NSS's is the
/// same): a ClientHello message of 256..=511 bytes is padded to 512 (some
/// middleboxes choke on that range), with at least one byte of data.
fn padding_len(unpadded_message: usize) -> Option<usize> {
    if !(0x100..0x200).contains(&unpadded_message) {
        return None;
    }
    let pad = 0x200 - unpadded_message;
    // An extension header is four bytes; never send it empty.
    Some(if pad > 4 { pad - 4 } else { 1 })
}

impl Template {
    /// A fresh hello for `sni`: every per-connection field is new (from
    /// `rng`), and the random, legacy_session_id and x25519 key share (and
    /// the hybrid share's X25519 half if the browser reuses the key there)
    /// are left zero for the caller; see [`HelloSlots`].
    ///
    /// # Panics
    ///
    /// If `sni` is not a DNS name a browser would send: empty, longer than
    /// [`MAX_SNI`] bytes, not printable ASCII (give IDNs as A-labels), or an
    /// IP literal. [`Template::try_build`] returns an error instead. The
    /// name is sent lowercased, as browsers do.
    pub fn build(&self, sni: &str, rng: &mut dyn FnMut(&mut [u8])) -> BuiltHello {
        match self.try_build(sni, rng) {
            Ok(hello) => hello,
            Err(e) => panic!("Template::build({sni:?}): {e}"),
        }
    }

    /// [`Template::build`], with a bad server name as an error.
    pub fn try_build(
        &self,
        sni: &str,
        rng: &mut dyn FnMut(&mut [u8]),
    ) -> Result<BuiltHello, TemplateError> {
        // What a browser puts in server_name: a lowercase ASCII (A-label)
        // DNS name; for an IP literal it sends no server_name at all, which
        // would change the fingerprint, so those are refused too.
        let valid = !sni.is_empty()
            && sni.len() <= MAX_SNI
            && sni.bytes().all(|b| b.is_ascii_graphic())
            && sni.parse::<std::net::IpAddr>().is_err();
        if !valid {
            return Err(TemplateError::BadServerName);
        }
        let sni = sni.to_ascii_lowercase();
        let d = draw(self, rng);
        let hello = encode(self, sni.as_bytes(), &d, None);
        if !self.extensions.iter().any(|e| matches!(e, Ext::Padding)) {
            return Ok(hello);
        }
        // The message length without the padding extension (record header
        // off) decides whether it is sent and how long it is.
        Ok(match padding_len(hello.record.len() - 5) {
            Some(pad) => encode(self, sni.as_bytes(), &d, Some(pad)),
            None => hello,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::padding_len;

    #[test]
    fn padding_rule() {
        assert_eq!(padding_len(0xff), None);
        assert_eq!(padding_len(0x100), Some(0x100 - 4));
        assert_eq!(padding_len(0x1fb), Some(1));
        assert_eq!(padding_len(0x1fc), Some(1));
        assert_eq!(padding_len(0x1ff), Some(1));
        assert_eq!(padding_len(0x200), None);
    }
}
