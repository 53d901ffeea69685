//! Module arguments from the PAM service file (`auth required pam_mfa.so socket=... `).
//!
//! Parsing never fails: an unknown argument is reported and ignored, and a bad value is
//! reported and replaced by the default that is safe for security (for `failmode`, that is
//! `secure`). The caller logs the reports.

use std::path::PathBuf;
use std::time::Duration;

pub use mfa_proto::FailMode;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleArgs {
    /// `socket=PATH`: mfad's Unix socket; must be absolute.
    pub socket: PathBuf,
    /// `failmode=secure|safe`.
    pub failmode: FailMode,
    /// `timeout=SECONDS`: bound on each read and write on the socket. mfad sends a
    /// keep-alive every 5 s while it waits (a push or call pending), so anything above that
    /// covers every wait.
    pub timeout: Duration,
    /// `connect_timeout=SECONDS`: bound on connecting to the socket.
    pub connect_timeout: Duration,
    /// `debug`: log the context sent to mfad and the outcome (never an answer).
    pub debug: bool,
    /// `mode=menu|auto`: show the menu (default), or run the user's default method at once
    /// (for transfer hosts, where nobody reads a menu).
    pub mode: mfa_proto::AuthMode,
}

pub const DEFAULT_TIMEOUT_SECS: u64 = 75;
pub const DEFAULT_CONNECT_TIMEOUT_SECS: u64 = 3;
const MAX_TIMEOUT_SECS: u64 = 3600;
const MAX_CONNECT_TIMEOUT_SECS: u64 = 60;

impl Default for ModuleArgs {
    fn default() -> Self {
        ModuleArgs {
            socket: PathBuf::from(mfa_proto::DEFAULT_SOCKET),
            failmode: FailMode::Secure,
            timeout: Duration::from_secs(DEFAULT_TIMEOUT_SECS),
            connect_timeout: Duration::from_secs(DEFAULT_CONNECT_TIMEOUT_SECS),
            debug: false,
            mode: mfa_proto::AuthMode::Menu,
        }
    }
}

impl ModuleArgs {
    /// Parses the arguments in order (a later one wins), returning the result and one
    /// sentence per argument that was ignored or replaced.
    pub fn parse<S: AsRef<str>>(args: &[S]) -> (ModuleArgs, Vec<String>) {
        let mut parsed = ModuleArgs::default();
        let mut problems = Vec::new();
        for arg in args {
            let arg = arg.as_ref();
            let (key, value) = match arg.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (arg, None),
            };
            match (key, value) {
                ("debug", None) => parsed.debug = true,
                ("mode", Some("menu")) => parsed.mode = mfa_proto::AuthMode::Menu,
                ("mode", Some("auto")) => parsed.mode = mfa_proto::AuthMode::Auto,
                ("mode", v) => {
                    parsed.mode = mfa_proto::AuthMode::Menu;
                    problems.push(format!(
                        "mode={:?} is neither menu nor auto; using mode=menu",
                        v.unwrap_or_default()
                    ));
                }
                ("socket", Some(v)) if v.starts_with('/') => parsed.socket = PathBuf::from(v),
                ("socket", v) => {
                    parsed.socket = PathBuf::from(mfa_proto::DEFAULT_SOCKET);
                    problems.push(format!(
                        "socket={:?} is not an absolute path; using socket={}",
                        v.unwrap_or_default(),
                        mfa_proto::DEFAULT_SOCKET
                    ));
                }
                ("failmode", v) => {
                    parsed.failmode = v.unwrap_or_default().parse().unwrap_or_else(|e| {
                        problems.push(format!("{e}; using failmode=secure"));
                        FailMode::Secure
                    });
                }
                ("timeout", v) => {
                    parsed.timeout = seconds(
                        key,
                        v.unwrap_or_default(),
                        MAX_TIMEOUT_SECS,
                        DEFAULT_TIMEOUT_SECS,
                        &mut problems,
                    );
                }
                ("connect_timeout", v) => {
                    parsed.connect_timeout = seconds(
                        key,
                        v.unwrap_or_default(),
                        MAX_CONNECT_TIMEOUT_SECS,
                        DEFAULT_CONNECT_TIMEOUT_SECS,
                        &mut problems,
                    );
                }
                _ => problems.push(format!("unknown module argument {arg:?} ignored")),
            }
        }
        (parsed, problems)
    }
}

/// Whole seconds from 1 to `max`; anything else falls back to `default` with a report.
fn seconds(key: &str, value: &str, max: u64, default: u64, problems: &mut Vec<String>) -> Duration {
    match value.parse::<u64>() {
        Ok(n) if (1..=max).contains(&n) => Duration::from_secs(n),
        _ => {
            problems.push(format!(
                "{key}={value:?} is not a whole number of seconds from 1 to {max}; using {key}={default}"
            ));
            Duration::from_secs(default)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_arguments_give_the_documented_defaults() {
        let (args, problems) = ModuleArgs::parse::<&str>(&[]);
        assert!(problems.is_empty());
        assert_eq!(args.socket, PathBuf::from("/run/mfa/mfad.sock"));
        assert_eq!(args.failmode, FailMode::Secure);
        assert_eq!(args.timeout, Duration::from_secs(75));
        assert_eq!(args.connect_timeout, Duration::from_secs(3));
        assert!(!args.debug);
    }

    #[test]
    fn every_known_argument_is_read() {
        let (args, problems) = ModuleArgs::parse(&[
            "socket=/tmp/x/mfad.sock",
            "failmode=safe",
            "timeout=90",
            "connect_timeout=1",
            "debug",
        ]);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(args.socket, PathBuf::from("/tmp/x/mfad.sock"));
        assert_eq!(args.failmode, FailMode::Safe);
        assert_eq!(args.timeout, Duration::from_secs(90));
        assert_eq!(args.connect_timeout, Duration::from_secs(1));
        assert!(args.debug);
    }

    #[test]
    fn unknown_arguments_are_reported_and_ignored() {
        let (args, problems) = ModuleArgs::parse(&["mode=auto"]);
        assert_eq!(args.mode, mfa_proto::AuthMode::Auto);
        assert!(problems.is_empty());
        let (args, problems) = ModuleArgs::parse(&["mode=fast"]);
        assert_eq!(args.mode, mfa_proto::AuthMode::Menu);
        assert_eq!(problems.len(), 1);
        let (args, problems) = ModuleArgs::parse(&["nullok", "failmode=safe", "debug=1"]);
        assert_eq!(args.failmode, FailMode::Safe);
        assert!(!args.debug);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("\"nullok\""), "{problems:?}");
        assert!(problems[1].contains("\"debug=1\""), "{problems:?}");
    }

    #[test]
    fn a_bad_failmode_means_secure_even_after_safe() {
        for bad in ["failmode=SAFE", "failmode=", "failmode=open", "failmode"] {
            let (args, problems) = ModuleArgs::parse(&["failmode=safe", bad]);
            assert_eq!(args.failmode, FailMode::Secure, "{bad}");
            assert_eq!(problems.len(), 1, "{bad}: {problems:?}");
        }
    }

    #[test]
    fn bad_timeouts_fall_back_to_the_defaults() {
        for bad in ["0", "-5", "abc", "1.5", "", "99999999999999999999", "3601"] {
            let (args, problems) =
                ModuleArgs::parse(&[format!("timeout={bad}"), format!("connect_timeout={bad}")]);
            assert_eq!(args.timeout, Duration::from_secs(75), "{bad}");
            assert_eq!(args.connect_timeout, Duration::from_secs(3), "{bad}");
            assert_eq!(problems.len(), 2, "{bad}: {problems:?}");
        }
    }

    #[test]
    fn a_relative_socket_path_is_refused() {
        let (args, problems) = ModuleArgs::parse(&["socket=/a/b", "socket=mfad.sock"]);
        assert_eq!(args.socket, PathBuf::from(mfa_proto::DEFAULT_SOCKET));
        assert_eq!(problems.len(), 1);
    }
}
