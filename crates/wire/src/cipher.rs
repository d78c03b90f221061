//! AES-256-CTR with a 128-bit big-endian counter (spec §0), the keystream
//! under every obfuscated2 connection.

use aes::Aes256;
use ctr::cipher::{KeyIvInit, StreamCipher};

/// One direction's keystream. Its position carries over across packets for
/// the life of the connection, so each pump owns exactly one.
///
/// The 528-byte cipher state lives on the heap: a connection's futures
/// move ciphers through several async frames, and inline every move left a
/// copy behind (measured: about 6 KB of an idle relay's 11 KB task).
pub struct Ctr(Box<ctr::Ctr128BE<Aes256>>);

impl Ctr {
    /// A cipher at keystream offset 0.
    pub fn new(key: &[u8; 32], iv: &[u8; 16]) -> Ctr {
        // Lengths are fixed by the types, so this cannot fail.
        Ctr(Box::new(
            ctr::Ctr128BE::<Aes256>::new_from_slices(key, iv).expect("32-byte key, 16-byte iv"),
        ))
    }

    /// XORs the keystream into `data` in place (encrypts or decrypts).
    #[inline]
    pub fn apply(&mut self, data: &mut [u8]) {
        self.0.apply_keystream(data);
    }
}

impl std::fmt::Debug for Ctr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ctr(<keystream>)")
    }
}
