//! The real mfad binary logging to a real systemd-journald: a private one, started in a mount
//! namespace of its own (a tmpfs on /run, the journal files in a temporary directory), so
//! nothing of the host's is read or written. Read back with `journalctl -D`.
//! Needs root, systemd (journald, journalctl), util-linux (unshare, nsenter), fail2ban and
//! python3-systemd (scripts/deps.sh).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mfa_proto::{AdminOp, AuthContext, Client, Conversation, Operation, Outcome};
use mfa_test_support::binary::{now, params};
use mfad::Store;
use mfad::factor::totp;
use serde_json::{Map, Value};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

const SECRET: &[u8] = b"journald-test-secret";
const RHOST: &str = "203.0.113.9";
const WRONG: &str = "13579";

/// A systemd-journald of the test's own, in a private mount namespace.
struct PrivateJournal {
    journald: Child,
    dir: tempfile::TempDir,
}

impl PrivateJournal {
    fn start() -> PrivateJournal {
        let dir = tempfile::tempdir().unwrap();
        let files = dir.path().join("journal");
        std::fs::create_dir(&files).unwrap();
        // Volatile storage (/run/log/journal) is where journald writes until it is told to
        // flush to /var, which nobody does here: bind it to the test's directory.
        let script = format!(
            "set -e; mount -t tmpfs -o mode=0755 tmpfs /run; \
             mkdir -p /run/systemd/journal /run/log/journal; \
             mount --bind {} /run/log/journal; exec /lib/systemd/systemd-journald",
            files.display()
        );
        let journald = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("journald.err")).unwrap())
            .spawn()
            .expect("unshare (util-linux) runs");
        let j = PrivateJournal { journald, dir };
        let start = Instant::now();
        while !(j.comm() == "systemd-journal"
            && j.inside("/run/systemd/journal/socket").exists()
            && j.inside("/run/systemd/journal/stdout").exists())
        {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "systemd-journald did not start: {}",
                std::fs::read_to_string(j.dir.path().join("journald.err")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        j
    }

    fn comm(&self) -> String {
        std::fs::read_to_string(format!("/proc/{}/comm", self.journald.id()))
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// `path` as seen inside the namespace.
    fn inside(&self, path: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{path}", self.journald.id()))
    }

    /// `program` run inside the namespace (where /run/systemd/journal is this journald's).
    fn command(&self, program: &Path) -> Command {
        let mut c = Command::new("nsenter");
        c.args(["-t", &self.journald.id().to_string(), "-m", "--"])
            .arg(program);
        c
    }

    /// A stream to the journal as systemd gives one to a service's stdout and stderr, and the
    /// `JOURNAL_STREAM` value systemd would set for it (its device and inode).
    fn stream(&self) -> (UnixStream, String) {
        let mut s = UnixStream::connect(self.inside("/run/systemd/journal/stdout")).unwrap();
        // Identifier, unit, priority, level prefix, forward to syslog, kmsg, console.
        s.write_all(b"mfad\n\n6\n1\n0\n0\n0\n").unwrap();
        let meta = std::fs::File::from(std::os::fd::OwnedFd::from(s.try_clone().unwrap()))
            .metadata()
            .unwrap();
        (s, format!("{}:{}", meta.dev(), meta.ino()))
    }

    /// Stops journald (it writes everything out) and returns every entry, parsed.
    fn entries(mut self) -> (Vec<Map<String, Value>>, tempfile::TempDir) {
        let pid = nix::unistd::Pid::from_raw(self.journald.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        self.journald.wait().unwrap();
        let out = Command::new("journalctl")
            .arg("-D")
            .arg(self.dir.path().join("journal"))
            .args(["-o", "json", "--no-pager"])
            .output()
            .expect("journalctl runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let entries = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let dir = std::mem::replace(&mut self.dir, dir);
        (entries, dir)
    }
}

impl Drop for PrivateJournal {
    fn drop(&mut self) {
        let _ = self.journald.kill();
        let _ = self.journald.wait();
    }
}

/// mfad's files in a directory; `[log] target` as given.
fn config(dir: &Path, target: &str) -> PathBuf {
    let d = dir.display();
    let path = dir.join("mfad.toml");
    std::fs::write(
        &path,
        format!(
            "socket = \"{d}/mfad.sock\"\ndatabase = \"{d}/mfa.db\"\nstore_key = \"{d}/store.key\"\n\
             max_attempts = 1\n[log]\ntarget = \"{target}\"\n"
        ),
    )
    .unwrap();
    path
}

/// A running mfad, stopped with SIGTERM on drop.
struct Mfad(Child);

impl Mfad {
    fn start(mut command: Command, dir: &Path) -> Mfad {
        let child = command.spawn().unwrap();
        let m = Mfad(child);
        let start = Instant::now();
        while !dir.join("mfad.sock").exists() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "mfad did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        m
    }
}

impl Drop for Mfad {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.0.wait();
    }
}

struct Answer(String);
impl Conversation for Answer {
    fn info(&mut self, _: &str) {}
    fn error(&mut self, _: &str) {}
    fn prompt(&mut self, _: &str, _: bool) -> Option<Zeroizing<String>> {
        Some(Zeroizing::new(self.0.clone()))
    }
}

fn client(dir: &Path) -> Client {
    Client::connect(
        &dir.join("mfad.sock"),
        Duration::from_secs(2),
        Duration::from_secs(20),
    )
    .unwrap()
}

/// Root (as sshd would) asks for a login of root from RHOST, answering `code`.
fn login(dir: &Path, code: &str) -> Outcome {
    let op = Operation::Authenticate(AuthContext {
        user: "root".into(),
        service: "sshd".into(),
        rhost: Some(RHOST.into()),
        ..Default::default()
    });
    mfa_proto::run_conversation(&mut client(dir), op, &mut Answer(code.into())).unwrap()
}

/// An authenticator for root, a real allow and a real deny, and an admin unlock.
fn decisions(dir: &Path) -> String {
    let step = totp::step_of(now(), params());
    Store::open_with_key_file(&dir.join("mfa.db"), &dir.join("store.key"))
        .unwrap()
        .add_totp_device("root", "phone", SECRET, params(), step - 10, now())
        .unwrap();
    let code = totp::code_at_step(SECRET, params(), step).to_string();
    assert_eq!(login(dir, &code), Outcome::Allow);
    assert_eq!(login(dir, WRONG), Outcome::Deny);
    let unlock = Operation::Admin(AdminOp::Unlock {
        user: "dave".into(),
    });
    let _ = mfa_proto::run_conversation(&mut client(dir), unlock, &mut Answer(String::new()));
    code
}

fn text<'a>(entry: &'a Map<String, Value>, key: &str) -> &'a str {
    entry
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no {key} in {entry:?}"))
}

/// mfad's journal entries of `target` (`mfad::decision`, `mfad::admin`) from process `pid`.
fn of<'a>(
    entries: &'a [Map<String, Value>],
    target: &str,
    pid: u32,
) -> Vec<&'a Map<String, Value>> {
    entries
        .iter()
        .filter(|e| {
            e.get("TARGET").and_then(Value::as_str) == Some(target)
                && e.get("_PID").and_then(Value::as_str) == Some(&pid.to_string())
        })
        .collect()
}

/// The decision line docs/LOGS.md specifies, rebuilt from an entry's MFA_ fields (all plain
/// tokens in these tests, so none is quoted but the reason).
fn line_of(e: &Map<String, Value>) -> String {
    format!(
        "decision user={} rhost={} service={} method={} outcome={} reason=\"{}\" vouched={}",
        text(e, "MFA_USER"),
        text(e, "MFA_RHOST"),
        text(e, "MFA_SERVICE"),
        text(e, "MFA_METHOD"),
        text(e, "MFA_OUTCOME"),
        text(e, "MFA_REASON"),
        text(e, "MFA_VOUCHED")
    )
}

/// Checks the allow and the deny decision of [`decisions`] in the journal; returns their
/// MESSAGE texts.
fn check_decisions(entries: &[Map<String, Value>], pid: u32, code: &str) -> Vec<String> {
    let found = of(entries, "mfad::decision", pid);
    assert_eq!(found.len(), 2, "one allow and one deny: {found:#?}");
    let (allow, deny) = (found[0], found[1]);
    for (e, method, outcome) in [(allow, "totp", "allow"), (deny, "-", "deny")] {
        for (key, want) in [
            ("MFA_USER", "root"),
            ("MFA_RHOST", RHOST),
            ("MFA_SERVICE", "sshd"),
            ("MFA_METHOD", method),
            ("MFA_OUTCOME", outcome),
            ("MFA_VOUCHED", "root"),
            ("SYSLOG_IDENTIFIER", "mfad"),
            ("SYSLOG_FACILITY", "10"),
            ("PRIORITY", "5"),
            ("_TRANSPORT", "journal"),
        ] {
            assert_eq!(text(e, key), want, "{key} of {e:#?}");
        }
        assert_eq!(
            text(e, "MESSAGE"),
            line_of(e),
            "MESSAGE is the decision line"
        );
        let all = serde_json::to_string(e).unwrap();
        assert!(
            !all.contains(code) && !all.contains(WRONG),
            "a code reached the journal: {all}"
        );
    }
    assert!(!text(allow, "MFA_REASON").is_empty());
    assert!(text(deny, "MFA_REASON").contains("wrong code"), "{deny:#?}");

    let admin = of(entries, "mfad::admin", pid);
    assert_eq!(admin.len(), 1, "{admin:#?}");
    for (key, want) in [
        ("MFA_ACTION", "unlock"),
        ("MFA_USER", "dave"),
        ("MFA_BY", "root"),
        ("MFA_UID", "0"),
    ] {
        assert_eq!(text(admin[0], key), want, "{key} of {:#?}", admin[0]);
    }
    assert_eq!(
        text(admin[0], "MESSAGE"),
        format!(
            "admin action=unlock user=dave by=root uid=0 result=\"{}\"",
            text(admin[0], "MFA_RESULT")
        )
    );
    found
        .iter()
        .map(|e| text(e, "MESSAGE").to_string())
        .collect()
}

/// As under the packaged unit: systemd starts mfad with stderr on a journal stream and
/// `JOURNAL_STREAM` naming it; with the default `target = "auto"` the decision and admin
/// lines go to the journal natively, with their fields.
#[test]
fn under_systemd_decisions_reach_the_real_journal_with_their_fields() {
    let journal = PrivateJournal::start();
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "auto");
    let (stream, journal_stream) = journal.stream();
    let mut command = journal.command(Path::new(env!("CARGO_BIN_EXE_mfad")));
    command
        .arg("--config")
        .arg(&config)
        .env("JOURNAL_STREAM", &journal_stream)
        .stdout(Stdio::null())
        .stderr(std::os::fd::OwnedFd::from(stream));
    let mfad = Mfad::start(command, dir.path());
    let pid = mfad.0.id();
    let code = decisions(dir.path());
    drop(mfad);

    let (entries, _files) = journal.entries();
    check_decisions(&entries, pid, &code);
}

/// `target = "journald"` when run by hand: the journal gets the fields, and the stderr log of
/// `--foreground` keeps the plain line (no MFA_ fields appended), the same as MESSAGE. With
/// `JOURNAL_STREAM` inherited but stderr elsewhere, "auto" would not have picked the journal.
#[test]
fn target_journald_by_hand_keeps_the_foreground_line_and_fills_the_journal() {
    let journal = PrivateJournal::start();
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "journald");
    let mut command = journal.command(Path::new(env!("CARGO_BIN_EXE_mfad")));
    command
        .arg("--config")
        .arg(&config)
        .arg("--foreground")
        .env_remove("JOURNAL_STREAM")
        .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap());
    let mfad = Mfad::start(command, dir.path());
    let pid = mfad.0.id();
    let code = decisions(dir.path());
    drop(mfad);

    let stderr = std::fs::read_to_string(dir.path().join("stderr")).unwrap();
    let (entries, _files) = journal.entries();
    for message in check_decisions(&entries, pid, &code) {
        assert!(
            stderr
                .lines()
                .any(|l| l.ends_with(&format!(" INFO {message}"))),
            "the foreground line differs from the journal's MESSAGE {message:?}:\n{stderr}"
        );
    }
    assert!(!stderr.contains("mfa_"), "{stderr}");
}

/// The shipped fail2ban filter, with fail2ban's journal backend (`backend = systemd`, its
/// `journalmatch`), on the journal real logins wrote: the refused login's address, never the
/// allowed one's (both from RHOST: one ban-worthy line in all).
#[test]
fn fail2ban_reads_the_refusals_from_the_journal() {
    let journal = PrivateJournal::start();
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "auto");
    let (stream, journal_stream) = journal.stream();
    let mut command = journal.command(Path::new(env!("CARGO_BIN_EXE_mfad")));
    command
        .arg("--config")
        .arg(&config)
        .env("JOURNAL_STREAM", &journal_stream)
        .stderr(std::os::fd::OwnedFd::from(stream));
    let mfad = Mfad::start(command, dir.path());
    decisions(dir.path());
    drop(mfad);
    let (_, files) = journal.entries();

    let f2b = dir.path().join("fail2ban");
    let copied = Command::new("cp")
        .args(["-a", "/etc/fail2ban"])
        .arg(&f2b)
        .status()
        .unwrap();
    assert!(copied.success(), "is fail2ban installed? (scripts/deps.sh)");
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../conf/fail2ban/filter.d/mfad.conf"
        ),
        f2b.join("filter.d/mfad.conf"),
    )
    .unwrap();
    let run = |out: &str| {
        let o = Command::new("fail2ban-regex")
            .arg("--config")
            .arg(&f2b)
            .arg(format!(
                "systemd-journal[journalpath={}]",
                files.path().join("journal").display()
            ))
            .arg("mfad")
            .args(["--out", out])
            .output()
            .expect("fail2ban-regex (package fail2ban) runs");
        assert!(
            o.status.success(),
            "fail2ban-regex failed (python3-systemd installed?): {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert_eq!(run("ip").lines().collect::<Vec<_>>(), [RHOST]);
    let matched = run("msg");
    assert!(
        matched.contains("outcome=deny") && !matched.contains("outcome=allow"),
        "{matched}"
    );
}

/// `target = "journald"` on a host where no journald listens: a warning on stderr says so,
/// and the lines go to syslog instead of nowhere (here /dev/log is missing too, which the
/// second warning says). Run with an empty /run of its own.
#[test]
fn target_journald_without_a_journal_warns_and_falls_back_to_syslog() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "journald");
    let script = "mount -t tmpfs tmpfs /run && exec \"$@\"";
    let mut command = Command::new("unshare");
    command
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(env!("CARGO_BIN_EXE_mfad"))
        .arg("--config")
        .arg(&config)
        .arg("--foreground")
        .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap());
    let mfad = Mfad::start(command, dir.path());
    decisions(dir.path());
    drop(mfad);
    let stderr = std::fs::read_to_string(dir.path().join("stderr")).unwrap();
    assert!(
        stderr
            .contains("mfad: warning: cannot write to the journal (/run/systemd/journal/socket: ")
            && stderr.contains("logging to syslog instead"),
        "{stderr}"
    );
    if !Path::new("/dev/log").exists() {
        assert!(stderr.contains("/dev/log does not exist"), "{stderr}");
    }
    assert!(stderr.contains("outcome=deny"), "{stderr}");
}
