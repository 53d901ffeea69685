//! Token secrets as admins and users type them (base32 or hex:), and the otpauth:// URI
//! made from a secret: parsing never panics, and the URI an authenticator app reads
//! carries exactly the secret, whatever the issuer and account names hold.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mfad::factor::totp::{self, HashAlgorithm, TotpParams};
use mfad::factor::{as_passcode, parse_secret};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let secret_text = parts.next().unwrap_or_default();
    let issuer = parts.next().unwrap_or("issuer");
    let account = parts.next().unwrap_or("account");
    let _ = as_passcode(&text);
    let Ok(secret) = parse_secret(secret_text) else {
        return;
    };
    assert!((10..=128).contains(&secret.len()));
    let params = TotpParams {
        algorithm: HashAlgorithm::Sha1,
        digits: 6,
        period: 30,
    };
    // A real code of this secret matches at its own step, and the answer's text is
    // compared whatever it holds.
    let step = 56_666_666;
    let code = totp::code_at_step(&secret, params, step);
    assert_eq!(
        totp::matching_step(&secret, params, &code, step as i64 * 30, 1),
        Some(step)
    );
    let _ = totp::matching_step(&secret, params, secret_text, step as i64 * 30, 1);
    let uri = totp::otpauth_uri(&secret, params, issuer, account);
    // The URI is one line of URI characters: names are percent-encoded, never raw.
    assert!(
        uri.bytes().all(|b| b.is_ascii_graphic()),
        "raw byte in {}",
        uri.as_str()
    );
    let (label, query) = uri
        .strip_prefix("otpauth://totp/")
        .and_then(|rest| rest.split_once('?'))
        .unwrap_or_else(|| panic!("not an otpauth URI: {}", uri.as_str()));
    assert!(!label.contains(['?', '#', '&']), "{}", uri.as_str());
    let carried = query
        .split('&')
        .find_map(|p| p.strip_prefix("secret="))
        .and_then(|s| data_encoding::BASE32_NOPAD.decode(s.as_bytes()).ok());
    assert_eq!(carried.as_deref(), Some(&secret[..]), "{}", uri.as_str());
    // Names as they really come (host names, user names): an app's parser reads them back.
    // (totp-rs decodes a label twice, so names with '%' are left to the checks above.)
    let plain = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b))
    };
    if plain(issuer) && plain(account) {
        let parsed = totp_rs::TOTP::from_url_unchecked(uri.as_str())
            .unwrap_or_else(|e| panic!("otpauth URI does not parse ({e:?}): {}", uri.as_str()));
        assert_eq!(parsed.secret, secret.to_vec(), "{}", uri.as_str());
        assert_eq!(parsed.account_name, account);
    }
});
