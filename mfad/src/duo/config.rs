//! `[duo]` in mfad.toml, and the pam_duo.conf / login_duo.conf that `duo_conf` points at so
//! a site keeps the file it has. Keys in `[duo]` win over the file's. Options of the file
//! that mfad does not honour are refused when honouring them matters (they would change who
//! is asked or how much is checked) and otherwise reported as notes when mfad starts.

use super::groups::GroupPatterns;
use crate::oob::config::Secret;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why the Duo settings were refused; every message names the key or the file's line.
#[derive(Debug, thiserror::Error)]
pub enum DuoConfigError {
    #[error("duo: {0} is missing; set it in [duo] or in the pam_duo.conf named by duo_conf")]
    Missing(&'static str),
    #[error("duo: {0} is empty")]
    Empty(&'static str),
    #[error("duo: {key} = {value:?} {expected}")]
    Invalid {
        key: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("duo: {key} = {value} is out of range: must be {lo} to {hi}{unit}")]
    Range {
        key: &'static str,
        value: u64,
        lo: u64,
        hi: u64,
        unit: &'static str,
    },
    #[error("duo: {0}")]
    Groups(#[from] super::groups::GroupsError),
    #[error("duo: set skey or skey_file, not both")]
    SkeyTwice,
    #[error("duo: cafile {}: cannot read it: {source}", path.display())]
    CaFileRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("duo: cafile {}: not a PEM certificate file", path.display())]
    CaFileNotPem { path: PathBuf },
    #[error("duo: cafile {} holds no PEM certificate", path.display())]
    CaFileEmpty { path: PathBuf },
    #[error("duo_conf: cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    SecretFile(#[from] crate::secret_file::SecretFileError),
    #[error("{origin} line {line}: {problem}")]
    Line {
        origin: String,
        line: usize,
        problem: IniProblem,
    },
}

/// What is wrong with one line of a pam_duo.conf.
#[derive(Debug, thiserror::Error)]
pub enum IniProblem {
    #[error("a section header must end with ]")]
    Section,
    #[error("expected `name = value`")]
    NotAnOption,
    #[error("failmode = {0:?} must be safe or secure")]
    FailMode(String),
    #[error("{key} = {value} is not supported: {why}")]
    Unsupported {
        key: String,
        value: String,
        why: &'static str,
    },
    #[error("unknown option {0:?}")]
    Unknown(String),
}

/// Seconds any one request to Duo may take, connection and TLS handshake included.
pub const DEFAULT_HTTPS_TIMEOUT: u64 = 15;
/// Seconds mfad waits for the answer to a push or phone call.
pub const DEFAULT_STATUS_TIMEOUT: u64 = 75;
/// Longest `Retry-After` of a rate-limited answer that mfad waits out before giving up.
pub const DEFAULT_MAX_RETRY_WAIT: u64 = 10;
/// Menu rounds per login (pam_duo's `prompts`, at most 3 there too).
pub const DEFAULT_PROMPTS: u32 = 3;

/// The Duo Auth API provider. Every key is optional here; `host`, `ikey` and `skey` must come
/// from here or from the file named by `duo_conf`.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DuoConfig {
    /// Integration key (`DI…`): the user name of each request's Basic authorization.
    pub ikey: Option<String>,
    /// Secret key: signs every request; never logged or shown.
    pub skey: Option<Secret>,
    /// A file holding the secret key instead (root-owned, no group or other access), so
    /// the key can live apart from mfad.toml. Read when the config is resolved.
    pub skey_file: Option<PathBuf>,
    /// API host name, `api-XXXXXXXX.duosecurity.com` (a `:port` may follow, for tests).
    pub host: Option<String>,
    /// PEM file of CA certificates trusted besides the system's.
    pub cafile: Option<PathBuf>,
    /// Proxy for every request to Duo (`http://proxy.example.org:3128`).
    pub http_proxy: Option<String>,
    /// pam_duo's group patterns: only members need Duo (see `groups.rs`).
    pub groups: Option<String>,
    /// Send the host, the client's address and the command with pushes.
    pub pushinfo: Option<bool>,
    /// Skip the menu: Duo's default factor at once, also on a terminal.
    pub autopush: Option<bool>,
    /// Menu rounds per login, 1 to 3.
    pub prompts: Option<u32>,
    /// When the client's address is not known as an IP, send this host's address instead.
    pub fallback_local_ip: Option<bool>,
    /// Seconds per request, connection and TLS handshake included (1 to 300).
    pub https_timeout: Option<u64>,
    /// Seconds to wait for the answer to a push or phone call (10 to 600).
    pub status_timeout: Option<u64>,
    /// Longest `Retry-After` (seconds, 0 to 120) waited out on a rate-limited answer.
    pub max_retry_wait: Option<u64>,
    /// After a successful login through mfa-login-prompt, show /etc/motd (login_duo's motd).
    pub motd: Option<bool>,
    /// mfad's own policy also applies to Duo logins (default true): [policy] groups,
    /// trusted networks and remembered logins, and [lockout]. false: Duo alone decides.
    pub local_policy: Option<bool>,
    /// What mfad read but does not honour, to be logged when it starts.
    #[serde(skip)]
    pub notes: Vec<String>,
}

impl DuoConfig {
    pub fn https_timeout(&self) -> Duration {
        Duration::from_secs(self.https_timeout.unwrap_or(DEFAULT_HTTPS_TIMEOUT))
    }
    pub fn status_timeout(&self) -> Duration {
        Duration::from_secs(self.status_timeout.unwrap_or(DEFAULT_STATUS_TIMEOUT))
    }
    pub fn max_retry_wait(&self) -> Duration {
        Duration::from_secs(self.max_retry_wait.unwrap_or(DEFAULT_MAX_RETRY_WAIT))
    }
    pub fn prompts(&self) -> u32 {
        self.prompts.unwrap_or(DEFAULT_PROMPTS)
    }
    pub fn group_patterns(&self) -> Option<GroupPatterns> {
        self.groups
            .as_deref()
            .and_then(|g| GroupPatterns::parse(g).ok())
    }

    /// Keys set in `over` replace those of `self`.
    fn overlay(&mut self, over: DuoConfig) {
        macro_rules! take {
            ($($f:ident),*) => { $( if over.$f.is_some() { self.$f = over.$f; } )* };
        }
        take!(
            ikey,
            skey,
            skey_file,
            host,
            cafile,
            http_proxy,
            groups,
            pushinfo,
            autopush,
            prompts,
            fallback_local_ip,
            https_timeout,
            status_timeout,
            max_retry_wait,
            motd,
            local_policy
        );
        self.notes.extend(over.notes);
    }

    /// Checks every key, naming it in the message.
    pub fn validate(&self) -> Result<(), DuoConfigError> {
        use DuoConfigError::{Invalid, Missing};
        let host = self.host.as_deref().ok_or(Missing("host"))?;
        if host.is_empty()
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'))
        {
            return Err(Invalid {
                key: "host",
                value: host.into(),
                expected: "must be a host name such as api-XXXXXXXX.duosecurity.com \
                           (no https://, no path)",
            });
        }
        let ikey = self.ikey.as_deref().ok_or(Missing("ikey"))?;
        if ikey.is_empty() || ikey.len() > 64 || !ikey.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(Invalid {
                key: "ikey",
                value: ikey.into(),
                expected: "is not an integration key (letters and digits, like \
                           DIXXXXXXXXXXXXXXXXXX)",
            });
        }
        match &self.skey {
            None => return Err(Missing("skey")),
            Some(s) if s.is_empty() => return Err(DuoConfigError::Empty("skey")),
            Some(_) => {}
        }
        if let Some(path) = &self.cafile {
            load_cafile(path)?;
        }
        if let Some(proxy) = &self.http_proxy
            && (!(proxy.starts_with("http://") || proxy.starts_with("https://"))
                || reqwest::Proxy::all(proxy.as_str()).is_err())
        {
            return Err(Invalid {
                key: "http_proxy",
                value: proxy.clone(),
                expected: "must be a URL like http://proxy.example.org:3128",
            });
        }
        if let Some(g) = &self.groups {
            GroupPatterns::parse(g)?;
        }
        let range = |key, value: u64, lo, hi, unit| {
            if (lo..=hi).contains(&value) {
                Ok(())
            } else {
                Err(DuoConfigError::Range {
                    key,
                    value,
                    lo,
                    hi,
                    unit,
                })
            }
        };
        if let Some(p) = self.prompts {
            range("prompts", p.into(), 1, 3, "")?;
        }
        if let Some(t) = self.https_timeout {
            range("https_timeout", t, 1, 300, " seconds")?;
        }
        if let Some(t) = self.status_timeout {
            range("status_timeout", t, 10, 600, " seconds")?;
        }
        if let Some(t) = self.max_retry_wait {
            range("max_retry_wait", t, 0, 120, " seconds")?;
        }
        Ok(())
    }
}

/// The CA certificates of `path` (PEM), refused when there is none.
pub fn load_cafile(path: &Path) -> Result<Vec<reqwest::Certificate>, DuoConfigError> {
    let bytes = std::fs::read(path).map_err(|source| DuoConfigError::CaFileRead {
        path: path.into(),
        source,
    })?;
    let certs = reqwest::Certificate::from_pem_bundle(&bytes)
        .map_err(|_| DuoConfigError::CaFileNotPem { path: path.into() })?;
    if certs.is_empty() {
        return Err(DuoConfigError::CaFileEmpty { path: path.into() });
    }
    Ok(certs)
}

/// Fills `duo` from `[duo]` and the file named by `duo_conf`, then validates it. Leaves
/// `None` when neither is set.
pub fn resolve(duo: &mut Option<DuoConfig>, duo_conf: Option<&Path>) -> Result<(), DuoConfigError> {
    if duo.is_none() && duo_conf.is_none() {
        return Ok(());
    }
    let mut merged = match duo_conf {
        Some(path) => read_ini(path)?,
        None => DuoConfig::default(),
    };
    if let Some(own) = duo.take() {
        if own.skey.is_some() && own.skey_file.is_some() {
            return Err(DuoConfigError::SkeyTwice);
        }
        // A key file named in [duo] replaces the skey of pam_duo.conf, as any [duo] key does.
        if own.skey_file.is_some() {
            merged.skey = None;
        }
        merged.overlay(own);
    }
    if let Some(path) = &merged.skey_file {
        let key = crate::secret_file::read_secret(path, "duo: skey_file")?;
        merged.skey = Some(Secret::new(key.trim().to_string()));
    }
    if merged.group_patterns().is_some_and(|g| g.all_negated()) {
        merged.notes.push(
            "duo: every pattern in groups is negated, so no user is asked for Duo (use \
             \"*,!group\" to ask everyone except a group)"
                .into(),
        );
    }
    merged.validate()?;
    *duo = Some(merged);
    Ok(())
}

/// Reads a pam_duo.conf or login_duo.conf. Like pam_duo, refuses a file that its group or
/// others may read: it holds the secret key.
pub fn read_ini(path: &Path) -> Result<DuoConfig, DuoConfigError> {
    let read_err = |source| DuoConfigError::Read {
        path: path.into(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    crate::secret_file::check_private(path, &meta, "duo_conf")?;
    let text = std::fs::read_to_string(path).map_err(read_err)?;
    parse_ini(&text, &path.display().to_string())
}

/// Parses the INI text of a pam_duo.conf (`origin` names it in messages, with the line).
pub fn parse_ini(text: &str, origin: &str) -> Result<DuoConfig, DuoConfigError> {
    let mut c = DuoConfig::default();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let here = |problem| DuoConfigError::Line {
            origin: origin.into(),
            line: n,
            problem,
        };
        let line = raw.trim();
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        if line.starts_with('[') {
            if !line.ends_with(']') {
                return Err(here(IniProblem::Section));
            }
            continue;
        }
        let Some(at) = line.find(['=', ':']) else {
            return Err(here(IniProblem::NotAnOption));
        };
        let key = line[..at].trim();
        let value = strip_inline_comment(&line[at + 1..]).trim();
        let unsupported = |why| {
            here(IniProblem::Unsupported {
                key: key.into(),
                value: value.into(),
                why,
            })
        };
        match key {
            "ikey" => c.ikey = Some(value.to_string()),
            "skey" => c.skey = Some(Secret::new(value)),
            "host" => c.host = Some(value.to_string()),
            "cafile" => c.cafile = Some(PathBuf::from(value)),
            "http_proxy" => c.http_proxy = Some(value.to_string()),
            "groups" | "group" => c.groups = Some(value.to_string()),
            "failmode" => match value {
                "secure" | "safe" => c.notes.push(format!(
                    "{origin}: failmode = {value}: mfad reports a Duo outage as unavailable and \
                     the failmode= of pam_mfa (or mfa-login-prompt) decides; set failmode={value} \
                     there to keep pam_duo's behaviour"
                )),
                _ => return Err(here(IniProblem::FailMode(value.into()))),
            },
            "pushinfo" => c.pushinfo = Some(yes(value)),
            "autopush" => c.autopush = Some(yes(value)),
            "motd" => c.motd = Some(yes(value)),
            "fallback_local_ip" => c.fallback_local_ip = Some(yes(value)),
            "prompts" => {
                // pam_duo clamps rather than refuses.
                let p = value.parse::<i64>().unwrap_or(0).clamp(1, 3);
                c.prompts = Some(p as u32);
            }
            "https_timeout" => match value.parse::<i64>() {
                Ok(t) if t > 0 => c.https_timeout = Some(t.min(300) as u64),
                _ => c.notes.push(format!(
                    "{origin}: https_timeout = {value} means no timeout to pam_duo; mfad always \
                     bounds its requests, here by {DEFAULT_HTTPS_TIMEOUT} s"
                )),
            },
            "accept_env_factor" => {
                if yes(value) {
                    c.notes.push(format!(
                        "{origin}: accept_env_factor is not supported: mfad does not read \
                         $DUO_PASSCODE; users choose at the menu or get the default factor"
                    ));
                }
            }
            "noverify" => {
                if yes(value) {
                    return Err(unsupported(
                        "mfad always verifies Duo's certificate; trust a private CA with cafile",
                    ));
                }
            }
            "verified_push" => {
                if yes(value) {
                    return Err(unsupported(
                        "mfad's Duo provider has no Verified Push; leaving it out would skip a \
                         \"require Verified Push\" policy, so mfad refuses to start instead",
                    ));
                }
            }
            "send_gecos" | "gecos_parsed" => {
                if yes(value) {
                    return Err(unsupported(
                        "mfad sends the Unix user name; use Duo username aliases instead",
                    ));
                }
            }
            "gecos_username_pos" | "gecos_delim" => {
                return Err(unsupported(
                    "mfad sends the Unix user name; use Duo username aliases instead",
                ));
            }
            _ => return Err(here(IniProblem::Unknown(key.into()))),
        }
    }
    Ok(c)
}

/// pam_duo's booleans: yes, true, on and 1 are true; anything else is false.
fn yes(v: &str) -> bool {
    matches!(v, "yes" | "true" | "on" | "1")
}

/// inih's inline comments: `;` after whitespace starts one.
fn strip_inline_comment(v: &str) -> &str {
    let bytes = v.as_bytes();
    for i in 1..bytes.len() {
        if bytes[i] == b';' && bytes[i - 1].is_ascii_whitespace() {
            return &v[..i];
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHIPPED: &str = "; Duo integration\n[duo]\n; Duo integration key\nikey = DIWJ8X6AEYOR5OMC8TQZ\n\
                           ; Duo secret key\nskey = Zh5eGmUq9zpfQnyUIu5OL9iWoMMv5ZNmk3zLJ4Ep\n\
                           host = api-deadbeef.duosecurity.com\nfailmode = safe\n\
                           pushinfo = yes ; show the command\nautopush = no\nprompts = 1\n\
                           groups = users,!wheel guests\nhttps_timeout = 30\n";

    #[test]
    fn a_pam_duo_conf_is_read_with_its_keys() {
        let c = parse_ini(SHIPPED, "/etc/duo/pam_duo.conf").unwrap();
        assert_eq!(c.ikey.as_deref(), Some("DIWJ8X6AEYOR5OMC8TQZ"));
        assert_eq!(
            c.skey.as_ref().map(|s| s.expose()),
            Some("Zh5eGmUq9zpfQnyUIu5OL9iWoMMv5ZNmk3zLJ4Ep")
        );
        assert_eq!(c.host.as_deref(), Some("api-deadbeef.duosecurity.com"));
        assert_eq!(c.pushinfo, Some(true));
        assert_eq!(c.autopush, Some(false));
        assert_eq!(c.prompts, Some(1));
        assert_eq!(c.https_timeout, Some(30));
        assert_eq!(c.groups.as_deref(), Some("users,!wheel guests"));
        assert!(c.notes.iter().any(|n| n.contains("failmode = safe")));
        c.validate().unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("Zh5eGmUq9"), "{shown}");
    }

    #[test]
    fn unsupported_options_are_named_with_the_line() {
        let err = parse_ini("[duo]\nnoverify = yes\n", "f.conf")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("f.conf line 2") && err.contains("noverify"),
            "{err}"
        );
        let err = parse_ini("[duo]\nsend_gecos = yes\n", "f.conf")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("send_gecos") && err.contains("aliases"),
            "{err}"
        );
        let err = parse_ini("[duo]\nverified_push = true\n", "f.conf")
            .unwrap_err()
            .to_string();
        assert!(err.contains("verified_push"), "{err}");
        let err = parse_ini("[duo]\nautopus = yes\n", "f.conf")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown option \"autopus\""), "{err}");
        let err = parse_ini("[duo]\nfailmode = open\n", "f.conf")
            .unwrap_err()
            .to_string();
        assert!(err.contains("failmode"), "{err}");
        // Off is fine: nothing to honour.
        parse_ini("[duo]\nnoverify = no\nsend_gecos = no\n", "f.conf").unwrap();
        let c = parse_ini(
            "[duo]\naccept_env_factor = yes\nhttps_timeout = 0\n",
            "f.conf",
        )
        .unwrap();
        assert!(c.notes.iter().any(|n| n.contains("accept_env_factor")));
        assert!(c.notes.iter().any(|n| n.contains("https_timeout")));
        assert_eq!(c.https_timeout, None);
    }

    #[test]
    fn toml_keys_win_over_the_file_and_missing_keys_are_named() {
        let mut from_toml = Some(DuoConfig {
            host: Some("127.0.0.1:8443".into()),
            prompts: Some(2),
            ..Default::default()
        });
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pam_duo.conf");
        std::fs::write(&path, SHIPPED).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        resolve(&mut from_toml, Some(&path)).unwrap();
        let c = from_toml.unwrap();
        assert_eq!(c.host.as_deref(), Some("127.0.0.1:8443"));
        assert_eq!(c.prompts, Some(2));
        assert_eq!(c.ikey.as_deref(), Some("DIWJ8X6AEYOR5OMC8TQZ"));

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = resolve(&mut None, Some(&path)).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");

        let mut only_host = Some(DuoConfig {
            host: Some("api-x.duosecurity.com".into()),
            ..Default::default()
        });
        let err = resolve(&mut only_host, None).unwrap_err().to_string();
        assert!(err.contains("ikey is missing"), "{err}");
    }

    #[test]
    fn bad_values_are_named() {
        let base = DuoConfig {
            host: Some("api-x.duosecurity.com".into()),
            ikey: Some("DIXXXXXXXXXXXXXXXXXX".into()),
            skey: Some(Secret::new("s")),
            ..Default::default()
        };
        base.validate().unwrap();
        let bad = |f: fn(&mut DuoConfig)| {
            let mut c = base.clone();
            f(&mut c);
            c.validate().unwrap_err().to_string()
        };
        assert!(bad(|c| c.host = Some("https://api-x.duosecurity.com".into())).contains("host"));
        assert!(bad(|c| c.prompts = Some(5)).contains("prompts = 5"));
        assert!(bad(|c| c.https_timeout = Some(0)).contains("https_timeout"));
        assert!(bad(|c| c.http_proxy = Some("proxy:3128".into())).contains("http_proxy"));
        assert!(bad(|c| c.groups = Some("a,,b".into())).contains("groups"));
        assert!(bad(|c| c.cafile = Some("/nonexistent/ca.pem".into())).contains("cafile"));
    }
}
