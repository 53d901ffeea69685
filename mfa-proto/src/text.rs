//! The one log-line sanitizer: text from outside (user names, hosts, error messages)
//! escaped so it cannot forge a line or drive a terminal. mfad writes client-supplied
//! fields with [`log_field`]; pam_mfa writes whole lines with [`escape_controls`].

use std::borrow::Cow;

/// Longest client-supplied field [`log_field`] keeps, in characters.
pub const LOG_FIELD_MAX: usize = 128;

/// Every control character escaped (`\n`, `\u{1b}`...); nothing cut.
pub fn escape_controls(s: &str) -> String {
    escape(s, usize::MAX, char::is_control)
}

/// A client-supplied field for a log line: control characters, `"` and `\` escaped (so a
/// quoted field cannot be closed early), cut to [`LOG_FIELD_MAX`] characters with `...`.
pub fn log_field(s: &str) -> Cow<'_, str> {
    quotable(s, LOG_FIELD_MAX)
}

/// Text for inside double quotes: control characters, `"` and `\` escaped, cut to
/// `max_chars` characters with `...`. Text that needs neither comes back as it is, not
/// copied (a decision line's fields nearly always).
pub fn quotable(s: &str, max_chars: usize) -> Cow<'_, str> {
    let needs_escape = |c: char| c.is_control() || c == '"' || c == '\\';
    // At most `max_chars` characters, none to escape: nothing to change.
    if s.len() <= max_chars && !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(escape(s, max_chars, needs_escape))
}

fn escape(s: &str, max_chars: usize, needs_escape: impl Fn(char) -> bool) -> String {
    let mut out = String::with_capacity(s.len().min(max_chars.saturating_mul(4)));
    let mut chars = s.chars();
    for c in chars.by_ref().take(max_chars) {
        if needs_escape(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if chars.next().is_some() {
        out.push_str("...");
    }
    out
}

/// Text made safe to place in HTML or XML, in content or in a quoted attribute.
pub fn markup_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_field_cannot_forge_a_log_line() {
        assert_eq!(log_field("alice"), "alice");
        assert_eq!(log_field("a\nuser=root"), "a\\nuser=root");
        assert_eq!(log_field("x\u{1b}[2J"), "x\\u{1b}[2J");
        assert_eq!(log_field("q\"uote"), "q\\\"uote");
        assert_eq!(log_field("back\\slash"), "back\\\\slash");
        let long = "y".repeat(500);
        assert_eq!(
            log_field(&long),
            format!("{}...", "y".repeat(LOG_FIELD_MAX))
        );
        assert_eq!(
            log_field(&"z".repeat(LOG_FIELD_MAX)),
            "z".repeat(LOG_FIELD_MAX)
        );
        // Characters, not bytes: 128 two-byte letters are kept whole.
        assert_eq!(
            log_field(&"ü".repeat(LOG_FIELD_MAX)),
            "ü".repeat(LOG_FIELD_MAX)
        );
        assert_eq!(
            log_field(&"ü".repeat(LOG_FIELD_MAX + 1)),
            format!("{}...", "ü".repeat(LOG_FIELD_MAX))
        );
        // Nothing to change: the text itself, not a copy.
        assert!(matches!(log_field("alice"), Cow::Borrowed("alice")));
    }

    #[test]
    fn a_whole_line_keeps_its_quotes_and_length() {
        assert_eq!(
            escape_controls("evil\nJan 1 sshd: ok\0"),
            "evil\\nJan 1 sshd: ok\\u{0}"
        );
        assert_eq!(escape_controls("ünïcode \"host-1\""), "ünïcode \"host-1\"");
        assert_eq!(escape_controls(&"w".repeat(500)), "w".repeat(500));
    }
}
