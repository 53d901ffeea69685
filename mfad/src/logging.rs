//! Logs: syslog (facility authpriv) for the record, stderr when run in the foreground.

use crate::config::{LogConfig, LogLevel};
use std::ffi::CStr;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

const IDENTITY: &CStr = c"mfad";

fn level(l: LogLevel) -> LevelFilter {
    match l {
        LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Debug => LevelFilter::DEBUG,
    }
}

/// mfad's own lines at the configured level; every library's at most warnings, whatever the
/// level: at debug, the PostgreSQL driver logs each statement with its parameters (sealed
/// secrets, keyed code hashes, the key's check value), and the HTTP clients their URLs.
pub fn targets(l: LogLevel) -> Targets {
    Targets::new()
        .with_target("mfad", level(l))
        .with_default(level(l).min(LevelFilter::WARN))
}

/// What to tell the sysadmin when syslog is on but nothing listens at `socket` (/dev/log):
/// every line sent there is lost.
pub fn missing_syslog(socket: &std::path::Path) -> Option<String> {
    (!socket.exists()).then(|| {
        format!(
            "{} does not exist (no syslog daemon): mfad's decision lines sent to syslog go \
             nowhere. On Debian 12 they reach the journal when systemd-journald runs (`journalctl \
             -t mfad`) or /var/log/auth.log with rsyslog; `mfad --foreground` also writes them to \
             stderr",
            socket.display()
        )
    })
}

pub fn init(config: &LogConfig, stderr: bool) {
    if config.syslog
        && let Some(warning) = missing_syslog(std::path::Path::new("/dev/log"))
    {
        // Before the subscriber: this reaches stderr (and so a unit's journal) even when
        // syslog is the only configured destination.
        eprintln!("mfad: warning: {warning}");
    }
    let filter = targets(config.level);
    let stderr_layer = stderr.then(|| {
        fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .with_target(false)
            .with_filter(filter.clone())
    });
    let syslog_layer = if config.syslog {
        syslog_tracing::Syslog::new(
            IDENTITY,
            syslog_tracing::Options::LOG_PID,
            syslog_tracing::Facility::AuthPriv,
        )
        .map(|w| {
            fmt::layer()
                .with_writer(w)
                .with_ansi(false)
                .without_time()
                .with_target(false)
                .with_level(false)
                .with_filter(filter)
        })
    } else {
        None
    };
    let _ = tracing_subscriber::registry()
        .with(stderr_layer)
        .with(syslog_layer)
        .try_init();
}

/// A value for a `key=value` log line: bare when it is one plain token (letters, digits,
/// `._:@/+-`), otherwise in double quotes. Either way control characters, `"` and `\` are
/// escaped (so no value can close its quotes or forge a line) and long values are cut.
pub fn field(value: &str) -> String {
    let clean = mfa_proto::text::log_field(value);
    let plain = !clean.is_empty()
        && clean
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._:@/+-".contains(c));
    if plain { clean } else { format!("\"{clean}\"") }
}

/// Free text (a reason) for inside double quotes: control characters, `"` and `\` escaped,
/// cut at 512 characters.
pub fn quoted_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    for c in chars.by_ref().take(512) {
        if c.is_control() || c == '"' || c == '\\' {
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

/// Records an administrator's action (or a refused attempt at one) with who asked: the
/// caller's user name and uid, as the socket's peer credentials give them.
pub fn admin_action(by: &str, uid: u32, action: &str, user: &str, result: &str) {
    tracing::info!(
        target: "mfad::admin",
        "admin action={} user={} by={} uid={uid} result=\"{}\"",
        field(action),
        field(user),
        field(by),
        quoted_text(result)
    );
}

#[cfg(test)]
mod tests {
    use super::{field, targets};
    use crate::config::LogLevel;

    #[test]
    fn a_missing_syslog_socket_is_said_with_where_to_look() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("log");
        let w = super::missing_syslog(&missing).unwrap();
        assert!(
            w.contains("no syslog daemon") && w.contains("journalctl -t mfad"),
            "{w}"
        );
        std::fs::write(&missing, "").unwrap();
        assert_eq!(super::missing_syslog(&missing), None);
    }

    #[test]
    fn at_debug_mfad_speaks_but_the_database_driver_does_not() {
        use tracing::Level;
        let t = targets(LogLevel::Debug);
        assert!(t.would_enable("mfad::login", &Level::DEBUG));
        assert!(t.would_enable("mfad::decision", &Level::INFO));
        assert!(!t.would_enable("tokio_postgres::query", &Level::DEBUG));
        assert!(!t.would_enable("tokio_postgres::prepare", &Level::INFO));
        assert!(t.would_enable("tokio_postgres", &Level::WARN));
        assert!(!t.would_enable("reqwest::connect", &Level::DEBUG));
        let t = targets(LogLevel::Error);
        assert!(!t.would_enable("mfad::login", &Level::WARN));
        assert!(!t.would_enable("tokio_postgres", &Level::WARN));
    }

    #[test]
    fn values_with_spaces_or_quotes_are_quoted_and_cannot_close_their_quotes() {
        assert_eq!(field("alice"), "alice");
        assert_eq!(field("203.0.113.9"), "203.0.113.9");
        assert_eq!(field("not enrolled"), "\"not enrolled\"");
        assert_eq!(field(""), "\"\"");
        assert_eq!(field("a\" outcome=allow"), "\"a\\\" outcome=allow\"");
        assert_eq!(field("x\ny=1"), "\"x\\ny=1\"");
    }
}
