//! Configuration of the out-of-band parts: the approval endpoint, the push notifier and the
//! Twilio-compatible SMS/voice provider. Each is a TOML table of its own; every key has a
//! default, and `validate()` names the offending key, so a typo is refused, not guessed at.

use serde::Deserialize;
use std::fmt;
use std::path::PathBuf;
use zeroize::Zeroizing;

/// A credential read from the config file. Its `Debug` never shows it, so `--check-config`
/// and error messages cannot print it; the memory is wiped when it is dropped.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(Zeroizing::new(value.into()))
    }
    /// The credential itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        self.0.as_str()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A secret is written as `(hidden)` (or `(unset)`), never as itself: `--check-config`
/// prints the effective settings.
impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.0.is_empty() {
            "(unset)"
        } else {
            "(hidden)"
        })
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("(unset)")
        } else {
            f.write_str("(hidden)")
        }
    }
}

/// `[approval]`: the approval requests of pushes and phone calls. The pages users' phones
/// open, and the voice provider's callbacks, are served by mfa-web (its own unprivileged
/// process, configured in `/etc/mfa/mfa-web.toml`), which relays them to mfad.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(default)]
pub struct ApprovalConfig {
    /// The base URL users' phones (and the voice provider) reach mfa-web at, for example
    /// `https://mfa.example.org`; approval links are `{public_url}/a/{token}`, and callbacks
    /// are verified against it. Required. It may carry a path prefix when a reverse proxy
    /// adds one.
    pub public_url: String,
    /// Seconds an approval link stays valid. Default 60; 10 to 600.
    pub token_ttl: u64,
    /// Verified push: the login prompt shows a two-digit number that the user must type on
    /// the approval page; a wrong number denies. Default false.
    pub verified_push: bool,
    /// Keys of the listener mfad no longer runs (`listen`, `tls_cert`, `tls_key`,
    /// `connections_per_address`): read only to refuse them with a message naming
    /// mfa-web's config, where they belong now.
    #[serde(flatten, skip_serializing)]
    pub moved: std::collections::BTreeMap<String, toml::Value>,
}

/// The `[approval]` keys that moved to mfa-web's config with the listener.
pub const MOVED_TO_MFA_WEB: [(&str, &str); 4] = [
    ("listen", "approval.listen"),
    ("tls_cert", "approval.tls_cert"),
    ("tls_key", "approval.tls_key"),
    (
        "connections_per_address",
        "approval.connections_per_address",
    ),
];

/// Where mfa-web reads its config (mfa-web's `DEFAULT_CONFIG`).
pub const MFA_WEB_CONFIG: &str = "/etc/mfa/mfa-web.toml";

impl Default for ApprovalConfig {
    fn default() -> Self {
        ApprovalConfig {
            public_url: String::new(),
            token_ttl: 60,
            verified_push: false,
            moved: Default::default(),
        }
    }
}

/// Which push notifier `[push]` talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifierKind {
    /// ntfy (self-hosted or ntfy.sh), through its JSON publish API.
    Ntfy,
    /// A generic JSON webhook (see `notify.rs` for the body it receives).
    Webhook,
}

/// `[push]`: how a login request reaches the user's phone.
#[derive(Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PushConfig {
    /// `"ntfy"` (default) or `"webhook"`.
    pub notifier: NotifierKind,
    /// For ntfy, the server's base URL (`https://ntfy.example.org`); the device's topic is
    /// sent in the JSON body. For a webhook, the URL that receives the POST. Required;
    /// `https://` unless the host is loopback.
    pub url: String,
    /// Optional bearer token sent as `Authorization: Bearer …` (an ntfy access token). Never
    /// logged. A config holding it must be private (mode 0600); or use `token_file`.
    pub token: Option<Secret>,
    /// A private file (root's, mode 0600) holding the token instead.
    pub token_file: Option<PathBuf>,
    /// Seconds to wait for the notifier, connection included. Default 10; 1 to 60.
    pub timeout: u64,
    /// ntfy only: accept a topic the user picks (`mfa add push --name N TOPIC`). Off by
    /// default: mfad then generates every topic (128 random bits), because on a server
    /// without read access control anyone who guesses a topic can approve its logins. Turn
    /// it on only when the ntfy server enforces per-user access to topics.
    pub allow_chosen_topics: bool,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            notifier: NotifierKind::Ntfy,
            url: String::new(),
            token: None,
            token_file: None,
            timeout: 10,
            allow_chosen_topics: false,
        }
    }
}

impl fmt::Debug for PushConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushConfig")
            .field("notifier", &self.notifier)
            .field("url", &self.url)
            .field("token", &self.token)
            .field("token_file", &self.token_file)
            .field("timeout", &self.timeout)
            .field("allow_chosen_topics", &self.allow_chosen_topics)
            .finish()
    }
}

/// `[twilio]`: a Twilio-compatible REST API for SMS passcodes and phone calls.
#[derive(Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TwilioConfig {
    /// The API's base URL. Default `https://api.twilio.com`; `https://` unless loopback.
    pub api_base: String,
    /// The account SID (`AC…`), used as the basic-auth user and in the API paths. Required.
    pub account_sid: String,
    /// The account's auth token: the basic-auth password, and the key that signs the
    /// provider's callbacks. Required, here or in `auth_token_file`. Never logged. A config
    /// holding it must be private (mode 0600).
    pub auth_token: Secret,
    /// A private file (root's, mode 0600) holding the auth token instead.
    pub auth_token_file: Option<PathBuf>,
    /// The sending number in E.164 form (`+15551234567`). Required.
    pub from: String,
    /// Seconds to wait for the API, connection included. Default 10; 1 to 60.
    pub timeout: u64,
    /// Prefixes (`"+1"`, `"+44"`) a phone number must start with to be added, texted or
    /// called. Empty (the default): any number.
    pub allowed_country_codes: Vec<String>,
}

impl Default for TwilioConfig {
    fn default() -> Self {
        TwilioConfig {
            api_base: "https://api.twilio.com".to_string(),
            account_sid: String::new(),
            auth_token: Secret::default(),
            auth_token_file: None,
            from: String::new(),
            timeout: 10,
            allowed_country_codes: Vec::new(),
        }
    }
}

impl fmt::Debug for TwilioConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TwilioConfig")
            .field("api_base", &self.api_base)
            .field("account_sid", &self.account_sid)
            .field("auth_token", &self.auth_token)
            .field("auth_token_file", &self.auth_token_file)
            .field("from", &self.from)
            .field("timeout", &self.timeout)
            .field("allowed_country_codes", &self.allowed_country_codes)
            .finish()
    }
}

/// A value the out-of-band configuration refuses, named by its key (`approval.public_url`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key} = {value} is invalid: {why}")]
pub struct OobConfigError {
    pub key: &'static str,
    /// The value as written, or `(hidden)` for a credential.
    pub value: String,
    pub why: String,
}

fn invalid(key: &'static str, value: impl fmt::Display, why: impl Into<String>) -> OobConfigError {
    OobConfigError {
        key,
        value: format!("\"{value}\""),
        why: why.into(),
    }
}

/// Checks an outgoing or public URL: http(s), a host, no credentials, query or fragment, and
/// plain http only to a loopback host (so a token or auth header never crosses a network in
/// clear text).
fn check_url(
    key: &'static str,
    value: &str,
    allow_plain_anywhere: bool,
) -> Result<(), OobConfigError> {
    if value.is_empty() {
        return Err(invalid(key, value, "must be set"));
    }
    let url =
        reqwest::Url::parse(value).map_err(|e| invalid(key, value, format!("not a URL ({e})")))?;
    let Some(host) = url.host_str() else {
        return Err(invalid(key, value, "must name a host"));
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match url.scheme() {
        "https" => {}
        "http" if loopback || allow_plain_anywhere => {}
        "http" => {
            return Err(invalid(
                key,
                value,
                "must use https:// (plain http:// is allowed only to localhost)",
            ));
        }
        _ => return Err(invalid(key, value, "must start with https://")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            key,
            value,
            "must not carry credentials; use the token setting",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(key, value, "must not have a query or fragment"));
    }
    Ok(())
}

fn check_timeout(key: &'static str, secs: u64) -> Result<(), OobConfigError> {
    if (1..=60).contains(&secs) {
        Ok(())
    } else {
        Err(invalid(key, secs, "must be 1 to 60 seconds"))
    }
}

impl ApprovalConfig {
    pub fn validate(&self) -> Result<(), OobConfigError> {
        // The public URL is what a phone opens; a reverse proxy in front may terminate TLS,
        // so plain http is allowed here (it only makes sense for a test or a private network).
        if let Some((key, value)) = self.moved.iter().next() {
            return Err(match MOVED_TO_MFA_WEB.iter().find(|(k, _)| k == key) {
                Some((short, full)) => invalid(
                    full,
                    value
                        .as_str()
                        .map_or_else(|| value.to_string(), str::to_string),
                    format!(
                        "{full} has moved to mfa-web's config {MFA_WEB_CONFIG} (as `{short}`): \
                         mfa-web, not mfad, serves the approval pages now; remove it here"
                    ),
                ),
                None => invalid(
                    "approval",
                    key,
                    "is not a setting of [approval] (public_url, token_ttl, verified_push)",
                ),
            });
        }
        check_url("approval.public_url", &self.public_url, true)?;
        if !(10..=600).contains(&self.token_ttl) {
            return Err(invalid(
                "approval.token_ttl",
                self.token_ttl,
                "must be 10 to 600 seconds",
            ));
        }
        Ok(())
    }

    /// `public_url` without a trailing slash, ready to have a path appended.
    pub fn public_base(&self) -> &str {
        self.public_url.trim_end_matches('/')
    }

    /// The approval page a push notification links to.
    pub fn approval_url(&self, token: &str) -> String {
        format!("{}/a/{token}", self.public_base())
    }

    /// The URL the voice provider fetches the call's TwiML from.
    pub fn voice_url(&self, token: &str) -> String {
        format!("{}/twilio/voice/{token}", self.public_base())
    }
}

impl PushConfig {
    pub fn validate(&self) -> Result<(), OobConfigError> {
        check_url("push.url", &self.url, false)?;
        if let Some(token) = &self.token
            && token.is_empty()
        {
            return Err(OobConfigError {
                key: "push.token",
                value: "\"\"".into(),
                why: "is empty; remove the key or give the token".into(),
            });
        }
        check_timeout("push.timeout", self.timeout)
    }
}

/// Fills `secret` from `file` (read after the private-file check), refusing both at once.
fn resolve_secret(
    secret: &mut Option<Secret>,
    file: Option<&std::path::Path>,
    key: &'static str,
    file_key: &'static str,
) -> Result<(), OobConfigError> {
    let Some(file) = file else {
        return Ok(());
    };
    if secret.as_ref().is_some_and(|s| !s.is_empty()) {
        return Err(OobConfigError {
            key: file_key,
            value: format!("\"{}\"", file.display()),
            why: format!("set {key} or {file_key}, not both"),
        });
    }
    let value = crate::secret_file::read_secret(file, file_key).map_err(|e| OobConfigError {
        key: file_key,
        value: format!("\"{}\"", file.display()),
        why: e.to_string(),
    })?;
    *secret = Some(Secret(value));
    Ok(())
}

impl PushConfig {
    /// Reads `token_file` into `token`.
    pub fn resolve_files(&mut self) -> Result<(), OobConfigError> {
        resolve_secret(
            &mut self.token,
            self.token_file.as_deref(),
            "push.token",
            "push.token_file",
        )
    }
}

impl TwilioConfig {
    /// Reads `auth_token_file` into `auth_token`.
    pub fn resolve_files(&mut self) -> Result<(), OobConfigError> {
        let mut token = Some(std::mem::take(&mut self.auth_token));
        let result = resolve_secret(
            &mut token,
            self.auth_token_file.as_deref(),
            "twilio.auth_token",
            "twilio.auth_token_file",
        );
        self.auth_token = token.unwrap_or_default();
        result
    }

    /// Whether `number` (E.164) may be texted or called under `allowed_country_codes`.
    pub fn number_allowed(&self, number: &str) -> bool {
        self.allowed_country_codes.is_empty()
            || self
                .allowed_country_codes
                .iter()
                .any(|p| number.starts_with(p.as_str()))
    }

    pub fn validate(&self) -> Result<(), OobConfigError> {
        check_url("twilio.api_base", &self.api_base, false)?;
        // The SID goes into the request path, so it may hold only what a SID is made of.
        if self.account_sid.is_empty()
            || self.account_sid.len() > 64
            || !self
                .account_sid
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(invalid(
                "twilio.account_sid",
                &self.account_sid,
                "must be set to the account SID (letters, digits and dashes)",
            ));
        }
        if self.auth_token.is_empty() {
            return Err(invalid(
                "twilio.auth_token",
                "",
                "must be set (or twilio.auth_token_file)",
            ));
        }
        for prefix in &self.allowed_country_codes {
            let digits = prefix.strip_prefix('+').unwrap_or("");
            if !(1..=6).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid(
                    "twilio.allowed_country_codes",
                    prefix,
                    "each must be + and 1 to 6 digits, like \"+1\" or \"+44\"",
                ));
            }
        }
        if let Err(e) = crate::oob::phone::check_phone(&self.from) {
            return Err(invalid("twilio.from", &self.from, e.to_string()));
        }
        check_timeout("twilio.timeout", self.timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        approval: Option<ApprovalConfig>,
        push: Option<PushConfig>,
        twilio: Option<TwilioConfig>,
    }

    fn parse(text: &str) -> File {
        toml::from_str(text).unwrap()
    }

    fn approval(text: &str) -> ApprovalConfig {
        parse(&format!("[approval]\n{text}")).approval.unwrap()
    }

    #[test]
    fn approval_defaults_are_loopback_and_sixty_seconds() {
        let a = approval("public_url = \"https://mfa.example.org/\"\n");
        assert_eq!(a.token_ttl, 60);
        assert!(!a.verified_push);
        a.validate().unwrap();
        assert_eq!(a.approval_url("T"), "https://mfa.example.org/a/T");
        assert_eq!(a.voice_url("T"), "https://mfa.example.org/twilio/voice/T");
    }

    #[test]
    fn the_listener_keys_are_refused_naming_mfa_webs_config() {
        for (key, value) in [
            ("listen", "\"127.0.0.1:8443\""),
            ("tls_cert", "\"/etc/mfa/cert.pem\""),
            ("tls_key", "\"/etc/mfa/key.pem\""),
            ("connections_per_address", "16"),
        ] {
            let a = approval(&format!(
                "public_url = \"https://m.example.org\"\n{key} = {value}\n"
            ));
            let err = a.validate().unwrap_err();
            assert_eq!(err.key, format!("approval.{key}"));
            assert!(err.to_string().contains(MFA_WEB_CONFIG), "{err}");
            assert!(err.to_string().contains("moved"), "{err}");
        }
        let a = approval("public_url = \"https://m.example.org\"\nlisen = 1\n");
        let err = a.validate().unwrap_err();
        assert!(err.to_string().contains("not a setting"), "{err}");
    }

    #[test]
    fn a_missing_public_url_or_bad_ttl_is_named() {
        assert_eq!(
            approval("").validate().unwrap_err().key,
            "approval.public_url"
        );
        let a = approval("public_url = \"https://m.example.org\"\ntoken_ttl = 5\n");
        assert_eq!(a.validate().unwrap_err().key, "approval.token_ttl");
    }

    #[test]
    fn an_unknown_key_is_refused() {
        let err = toml::from_str::<File>("[push]\nurl = \"https://n\"\ntopic = \"x\"\n")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("topic"), "{err}");
    }

    #[test]
    fn push_needs_https_off_loopback() {
        let p = parse("[push]\nurl = \"http://ntfy.example.org\"\n")
            .push
            .unwrap();
        assert_eq!(p.validate().unwrap_err().key, "push.url");
        let p = parse("[push]\nurl = \"http://127.0.0.1:8080\"\n")
            .push
            .unwrap();
        p.validate().unwrap();
        assert_eq!(p.notifier, NotifierKind::Ntfy);
        assert_eq!(p.timeout, 10);
        let p = parse(
            "[push]\nnotifier = \"webhook\"\nurl = \"https://h.example.org/x\"\ntimeout = 0\n",
        )
        .push
        .unwrap();
        assert_eq!(p.notifier, NotifierKind::Webhook);
        assert_eq!(p.validate().unwrap_err().key, "push.timeout");
    }

    #[test]
    fn credentials_never_appear_in_debug_or_errors() {
        let t = parse(
            "[twilio]\naccount_sid = \"AC123\"\nauth_token = \"sekrit-token\"\nfrom = \"+15550001111\"\n",
        )
        .twilio
        .unwrap();
        t.validate().unwrap();
        assert_eq!(t.api_base, "https://api.twilio.com");
        assert!(!format!("{t:?}").contains("sekrit"));
        let p = parse("[push]\nurl = \"https://n.example.org\"\ntoken = \"tk_sekrit\"\n")
            .push
            .unwrap();
        assert!(!format!("{p:?}").contains("sekrit"));
        let t = parse(
            "[twilio]\naccount_sid = \"AC1/../x\"\nauth_token = \"s\"\nfrom = \"+15550001111\"\n",
        )
        .twilio
        .unwrap();
        assert_eq!(t.validate().unwrap_err().key, "twilio.account_sid");
        let t = parse("[twilio]\naccount_sid = \"AC1\"\nfrom = \"+15550001111\"\n")
            .twilio
            .unwrap();
        assert_eq!(t.validate().unwrap_err().key, "twilio.auth_token");
        let t = parse("[twilio]\naccount_sid = \"AC1\"\nauth_token = \"s\"\nfrom = \"555\"\n")
            .twilio
            .unwrap();
        assert_eq!(t.validate().unwrap_err().key, "twilio.from");
    }
}
