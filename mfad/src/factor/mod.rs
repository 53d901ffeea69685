//! The second factors mfad checks itself: TOTP authenticators and bypass codes.

pub mod bypass;
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

#[cfg(test)]
mod tests {
    use super::as_passcode;

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
