//! The Duo Auth API v2 provider: a site with Duo replaces pam_duo and login_duo with
//! pam_mfa and mfa-login-prompt, keeping its Duo accounts and enrolled phones.
//!
//! `config` reads `[duo]` and an existing pam_duo.conf; `sign` is Duo's request signature;
//! `api` the bounded, pooled client; `groups` pam_duo's group patterns; `flow` the login
//! itself: Duo's menu, its status lines as they come, and outages left to the fail mode.

pub mod api;
pub mod config;
pub mod flow;
pub mod groups;
pub mod sign;

use crate::clock::Clock;
use api::DuoClient;
use config::DuoConfig;
use groups::GroupPatterns;
use std::sync::Arc;

/// The provider as the daemon holds it: one client (and so one connection pool) for every
/// login, and the settings the login flow reads.
#[derive(Debug)]
pub struct Duo {
    pub client: DuoClient,
    pub(crate) groups: Option<GroupPatterns>,
    pub(crate) pushinfo: bool,
    pub(crate) autopush: bool,
    pub(crate) prompts: u32,
    pub(crate) fallback_local_ip: bool,
    pub(crate) motd: bool,
    /// mfad's policy and lockout apply to Duo logins too (`local_policy`).
    pub(crate) local_policy: bool,
    /// This host's name, sent as `hostname` and in push information.
    pub(crate) hostname: String,
}

impl Duo {
    /// Builds the provider with its own pooled HTTPS client. `cfg` should have passed
    /// `validate()`; fails only when the client cannot be built (an unreadable `cafile`).
    pub fn new(cfg: &DuoConfig, clock: Arc<dyn Clock>) -> Result<Duo, api::DuoClientError> {
        Ok(Duo::with_http(cfg, api::http_client(cfg)?, clock))
    }

    /// The provider over a given HTTP client (a benchmark compares pooling policies).
    pub fn with_http(cfg: &DuoConfig, http: reqwest::Client, clock: Arc<dyn Clock>) -> Duo {
        let hostname = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default();
        Duo {
            client: DuoClient::new(cfg, http, clock),
            groups: cfg.group_patterns(),
            pushinfo: cfg.pushinfo.unwrap_or(false),
            autopush: cfg.autopush.unwrap_or(false),
            prompts: cfg.prompts(),
            fallback_local_ip: cfg.fallback_local_ip.unwrap_or(false),
            motd: cfg.motd.unwrap_or(false),
            local_policy: cfg.local_policy.unwrap_or(true),
            hostname,
        }
    }
}

/// Text from Duo made safe for a terminal: escape sequences (CSI, OSC and other `ESC`
/// sequences) removed whole, every other control character dropped except the newline,
/// tabs made spaces, bidirectional overrides dropped; at most 4096 characters.
pub fn clean_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(4096));
    let mut chars = s.chars().peekable();
    let mut kept = 0;
    while let Some(c) = chars.next() {
        if kept >= 4096 {
            break;
        }
        match c {
            '\u{1b}' => match chars.peek() {
                // CSI: parameters and intermediates up to a final byte in @..~.
                Some('[') => {
                    chars.next();
                    for n in chars.by_ref() {
                        if ('@'..='~').contains(&n) {
                            break;
                        }
                    }
                }
                // OSC, DCS, SOS, PM, APC: up to BEL or ST (ESC \).
                Some(']' | 'P' | 'X' | '^' | '_') => {
                    chars.next();
                    while let Some(n) = chars.next() {
                        if n == '\u{7}' {
                            break;
                        }
                        if n == '\u{1b}' {
                            if chars.peek() == Some(&'\\') {
                                chars.next();
                            }
                            break;
                        }
                    }
                }
                // Any other escape: the escape and the one character it introduces.
                Some(_) => {
                    chars.next();
                }
                None => {}
            },
            '\n' => {
                out.push('\n');
                kept += 1;
            }
            '\t' => {
                out.push(' ');
                kept += 1;
            }
            // C1 CSI and OSC introducers behave like ESC [ and ESC ] on some terminals.
            '\u{9b}' => {
                for n in chars.by_ref() {
                    if ('@'..='~').contains(&n) {
                        break;
                    }
                }
            }
            c if c.is_control() => {}
            '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' => {}
            c => {
                out.push(c);
                kept += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_and_controls_are_stripped_whole() {
        assert_eq!(
            clean_text("Pushed a login request to your device..."),
            "Pushed a login request to your device..."
        );
        assert_eq!(clean_text("a\u{1b}[2J\u{1b}[1;31mred\u{1b}[0m b"), "ared b");
        assert_eq!(clean_text("x\u{1b}]0;owned title\u{7}y"), "xy");
        assert_eq!(
            clean_text("x\u{1b}]8;;http://evil\u{1b}\\link\u{1b}]8;;\u{1b}\\y"),
            "xlinky"
        );
        assert_eq!(clean_text("bell\u{7}\rover\u{8}\u{0}"), "bellover");
        assert_eq!(clean_text("line1\nline2\ttab"), "line1\nline2 tab");
        assert_eq!(clean_text("a\u{9b}31mb\u{202e}c"), "abc");
        assert_eq!(clean_text("Ünïcödé ✓"), "Ünïcödé ✓");
        assert_eq!(clean_text(&"y".repeat(5000)).len(), 4096);
    }
}
