//! Bypass codes: ten single-use 8-digit codes, shown once and stored only as salted hashes.

use crate::random::Random;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

pub const COUNT: usize = 10;
pub const DIGITS: usize = 8;

/// A code as stored: a random salt and SHA-256(salt || code).
#[derive(Debug, Clone)]
pub struct StoredCode {
    pub salt: [u8; 16],
    pub hash: [u8; 32],
}

pub fn hash(salt: &[u8; 16], code: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(code.as_bytes());
    h.finalize().into()
}

/// One random code of `digits` digits (at most 9), and what to store of it.
pub fn new_code(rng: &dyn Random, digits: u32) -> (Zeroizing<String>, StoredCode) {
    let digits = digits.min(9);
    let code = Zeroizing::new(format!(
        "{:0width$}",
        rng.in_range(0..=10u32.pow(digits) - 1),
        width = digits as usize
    ));
    let mut salt = [0u8; 16];
    rng.fill(&mut salt);
    let stored = StoredCode {
        salt,
        hash: hash(&salt, &code),
    };
    (code, stored)
}

/// A fresh set: the codes to show the user once, and what to store.
pub fn generate(rng: &dyn Random) -> (Vec<Zeroizing<String>>, Vec<StoredCode>) {
    (0..COUNT).map(|_| new_code(rng, DIGITS as u32)).unzip()
}

/// Whether `answer` is the code behind `stored` (compared in constant time).
pub fn matches(stored: &StoredCode, answer: &str) -> bool {
    bool::from(hash(&stored.salt, answer).ct_eq(&stored.hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_code_matches_only_its_own_hash() {
        let (shown, stored) = generate(&crate::random::OsRandom);
        assert_eq!(shown.len(), COUNT);
        for (code, s) in shown.iter().zip(&stored) {
            assert_eq!(code.len(), DIGITS);
            assert!(code.bytes().all(|b| b.is_ascii_digit()));
            assert!(matches(s, code));
        }
        assert!(!matches(&stored[0], "00000000") || shown[0].as_str() == "00000000");
        assert!(!matches(&stored[0], &shown[0][..7]));
    }
}
