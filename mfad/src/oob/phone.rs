//! Phone numbers: normalised to E.164 when enrolled, and masked wherever they are shown, so
//! the menu and the logs never spell out a user's number.

/// Why a phone number was refused; each says how to write it right.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("a phone number must start with + and the country code, e.g. +15551234567")]
    NoCountryCode,
    #[error("a phone number may hold only digits, spaces, dashes, dots and parentheses")]
    BadCharacter,
    #[error("a phone number has 8 to 15 digits after the +, the first not 0")]
    BadLength,
}

/// Normalises a number typed by a person (`+1 (555) 123-4567`) to E.164 (`+15551234567`).
pub fn check_phone(s: &str) -> Result<String, PhoneError> {
    let s = s.trim();
    let Some(rest) = s.strip_prefix('+') else {
        return Err(PhoneError::NoCountryCode);
    };
    let mut digits = String::with_capacity(15);
    for c in rest.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' | '.' | '(' | ')' => {}
            _ => return Err(PhoneError::BadCharacter),
        }
    }
    if !(8..=15).contains(&digits.len()) || digits.starts_with('0') {
        return Err(PhoneError::BadLength);
    }
    Ok(format!("+{digits}"))
}

/// `XXX-XXX-1234`: only the last four digits, which is enough for the user to recognise
/// their phone and too little to call it.
pub fn mask_phone(e164: &str) -> String {
    let digits: Vec<char> = e164.chars().filter(char::is_ascii_digit).collect();
    if digits.len() < 8 {
        // Too short to show any part without showing most of it.
        return "XXX-XXX-XXXX".to_string();
    }
    let last: String = digits[digits.len() - 4..].iter().collect();
    format!("XXX-XXX-{last}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_normalised_to_e164() {
        assert_eq!(check_phone("+1 (555) 123-4567").unwrap(), "+15551234567");
        assert_eq!(check_phone(" +44 20 7946 0958 ").unwrap(), "+442079460958");
        assert_eq!(check_phone("+49.30.1234567").unwrap(), "+49301234567");
    }

    #[test]
    fn bad_numbers_are_refused_with_the_reason() {
        assert_eq!(check_phone("555-123-4567"), Err(PhoneError::NoCountryCode));
        assert_eq!(check_phone("+1555abc4567"), Err(PhoneError::BadCharacter));
        assert_eq!(check_phone("+1234567"), Err(PhoneError::BadLength));
        assert_eq!(check_phone("+1234567890123456"), Err(PhoneError::BadLength));
        assert_eq!(check_phone("+0123456789"), Err(PhoneError::BadLength));
        assert_eq!(check_phone("+"), Err(PhoneError::BadLength));
        assert!(check_phone("").unwrap_err().to_string().contains("+"));
    }

    #[test]
    fn masking_shows_only_the_last_four_digits() {
        assert_eq!(mask_phone("+15551234567"), "XXX-XXX-4567");
        assert_eq!(mask_phone("+442079460958"), "XXX-XXX-0958");
        assert_eq!(mask_phone("+123"), "XXX-XXX-XXXX");
        assert_eq!(mask_phone(""), "XXX-XXX-XXXX");
    }
}
