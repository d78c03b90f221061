//! The one way this crate takes random bytes from the operating system.
//!
//! Keys, Noise ephemeral seeds, session secrets and fake key shares all come
//! from here. A failing OS generator is unrecoverable: carrying on would put
//! all-zero (predictable) bytes where a secret belongs, so [`fill`] panics
//! instead, which ends the task that asked before any of those bytes is used.
//! `clippy.toml` forbids calling `getrandom::fill` anywhere else.

/// Fills `buf` with bytes from the OS generator, or panics with a message
/// naming the failure. Never returns with `buf` unfilled.
#[allow(clippy::disallowed_methods)]
pub fn fill(buf: &mut [u8]) {
    fill_from(buf, getrandom::fill);
}

/// [`fill`] with the generator passed in, so that a failing one can be
/// tested.
fn fill_from(buf: &mut [u8], source: impl FnOnce(&mut [u8]) -> Result<(), getrandom::Error>) {
    if let Err(e) = source(buf) {
        panic!(
            "the operating system's random number generator failed ({e}); \
             refusing to continue with predictable keys"
        );
    }
}

/// `N` random bytes (see [`fill`]).
pub fn bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    fill(&mut b);
    b
}

/// Uniform in `[0, 1)` (53 random bits), for back-off and refresh jitter.
pub fn unit() -> f64 {
    (u64::from_le_bytes(bytes::<8>()) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    #[test]
    #[should_panic(expected = "random number generator failed")]
    fn a_failing_generator_panics_instead_of_leaving_zeros() {
        let mut key = [0u8; 32];
        super::fill_from(&mut key, |_| Err(getrandom::Error::UNSUPPORTED));
    }

    #[test]
    fn fills_the_whole_buffer() {
        // 64 zero bytes from a working generator: probability 2^-512.
        let mut b = [0u8; 64];
        super::fill(&mut b);
        assert_ne!(b, [0u8; 64]);
    }

    #[test]
    fn unit_stays_in_its_interval_and_spreads() {
        let draws: Vec<f64> = (0..1000).map(|_| super::unit()).collect();
        assert!(draws.iter().all(|&x| (0.0..1.0).contains(&x)));
        // 1000 draws all in one half: probability 2^-999.
        assert!(draws.iter().any(|&x| x < 0.5) && draws.iter().any(|&x| x >= 0.5));
    }
}
