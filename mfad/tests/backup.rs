//! `mfa admin backup` while logins go on, and `mfad --restore` into the same host: the
//! enrolments come back, and no code spent after the backup opens a login again.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mfa_proto::{AdminOp, AuthContext, Client, Conversation, Operation, Outcome};
use mfa_test_support::binary::{BinaryHost, now, params};
use mfad::factor::{bypass, totp};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;
use std::time::Duration;
use zeroize::Zeroizing;

const SECRET: &[u8] = b"backup-test-secret!!";

fn code_now() -> String {
    totp::code_at_step(SECRET, params(), totp::step_of(now(), params())).to_string()
}

/// mfad's files in one directory, so that it can be stopped and started again on them;
/// its log is shown when a test fails.
struct Host(BinaryHost);

impl Host {
    fn new() -> Host {
        Host(BinaryHost::new(
            env!("CARGO_BIN_EXE_mfad"),
            "[lockout]\nmax_failures = 1000",
        ))
    }
    fn restore(&self, file: &Path, extra: &[&str]) -> Output {
        let mut args = vec!["--foreground", "--restore", file.to_str().unwrap()];
        args.extend_from_slice(extra);
        self.command(&args).output().unwrap()
    }
}

impl std::ops::Deref for Host {
    type Target = BinaryHost;
    fn deref(&self) -> &BinaryHost {
        &self.0
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- mfad log ---\n{}", self.log());
        }
    }
}

struct Answer(String, Vec<String>);
impl Conversation for Answer {
    fn info(&mut self, t: &str) {
        self.1.push(t.to_string());
    }
    fn error(&mut self, t: &str) {
        self.1.push(t.to_string());
    }
    fn prompt(&mut self, _: &str, _: bool) -> Option<Zeroizing<String>> {
        Some(Zeroizing::new(self.0.clone()))
    }
}

fn run(socket: &Path, op: Operation, answer: &str) -> (Outcome, String) {
    let mut c = Client::connect(socket, Duration::from_secs(2), Duration::from_secs(20)).unwrap();
    let mut a = Answer(answer.into(), Vec::new());
    let outcome = mfa_proto::run_conversation(&mut c, op, &mut a).unwrap();
    (outcome, a.1.join("\n"))
}

fn login(socket: &Path, code: &str) -> Outcome {
    let op = Operation::Authenticate(AuthContext {
        user: "root".into(),
        service: "sshd".into(),
        rhost: Some("203.0.113.9".into()),
        ..Default::default()
    });
    run(socket, op, code).0
}

#[test]
fn backup_during_logins_then_restore_keeps_enrolments_and_refuses_codes_spent_since() {
    let host = Host::new();
    let mfad = host.start();
    let step = totp::step_of(now(), params());
    let mut s = host.store();
    s.add_totp_device("root", "phone", SECRET, params(), step - 10, now())
        .unwrap();
    let (shown, stored) = bypass::generate(&mfad::random::OsRandom);
    s.replace_bypass_codes("root", &stored, now()).unwrap();
    drop(s);

    // A burst of (wrong-code) logins, each writing a failure, while the backup is taken.
    let socket = host.socket();
    let burst = std::thread::spawn(move || {
        for _ in 0..30 {
            assert_eq!(login(&socket, "000000"), Outcome::Deny);
        }
    });
    let file = host.path("backups/mfa-backup.db");
    std::fs::create_dir(host.path("backups")).unwrap();
    let (outcome, said) = run(
        &host.socket(),
        Operation::Admin(AdminOp::Backup {
            path: file.to_str().unwrap().into(),
        }),
        "",
    );
    burst.join().unwrap();
    assert_eq!(outcome, Outcome::Allow, "{said}");
    assert!(said.contains("1 users, 1 devices"), "{said}");
    assert!(said.contains("store key"), "{said}");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // A second backup never overwrites the first.
    let (again, said) = run(
        &host.socket(),
        Operation::Admin(AdminOp::Backup {
            path: file.to_str().unwrap().into(),
        }),
        "",
    );
    assert_eq!(again, Outcome::Deny, "{said}");
    assert!(said.contains("No backup was written"), "{said}");

    // After the backup: a TOTP code and a bypass code are spent.
    let totp_code = code_now();
    assert_eq!(login(&host.socket(), &totp_code), Outcome::Allow);
    assert_eq!(login(&host.socket(), &shown[0]), Outcome::Allow);

    // Restore is refused while mfad runs, and changes nothing.
    let refused = host.restore(&file, &[]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("stop it first"),
        "{refused:?}"
    );
    drop(mfad);

    let restored = host.restore(&file, &[]);
    let out = String::from_utf8_lossy(&restored.stdout);
    assert!(restored.status.success(), "{restored:?}");
    assert!(out.contains("1 TOTP devices raised"), "{out}");
    assert!(
        out.contains("need new bypass codes") && out.contains("root"),
        "{out}"
    );
    let db_mode = std::fs::metadata(host.path("lib/mfa.db"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(db_mode, 0o600);

    let _mfad = host.start();
    // Enrolments intact: root's device is back.
    let (_, status) = run(
        &host.socket(),
        Operation::Admin(AdminOp::StatusJson {
            user: "root".into(),
        }),
        "",
    );
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["devices"][0]["name"], "phone", "{status}");
    // The code spent before the restore is refused after it (the backup still had it
    // unspent), and so are the bypass codes the backup held unused.
    assert_eq!(login(&host.socket(), &totp_code), Outcome::Deny);
    assert_eq!(login(&host.socket(), &shown[0]), Outcome::Deny);
    assert_eq!(login(&host.socket(), &shown[1]), Outcome::Deny);
    // What the restore did is logged, with who ran it.
    let restore_log = String::from_utf8_lossy(&restored.stderr);
    assert!(
        restore_log.contains("admin action=restore user=- by=root uid=0")
            && restore_log.contains("marked spent"),
        "{restore_log}"
    );
}

#[test]
fn a_backup_is_refused_by_a_host_with_another_store_key_and_nothing_changes() {
    let host = Host::new();
    let mfad = host.start();
    let file = host.path("b.db");
    let (outcome, said) = run(
        &host.socket(),
        Operation::Admin(AdminOp::Backup {
            path: file.to_str().unwrap().into(),
        }),
        "",
    );
    assert_eq!(outcome, Outcome::Allow, "{said}");
    drop(mfad);

    let other = Host::new();
    let mfad = other.start();
    let step = totp::step_of(now(), params());
    other
        .store()
        .add_totp_device("root", "phone", SECRET, params(), step - 10, now())
        .unwrap();
    drop(mfad);
    let out = other.restore(&file, &[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("store key") && err.contains("not replaced"),
        "{err}"
    );
    assert_eq!(other.store().devices("root").unwrap().len(), 1);
    assert!(!other.path("lib/mfa.db.restoring").exists());

    // A fresh host (no database, not even its directory) given the first host's key: the
    // backup restores there.
    let fresh = Host::new();
    std::fs::create_dir_all(fresh.path("keys")).unwrap();
    std::fs::copy(host.path("lib/store.key"), fresh.path("keys/store.key")).unwrap();
    let toml = std::fs::read_to_string(fresh.path("mfad.toml"))
        .unwrap()
        .replace(
            &fresh.path("lib/store.key").display().to_string(),
            &fresh.path("keys/store.key").display().to_string(),
        );
    std::fs::write(fresh.path("mfad.toml"), toml).unwrap();
    let out = fresh.restore(&file, &[]);
    assert!(out.status.success(), "{out:?}");
    let _mfad = fresh.start();
    let (outcome, _) = run(
        &fresh.socket(),
        Operation::Admin(AdminOp::List {
            filter: mfa_proto::ListFilter::All,
            low_bypass_below: 3,
            json: true,
        }),
        "",
    );
    assert_eq!(outcome, Outcome::Allow);
}
