//! Logs: the system log for the record (the journal with structured fields when systemd runs
//! mfad, syslog facility authpriv otherwise), stderr when run in the foreground. Decision and
//! admin lines have one stable text (docs/LOGS.md), the same on every destination.

use crate::config::{LogConfig, LogLevel, LogTarget};
use std::borrow::Cow;
use std::ffi::CStr;
use std::os::fd::AsFd;
use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

const IDENTITY: &CStr = c"mfad";

/// Event fields named with this prefix go to the journal only (as `MFA_USER`...): the text
/// lines already carry the same values in their message.
const JOURNAL_ONLY: &str = "mfa_";

/// journald's native socket (systemd-journald.service(8); the protocol: systemd.io, "Native
/// Journal Protocol").
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

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

/// Where the system log goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// journald's native protocol, with structured fields.
    Journal,
    /// syslog(3), facility authpriv.
    Syslog,
    /// No system log (`syslog = false`): stderr only, with `--foreground`.
    Off,
}

/// Whether systemd connected `stderr` to the journal. systemd.exec(5): the service manager
/// sets `$JOURNAL_STREAM` to the device and inode ("DEV:INODE") of the stream it gave
/// stdout/stderr; a program compares it with its own stderr, because the variable is
/// inherited by children whose stderr may point elsewhere (a shell redirecting it).
pub fn stderr_is_journal(journal_stream: Option<&std::ffi::OsStr>, stderr: impl AsFd) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some((dev, ino)) = journal_stream
        .and_then(|v| v.to_str())
        .and_then(|v| v.split_once(':'))
        .and_then(|(d, i)| Some((d.parse::<u64>().ok()?, i.parse::<u64>().ok()?)))
    else {
        return false;
    };
    let Ok(fd) = stderr.as_fd().try_clone_to_owned() else {
        return false;
    };
    std::fs::File::from(fd)
        .metadata()
        .is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

/// `[log]`: `syslog = false` turns the system log off; `target = "auto"` (the default) picks
/// the journal when systemd started mfad with stderr connected to it, syslog otherwise.
pub fn destination(config: &LogConfig) -> Destination {
    if !config.syslog {
        return Destination::Off;
    }
    match config.target {
        LogTarget::Journald => Destination::Journal,
        LogTarget::Syslog => Destination::Syslog,
        LogTarget::Auto => {
            let stream = std::env::var_os("JOURNAL_STREAM");
            if stderr_is_journal(stream.as_deref(), std::io::stderr()) {
                Destination::Journal
            } else {
                Destination::Syslog
            }
        }
    }
}

/// The journal layer: fields named `mfa_*` become `MFA_*`, the identifier and facility are
/// those of the syslog lines (so `journalctl -t mfad` and fail2ban's `journalmatch` find
/// both), and levels map to `PRIORITY` as syslog's do (info is 5, notice).
fn journal_layer() -> std::io::Result<tracing_journald::Layer> {
    Ok(tracing_journald::Layer::new()?
        .with_field_prefix(None)
        .with_syslog_identifier("mfad".to_string())
        .with_custom_fields([("SYSLOG_FACILITY", "10")]))
}

pub fn init(config: &LogConfig, stderr: bool) {
    let mut destination = destination(config);
    let journal = match destination {
        Destination::Journal => match journal_layer() {
            Ok(layer) => Some(layer),
            Err(e) => {
                // Before the subscriber, like the warning below: this reaches stderr.
                eprintln!(
                    "mfad: warning: cannot write to the journal ({JOURNAL_SOCKET}: {e}); \
                     logging to syslog instead"
                );
                destination = Destination::Syslog;
                None
            }
        },
        _ => None,
    };
    if destination == Destination::Syslog
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
            .fmt_fields(LineFields)
            .with_filter(filter.clone())
    });
    let journal_layer = journal.map(|l| l.with_filter(filter.clone()));
    let syslog_layer = if destination == Destination::Syslog {
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
                .fmt_fields(LineFields)
                .with_filter(filter)
        })
    } else {
        None
    };
    let _ = tracing_subscriber::registry()
        .with(stderr_layer)
        .with(journal_layer)
        .with(syslog_layer)
        .try_init();
}

/// The fields of a text line (stderr, syslog): tracing's usual `message key=value...`,
/// without the journal-only `mfa_*` fields, so a decision line reads the same everywhere.
struct LineFields;

impl<'w> FormatFields<'w> for LineFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'w>,
        fields: R,
    ) -> std::fmt::Result {
        let mut visitor = LineVisitor {
            writer: &mut writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct LineVisitor<'a, 'w> {
    writer: &'a mut Writer<'w>,
    first: bool,
    result: std::fmt::Result,
}

impl Visit for LineVisitor<'_, '_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if self.result.is_err() || field.name().starts_with(JOURNAL_ONLY) {
            return;
        }
        let pad = if self.first { "" } else { " " };
        self.first = false;
        self.result = if field.name() == "message" {
            write!(self.writer, "{pad}{value:?}")
        } else {
            write!(self.writer, "{pad}{}={value:?}", field.name())
        };
    }
}

/// A value for a `key=value` log line: bare when it is one plain token (letters, digits,
/// `._:@/+-`), otherwise in double quotes. Either way control characters, `"` and `\` are
/// escaped (so no value can close its quotes or forge a line) and long values are cut.
pub fn field(value: &str) -> Cow<'_, str> {
    quote(mfa_proto::text::log_field(value))
}

/// An escaped value ([`mfa_proto::text::log_field`]), in quotes unless it is one plain token.
fn quote<'a>(clean: impl Into<Cow<'a, str>>) -> Cow<'a, str> {
    let clean = clean.into();
    let plain = !clean.is_empty()
        && clean
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._:@/+-".contains(c));
    if plain {
        clean
    } else {
        Cow::Owned(format!("\"{clean}\""))
    }
}

/// Free text (a reason) for inside double quotes: control characters, `"` and `\` escaped,
/// cut at 512 characters.
pub fn quoted_text(text: &str) -> Cow<'_, str> {
    mfa_proto::text::quotable(text, 512)
}

/// Logs one decision in the stable line format of docs/LOGS.md:
/// `decision user=U rhost=H service=S method=M outcome=O reason="R" vouched=V`, always these
/// keys in this order. The reason is always quoted; every other value is quoted when it is
/// not one plain token, and the outcome is one token (`not enrolled` is written
/// `not-enrolled`). Values are escaped so that none can close its quotes or start a new line.
/// In the journal, each value (escaped, without the quotes) is also a field: `MFA_USER`...
pub fn decision(
    user: &str,
    rhost: &str,
    service: &str,
    method: &str,
    outcome: &str,
    reason: &str,
    vouched: &str,
) {
    let clean = mfa_proto::text::log_field;
    let (user, rhost, service, method) = (clean(user), clean(rhost), clean(service), clean(method));
    let outcome = token(outcome);
    let outcome = clean(&outcome);
    let reason = quoted_text(reason);
    let vouched = clean(vouched);
    tracing::info!(
        target: "mfad::decision",
        mfa_user = &*user,
        mfa_rhost = &*rhost,
        mfa_service = &*service,
        mfa_method = &*method,
        mfa_outcome = &*outcome,
        mfa_reason = &*reason,
        mfa_vouched = &*vouched,
        "decision user={} rhost={} service={} method={} outcome={} reason=\"{}\" vouched={}",
        quote(&*user),
        quote(&*rhost),
        quote(&*service),
        quote(&*method),
        quote(&*outcome),
        reason,
        quote(&*vouched)
    );
}

/// An outcome as one token: `not enrolled` is `not-enrolled` (in the decision line and in
/// the metrics' labels).
pub fn token(outcome: &str) -> Cow<'_, str> {
    if outcome.contains(' ') {
        Cow::Owned(outcome.replace(' ', "-"))
    } else {
        Cow::Borrowed(outcome)
    }
}

/// Records an administrator's action (or a refused attempt at one) with who asked: the
/// caller's user name and uid, as the socket's peer credentials give them.
pub fn admin_action(by: &str, uid: u32, action: &str, user: &str, result: &str) {
    let clean = mfa_proto::text::log_field;
    let (action, user, by) = (clean(action), clean(user), clean(by));
    let result = quoted_text(result);
    tracing::info!(
        target: "mfad::admin",
        mfa_action = &*action,
        mfa_user = &*user,
        mfa_by = &*by,
        mfa_uid = uid,
        mfa_result = &*result,
        "admin action={} user={} by={} uid={uid} result=\"{}\"",
        quote(&*action),
        quote(&*user),
        quote(&*by),
        result
    );
}

#[cfg(test)]
mod tests {
    use super::{Destination, LineFields, destination, field, stderr_is_journal, targets};
    use crate::config::{LogConfig, LogLevel, LogTarget};
    use std::os::unix::fs::MetadataExt;
    use std::sync::{Arc, Mutex};

    #[test]
    fn stderr_is_the_journal_only_when_journal_stream_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::File::create(dir.path().join("stream")).unwrap();
        let other = std::fs::File::create(dir.path().join("other")).unwrap();
        let meta = file.metadata().unwrap();
        let named = format!("{}:{}", meta.dev(), meta.ino());
        let named = std::ffi::OsStr::new(&named);
        assert!(stderr_is_journal(Some(named), &file));
        // Inherited by a child whose stderr went elsewhere: not the journal.
        assert!(!stderr_is_journal(Some(named), &other));
        assert!(!stderr_is_journal(None, &file));
        for bad in ["", "12", "a:b", "1:2:3", &format!("{}", meta.ino())] {
            assert!(
                !stderr_is_journal(Some(std::ffi::OsStr::new(bad)), &file),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_target_key_chooses_and_syslog_false_turns_the_system_log_off() {
        let config = |syslog, target| LogConfig {
            syslog,
            target,
            level: LogLevel::Info,
        };
        assert_eq!(
            destination(&config(true, LogTarget::Journald)),
            Destination::Journal
        );
        assert_eq!(
            destination(&config(true, LogTarget::Syslog)),
            Destination::Syslog
        );
        assert_eq!(
            destination(&config(false, LogTarget::Journald)),
            Destination::Off
        );
        assert_eq!(
            destination(&config(false, LogTarget::Auto)),
            Destination::Off
        );
        assert_eq!(LogConfig::default().target, LogTarget::Auto);
    }

    /// What a text layer (stderr, syslog) writes, one line per event.
    fn text_lines(f: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || buf.clone())
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .with_level(false)
            .with_max_level(tracing::Level::DEBUG)
            .fmt_fields(LineFields)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        String::from_utf8(out.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn text_lines_keep_their_format_without_the_journal_fields() {
        let text = text_lines(|| {
            super::decision(
                "alice",
                "203.0.113.9",
                "sshd",
                "totp",
                "not enrolled",
                "no \"device\"",
                "root",
            );
            super::admin_action("root", 0, "unlock", "dave", "unlocked; failures cleared");
            tracing::debug!(error = %"connection reset", "PostgreSQL connection ended");
        });
        assert_eq!(
            text,
            "decision user=alice rhost=203.0.113.9 service=sshd method=totp \
             outcome=not-enrolled reason=\"no \\\"device\\\"\" vouched=root\n\
             admin action=unlock user=dave by=root uid=0 result=\"unlocked; failures cleared\"\n\
             PostgreSQL connection ended error=connection reset\n"
        );
    }

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
