//! Every random secret, code and token comes from a [`Random`]: in production the operating
//! system's CSPRNG through `rand`'s thread-local generator (ChaCha, reseeded from
//! getrandom); in tests, one that repeats from a seed. Services get it as a parameter
//! (`Core::random`); this module is the only caller of `rand::rng` (clippy's
//! disallowed-methods enforces it).

use rand::{Rng, RngCore, SeedableRng};
use std::sync::Mutex;

/// Where secrets, codes and tokens come from.
pub trait Random: Send + Sync {
    /// Fills `buf` with random bytes (keys, salts, nonces, tokens).
    fn fill(&self, buf: &mut [u8]);
    /// A uniformly random number in `range` (one-time codes, verification numbers).
    fn in_range(&self, range: std::ops::RangeInclusive<u32>) -> u32;
}

/// The operating system's randomness: what mfad runs with.
pub struct OsRandom;

impl Random for OsRandom {
    #[allow(clippy::disallowed_methods)]
    fn fill(&self, buf: &mut [u8]) {
        rand::rng().fill_bytes(buf);
    }

    #[allow(clippy::disallowed_methods)]
    fn in_range(&self, range: std::ops::RangeInclusive<u32>) -> u32 {
        rand::rng().random_range(range)
    }
}

/// A generator that repeats from its seed, for tests: the same seed gives the same
/// secrets, codes and tokens, so a test can know what a user was shown.
pub struct SeededRandom(Mutex<rand::rngs::StdRng>);

impl SeededRandom {
    pub fn new(seed: u64) -> Self {
        SeededRandom(Mutex::new(rand::rngs::StdRng::seed_from_u64(seed)))
    }
}

impl Random for SeededRandom {
    fn fill(&self, buf: &mut [u8]) {
        if let Ok(mut rng) = self.0.lock() {
            rng.fill_bytes(buf);
        }
    }

    fn in_range(&self, range: std::ops::RangeInclusive<u32>) -> u32 {
        match self.0.lock() {
            Ok(mut rng) => rng.random_range(range),
            Err(_) => *range.start(),
        }
    }
}

/// Random bytes from the operating system, for what is made outside any service (the
/// store key, its nonces).
pub fn fill(buf: &mut [u8]) {
    OsRandom.fill(buf);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_stay_in_range_and_bytes_vary() {
        for _ in 0..1000 {
            assert!((10..=99).contains(&OsRandom.in_range(10..=99)));
        }
        let (mut a, mut b) = ([0u8; 16], [0u8; 16]);
        fill(&mut a);
        fill(&mut b);
        assert_ne!(a, b);
    }

    #[test]
    fn a_seed_repeats_and_another_seed_does_not() {
        let take = |seed| {
            let r = SeededRandom::new(seed);
            let mut buf = [0u8; 16];
            r.fill(&mut buf);
            (buf, r.in_range(0..=999_999))
        };
        assert_eq!(take(7), take(7));
        assert_ne!(take(7), take(8));
    }
}
