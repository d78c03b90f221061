//! Helpers for tests of this crate and its users: deterministic
//! randomness, so that a failing test reproduces. Not for production use:
//! nothing here is random in the cryptographic sense.

/// A deterministic byte source (xorshift64) in the shape every `wire`
/// function that takes randomness accepts.
pub fn seeded_fill(seed: u64) -> impl FnMut(&mut [u8]) {
    let mut s = seed | 1;
    move |buf: &mut [u8]| {
        for b in buf {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            *b = s as u8;
        }
    }
}
