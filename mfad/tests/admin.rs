//! Root's view of the fleet through the real mfad binary: `mfa admin list` and
//! `mfa admin status --json` parsed as JSON, and the admin lines in mfad's log.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mfa_proto::{AdminOp, Client, Conversation, ListFilter, Operation, Outcome};
use mfa_test_support::binary::{BinaryMfad, now, params};
use mfad::factor::bypass;
use mfad::factor::totp;
use serde::Deserialize;
use std::time::Duration;
use zeroize::Zeroizing;

/// The mfad binary under test, running on a config of its own.
fn start() -> BinaryMfad {
    BinaryMfad::start(env!("CARGO_BIN_EXE_mfad"), "")
}

/// Root's admin commands over the socket.
trait Admin {
    fn admin(&self, op: AdminOp) -> (Outcome, String);
}

impl Admin for BinaryMfad {
    /// Runs an admin command as root; returns the outcome and what the `mfa` command
    /// prints on stdout (each info message on its own line).
    fn admin(&self, op: AdminOp) -> (Outcome, String) {
        let mut c = Client::connect(
            &self.socket(),
            Duration::from_secs(2),
            Duration::from_secs(20),
        )
        .unwrap();
        let mut out = Printed::default();
        let outcome = mfa_proto::run_conversation(&mut c, Operation::Admin(op), &mut out).unwrap();
        (outcome, out.stdout)
    }
}

/// What the CLI's terminal does with the messages: info on stdout, a line each.
#[derive(Default)]
struct Printed {
    stdout: String,
}
impl Conversation for Printed {
    fn info(&mut self, text: &str) {
        self.stdout.push_str(text);
        self.stdout.push('\n');
    }
    fn error(&mut self, text: &str) {
        panic!("unexpected error: {text}");
    }
    fn prompt(&mut self, text: &str, _: bool) -> Option<Zeroizing<String>> {
        panic!("unexpected prompt: {text}");
    }
}

/// The documented fields of `mfa admin list --json` (docs/admin-json.md).
#[derive(Deserialize, Debug)]
struct List {
    format: u32,
    filter: String,
    low_bypass_below: u32,
    users: Vec<Entry>,
}

#[derive(Deserialize, Debug)]
struct Entry {
    user: String,
    enrolled: bool,
    methods: Vec<String>,
    devices: usize,
    bypass_codes_left: u32,
    low_bypass: bool,
    failures: u32,
    locked: bool,
    locked_until: Option<i64>,
}

#[derive(Deserialize, Debug)]
struct Status {
    format: u32,
    user: String,
    known_to_host: bool,
    enrolled: bool,
    devices: Vec<StatusDevice>,
    bypass_codes_left: usize,
    failures: u32,
    locked: bool,
    locked_until: Option<i64>,
}

#[derive(Deserialize, Debug)]
struct StatusDevice {
    index: usize,
    kind: String,
    name: String,
    default: bool,
    digits: Option<u32>,
    period: Option<u64>,
}

fn codes(n: usize) -> Vec<bypass::StoredCode> {
    bypass::generate(&mfad::random::OsRandom)
        .1
        .into_iter()
        .take(n)
        .collect()
}

/// alice: an app and 10 codes. bob: an app and 1 code. carol: only failures. dave: an app,
/// locked. erin: bypass codes only, all spent.
fn seed(m: &BinaryMfad) -> i64 {
    let t = now();
    let step = totp::step_of(t, params());
    let mut s = m.store();
    for user in ["alice", "bob", "dave"] {
        s.add_totp_device(
            user,
            "phone",
            b"admin-test-secret!!!",
            params(),
            step - 5,
            t,
        )
        .unwrap();
    }
    s.replace_bypass_codes("alice", &codes(10), t).unwrap();
    s.replace_bypass_codes("bob", &codes(1), t).unwrap();
    s.record_failure("carol", t, 10, 3600).unwrap();
    s.record_failure("carol", t, 10, 3600).unwrap();
    s.lock_until("dave", t + 3600).unwrap();
    s.replace_bypass_codes("erin", &codes(2), t).unwrap();
    for row in s.bypass_codes("erin").unwrap() {
        assert!(s.spend_bypass_code(row.id, t).unwrap());
    }
    t
}

fn list(m: &BinaryMfad, filter: ListFilter) -> List {
    let (outcome, out) = m.admin(AdminOp::List {
        filter,
        low_bypass_below: 3,
        json: true,
    });
    assert_eq!(outcome, Outcome::Allow);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"))
}

fn names(l: &List) -> Vec<&str> {
    l.users.iter().map(|u| u.user.as_str()).collect()
}

#[test]
fn admin_list_json_shows_who_is_enrolled_unenrolled_locked_and_low_on_bypass_codes() {
    let m = start();
    let t = seed(&m);

    let all = list(&m, ListFilter::All);
    assert_eq!(all.format, 1);
    assert_eq!(all.filter, "all");
    assert_eq!(all.low_bypass_below, 3);
    assert_eq!(names(&all), ["alice", "bob", "carol", "dave", "erin"]);
    let alice = &all.users[0];
    assert!(alice.enrolled && !alice.locked && !alice.low_bypass);
    assert_eq!(alice.methods, ["totp"]);
    assert_eq!((alice.devices, alice.bypass_codes_left), (1, 10));
    let carol = &all.users[2];
    assert!(!carol.enrolled && carol.methods.is_empty());
    assert_eq!(carol.failures, 2);
    let dave = &all.users[3];
    assert!(dave.locked);
    assert_eq!(dave.locked_until, Some(t + 3600));
    let erin = &all.users[4];
    assert!(!erin.enrolled, "spent bypass codes log nobody in");
    assert_eq!(erin.bypass_codes_left, 0);

    assert_eq!(
        names(&list(&m, ListFilter::Enrolled)),
        ["alice", "bob", "dave"]
    );
    assert_eq!(names(&list(&m, ListFilter::Unenrolled)), ["carol", "erin"]);
    assert_eq!(names(&list(&m, ListFilter::Locked)), ["dave"]);
    // bob has one code left, dave none: both below 3; carol and erin are not enrolled.
    assert_eq!(names(&list(&m, ListFilter::LowBypass)), ["bob", "dave"]);

    // The table says the same to a person.
    let (_, table) = m.admin(AdminOp::List {
        filter: ListFilter::Locked,
        low_bypass_below: 3,
        json: false,
    });
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert!(lines[0].starts_with("USER"), "{table}");
    assert!(
        lines[1].starts_with("dave") && lines[1].contains("UTC"),
        "{table}"
    );
}

#[test]
fn admin_status_json_shows_devices_codes_and_lock_without_secrets() {
    let m = start();
    seed(&m);
    let (outcome, out) = m.admin(AdminOp::StatusJson {
        user: "dave".into(),
    });
    assert_eq!(outcome, Outcome::Allow);
    let s: Status = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}:\n{out}"));
    assert_eq!(s.format, 1);
    assert_eq!(s.user, "dave");
    assert!(!s.known_to_host, "no such account on the test host");
    assert!(s.enrolled && s.locked && s.locked_until.is_some());
    assert_eq!((s.bypass_codes_left, s.failures), (0, 0));
    assert_eq!(s.devices.len(), 1);
    let d = &s.devices[0];
    assert_eq!(
        (d.index, d.kind.as_str(), d.name.as_str()),
        (1, "totp", "phone")
    );
    assert!(d.default);
    assert_eq!((d.digits, d.period), (Some(6), Some(30)));
    let secret_b32 = data_encoding::BASE32_NOPAD.encode(b"admin-test-secret!!!");
    assert!(!out.contains(&secret_b32) && !out.contains("admin-test-secret"));
}

#[test]
fn every_admin_action_is_logged_with_who_did_it() {
    let m = start();
    seed(&m);
    let (outcome, _) = m.admin(AdminOp::Unlock {
        user: "dave".into(),
    });
    assert_eq!(outcome, Outcome::Allow);
    m.admin(AdminOp::Reset { user: "bob".into() });
    m.admin(AdminOp::Forget {
        user: "alice".into(),
    });
    m.admin(AdminOp::ImportTokens {
        csv: "root,hotp,YubiKey 5,GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ,6\n".into(),
    });
    m.admin(AdminOp::List {
        filter: ListFilter::Locked,
        low_bypass_below: 3,
        json: true,
    });
    assert!(
        list(&m, ListFilter::Locked).users.is_empty(),
        "dave unlocked"
    );

    let log = m.log();
    for expected in [
        "admin action=unlock user=dave by=root uid=0 result=\"unlocked; failures cleared\"",
        "admin action=reset user=bob by=root uid=0 result=\"all devices and codes removed\"",
        "admin action=forget user=alice by=root uid=0 result=\"0 remembered logins forgotten\"",
        "admin action=import-tokens user=root by=root uid=0 result=\"1 hardware tokens imported\"",
        "admin action=list user=- by=root uid=0 result=\"0 users (locked)\"",
    ] {
        assert!(log.contains(expected), "missing {expected:?} in:\n{log}");
    }
}
