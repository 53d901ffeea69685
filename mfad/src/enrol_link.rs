//! Enrolment links (`unenrolled = "link"`): a login of a user with nothing enrolled is
//! refused with a one-time link to mfa-web's enrolment page. The token is random (from the
//! daemon's [`Random`]), bound to the user, expires after `[web] enroll_link_ttl`; the store
//! keeps only its SHA-256, so neither a backup nor the database holds a usable link.

use crate::random::Random;
use data_encoding::BASE64URL_NOPAD;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Random bytes in a token: 256 bits.
const TOKEN_BYTES: usize = 32;

/// Where links point to: `{base}/enroll/{token}`.
pub const PATH: &str = "/enroll/";

/// A new token: 43 characters of URL-safe base64 (the shape
/// [`mfa_proto::web::looks_like_token`] accepts).
pub fn new_token(random: &dyn Random) -> Zeroizing<String> {
    let mut raw = Zeroizing::new([0u8; TOKEN_BYTES]);
    random.fill(raw.as_mut());
    Zeroizing::new(BASE64URL_NOPAD.encode(raw.as_ref()))
}

/// What the store keeps of a token: its SHA-256. Looking a token up by its hash makes the
/// lookup independent of how much of a guessed token is right.
pub fn key_of(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The link a user is shown, for the base URL `base` (no trailing slash).
pub fn url(base: &str, token: &str) -> Zeroizing<String> {
    Zeroizing::new(format!("{base}{PATH}{token}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::SeededRandom;

    #[test]
    fn tokens_have_the_web_token_shape_and_differ() {
        let r = SeededRandom::new(1);
        let (a, b) = (new_token(&r), new_token(&r));
        assert!(mfa_proto::web::looks_like_token(&a), "{}", a.as_str());
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert_ne!(key_of(&a), key_of(&b));
        assert_eq!(
            url("https://m.example", &a).as_str(),
            format!("https://m.example/enroll/{}", a.as_str())
        );
    }
}
