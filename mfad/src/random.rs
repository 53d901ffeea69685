//! Every random secret, code and token comes from here: the operating system's CSPRNG
//! through `rand`'s thread-local generator (ChaCha, reseeded from getrandom). One place to
//! review, and the only caller of `rand::rng` (clippy's disallowed-methods enforces it).

use rand::{Rng, RngCore};

/// Fills `buf` with random bytes (keys, salts, nonces, tokens).
#[allow(clippy::disallowed_methods)]
pub fn fill(buf: &mut [u8]) {
    rand::rng().fill_bytes(buf);
}

/// A uniformly random number in `range` (one-time codes, verification numbers).
#[allow(clippy::disallowed_methods)]
pub fn in_range(range: std::ops::RangeInclusive<u32>) -> u32 {
    rand::rng().random_range(range)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_stay_in_range_and_bytes_vary() {
        for _ in 0..1000 {
            assert!((10..=99).contains(&in_range(10..=99)));
        }
        let (mut a, mut b) = ([0u8; 16], [0u8; 16]);
        fill(&mut a);
        fill(&mut b);
        assert_ne!(a, b);
    }
}
