//! The one configuration file, `/etc/mfa/mfad.toml`.
//!
//! Every key has a default (documented in `conf/mfad.toml`); unknown keys and bad values are
//! refused with the key and line named, so a typo never silently weakens policy.

use crate::oob::config::{ApprovalConfig, PushConfig, TwilioConfig};
use serde::Deserialize;
use std::path::{Path, PathBuf};

pub const DEFAULT_CONFIG: &str = "/etc/mfa/mfad.toml";

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub socket: PathBuf,
    /// Where the state lives: `sqlite:///path/to/file.db` (one host) or a `postgresql://`
    /// URL (a cluster's nodes sharing one state). Unset: SQLite at `database`.
    pub store: Option<String>,
    /// The SQLite file (the older spelling of `store = "sqlite://…"`).
    pub database: PathBuf,
    /// `[postgres]`: how a `postgresql://` store is reached.
    pub postgres: PostgresConfig,
    /// The backend `store` (or `database`) names, resolved while parsing.
    #[serde(skip)]
    pub location: StoreLocation,
    /// The key that seals secrets in the database (created at first start when missing).
    pub store_key: PathBuf,
    pub issuer: Option<String>,
    pub unenrolled: Unenrolled,
    pub max_attempts: u32,
    /// Seconds mfad waits for an answer to a prompt.
    pub answer_timeout: u64,
    /// While a push or call is pending, show the waiting text in a prompt the user confirms
    /// with Enter (OpenSSH before 10.3 shows PAM text only with a prompt).
    pub wait_prompt: bool,
    /// Seconds an account and its groups found in the user database (NSS) are kept before
    /// they are looked up again; 0: every login asks NSS.
    pub user_cache: u64,
    /// Days each login is kept in the login history (the portal's "my recent logins");
    /// 0: no history is kept.
    pub login_history: u32,
    pub totp: TotpConfig,
    pub hotp: HotpConfig,
    pub lockout: LockoutConfig,
    pub log: LogConfig,
    /// The HTTPS endpoint phones reach to approve pushes and answer calls. Off when absent.
    pub approval: Option<ApprovalConfig>,
    /// Push notifications (needs `[approval]`). Off when absent.
    pub push: Option<PushConfig>,
    /// SMS passcodes, and phone calls when `[approval]` is set too. Off when absent.
    pub twilio: Option<TwilioConfig>,
    pub sms: SmsConfig,
    pub policy: crate::policy::PolicyConfig,
    /// Duo Auth API provider (see `duo/config.rs`): when set, every login goes through Duo.
    pub duo: Option<crate::duo::config::DuoConfig>,
    /// An existing pam_duo.conf / login_duo.conf to read `[duo]` settings from.
    pub duo_conf: Option<PathBuf>,
    /// Rate limits on texts, calls and pushes, and on unconfirmed phone additions.
    pub limits: crate::oob::limits::LimitsConfig,
    /// `[metrics]`: the Prometheus listener, off unless configured.
    pub metrics: Option<crate::metrics::MetricsConfig>,
    /// `[web]`: the user mfa-web (the approval pages' web front) runs as.
    pub web: crate::web::WebConfig,
    /// The secrets written in this file itself (`twilio.auth_token`...), found while
    /// parsing: such a file must be private.
    #[serde(skip)]
    pub inline_secrets: Vec<&'static str>,
}

/// Which backend holds the state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StoreLocation {
    /// The SQLite file in `database`.
    #[default]
    Sqlite,
    /// A PostgreSQL database (the URL, with no password in it).
    Postgres(String),
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresConfig {
    /// A file (root's, mode 0600) holding the role's password; systemd credentials work
    /// too (`LoadCredential=`, then `%d/…` is `$CREDENTIALS_DIRECTORY/…`).
    pub password_file: Option<PathBuf>,
    /// The CA certificates (PEM) the server's certificate is checked against; unset: the
    /// public web roots.
    pub ca_file: Option<PathBuf>,
    /// Connections each mfad keeps at most.
    pub pool_size: u32,
    /// Seconds to open a connection.
    pub connect_timeout: u64,
    /// Seconds a statement may run (also the server's `statement_timeout`).
    pub statement_timeout: u64,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            password_file: None,
            ca_file: None,
            pool_size: 8,
            connect_timeout: 5,
            statement_timeout: 5,
        }
    }
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmsConfig {
    /// Seconds an SMS passcode stays valid.
    pub code_ttl: u64,
    /// Digits of an SMS passcode (7, so it is never taken for an app's 6 or a bypass 8).
    pub digits: u32,
}

impl Default for SmsConfig {
    fn default() -> Self {
        SmsConfig {
            code_ttl: 300,
            digits: 7,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Unenrolled {
    Deny,
    Allow,
    /// Enrol an authenticator app during the login itself (trusted networks only, unless
    /// `policy.enroll_from_anywhere`).
    Enroll,
    /// Refuse the login and show a one-time link (and its QR code) to mfa-web's enrolment
    /// page, `{web.public_url}/enroll/{token}`, valid `web.enroll_link_ttl` seconds. Offered
    /// where `enroll` would be (trusted networks, unless `policy.enroll_from_anywhere`).
    Link,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TotpConfig {
    pub digits: u32,
    pub period: u64,
    pub window: u64,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HotpConfig {
    /// Counters past the expected one in which a hardware token's code is looked for.
    pub look_ahead: u64,
}

impl Default for HotpConfig {
    fn default() -> Self {
        HotpConfig { look_ahead: 10 }
    }
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LockoutConfig {
    pub max_failures: u32,
    /// Seconds.
    pub duration: u64,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// The system log on (the journal or syslog, as `target` says) or off.
    pub syslog: bool,
    pub target: LogTarget,
    pub level: LogLevel,
}

/// Where the system log goes (`[log] target`); see [`crate::logging::destination`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogTarget {
    /// The journal when systemd connected stderr to it (`$JOURNAL_STREAM`), else syslog.
    #[default]
    Auto,
    Journald,
    Syslog,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            socket: PathBuf::from(mfa_proto::DEFAULT_SOCKET),
            store: None,
            database: PathBuf::from("/var/lib/mfa/mfa.db"),
            postgres: PostgresConfig::default(),
            location: StoreLocation::Sqlite,
            store_key: PathBuf::from("/etc/mfa/store.key"),
            issuer: None,
            unenrolled: Unenrolled::Deny,
            max_attempts: 3,
            answer_timeout: 120,
            user_cache: 5,
            login_history: 30,
            wait_prompt: true,
            totp: TotpConfig::default(),
            hotp: HotpConfig::default(),
            lockout: LockoutConfig::default(),
            log: LogConfig::default(),
            approval: None,
            push: None,
            twilio: None,
            sms: SmsConfig::default(),
            policy: crate::policy::PolicyConfig::default(),
            duo: None,
            duo_conf: None,
            limits: crate::oob::limits::LimitsConfig::default(),
            metrics: None,
            web: crate::web::WebConfig::default(),
            inline_secrets: Vec::new(),
        }
    }
}

impl Default for TotpConfig {
    fn default() -> Self {
        TotpConfig {
            digits: 6,
            period: 30,
            window: 1,
        }
    }
}

impl Default for LockoutConfig {
    fn default() -> Self {
        LockoutConfig {
            max_failures: 10,
            duration: 3600,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            syslog: true,
            target: LogTarget::Auto,
            level: LogLevel::Info,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {key} = {value} is out of range: {why}")]
    Range {
        path: PathBuf,
        key: &'static str,
        value: String,
        why: &'static str,
    },
    /// A file holding a secret that others may read, or that root does not own.
    #[error("{0}")]
    Insecure(String),
}

impl Config {
    /// Reads and checks the file. A file holding a secret inline must be private (root's,
    /// mode 0600), like every `*_file` it names; one without may stay world-readable.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let read_err = |source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        };
        let text = std::fs::read_to_string(path).map_err(read_err)?;
        let config = Config::parse(&text, path)?;
        if let Some(first) = config.inline_secrets.first() {
            let meta = std::fs::metadata(path).map_err(read_err)?;
            crate::secret_file::check_private(path, &meta, &format!("{first} is set inline"))
                .map_err(|e| {
                    ConfigError::Insecure(format!(
                        "{e} (or move the secret into a private file named by {first}_file)"
                    ))
                })?;
        }
        Ok(config)
    }

    /// Parses `text` (read from `path`, used only in messages).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        // toml's message names the line, the column and the offending key.
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        config.inline_secrets = config.find_inline_secrets();
        config.resolve_store(path)?;
        config.resolve_secret_files(path)?;
        config.validate(path)?;
        // Duo: merges duo_conf into [duo] and validates the result.
        crate::duo::config::resolve(&mut config.duo, config.duo_conf.as_deref()).map_err(|e| {
            ConfigError::Parse {
                path: path.to_path_buf(),
                message: e.to_string(),
            }
        })?;
        Ok(config)
    }

    fn find_inline_secrets(&self) -> Vec<&'static str> {
        let mut found = Vec::new();
        if self
            .twilio
            .as_ref()
            .is_some_and(|t| !t.auth_token.is_empty())
        {
            found.push("twilio.auth_token");
        }
        if self.push.as_ref().is_some_and(|p| p.token.is_some()) {
            found.push("push.token");
        }
        // Before duo_conf is merged in: a skey here was written in this file.
        if self.duo.as_ref().is_some_and(|d| d.skey.is_some()) {
            found.push("duo.skey");
        }
        found
    }

    /// Resolves `store` (or `database`) into [`Config::location`].
    fn resolve_store(&mut self, path: &Path) -> Result<(), ConfigError> {
        let range = |key, value: String, why| ConfigError::Range {
            path: path.to_path_buf(),
            key,
            value,
            why,
        };
        let Some(store) = self.store.clone() else {
            self.location = StoreLocation::Sqlite;
            return Ok(());
        };
        if self.database != Config::default().database {
            return Err(range(
                "database",
                self.database.display().to_string(),
                "set either store or database, not both",
            ));
        }
        if let Some(file) = store.strip_prefix("sqlite://") {
            if !file.starts_with('/') {
                return Err(range(
                    "store",
                    store.clone(),
                    "an SQLite store is sqlite:// and an absolute path, e.g. sqlite:///var/lib/mfa/mfa.db",
                ));
            }
            self.database = PathBuf::from(file);
            self.location = StoreLocation::Sqlite;
        } else if store.starts_with("postgresql://") || store.starts_with("postgres://") {
            let authority = store.split("://").nth(1).unwrap_or("");
            let authority = authority.split(['/', '?']).next().unwrap_or("");
            if authority
                .rsplit_once('@')
                .is_some_and(|(u, _)| u.contains(':'))
            {
                return Err(range(
                    "store",
                    redact_urls(&store),
                    "must not hold a password (this file is readable by all): put it in                      [postgres] password_file",
                ));
            }
            self.location = StoreLocation::Postgres(store);
        } else {
            return Err(range(
                "store",
                redact_urls(&store),
                "must start with sqlite:// or postgresql://",
            ));
        }
        let pg = &self.postgres;
        if !(1..=256).contains(&pg.pool_size) {
            return Err(range(
                "postgres.pool_size",
                pg.pool_size.to_string(),
                "must be 1 to 256",
            ));
        }
        for (key, v) in [
            ("postgres.connect_timeout", pg.connect_timeout),
            ("postgres.statement_timeout", pg.statement_timeout),
        ] {
            if !(1..=60).contains(&v) {
                return Err(range(key, v.to_string(), "must be 1 to 60 seconds"));
            }
        }
        for (key, file) in [
            ("postgres.password_file", &pg.password_file),
            ("postgres.ca_file", &pg.ca_file),
        ] {
            if let Some(f) = file
                && !f.is_absolute()
            {
                return Err(range(
                    key,
                    f.display().to_string(),
                    "must be an absolute path",
                ));
            }
        }
        Ok(())
    }

    /// Reads every `*_file` secret (each must be private).
    fn resolve_secret_files(&mut self, path: &Path) -> Result<(), ConfigError> {
        let oob = |e: crate::oob::config::OobConfigError| {
            ConfigError::Insecure(format!("{}: {e}", path.display()))
        };
        if let Some(t) = &mut self.twilio {
            t.resolve_files().map_err(oob)?;
        }
        if let Some(p) = &mut self.push {
            p.resolve_files().map_err(oob)?;
        }
        Ok(())
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let range = |key, value: String, why| ConfigError::Range {
            path: path.to_path_buf(),
            key,
            value,
            why,
        };
        if !(self.totp.digits == 6 || self.totp.digits == 8) {
            return Err(range(
                "totp.digits",
                self.totp.digits.to_string(),
                "must be 6 or 8",
            ));
        }
        if !(15..=300).contains(&self.totp.period) {
            return Err(range(
                "totp.period",
                self.totp.period.to_string(),
                "must be 15 to 300 seconds",
            ));
        }
        if self.totp.window > 10 {
            return Err(range(
                "totp.window",
                self.totp.window.to_string(),
                "must be 0 to 10 steps",
            ));
        }
        if !(1..=100).contains(&self.hotp.look_ahead) {
            return Err(range(
                "hotp.look_ahead",
                self.hotp.look_ahead.to_string(),
                "must be 1 to 100 counters",
            ));
        }
        if !(1..=10).contains(&self.max_attempts) {
            return Err(range(
                "max_attempts",
                self.max_attempts.to_string(),
                "must be 1 to 10",
            ));
        }
        if self.user_cache > 60 {
            return Err(range(
                "user_cache",
                self.user_cache.to_string(),
                "must be 0 to 60 seconds",
            ));
        }
        if self.login_history > 3650 {
            return Err(range(
                "login_history",
                self.login_history.to_string(),
                "must be 0 to 3650 days",
            ));
        }
        if !(5..=3600).contains(&self.answer_timeout) {
            return Err(range(
                "answer_timeout",
                self.answer_timeout.to_string(),
                "must be 5 to 3600 seconds",
            ));
        }
        if self.lockout.max_failures > 0 && self.lockout.duration == 0 {
            return Err(range(
                "lockout.duration",
                "0".into(),
                "must be positive while lockout.max_failures is set",
            ));
        }
        if self.sms.digits != 7 {
            return Err(range(
                "sms.digits",
                self.sms.digits.to_string(),
                "must be 7 (6 and 8 belong to apps and bypass codes)",
            ));
        }
        if !(60..=900).contains(&self.sms.code_ttl) {
            return Err(range(
                "sms.code_ttl",
                self.sms.code_ttl.to_string(),
                "must be 60 to 900 seconds",
            ));
        }
        self.web
            .validate(self.unenrolled == Unenrolled::Link)
            .map_err(|message| ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            })?;
        self.limits.validate().map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        self.policy.validate().map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let oob = |e: crate::oob::config::OobConfigError| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        if let Some(a) = &self.approval {
            a.validate().map_err(oob)?;
        }
        if let Some(p) = &self.push {
            p.validate().map_err(oob)?;
            if self.approval.is_none() {
                return Err(ConfigError::Parse {
                    path: path.to_path_buf(),
                    message: "[push] needs [approval]: the push links to its approval page".into(),
                });
            }
        }
        if let Some(t) = &self.twilio {
            t.validate().map_err(oob)?;
        }
        if !self.socket.is_absolute() {
            return Err(range(
                "socket",
                self.socket.display().to_string(),
                "must be an absolute path",
            ));
        }
        if !self.database.is_absolute() {
            return Err(range(
                "database",
                self.database.display().to_string(),
                "must be an absolute path",
            ));
        }
        if !self.store_key.is_absolute() {
            return Err(range(
                "store_key",
                self.store_key.display().to_string(),
                "must be an absolute path",
            ));
        }
        Ok(())
    }

    /// The settings in force, as `--check-config` prints them: secrets hidden, and the
    /// credentials of every URL (a proxy's `user:password@`) redacted.
    pub fn describe(&self) -> String {
        match toml::to_string(self) {
            Ok(text) => redact_urls(&text),
            // Every field serializes; should one not, the settings still show, as Rust
            // writes them.
            Err(e) => redact_urls(&format!("# not TOML ({e}):\n{self:#?}")),
        }
    }

    /// The issuer shown in authenticator apps: the configured one, else the host name.
    pub fn issuer(&self) -> String {
        if let Some(issuer) = &self.issuer {
            return issuer.clone();
        }
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "mfa".to_string())
    }
}

/// Replaces the user-info part of every `scheme://user:password@host` in `text`: the
/// password (or a lone token) becomes `(hidden)`.
pub fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| matches!(c, '/' | '"' | '?' | '#' | '\\') || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(userinfo_end) => {
                let userinfo = &authority[..userinfo_end];
                match userinfo.split_once(':') {
                    Some((user, _)) => {
                        out.push_str(user);
                        out.push_str(":(hidden)");
                    }
                    None => out.push_str("(hidden)"),
                }
                out.push_str(&authority[userinfo_end..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// The keys a running mfad cannot change (its socket, store, key, log, listeners): a reload
/// (SIGHUP) keeps their old values and names them. Everything else takes effect for the
/// next conversation.
pub const RESTART_ONLY: &[&str] = &[
    "socket",
    "store",
    "database",
    "[postgres]",
    "store_key",
    "[log]",
    "[metrics]",
    "[approval]",
    "[twilio] auth_token",
];

impl Config {
    /// `new` with the old value of every [`RESTART_ONLY`] key put back; returns it with
    /// the keys that had changed (compared without ever printing a secret).
    pub fn for_reload(&self, mut new: Config) -> (Config, Vec<&'static str>) {
        let mut kept = Vec::new();
        let mut keep = |changed: bool, key: &'static str| {
            if changed {
                kept.push(key);
            }
        };
        keep(new.socket != self.socket, "socket");
        keep(new.store != self.store, "store");
        keep(new.database != self.database, "database");
        keep(
            format!("{:?}", new.postgres) != format!("{:?}", self.postgres),
            "[postgres]",
        );
        keep(new.store_key != self.store_key, "store_key");
        keep(
            format!("{:?}", new.log) != format!("{:?}", self.log),
            "[log]",
        );
        keep(new.metrics != self.metrics, "[metrics]");
        keep(
            format!("{:?}", new.approval) != format!("{:?}", self.approval),
            "[approval]",
        );
        let old_token = self.twilio.as_ref().map(|t| t.auth_token.expose());
        let new_token = new.twilio.as_ref().map(|t| t.auth_token.expose());
        keep(
            old_token.is_some() && new_token.is_some() && old_token != new_token,
            "[twilio] auth_token",
        );
        new.socket = self.socket.clone();
        new.store = self.store.clone();
        new.database = self.database.clone();
        new.postgres = self.postgres.clone();
        new.location = self.location.clone();
        new.store_key = self.store_key.clone();
        new.log = self.log.clone();
        new.metrics = self.metrics.clone();
        new.approval = self.approval.clone();
        if let (Some(old), Some(t)) = (&self.twilio, new.twilio.as_mut()) {
            t.auth_token = old.auth_token.clone();
        }
        (new, kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/mfa/mfad.toml"))
    }

    #[test]
    fn the_shipped_example_parses_to_the_defaults() {
        let text = include_str!("../../conf/mfad.toml");
        let c = parse(text).unwrap();
        let d = Config::default();
        assert_eq!(c.socket, d.socket);
        assert_eq!(c.database, d.database);
        assert_eq!(c.unenrolled, Unenrolled::Deny);
        assert_eq!(c.max_attempts, 3);
        assert_eq!(c.lockout.max_failures, 10);
        assert_eq!(c.lockout.duration, 3600);
        assert_eq!(c.totp.window, 1);
    }

    #[test]
    fn credentials_in_printed_urls_are_redacted() {
        assert_eq!(
            redact_urls("http_proxy: Some(\"http://squid:pa55word@proxy.example.org:3128/\")"),
            "http_proxy: Some(\"http://squid:(hidden)@proxy.example.org:3128/\")"
        );
        assert_eq!(
            redact_urls("a https://tok3n@h.example.org b http://h:80/x@y"),
            "a https://(hidden)@h.example.org b http://h:80/x@y"
        );
        assert_eq!(redact_urls("no url here"), "no url here");
    }

    #[test]
    fn an_empty_file_gives_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.max_attempts, 3);
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let err = parse("max_attempts = 3\n\n[lockout]\nmax_failure = 5\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 4"), "{err}");
        assert!(err.contains("max_failure"), "{err}");
    }

    #[test]
    fn a_bad_value_is_named() {
        let err = parse("unenrolled = \"maybe\"\n").unwrap_err().to_string();
        assert!(
            err.contains("unenrolled") || err.contains("line 1"),
            "{err}"
        );
        let err = parse("[totp]\ndigits = 7\n").unwrap_err().to_string();
        assert!(err.contains("totp.digits = 7"), "{err}");
        let err = parse("socket = \"relative.sock\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("absolute"), "{err}");
    }

    #[test]
    fn a_reload_keeps_the_keys_that_need_a_restart_and_names_them() {
        let old = parse("socket = \"/run/mfa/a.sock\"\nmax_attempts = 3\n").unwrap();
        let new = parse(
            "socket = \"/run/mfa/b.sock\"\nmax_attempts = 5\nunenrolled = \"allow\"\n\
             [log]\nlevel = \"debug\"\n",
        )
        .unwrap();
        let (merged, kept) = old.for_reload(new);
        assert_eq!(kept, vec!["socket", "[log]"]);
        assert_eq!(merged.socket, old.socket);
        assert_eq!(format!("{:?}", merged.log), format!("{:?}", old.log));
        assert_eq!(merged.max_attempts, 5);
        assert_eq!(merged.unenrolled, Unenrolled::Allow);
        let (_, none) = old.for_reload(old.clone());
        assert!(none.is_empty(), "{none:?}");
    }
}
