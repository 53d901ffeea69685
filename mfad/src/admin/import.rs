//! Importers from the modules a site moves away from: google-authenticator-libpam (one
//! `~/.google_authenticator` per user) and pam_oath (one users file). Parsing only; the
//! daemon applies the result all or none. Every error names the file and the line.

use crate::factor::bypass::{self, StoredCode};
use crate::factor::{self, totp};
use crate::store::{DeviceKind, NewDeviceRow, OtpKey};
use zeroize::Zeroizing;

/// One user's enrolment read from a file.
pub struct Imported {
    pub user: String,
    pub device: NewDeviceRow,
    /// Scratch codes, as bypass codes (stored hashed; the clear codes are not kept).
    pub bypass: Vec<StoredCode>,
    /// What the file set that mfad does its own way (window, rate limit), for the report.
    pub notes: Vec<String>,
    /// Where it came from: `FILE` or `FILE:LINE`.
    pub origin: String,
}

fn stored(code: &str) -> StoredCode {
    // Only the salt of the new code is used (a fresh one from the system; nothing a test
    // needs to foresee); the hash is the imported code's.
    let (_, mut fresh) = bypass::new_code(&crate::random::OsRandom, bypass::DIGITS as u32);
    fresh.hash = bypass::hash(&fresh.salt, code);
    fresh
}

/// A SHA-1 OATH key (the only algorithm token files and google-authenticator files name).
pub(crate) fn otp(secret: Zeroizing<Vec<u8>>, digits: u32, period: u64, counter: i64) -> OtpKey {
    OtpKey {
        secret,
        params: totp::TotpParams {
            algorithm: totp::HashAlgorithm::Sha1,
            digits,
            period,
        },
        counter,
    }
}

/// Reads one `~/.google_authenticator` of `user`: the secret on line 1, then `" OPTION`
/// lines and 8-digit scratch codes. TOTP unless `HOTP_COUNTER`; `DISALLOW_REUSE` steps are
/// spent already; scratch codes become bypass codes.
pub fn google_authenticator(path: &str, user: &str, text: &str) -> Result<Imported, Vec<String>> {
    let mut errors = Vec::new();
    let mut lines = text.lines().enumerate();
    let secret = match lines.next() {
        Some((_, first)) => match factor::parse_secret(first) {
            Ok(s) => Some(s),
            Err(e) => {
                errors.push(format!("{path}:1: {e}"));
                None
            }
        },
        None => {
            errors.push(format!("{path}:1: the file is empty"));
            None
        }
    };
    let mut hotp_counter: Option<i64> = None;
    let mut period = 30;
    let mut last_step: i64 = 0;
    let mut scratch = Vec::new();
    let mut notes = Vec::new();
    for (n, line) in lines {
        let at = format!("{path}:{}", n + 1);
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(option) = line.strip_prefix('"') {
            let words: Vec<&str> = option.split_whitespace().collect();
            // The module's own bookkeeping while it re-learns a clock skew ("123+1 124+1").
            if words.first() == Some(&"RESETTING_TIME_SKEW") {
                continue;
            }
            let numbers: Result<Vec<i64>, _> = words.iter().skip(1).map(|w| w.parse()).collect();
            let Ok(numbers) = numbers else {
                errors.push(format!(
                    "{at}: {:?} has a value that is not a number",
                    words[0]
                ));
                continue;
            };
            match words.first().copied() {
                Some("TOTP_AUTH") => {}
                Some("HOTP_COUNTER") => match numbers.first() {
                    Some(&c) if c >= 0 => hotp_counter = Some(c),
                    _ => errors.push(format!("{at}: HOTP_COUNTER needs a counter")),
                },
                Some("STEP_SIZE") => match numbers.first() {
                    Some(&p) if factor::check_period(p as u64).is_ok() => period = p as u64,
                    _ => errors.push(format!(
                        "{at}: STEP_SIZE must be 30 or 60 (mfad's time-based tokens)"
                    )),
                },
                Some("DISALLOW_REUSE") => {
                    last_step = numbers.iter().copied().max().unwrap_or(0).max(last_step);
                }
                Some("WINDOW_SIZE") => notes.push(format!(
                    "window {} not kept (mfad uses [totp] window / [hotp] look_ahead)",
                    numbers.first().copied().unwrap_or(0)
                )),
                Some("RATE_LIMIT") => notes.push(format!(
                    "rate limit {} per {} s not kept (mfad's lockout applies)",
                    numbers.first().copied().unwrap_or(0),
                    numbers.get(1).copied().unwrap_or(0)
                )),
                Some("TIME_SKEW") => notes.push("time skew not kept".into()),
                Some(other) => errors.push(format!("{at}: unknown option {other:?}")),
                None => errors.push(format!("{at}: an empty option line")),
            }
            continue;
        }
        if line.len() == bypass::DIGITS && line.chars().all(|c| c.is_ascii_digit()) {
            scratch.push(stored(line));
        } else {
            errors.push(format!(
                "{at}: neither an option (\" ...) nor an 8-digit scratch code"
            ));
        }
    }
    if let Err(e) = mfa_proto::check_user_name(user) {
        errors.push(format!("{path}: user {user:?}: {e}"));
    }
    match secret {
        Some(secret) if errors.is_empty() => {
            let (kind, key, what) = match hotp_counter {
                Some(c) => (DeviceKind::Hotp, otp(secret, 6, 0, c), "counter-based"),
                None => (
                    DeviceKind::Totp,
                    otp(secret, 6, period, last_step),
                    "time-based",
                ),
            };
            Ok(Imported {
                user: user.to_string(),
                device: NewDeviceRow {
                    kind,
                    name: format!("Authenticator app (google-authenticator, {what})"),
                    otp: Some(key),
                    address: None,
                },
                bypass: scratch,
                notes,
                origin: path.to_string(),
            })
        }
        _ => Err(errors),
    }
}

/// Reads a pam_oath users file: `TYPE USER PASSWORD SECRET-HEX [COUNTER [OTP [TIME]]]` per
/// line, TYPE being `HOTP`, `HOTP/E`, `HOTP/E/8`, `HOTP/T30`, `HOTP/T60/6`...; COUNTER is the
/// moving factor of the last code used (a counter, or a time step). PASSWORD must be `-`
/// or `+`: mfad asks for no PIN. Blank lines and `#` comments are skipped.
pub fn oath_users(path: &str, text: &str) -> Result<Vec<Imported>, Vec<String>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let at = format!("{path}:{}", n + 1);
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let row = (|| -> Result<Imported, String> {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [kind, user, password, secret, rest @ ..] = fields.as_slice() else {
                return Err("expected TYPE USER PASSWORD SECRET [COUNTER [OTP [TIME]]]".into());
            };
            let mut parts = kind.split('/');
            if parts.next() != Some("HOTP") {
                return Err(format!(
                    "type {kind:?} is not HOTP, HOTP/E or HOTP/T<seconds>"
                ));
            }
            let mut period = None;
            let mut digits = 6;
            for part in parts {
                if part == "E" {
                    continue;
                } else if let Some(p) = part.strip_prefix('T') {
                    let p: u64 = p
                        .parse()
                        .map_err(|_| format!("bad time step in {kind:?}"))?;
                    factor::check_period(p)?;
                    period = Some(p);
                } else {
                    digits = part
                        .parse()
                        .map_err(|_| format!("bad digits in {kind:?}"))?;
                    factor::check_digits(digits)?;
                }
            }
            if !matches!(*password, "-" | "+") {
                return Err(
                    "the user has a PIN (password field); mfad asks for no PIN: set it to - \
                     first"
                        .into(),
                );
            }
            mfa_proto::check_user_name(user).map_err(|e| e.to_string())?;
            let secret = factor::parse_secret(&format!("hex:{secret}"))?;
            let counter: Option<i64> = match rest.first() {
                Some(c) => Some(c.parse().map_err(|_| "the counter is not a number")?),
                None => None,
            };
            let used = rest.len() >= 2;
            let (kind, key) = match period {
                // The last step used is spent; without one, none is.
                Some(p) => (
                    DeviceKind::Totp,
                    otp(secret, digits, p, counter.unwrap_or(0)),
                ),
                // A counter with its code was used: the next one is expected.
                None => {
                    let c = counter.unwrap_or(0);
                    (
                        DeviceKind::Hotp,
                        otp(secret, digits, 0, if used { c + 1 } else { c }),
                    )
                }
            };
            Ok(Imported {
                user: user.to_string(),
                device: NewDeviceRow {
                    kind,
                    name: format!("Token (pam_oath, {})", fields[0]),
                    otp: Some(key),
                    address: None,
                },
                bypass: Vec::new(),
                notes: Vec::new(),
                origin: at.clone(),
            })
        })();
        match row {
            Ok(r) => out.push(r),
            Err(e) => errors.push(format!("{at}: {e}")),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_google_authenticator_file_becomes_a_device_and_bypass_codes() {
        let text = "AEMCCKNKZKPO3NO6S4M5UVW5XQ\n\" RATE_LIMIT 3 30 1700000000\n\
                    \" WINDOW_SIZE 17\n\" DISALLOW_REUSE 56666666 56666667\n\" TOTP_AUTH\n\
                    \" RESETTING_TIME_SKEW 56666660+1 56666661+1\n\" TIME_SKEW -1\n\
                    12345678\n87654321\n";
        let i = match google_authenticator("/home/a/.google_authenticator", "a", text) {
            Ok(i) => i,
            Err(e) => panic!("refused: {e:?}"),
        };
        assert_eq!(i.device.kind, DeviceKind::Totp);
        assert_eq!(i.device.otp.as_ref().map(|k| k.counter), Some(56666667));
        assert_eq!(i.bypass.len(), 2);
        assert!(bypass::matches(&i.bypass[0], "12345678"));
        assert_eq!(i.notes.len(), 3);
    }

    #[test]
    fn every_bad_line_is_named_with_its_file_and_number() {
        let Err(e) = google_authenticator("f", "a", "NOT*BASE32\n\" BOGUS 1\n1234\n") else {
            panic!("accepted")
        };
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(e[0].starts_with("f:1:") && e[1].starts_with("f:2:") && e[2].starts_with("f:3:"));
        let Err(e) = oath_users(
            "/etc/users.oath",
            "HOTP a - 3132333435363738393031323334353637383930\nTOTP b - 00\nHOTP c 1234 00ff\n",
        ) else {
            panic!("accepted")
        };
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].starts_with("/etc/users.oath:2:"), "{e:?}");
        assert!(
            e[1].starts_with("/etc/users.oath:3:") && e[1].contains("PIN"),
            "{e:?}"
        );
    }
}
