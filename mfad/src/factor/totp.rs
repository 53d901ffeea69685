//! TOTP (RFC 6238) codes: generation for a step, and matching an answer within a window.
//!
//! Matching reports the step that matched, so the caller can record it and never accept the
//! same step (or an older one) again.

use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, TOTP};
use zeroize::Zeroizing;

/// Bytes of a new secret: 160 bits, as RFC 4226 recommends for HMAC-SHA1.
pub const SECRET_LEN: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashAlgorithm {
    Sha1,
    Sha256,
    Sha512,
}

impl HashAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            HashAlgorithm::Sha1 => "SHA1",
            HashAlgorithm::Sha256 => "SHA256",
            HashAlgorithm::Sha512 => "SHA512",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "SHA1" => Some(HashAlgorithm::Sha1),
            "SHA256" => Some(HashAlgorithm::Sha256),
            "SHA512" => Some(HashAlgorithm::Sha512),
            _ => None,
        }
    }
    fn to_lib(self) -> Algorithm {
        match self {
            HashAlgorithm::Sha1 => Algorithm::SHA1,
            HashAlgorithm::Sha256 => Algorithm::SHA256,
            HashAlgorithm::Sha512 => Algorithm::SHA512,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TotpParams {
    pub algorithm: HashAlgorithm,
    pub digits: u32,
    /// Seconds per step.
    pub period: u64,
}

impl Default for TotpParams {
    /// RFC 6238's and every authenticator app's: SHA-1, 6 digits, 30 seconds.
    fn default() -> Self {
        TotpParams {
            algorithm: HashAlgorithm::Sha1,
            digits: 6,
            period: 30,
        }
    }
}

fn totp(secret: &[u8], params: TotpParams, issuer: Option<String>, account: String) -> TOTP {
    TOTP::new_unchecked(
        params.algorithm.to_lib(),
        params.digits as usize,
        0,
        params.period,
        secret.to_vec(),
        issuer,
        account,
    )
}

/// The code for time step `step`.
pub fn code_at_step(secret: &[u8], params: TotpParams, step: u64) -> Zeroizing<String> {
    Zeroizing::new(totp(secret, params, None, String::new()).generate(step * params.period))
}

/// The step `now` falls in.
pub fn step_of(now: i64, params: TotpParams) -> u64 {
    (now.max(0) as u64) / params.period
}

/// Returns the latest step within `window` steps of `now` whose code equals `answer`.
///
/// Two steps of one window can share a code (about once in a million pairs of steps for six
/// digits). Spending the latest of them spends the earlier ones too (a spend records a step,
/// and every step up to it counts as used), so a code accepted once is never accepted again
/// as the other step; and a code that is also an earlier, spent step's is still accepted as
/// the step the app shows now. Every step in the window is compared, in constant time, so
/// the timing says nothing about which matched.
pub fn matching_step(
    secret: &[u8],
    params: TotpParams,
    answer: &str,
    now: i64,
    window: u64,
) -> Option<u64> {
    let current = step_of(now, params);
    let steps = current.saturating_sub(window)..=current.saturating_add(window);
    matching(secret, params, answer, steps).map(|(_, last)| last)
}

/// The first step of `steps` whose code equals `answer` (HOTP's counters: the next press
/// of the token). Every step is compared, in constant time, so the timing says nothing about
/// which matched.
pub fn first_matching(
    secret: &[u8],
    params: TotpParams,
    answer: &str,
    steps: std::ops::RangeInclusive<u64>,
) -> Option<u64> {
    matching(secret, params, answer, steps).map(|(first, _)| first)
}

/// The first and the last step of `steps` whose code equals `answer`, each compared.
fn matching(
    secret: &[u8],
    params: TotpParams,
    answer: &str,
    steps: std::ops::RangeInclusive<u64>,
) -> Option<(u64, u64)> {
    if answer.len() != params.digits as usize {
        return None;
    }
    let t = totp(secret, params, None, String::new());
    let mut found: Option<(u64, u64)> = None;
    for step in steps {
        let code = Zeroizing::new(t.generate(step * params.period));
        if bool::from(code.as_bytes().ct_eq(answer.as_bytes())) {
            found = Some((found.map_or(step, |(first, _)| first), step));
        }
    }
    found
}

pub fn new_secret(rng: &dyn crate::random::Random) -> Zeroizing<Vec<u8>> {
    let mut secret = Zeroizing::new(vec![0u8; SECRET_LEN]);
    rng.fill(&mut secret);
    secret
}

pub fn secret_base32(secret: &[u8]) -> Zeroizing<String> {
    Zeroizing::new(data_encoding::BASE32_NOPAD.encode(secret))
}

/// The `otpauth://totp/...` URI authenticator apps read from a QR code.
pub fn otpauth_uri(
    secret: &[u8],
    params: TotpParams,
    issuer: &str,
    account: &str,
) -> Zeroizing<String> {
    // The label may not contain ':' (it separates issuer and account).
    let issuer = issuer.replace(':', "-");
    let account = account.replace(':', "-");
    Zeroizing::new(totp(secret, params, Some(issuer), account).get_url())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA1_SEED: &[u8] = b"12345678901234567890";
    const SHA256_SEED: &[u8] = b"12345678901234567890123456789012";
    const SHA512_SEED: &[u8] = b"1234567890123456789012345678901234567890123456789012345678901234";

    fn p(algorithm: HashAlgorithm) -> TotpParams {
        TotpParams {
            algorithm,
            digits: 8,
            period: 30,
        }
    }

    /// RFC 6238, Appendix B: every published test vector.
    #[test]
    fn rfc6238_test_vectors() {
        let vectors: &[(i64, &str, &str, &str)] = &[
            (59, "94287082", "46119246", "90693936"),
            (1111111109, "07081804", "68084774", "25091201"),
            (1111111111, "14050471", "67062674", "99943326"),
            (1234567890, "89005924", "91819424", "93441116"),
            (2000000000, "69279037", "90698825", "38618901"),
            (20000000000, "65353130", "77737706", "47863826"),
        ];
        for &(t, sha1, sha256, sha512) in vectors {
            for (seed, alg, want) in [
                (SHA1_SEED, HashAlgorithm::Sha1, sha1),
                (SHA256_SEED, HashAlgorithm::Sha256, sha256),
                (SHA512_SEED, HashAlgorithm::Sha512, sha512),
            ] {
                let step = step_of(t, p(alg));
                assert_eq!(
                    code_at_step(seed, p(alg), step).as_str(),
                    want,
                    "T={t} {alg:?}"
                );
                assert_eq!(matching_step(seed, p(alg), want, t, 0), Some(step));
            }
        }
    }

    #[test]
    fn of_two_steps_sharing_a_code_totp_takes_the_latest_and_hotp_the_first() {
        // RFC 6238's SHA-1 key: steps 59,061,240 and 59,061,241 both give 963181 (oathtool
        // agrees; see the daemon's tests).
        let params = TotpParams {
            algorithm: HashAlgorithm::Sha1,
            digits: 6,
            period: 30,
        };
        let (a, b) = (59_061_240, 59_061_241);
        assert_eq!(code_at_step(SHA1_SEED, params, a).as_str(), "963181");
        assert_eq!(code_at_step(SHA1_SEED, params, b).as_str(), "963181");
        for now in [a, b] {
            let now = now as i64 * 30 + 3;
            assert_eq!(matching_step(SHA1_SEED, params, "963181", now, 1), Some(b));
        }
        assert_eq!(
            matching_step(SHA1_SEED, params, "963181", (a as i64 - 1) * 30, 1),
            Some(a)
        );
        assert_eq!(
            first_matching(SHA1_SEED, params, "963181", a - 3..=b + 3),
            Some(a)
        );
    }

    #[test]
    fn the_window_accepts_neighbouring_steps_only() {
        let params = TotpParams {
            algorithm: HashAlgorithm::Sha1,
            digits: 6,
            period: 30,
        };
        let now = 1_700_000_000;
        let step = step_of(now, params);
        let prev = code_at_step(SHA1_SEED, params, step - 1);
        let two_back = code_at_step(SHA1_SEED, params, step - 2);
        assert_eq!(
            matching_step(SHA1_SEED, params, &prev, now, 1),
            Some(step - 1)
        );
        assert_eq!(matching_step(SHA1_SEED, params, &prev, now, 0), None);
        assert_eq!(matching_step(SHA1_SEED, params, &two_back, now, 1), None);
        assert_eq!(matching_step(SHA1_SEED, params, "12345", now, 1), None);
    }

    #[test]
    fn the_uri_names_issuer_account_and_secret() {
        let params = TotpParams {
            algorithm: HashAlgorithm::Sha1,
            digits: 6,
            period: 30,
        };
        let uri = otpauth_uri(SHA1_SEED, params, "login01", "alice");
        assert!(uri.starts_with("otpauth://totp/login01:alice?"), "{}", *uri);
        assert!(
            uri.contains("secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"),
            "{}",
            *uri
        );
        assert!(uri.contains("issuer=login01"), "{}", *uri);
    }
}
