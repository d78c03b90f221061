//! Real public keys from seed bytes.
//!
//! Every key share a browser sends is a real public key, and each kind can
//! be told apart from random bytes: an ML-KEM-768 encapsulation key's
//! 12-bit coefficients are all below 3329 (random bytes fail that on about
//! one coefficient in five), an X25519 key has its top bit clear and lies on
//! the curve rather than its twist, a P-256 key satisfies the curve
//! equation. So the template generates real keys; only the private halves
//! are thrown away, because the transport authenticates with its own X25519
//! key (the zeroed slot) and never completes these exchanges.

use ml_kem::{KeyExport, MlKem768};
use p256::elliptic_curve::sec1::ToEncodedPoint;

/// Bytes of an ML-KEM-768 encapsulation key (FIPS 203: 384·k + 32, k = 3).
pub(crate) const MLKEM768_EK_LEN: usize = 1184;
/// Bytes of an X25519 public key.
pub(crate) const X25519_LEN: usize = 32;
/// Bytes of an uncompressed P-256 point (`04 || x || y`).
pub(crate) const P256_LEN: usize = 65;

/// The encapsulation key of the ML-KEM-768 key pair FIPS 203's
/// `ML-KEM.KeyGen_internal(d, z)` makes from the 64-byte seed `d || z`.
pub(crate) fn mlkem768_public(seed: [u8; 64]) -> Vec<u8> {
    let dk = ml_kem::DecapsulationKey::<MlKem768>::from_seed(seed.into());
    dk.encapsulation_key().to_bytes().to_vec()
}

/// The X25519 public key of the (clamped) private key `secret`.
pub(crate) fn x25519_public(secret: [u8; 32]) -> [u8; X25519_LEN] {
    x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(secret)).to_bytes()
}

/// The uncompressed P-256 public key of a private scalar made from `secret`.
///
/// The top bit is cleared and zero becomes one, so the scalar is always in
/// `[1, n)` (n > 2^255) without a rejection loop that an all-zero filler
/// could spin forever; the public keys are still uniform over half the group,
/// which no one without the discrete log can tell.
pub(crate) fn p256_public(mut secret: [u8; 32]) -> [u8; P256_LEN] {
    secret[0] &= 0x7f;
    if secret == [0; 32] {
        secret[31] = 1;
    }
    let key = p256::SecretKey::from_bytes(&secret.into())
        .expect("a nonzero scalar below 2^255 is below the P-256 order");
    let point = key.public_key().to_encoded_point(false);
    let mut out = [0u8; P256_LEN];
    out.copy_from_slice(point.as_bytes());
    out
}
