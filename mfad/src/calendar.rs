//! Dates as mfad writes and reads them: the `YYYY-MM-DD HH:MM UTC` of messages and logs,
//! the RFC 2822 date Duo signs, and the HTTP date of a `Retry-After` header. The calendar
//! arithmetic is the `time` and `httpdate` crates'; this module only picks the formats.

use std::time::{Duration, SystemTime};
use time::OffsetDateTime;

/// `YYYY-MM-DD HH:MM UTC` for a Unix time; a time outside years -9999..=9999 (no real lock
/// or enrolment) is written as its Unix seconds rather than refused.
pub fn utc(unix: i64) -> String {
    match OffsetDateTime::from_unix_timestamp(unix) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute()
        ),
        Err(_) => format!("{unix} (Unix time)"),
    }
}

/// An RFC 2822 date in UTC as Duo's clients write it: `Fri, 07 Dec 2012 17:18:00 -0000`.
pub fn rfc2822(unix: i64) -> String {
    match OffsetDateTime::from_unix_timestamp(unix) {
        Ok(t) => format!(
            "{}, {:02} {} {:04} {:02}:{:02}:{:02} -0000",
            abbreviated(&t.weekday().to_string()),
            t.day(),
            abbreviated(&t.month().to_string()),
            t.year(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        // Duo refuses such a date, which is the right outcome for a clock this far off.
        Err(_) => format!("{unix}"),
    }
}

/// `Friday` -> `Fri`, `December` -> `Dec` (the English names `time` displays).
fn abbreviated(name: &str) -> String {
    name.chars().take(3).collect()
}

/// An HTTP date (IMF-fixdate `Sun, 06 Nov 1994 08:49:37 GMT`, or the obsolete RFC 850 and
/// asctime forms HTTP still allows) as Unix seconds; `None` when it is not one.
pub fn parse_http_date(s: &str) -> Option<i64> {
    let at = httpdate::parse_http_date(s.trim()).ok()?;
    let since = at.duration_since(SystemTime::UNIX_EPOCH).ok()?;
    i64::try_from(since.as_secs()).ok()
}

/// How long from `now` until `at` (both Unix seconds); zero when `at` has passed.
pub fn until(at: i64, now: i64) -> Duration {
    Duration::from_secs(u64::try_from(at.saturating_sub(now)).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(1_111_111_111), "2005-03-18 01:58 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc(-1), "1969-12-31 23:59 UTC");
        assert_eq!(utc(i64::MAX), format!("{} (Unix time)", i64::MAX));
    }

    #[test]
    fn dates_are_rfc_2822_in_utc() {
        // 2012-12-07 17:18:00 UTC, the date of Duo's worked example.
        assert_eq!(rfc2822(1_354_900_680), "Fri, 07 Dec 2012 17:18:00 -0000");
        assert_eq!(rfc2822(0), "Thu, 01 Jan 1970 00:00:00 -0000");
        assert_eq!(rfc2822(951_782_400), "Tue, 29 Feb 2000 00:00:00 -0000");
        assert_eq!(rfc2822(1_000_000_000), "Sun, 09 Sep 2001 01:46:40 -0000");
    }

    #[test]
    fn http_dates_parse() {
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            parse_http_date(" Fri, 07 Dec 2012 17:18:00 GMT "),
            Some(1_354_900_680)
        );
        assert_eq!(parse_http_date("soon"), None);
        assert_eq!(parse_http_date(""), None);
    }

    #[test]
    fn time_until_a_past_instant_is_zero() {
        assert_eq!(until(100, 40), Duration::from_secs(60));
        assert_eq!(until(40, 100), Duration::ZERO);
        assert_eq!(
            until(i64::MAX, i64::MIN),
            Duration::from_secs(i64::MAX as u64)
        );
    }
}
