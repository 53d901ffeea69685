//! Escaping for the markup mfad writes (TwiML for the voice provider). The approval pages
//! and the provider's callbacks are served by mfa-web, which relays them to mfad's web
//! service (`crate::web`).

/// Text made safe to place in HTML or XML, in content or in a quoted attribute.
pub fn escape(s: &str) -> String {
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
