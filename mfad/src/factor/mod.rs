//! The second factors mfad checks itself: TOTP authenticators and bypass codes.

pub mod bypass;
pub mod hotp;
pub mod security_key;
pub mod totp;

/// An answer in the form a passcode can take: digits only, at most 16 of them.
/// Anything else is refused before any secret is touched, and counts as no attempt.
pub fn as_passcode(answer: &str) -> Option<&str> {
    let trimmed = answer.trim_matches(|c: char| c == ' ' || c == '\t');
    if trimmed.is_empty() || trimmed.len() > 16 || !trimmed.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(trimmed)
}

/// Why a token's secret or parameters are refused; each Display is the sentence the user or
/// administrator sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("The secret is not valid hex.")]
    SecretNotHex,
    #[error("The secret is not valid base32 (or hex: with a hex: prefix).")]
    SecretNotBase32,
    #[error("The secret is shorter than 80 bits.")]
    SecretTooShort,
    #[error("The secret is longer than 1024 bits.")]
    SecretTooLong,
    #[error("Tokens show 6 or 8 digits, not {0}.")]
    Digits(u32),
    #[error("Time-based tokens change every 30 or 60 seconds, not {0}.")]
    Period(u64),
}

/// For the importers, which collect each line's problem as text (`file:line: sentence`).
impl From<TokenError> for String {
    fn from(e: TokenError) -> String {
        e.to_string()
    }
}

/// A token secret as sites receive them: base32 (any case, spaces and padding ignored), or
/// hex after a `hex:` prefix. At least 80 bits, as RFC 4226 requires at the least.
pub fn parse_secret(text: &str) -> Result<zeroize::Zeroizing<Vec<u8>>, TokenError> {
    let text = text.trim();
    let bytes = if let Some(hex) = text.strip_prefix("hex:") {
        let hex: zeroize::Zeroizing<String> =
            zeroize::Zeroizing::new(hex.chars().filter(|c| !c.is_whitespace()).collect());
        data_encoding::HEXLOWER_PERMISSIVE
            .decode(hex.as_bytes())
            .map_err(|_| TokenError::SecretNotHex)?
    } else {
        let b32: zeroize::Zeroizing<String> = zeroize::Zeroizing::new(
            text.chars()
                .filter(|c| !c.is_whitespace() && *c != '=' && *c != '-')
                .map(|c| c.to_ascii_uppercase())
                .collect(),
        );
        data_encoding::BASE32_NOPAD
            .decode(b32.as_bytes())
            .map_err(|_| TokenError::SecretNotBase32)?
    };
    let bytes = zeroize::Zeroizing::new(bytes);
    if bytes.len() < 10 {
        return Err(TokenError::SecretTooShort);
    }
    if bytes.len() > 128 {
        return Err(TokenError::SecretTooLong);
    }
    Ok(bytes)
}

pub fn check_digits(digits: u32) -> Result<(), TokenError> {
    if digits == 6 || digits == 8 {
        Ok(())
    } else {
        Err(TokenError::Digits(digits))
    }
}

pub fn check_period(period: u64) -> Result<(), TokenError> {
    if period == 30 || period == 60 {
        Ok(())
    } else {
        Err(TokenError::Period(period))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_parse_from_base32_or_hex_and_short_ones_are_refused() {
        let want = b"12345678901234567890".to_vec();
        assert_eq!(
            *parse_secret("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").unwrap(),
            want
        );
        assert_eq!(
            *parse_secret("gezd gnbv gy3t qojq gezd gnbv gy3t qojq").unwrap(),
            want
        );
        assert_eq!(
            *parse_secret("hex:3132333435363738393031323334353637383930").unwrap(),
            want
        );
        assert_eq!(
            parse_secret("GEZDGNBV").unwrap_err(),
            TokenError::SecretTooShort
        );
        assert_eq!(
            parse_secret(&"A".repeat(208)).unwrap_err(),
            TokenError::SecretTooLong
        );
        assert_eq!(
            parse_secret("not base32!").unwrap_err(),
            TokenError::SecretNotBase32
        );
        assert_eq!(
            parse_secret("hex:zz").unwrap_err(),
            TokenError::SecretNotHex
        );
    }

    #[test]
    fn token_refusals_keep_the_sentences_users_and_scripts_see() {
        for (error, text) in [
            (TokenError::SecretNotHex, "The secret is not valid hex."),
            (
                TokenError::SecretNotBase32,
                "The secret is not valid base32 (or hex: with a hex: prefix).",
            ),
            (
                TokenError::SecretTooShort,
                "The secret is shorter than 80 bits.",
            ),
            (
                TokenError::SecretTooLong,
                "The secret is longer than 1024 bits.",
            ),
            (TokenError::Digits(7), "Tokens show 6 or 8 digits, not 7."),
            (
                TokenError::Period(45),
                "Time-based tokens change every 30 or 60 seconds, not 45.",
            ),
        ] {
            assert_eq!(error.to_string(), text);
        }
        assert_eq!(check_digits(7), Err(TokenError::Digits(7)));
        assert_eq!(check_period(45), Err(TokenError::Period(45)));
        assert_eq!(check_digits(8), Ok(()));
        assert_eq!(check_period(60), Ok(()));
    }

    #[test]
    fn only_short_digit_strings_are_passcodes() {
        assert_eq!(as_passcode(" 123456 "), Some("123456"));
        assert_eq!(as_passcode("12345678"), Some("12345678"));
        assert_eq!(as_passcode(""), None);
        assert_eq!(as_passcode("12a456"), None);
        assert_eq!(as_passcode("123\u{0}456"), None);
        assert_eq!(as_passcode("\u{1b}[31m123456"), None);
        assert_eq!(as_passcode("１２３４５６"), None);
        assert_eq!(as_passcode(&"1".repeat(17)), None);
    }
}
