//! Text shown to users and written to logs: messages, the QR code, the status report, and
//! the scrubbing of anything a client supplied before it reaches a log line.

use crate::store::LockState;
use qrcode::QrCode;
use qrcode::render::unicode::Dense1x2;

pub use crate::calendar::utc;
/// A client-supplied string made safe for a log line: control characters, `"` and `\`
/// escaped, length cut.
pub use mfa_proto::text::log_field as clean;

fn minutes_left(until: i64, now: i64) -> i64 {
    ((until - now) + 59) / 60
}

pub fn locked_message(user: &str, until: i64, now: i64) -> String {
    format!(
        "Your account has been locked out due to excessive authentication failures.\n\
         It unlocks by itself at {} (in {} minutes), or an administrator can run \
         `mfa admin unlock {user}`.",
        utc(until),
        minutes_left(until, now)
    )
}

/// The QR code of `data`, drawn with half-block characters (two rows of modules per line).
pub fn qr_code(data: &str) -> String {
    match QrCode::new(data.as_bytes()) {
        Ok(code) => code
            .render::<Dense1x2>()
            .dark_color(Dense1x2::Light)
            .light_color(Dense1x2::Dark)
            .quiet_zone(true)
            .build(),
        Err(_) => "(this terminal cannot show the QR code; use the secret below)".to_string(),
    }
}

pub fn status_report(
    user: &str,
    exists: bool,
    devices: &[String],
    bypass_left: usize,
    lock: &LockState,
    now: i64,
) -> String {
    let mut out = format!("User:         {user}");
    if !exists {
        out.push_str(" (not known to this host)");
    }
    out.push_str(&format!("\nDevices:      {}\n", devices.len()));
    for (i, device) in devices.iter().enumerate() {
        out.push_str(&format!("  {}. {device}\n", i + 1));
    }
    out.push_str(&format!("Bypass codes: {bypass_left} unused\n"));
    let locked = lock.locked_until.filter(|until| *until > now);
    // The count starts again at a lockout: "0 consecutive" beside "Locked: yes" read as if
    // nothing had failed.
    out.push_str(&match (lock.failures, locked) {
        (0, Some(_)) => "Failures:     none since the lock\n".to_string(),
        (n, Some(_)) => format!("Failures:     {n} since the lock\n"),
        (n, None) => format!("Failures:     {n} consecutive\n"),
    });
    match locked {
        Some(until) => out.push_str(&format!(
            "Locked:       yes, until {} ({} minutes left)",
            utc(until),
            minutes_left(until, now)
        )),
        None => out.push_str("Locked:       no"),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_locked_account_does_not_show_zero_failures_as_if_nothing_failed() {
        let locked = LockState {
            failures: 0,
            locked_until: Some(3600),
        };
        let r = status_report("bob", true, &[], 0, &locked, 60);
        assert!(r.contains("Failures:     none since the lock"), "{r}");
        assert!(r.contains("Locked:       yes"), "{r}");
        let open = LockState {
            failures: 2,
            locked_until: None,
        };
        let r = status_report("bob", true, &[], 0, &open, 60);
        assert!(r.contains("Failures:     2 consecutive"), "{r}");
        assert!(r.contains("Locked:       no"), "{r}");
    }

    #[test]
    fn the_lock_message_says_when_and_how() {
        let m = locked_message("bob", 3600, 60);
        assert!(m.contains("locked out"));
        assert!(m.contains("1970-01-01 01:00 UTC"));
        assert!(m.contains("in 59 minutes"));
        assert!(m.contains("mfa admin unlock bob"));
    }

    #[test]
    fn a_qr_code_is_drawn_in_text() {
        let q = qr_code("otpauth://totp/x:y?secret=AAAA");
        assert!(q.lines().count() > 10);
        assert!(q.contains('█') || q.contains('▀') || q.contains('▄'));
    }
}
