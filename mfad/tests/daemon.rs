//! mfad's conversations in-process (no socket, no root), and over its real socket where the
//! socket is the point (framing, peer credentials, limits); with a clock the test controls.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mfa_proto::{
    AdminOp, AuthContext, Client, ClientError, Conversation, Operation, Outcome, ServerMsg,
    Transport,
};
use mfa_test_support::{Live, Script, T0, TestDaemon};
use mfad::Config;
use mfad::config::Unenrolled;
use mfad::factor::totp::{self, HashAlgorithm, TotpParams};

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use zeroize::Zeroizing;

const SECRET: &[u8] = b"an-authenticator-key";

fn params() -> TotpParams {
    TotpParams {
        algorithm: HashAlgorithm::Sha1,
        digits: 6,
        period: 30,
    }
}

/// The authenticator app every test enrols.
trait Totp {
    fn enrol_totp(&self, user: &str);
    fn code_now(&self) -> String;
}

impl Totp for TestDaemon {
    fn enrol_totp(&self, user: &str) {
        let step = totp::step_of(mfad::Clock::now(&self.clock), params());
        self.store()
            .add_totp_device(user, "phone", SECRET, params(), step - 5, T0)
            .unwrap();
    }

    fn code_now(&self) -> String {
        let step = totp::step_of(mfad::Clock::now(&self.clock), params());
        totp::code_at_step(SECRET, params(), step).to_string()
    }
}

fn auth(user: &str) -> Operation {
    Operation::Authenticate(AuthContext {
        user: user.into(),
        service: "sshd".into(),
        rhost: Some("192.0.2.7".into()),
        tty: Some("ssh".into()),
        ..Default::default()
    })
}

#[test]
fn a_right_code_logs_in_and_the_same_code_is_refused_after() {
    let d = TestDaemon::start(|_| {});
    d.enrol_totp("root");
    let code = d.code_now();
    let (outcome, script) = d.login("root", &[&code]);
    assert_eq!(outcome, Outcome::Allow, "{}", script.text());
    assert!(script.text().contains("Two-factor login for root"));
    assert!(script.text().contains("Success. Logging you in..."));

    // Same code, same step, a second login: refused as a replay.
    let (outcome, script) = d.login("root", &[&code, &code, &code]);
    assert_eq!(outcome, Outcome::Deny);
    assert!(script.text().contains("already used"), "{}", script.text());
}

#[test]
fn an_earlier_step_is_refused_once_a_later_one_was_used() {
    let d = TestDaemon::start(|_| {});
    d.enrol_totp("root");
    let step = totp::step_of(mfad::Clock::now(&d.clock), params());
    let earlier = totp::code_at_step(SECRET, params(), step - 1).to_string();
    let (outcome, _) = d.login("root", &[&d.code_now()]);
    assert_eq!(outcome, Outcome::Allow);
    let (outcome, _) = d.login("root", &[&earlier, &earlier, &earlier]);
    assert_eq!(outcome, Outcome::Deny);
}

/// RFC 6238's SHA-1 key gives steps 59,061,240 and 59,061,241 (February 2026) one code,
/// 963181: two neighbouring steps share a code about once in a million pairs.
const SHARED_KEY: &[u8] = b"12345678901234567890";
const SHARED_STEP: u64 = 59_061_240;
const SHARED_CODE: &str = "963181";

/// The shared code, as oathtool (not mfa's own code) computes it at each of the two steps.
fn shared_code_by_oathtool() -> [String; 2] {
    let hex: String = SHARED_KEY.iter().map(|b| format!("{b:02x}")).collect();
    [SHARED_STEP, SHARED_STEP + 1].map(|step| {
        let at = format!("@{}", step * 30);
        let out = Command::new("oathtool")
            .args(["--totp", "-N", &at, &hex])
            .output()
            .expect("oathtool (Debian's oathtool package) computes the codes");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    })
}

/// A daemon whose clock is in the later of the two steps (so the window holds both), root's
/// app enrolled with the key and steps up to `spent` used.
fn daemon_between_shared_steps(spent: u64) -> TestDaemon {
    assert_eq!(shared_code_by_oathtool(), [SHARED_CODE, SHARED_CODE]);
    let d = TestDaemon::start(|_| {});
    d.clock.set(((SHARED_STEP + 1) * 30 + 7) as i64);
    d.store()
        .add_totp_device("root", "phone", SHARED_KEY, params(), spent, T0)
        .unwrap();
    d
}

/// With steps up to `spent` used, the shared code logs root in, then is refused as used.
fn shared_code_logs_in_once(spent: u64) {
    let d = daemon_between_shared_steps(spent);
    let (outcome, script) = d.login("root", &[SHARED_CODE]);
    assert_eq!(outcome, Outcome::Allow, "{}", script.text());
    let (outcome, script) = d.login("root", &[SHARED_CODE, SHARED_CODE, SHARED_CODE]);
    assert_eq!(outcome, Outcome::Deny);
    assert!(script.text().contains("already used"), "{}", script.text());
}

#[test]
fn a_code_the_app_shows_now_logs_in_though_a_spent_step_had_the_same_one() {
    // The user logged in with the earlier step's code; the app now shows the later step's,
    // the same digits. It is a fresh code: accepted, once.
    shared_code_logs_in_once(SHARED_STEP);
}

#[test]
fn a_code_two_fresh_steps_share_is_accepted_once_not_once_per_step() {
    // Both steps fresh: the one acceptance spends both, so the same digits typed again (by
    // the user, or by someone who watched them) are refused as used.
    shared_code_logs_in_once(SHARED_STEP - 1);
}

#[test]
fn a_wrong_code_is_refused_and_counted() {
    let d = TestDaemon::start(|_| {});
    d.enrol_totp("root");
    let (outcome, script) = d.login("root", &["000000", "111111", "222222"]);
    assert_eq!(outcome, Outcome::Deny);
    assert_eq!(script.text().matches("Incorrect passcode").count(), 3);
    assert!(script.text().contains("Too many attempts"));
    assert_eq!(d.store().lock_state("root").unwrap().failures, 3);
}

#[test]
fn success_resets_the_failure_count() {
    let d = TestDaemon::start(|_| {});
    d.enrol_totp("root");
    let code = d.code_now();
    let (outcome, _) = d.login("root", &["000000", &code]);
    assert_eq!(outcome, Outcome::Allow);
    assert_eq!(d.store().lock_state("root").unwrap().failures, 0);
}

#[test]
fn locks_at_the_tenth_failure_and_unlocks_itself_at_sixty_minutes() {
    let d = TestDaemon::start(|_| {});
    d.enrol_totp("root");
    // Three logins of three wrong codes: nine failures, not locked.
    for _ in 0..3 {
        let (outcome, _) = d.login("root", &["000000", "000001", "000002"]);
        assert_eq!(outcome, Outcome::Deny);
    }
    assert_eq!(d.store().lock_state("root").unwrap().locked_until, None);
    // The tenth failure locks, and the conversation ends there.
    let (outcome, script) = d.login("root", &["000003"]);
    assert_eq!(outcome, Outcome::Deny);
    assert!(script.text().contains("locked out"), "{}", script.text());

    // While locked, no code is asked for: even a right one would not be checked.
    d.clock.advance(59 * 60 + 30);
    let (outcome, script) = d.login("root", &[]);
    assert_eq!(outcome, Outcome::Deny);
    assert!(script.text().contains("in 1 minutes"), "{}", script.text());
    assert!(!script.text().contains("prompt:"));

    // At minute 60 the lock lifts by itself.
    d.clock.advance(30);
    let code = d.code_now();
    let (outcome, script) = d.login("root", &[&code]);
    assert_eq!(outcome, Outcome::Allow, "{}", script.text());
}

#[test]
fn admin_unlock_lifts_a_lock_at_once() {
    let d = TestDaemon::start(|c| c.lockout.max_failures = 2);
    d.enrol_totp("root");
    let (outcome, _) = d.login("root", &["000000", "000001"]);
    assert_eq!(outcome, Outcome::Deny);
    assert!(d.store().lock_state("root").unwrap().locked_until.is_some());
    let (outcome, script) = d.run(
        Operation::Admin(AdminOp::Unlock {
            user: "root".into(),
        }),
        &[],
    );
    assert_eq!(outcome.unwrap(), Outcome::Allow);
    assert!(script.text().contains("unlocked"));
    let code = d.code_now();
    assert_eq!(d.login("root", &[&code]).0, Outcome::Allow);
}

#[test]
fn a_bypass_code_works_once() {
    let d = TestDaemon::start(|_| {});
    let (outcome, script) = d.run(
        Operation::Admin(AdminOp::BypassCodes {
            user: "root".into(),
        }),
        &[],
    );
    assert_eq!(outcome.unwrap(), Outcome::Allow);
    let codes: Vec<String> = script
        .text()
        .lines()
        .map(str::trim)
        .filter(|l| l.len() == 8 && l.bytes().all(|b| b.is_ascii_digit()))
        .map(String::from)
        .collect();
    assert_eq!(codes.len(), 10, "{}", script.text());

    let (outcome, script) = d.login("root", &[&codes[3]]);
    assert_eq!(outcome, Outcome::Allow);
    assert!(
        script.text().contains("You have 9 left"),
        "{}",
        script.text()
    );
    let (outcome, script) = d.login("root", &[&codes[3], &codes[3], &codes[3]]);
    assert_eq!(outcome, Outcome::Deny);
    // The advice fits a bypass code: no "wait for the next one".
    assert!(
        script
            .text()
            .contains("That bypass code was already used; each one works once."),
        "{}",
        script.text()
    );
    assert!(
        !script.text().contains("wait for the next"),
        "{}",
        script.text()
    );
    // Another code still works.
    assert_eq!(d.login("root", &[&codes[4]]).0, Outcome::Allow);
}

/// `mfa enroll totp`, typing a code made from the secret shown (`mistype`: a wrong one).
fn enrol(d: &TestDaemon, mistype: bool) -> (Outcome, Enroller) {
    let mut conv = Enroller {
        now: mfad::Clock::now(&d.clock),
        shown: String::new(),
        mistype,
    };
    let outcome = d
        .run_with(Operation::EnrollTotp { name: None }, &mut conv)
        .unwrap();
    (outcome, conv)
}

#[test]
fn enrolment_needs_a_matching_code_and_then_a_fresh_factor_to_change() {
    let d = TestDaemon::start(|_| {});
    // A code that does not match the secret shown enrols nothing.
    let (outcome, conv) = enrol(&d, true);
    assert_eq!(outcome, Outcome::Deny, "{}", conv.shown);
    assert!(conv.shown.contains("otpauth://totp/testhost:root?"));
    assert!(conv.shown.contains("does not match"), "{}", conv.shown);
    assert!(
        conv.shown.contains("Nothing was enrolled."),
        "{}",
        conv.shown
    );
    assert!(d.store().devices("root").unwrap().is_empty());

    // Enrol root's own authenticator, reading the secret from what the daemon showed.
    let (outcome, conv) = enrol(&d, false);
    assert_eq!(outcome, Outcome::Allow, "{}", conv.shown);
    assert!(conv.shown.contains("otpauth://totp/testhost:root?"));
    assert_eq!(d.store().devices("root").unwrap().len(), 1);

    // Now bypass codes need a current passcode first; a wrong one changes nothing.
    let (outcome, script) = d.run(Operation::BypassCodes, &["000000", "000001", "000002"]);
    assert_eq!(outcome.unwrap(), Outcome::Deny, "{}", script.text());
    assert!(script.text().contains("needs a current second factor"));
    assert!(d.store().unused_bypass_codes("root").unwrap().is_empty());
}

/// Plays the user of `mfa enroll totp`: reads the secret, types its current code (or, with
/// `mistype`, a code one off it).
struct Enroller {
    now: i64,
    shown: String,
    mistype: bool,
}

impl Conversation for Enroller {
    fn info(&mut self, text: &str) {
        self.shown.push_str(text);
    }
    fn error(&mut self, text: &str) {
        self.shown.push_str(text);
    }
    fn prompt(&mut self, text: &str, _echo: bool) -> Option<Zeroizing<String>> {
        self.shown.push_str(text);
        let secret = self
            .shown
            .lines()
            .find_map(|l| l.strip_prefix("Secret: "))
            .expect("secret shown before the prompt");
        let bytes = data_encoding::BASE32_NOPAD
            .decode(secret.as_bytes())
            .unwrap();
        let step = totp::step_of(self.now, params());
        let code: u32 = totp::code_at_step(&bytes, params(), step)
            .to_string()
            .parse()
            .unwrap();
        let code = if self.mistype {
            (code + 1) % 1_000_000
        } else {
            code
        };
        Some(Zeroizing::new(format!("{code:06}")))
    }
}

#[test]
fn an_unenrolled_user_is_refused_with_the_way_to_enrol_or_allowed_by_policy() {
    let d = TestDaemon::start(|_| {});
    let (outcome, script) = d.login("root", &[]);
    assert_eq!(outcome, Outcome::Deny);
    assert!(
        script.text().contains("mfa enroll totp"),
        "{}",
        script.text()
    );

    let d = TestDaemon::start(|c| c.unenrolled = Unenrolled::Allow);
    assert_eq!(d.login("root", &[]).0, Outcome::Allow);
}

#[test]
fn bad_answers_are_refused_clearly_and_change_no_state() {
    let d = TestDaemon::start(|_| {});
    d.enrol_totp("root");
    let huge = "9".repeat(100_000);
    for bad in [
        "",
        "12\u{0}456",
        "\u{1b}[2J123456",
        "abcdef",
        huge.as_str(),
        "1234567890123456789",
    ] {
        let (outcome, script) = d.login("root", &[bad, bad, bad]);
        assert_eq!(outcome, Outcome::Deny, "answer {bad:?}");
        assert!(
            script.text().contains("not a passcode") || script.text().contains("No passcode"),
            "answer {bad:?}: {}",
            script.text()
        );
        assert_eq!(d.store().lock_state("root").unwrap().failures, 0, "{bad:?}");
    }
}

#[test]
fn bad_user_names_and_unknown_users_are_refused_without_state() {
    let d = TestDaemon::start(|_| {});
    d.enrol_totp("root");
    let db = d.dir.path().join("db/mfa.db");
    let before = every_row(&db);
    assert!(
        before.iter().any(|r| r.starts_with("devices|")),
        "{before:?}"
    );
    for user in [
        "",
        "a\nb",
        "x\u{1b}]0;pwned\u{7}",
        "../../etc/passwd",
        "no-such-user-mfa-test",
    ] {
        let (outcome, script) = d.login(user, &[]);
        assert_eq!(outcome, Outcome::Deny, "user {user:?}");
        assert!(!script.text().is_empty());
        assert_eq!(every_row(&db), before, "user {user:?} changed the store");
    }
    let (outcome, _) = d.run(
        Operation::Admin(AdminOp::Status {
            user: "bad\u{0}name".into(),
        }),
        &[],
    );
    assert_eq!(outcome.unwrap(), Outcome::Deny);
    assert_eq!(every_row(&db), before, "admin status changed the store");
}

/// Every row of every table of the store, as raw values (sealed secrets as bytes).
fn every_row(db: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut rows = Vec::new();
    for table in tables {
        let mut stmt = conn.prepare(&format!("SELECT * FROM \"{table}\"")).unwrap();
        let columns = stmt.column_count();
        let mut found = stmt
            .query_map([], |r| {
                (0..columns)
                    .map(|i| {
                        r.get::<_, rusqlite::types::Value>(i)
                            .map(|v| format!("{v:?}"))
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .unwrap()
            .map(|r| format!("{table}|{}", r.unwrap().join("|")))
            .collect::<Vec<_>>();
        found.sort();
        rows.extend(found);
    }
    rows
}

#[test]
fn another_protocol_version_is_answered_as_unavailable() {
    let d = TestDaemon::start(|_| {});
    let mut client =
        Client::connect(&d.socket(), Duration::from_secs(2), Duration::from_secs(5)).unwrap();
    client
        .send(&mfa_proto::ClientMsg::Hello {
            version: 99,
            op: auth("root"),
        })
        .unwrap();
    match client.recv().unwrap() {
        ServerMsg::Unavailable { reason } => assert!(reason.contains("version 99")),
        other => panic!("expected unavailable, got {other:?}"),
    }
}

/// Sends one raw frame as an unprivileged uid, with Debian's python3, and prints replies.
fn as_nobody(socket: &Path, payload: &str) -> String {
    let script = r#"
import json, socket, struct, sys
s = socket.socket(socket.AF_UNIX); s.settimeout(5); s.connect(sys.argv[1])
body = sys.argv[2].encode()
s.sendall(struct.pack('>I', len(body)) + body)
out = []
try:
    while True:
        hdr = s.recv(4, socket.MSG_WAITALL)
        if len(hdr) < 4: break
        n = struct.unpack('>I', hdr)[0]
        msg = json.loads(s.recv(n, socket.MSG_WAITALL))
        out.append(msg)
        if msg['type'] in ('done', 'unavailable'): break
except Exception as e:
    out.append({'error': str(e)})
print(json.dumps(out))
"#;
    python_as_nobody(script, &[socket.as_os_str(), payload.as_ref()])
}

/// Runs a Python `script` with `args` as uid 65534 (Debian's python3); returns its stdout.
fn python_as_nobody(script: &str, args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .args(args)
        .uid(65534)
        .gid(65534)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

use std::os::unix::process::CommandExt;

#[test]
fn connections_over_a_users_limit_are_turned_away_and_counted() {
    let d = TestDaemon::start(|_| {});
    let refused = r#"mfa_connections_refused_total{reason="user"}"#;
    let before = mfad::metrics::sample(&mfad::metrics::render().unwrap(), refused);
    // Nobody holds the limit's worth of connections open, then asks for one more.
    let script = r#"
import socket, sys, time
held = []
for _ in range(int(sys.argv[2])):
    s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); held.append(s)
time.sleep(0.3)
extra = socket.socket(socket.AF_UNIX); extra.connect(sys.argv[1])
extra.settimeout(5)
data = b""
try:
    while True:
        chunk = extra.recv(4096)
        if not chunk: break
        data += chunk
except Exception:
    pass
print(len(data) > 0)
"#;
    let limit = mfad::server::MAX_PER_USER.to_string();
    let out = python_as_nobody(script, &[d.socket().as_os_str(), limit.as_ref()]);
    assert_eq!(
        out.trim(),
        "True",
        "the extra connection was told why and closed"
    );
    let after = mfad::metrics::sample(&mfad::metrics::render().unwrap(), refused);
    assert!(after - before >= 1.0, "{before} -> {after}");
}

#[test]
fn a_non_root_caller_cannot_authenticate_or_administer_another_user() {
    let d = TestDaemon::start(|_| {});
    d.enrol_totp("root");
    let hello = |op: &str| format!(r#"{{"type":"hello","version":1,"op":{op}}}"#);
    let reply = as_nobody(
        &d.socket(),
        &hello(
            r#"{"op":"authenticate","user":"root","service":"sshd","rhost":null,"tty":null,"ssh_connection":null,"ssh_auth_info":null}"#,
        ),
    );
    assert!(reply.contains("Only root may ask mfad"), "{reply}");
    assert!(reply.contains(r#""outcome": "deny""#), "{reply}");
    assert!(!reply.contains("prompt"), "{reply}");

    let reply = as_nobody(
        &d.socket(),
        &hello(r#"{"op":"admin","action":"reset","user":"root"}"#),
    );
    assert!(
        reply.contains("Only root may run admin commands"),
        "{reply}"
    );
    assert_eq!(
        d.store().devices("root").unwrap().len(),
        1,
        "nothing was reset"
    );

    // Garbage from an unprivileged client is dropped without an answer or a crash.
    let reply = as_nobody(&d.socket(), "{not json");
    assert_eq!(reply.trim(), "[]");
    assert_eq!(d.login("root", &[&d.code_now()]).0, Outcome::Allow);
}

const HOTP_SEED_B32: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"; // "12345678901234567890"
/// RFC 4226 Appendix D codes for counters 0..=9 of that seed.
const HOTP_CODES: [&str; 10] = [
    "755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583", "399871",
    "520489",
];

fn add_hotp_token(d: &TestDaemon, answers: &[&str]) -> (Outcome, Script) {
    let (outcome, script) = d.run(
        Operation::AddDevice(mfa_proto::NewDevice::Hotp {
            name: Some("YubiKey".into()),
            secret: Zeroizing::new(HOTP_SEED_B32.into()),
            digits: 6,
        }),
        answers,
    );
    (outcome.unwrap(), script)
}

#[test]
fn a_hardware_hotp_token_logs_in_and_its_code_never_works_twice() {
    let d = TestDaemon::start(|_| {});
    // Adding it takes one code from the token (counter 0).
    let (outcome, script) = add_hotp_token(&d, &[HOTP_CODES[0]]);
    assert_eq!(outcome, Outcome::Allow, "{}", script.text());
    // The token ran ahead (button pressed twice without logging in): look-ahead finds it.
    let (outcome, script) = d.login("root", &[HOTP_CODES[3]]);
    assert_eq!(outcome, Outcome::Allow, "{}", script.text());
    // The same code, and any earlier one, is refused as already used.
    let (outcome, script) = d.login("root", &[HOTP_CODES[3], HOTP_CODES[2], HOTP_CODES[0]]);
    assert_eq!(outcome, Outcome::Deny);
    assert_eq!(
        script
            .text()
            .matches("That passcode was already used; press your token's button")
            .count(),
        3,
        "{}",
        script.text()
    );
    assert_eq!(d.login("root", &[HOTP_CODES[4]]).0, Outcome::Allow);
}

#[test]
fn a_bad_token_secret_is_refused_before_anything_is_asked() {
    let d = TestDaemon::start(|_| {});
    let (outcome, script) = d.run(
        Operation::AddDevice(mfa_proto::NewDevice::Hotp {
            name: None,
            secret: Zeroizing::new("TOO SHORT".into()),
            digits: 6,
        }),
        &[],
    );
    assert_eq!(outcome.unwrap(), Outcome::Deny);
    assert!(script.text().contains("base32") || script.text().contains("80 bits"));
    assert!(d.store().devices("root").unwrap().is_empty());
}

#[test]
fn changing_the_default_or_removing_a_device_needs_a_fresh_code() {
    let d = TestDaemon::start(|_| {});
    d.enrol_totp("root");
    let (outcome, script) = add_hotp_token(&d, &[&d.code_now(), HOTP_CODES[0]]);
    assert_eq!(outcome, Outcome::Allow, "{}", script.text());
    assert!(script.text().contains("needs a current second factor"));

    let (outcome, script) = d.run(Operation::ListDevices, &[]);
    assert_eq!(outcome.unwrap(), Outcome::Allow);
    assert!(script.text().contains("1. phone") && script.text().contains("[default]"));
    assert!(
        script.text().contains("2. YubiKey (counter-based token"),
        "{}",
        script.text()
    );

    // Wrong codes: the default stays.
    let (outcome, _) = d.run(
        Operation::SetDefault { index: 2 },
        &["000000", "000001", "000002"],
    );
    assert_eq!(outcome.unwrap(), Outcome::Deny);
    assert!(d.store().devices("root").unwrap()[0].is_default);
    // A token code: the default moves.
    let (outcome, _) = d.run(Operation::SetDefault { index: 2 }, &[HOTP_CODES[1]]);
    assert_eq!(outcome.unwrap(), Outcome::Allow);
    assert!(d.store().devices("root").unwrap()[1].is_default);

    let (outcome, script) = d.run(Operation::RemoveDevice { index: 7 }, &[]);
    assert_eq!(outcome.unwrap(), Outcome::Deny);
    assert!(script.text().contains("no device number 7"));
    let (outcome, _) = d.run(Operation::RemoveDevice { index: 2 }, &[HOTP_CODES[2]]);
    assert_eq!(outcome.unwrap(), Outcome::Allow);
    let devices = d.store().devices("root").unwrap();
    assert_eq!(devices.len(), 1);
    assert!(
        devices[0].is_default,
        "the remaining device became the default"
    );
}

#[test]
fn importing_tokens_is_all_or_nothing() {
    let d = TestDaemon::start(|_| {});
    let import = |csv: &str| {
        d.run(
            Operation::Admin(AdminOp::ImportTokens { csv: csv.into() }),
            &[],
        )
    };
    let good =
        format!("root,hotp,Token A,{HOTP_SEED_B32},6\nnobody,totp,Token B,{HOTP_SEED_B32},6,30\n");
    let bad = format!("{good}no-such-user-mfa,hotp,Token C,{HOTP_SEED_B32},6\n");
    let (outcome, script) = import(&bad);
    assert_eq!(outcome.unwrap(), Outcome::Deny);
    assert!(
        script.text().contains("no-such-user-mfa"),
        "{}",
        script.text()
    );
    assert!(d.store().devices("root").unwrap().is_empty());
    let (outcome, script) = import("root,hotp,x,AAAA,6\n");
    assert_eq!(outcome.unwrap(), Outcome::Deny);
    assert!(script.text().contains("line 1"), "{}", script.text());

    let (outcome, script) = import(&good);
    assert_eq!(outcome.unwrap(), Outcome::Allow, "{}", script.text());
    assert_eq!(d.store().devices("root").unwrap().len(), 1);
    assert_eq!(d.store().devices("nobody").unwrap().len(), 1);
    assert_eq!(d.login("root", &[HOTP_CODES[0]]).0, Outcome::Allow);
}

fn auth_from(user: &str, rhost: &str, key: Option<&str>) -> Operation {
    Operation::Authenticate(AuthContext {
        user: user.into(),
        service: "sshd".into(),
        rhost: Some(rhost.into()),
        ssh_auth_info: key.map(|k| format!("publickey ssh-ed25519 {k}\n")),
        ..Default::default()
    })
}

fn login_op(d: &TestDaemon, op: Operation, answers: &[&str]) -> (Outcome, Script) {
    let (outcome, script) = d.run(op, answers);
    script.all_answered();
    (outcome.unwrap(), script)
}

#[test]
fn a_trusted_network_skips_the_second_factor_and_others_do_not() {
    let d = TestDaemon::start(|c| {
        c.policy.trusted_networks = vec!["10.0.0.0/8".parse().unwrap()];
    });
    d.enrol_totp("root");
    let (outcome, script) = login_op(&d, auth_from("root", "10.20.30.40", None), &[]);
    assert_eq!(outcome, Outcome::Allow, "{}", script.text());
    assert!(!script.text().contains("prompt:"));
    let (outcome, _) = login_op(
        &d,
        auth_from("root", "192.0.2.1", None),
        &["000000", "1", "2"],
    );
    assert_eq!(outcome, Outcome::Deny);
}

#[test]
fn an_exempt_group_skips_and_require_groups_narrow_who_is_asked() {
    let d = TestDaemon::start(|c| c.policy.exempt_groups = vec!["root".into()]);
    d.enrol_totp("root");
    assert_eq!(d.login("root", &[]).0, Outcome::Allow);

    let d = TestDaemon::start(|c| c.policy.require_groups = vec!["no-such-group-mfa".into()]);
    d.enrol_totp("root");
    assert_eq!(d.login("root", &[]).0, Outcome::Allow);

    let d = TestDaemon::start(|c| c.policy.require_groups = vec!["root".into()]);
    d.enrol_totp("root");
    let (outcome, _) = d.login("root", &["000000", "000001", "000002"]);
    assert_eq!(outcome, Outcome::Deny, "root is in a required group");
}

#[test]
fn a_remembered_login_skips_within_the_window_and_asks_after_or_elsewhere() {
    let d = TestDaemon::start(|c| c.policy.remember_for = 3600);
    d.enrol_totp("root");
    let here = || auth_from("root", "198.51.100.7", Some("AAAAkeyONE"));
    let (outcome, _) = login_op(&d, here(), &[&d.code_now()]);
    assert_eq!(outcome, Outcome::Allow);
    // Same user, address and key, within the hour: not asked.
    d.clock.advance(1800);
    let (outcome, script) = login_op(&d, here(), &[]);
    assert_eq!(outcome, Outcome::Allow);
    assert!(!script.text().contains("prompt:"), "{}", script.text());
    // Another address, or another key: asked.
    let (outcome, _) = login_op(
        &d,
        auth_from("root", "198.51.100.8", Some("AAAAkeyONE")),
        &["000000", "000001", "000002"],
    );
    assert_eq!(outcome, Outcome::Deny);
    let (outcome, _) = login_op(
        &d,
        auth_from("root", "198.51.100.7", Some("AAAAkeyTWO")),
        &["000000", "000001", "000002"],
    );
    assert_eq!(outcome, Outcome::Deny);
    // After the window: asked again.
    d.clock.advance(1801);
    let (outcome, script) = login_op(&d, here(), &[&d.code_now()]);
    assert_eq!(outcome, Outcome::Allow);
    assert!(script.text().contains("prompt:"));
}

#[test]
fn remembering_is_off_by_default() {
    let d = TestDaemon::start(|_| {});
    d.enrol_totp("root");
    let here = || auth_from("root", "198.51.100.7", None);
    assert_eq!(login_op(&d, here(), &[&d.code_now()]).0, Outcome::Allow);
    d.clock.advance(60);
    let (outcome, _) = login_op(&d, here(), &[&d.code_now()]);
    assert_eq!(outcome, Outcome::Allow);
}

fn auto(user: &str, can_prompt: bool) -> Operation {
    Operation::Authenticate(AuthContext {
        user: user.into(),
        service: "mfa-login-prompt".into(),
        rhost: Some("192.0.2.50".into()),
        mode: mfa_proto::AuthMode::Auto,
        can_prompt,
        command: Some("scp -t /tmp".into()),
        ..Default::default()
    })
}

#[test]
fn without_a_terminal_and_without_a_usable_default_the_refusal_is_immediate_and_names_the_fix() {
    let d = TestDaemon::start(|_| {});
    d.enrol_totp("root");
    let started = std::time::Instant::now();
    let (outcome, script) = login_op(&d, auto("root", false), &[]);
    assert_eq!(outcome, Outcome::Deny);
    assert!(started.elapsed() < Duration::from_secs(5));
    // This host offers no push or calls: the advice says so instead of naming commands
    // that would be refused.
    assert!(
        script.text().contains("This host offers neither"),
        "{}",
        script.text()
    );
    assert!(!script.text().contains("mfa add push"), "{}", script.text());
    assert!(!script.text().contains("prompt:"));
}

#[test]
fn auto_mode_with_a_terminal_asks_once_for_the_default_code_device() {
    let d = TestDaemon::start(|_| {});
    d.enrol_totp("root");
    let (outcome, script) = login_op(&d, auto("root", true), &[&d.code_now()]);
    assert_eq!(outcome, Outcome::Allow, "{}", script.text());
    assert!(!script.text().contains("select one of the following"));
}

#[test]
fn in_login_enrolment_works_from_a_trusted_network_and_is_refused_elsewhere() {
    let d = TestDaemon::start(|c| {
        c.unenrolled = Unenrolled::Enroll;
        c.policy.trusted_networks = vec!["10.0.0.0/8".parse().unwrap()];
    });
    let (outcome, script) = login_op(&d, auth_from("root", "192.0.2.9", None), &[]);
    assert_eq!(outcome, Outcome::Deny);
    assert!(
        script
            .text()
            .contains("only offered from the site's own networks"),
        "{}",
        script.text()
    );
    assert!(d.store().devices("root").unwrap().is_empty());

    let mut conv = Enroller {
        now: mfad::Clock::now(&d.clock),
        shown: String::new(),
        mistype: false,
    };
    let outcome = d
        .run_with(auth_from("root", "10.1.1.1", None), &mut conv)
        .unwrap();
    assert_eq!(outcome, Outcome::Allow, "{}", conv.shown);
    assert!(conv.shown.contains("otpauth://totp/"));
    assert_eq!(d.store().devices("root").unwrap().len(), 1);
}

#[test]
fn a_user_may_authenticate_itself_but_not_another_user() {
    let d = TestDaemon::start(|_| {});
    d.enrol_totp("nobody");
    let hello = |user: &str| {
        format!(
            r#"{{"type":"hello","version":1,"op":{{"op":"authenticate","user":"{user}","service":"mfa-login-prompt","rhost":null,"tty":null,"ssh_connection":null,"ssh_auth_info":null,"mode":"auto","can_prompt":false}}}}"#
        )
    };
    // As itself (the ForceCommand helper's case): asked, and refused only for want of a
    // usable default without a terminal.
    let reply = as_nobody(&d.socket(), &hello("nobody"));
    assert!(reply.contains("needs a default method"), "{reply}");
    let reply = as_nobody(&d.socket(), &hello("root"));
    assert!(reply.contains("Only root may ask mfad"), "{reply}");
}

// ---- The security review (issue 9): locks, names, groups, remembered logins, secrets ----

/// A login left waiting at its passcode prompt.
fn at_prompt(d: &TestDaemon, user: &str) -> Live {
    let mut client = d.connect_as(0);
    client
        .send(&mfa_proto::ClientMsg::Hello {
            version: mfa_proto::PROTOCOL_VERSION,
            op: auth(user),
        })
        .unwrap();
    loop {
        match client.recv().unwrap() {
            ServerMsg::Prompt { .. } => return client,
            ServerMsg::Info { .. } => {}
            other => panic!("expected a prompt, got {other:?}"),
        }
    }
}

/// Answers the prompt `client` waits at; returns what mfad said up to its verdict or the
/// next prompt, and the verdict if there was one.
fn answer(client: &mut Live, text: &str) -> (String, Option<Outcome>) {
    client
        .send(&mfa_proto::ClientMsg::Answer {
            text: Some(Zeroizing::new(text.to_string())),
        })
        .unwrap();
    let mut said = String::new();
    loop {
        match client.recv().unwrap() {
            ServerMsg::Info { text } | ServerMsg::Error { text } => {
                said.push_str(&text);
                said.push('\n');
            }
            ServerMsg::Prompt { .. } => return (said, None),
            ServerMsg::Done { outcome } => return (said, Some(outcome)),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn a_session_already_at_its_prompt_accepts_no_code_once_the_account_is_locked() {
    let d = TestDaemon::start(|_| {});
    d.enrol_totp("root");
    // Five logins reach the prompt before the lock...
    let mut waiting: Vec<Live> = (0..5).map(|_| at_prompt(&d, "root")).collect();
    // ...then ten wrong codes elsewhere lock the account.
    for _ in 0..3 {
        d.login("root", &["000000", "000001", "000002"]);
    }
    let (outcome, script) = d.login("root", &["000003"]);
    assert_eq!(outcome, Outcome::Deny);
    assert!(script.text().contains("locked"), "{}", script.text());
    let locked_until = d.store().lock_state("root").unwrap().locked_until.unwrap();
    // The right code, typed in each old session, is not even checked.
    let code = d.code_now();
    for client in &mut waiting {
        let (said, outcome) = answer(client, &code);
        assert_eq!(outcome, Some(Outcome::Deny), "{said}");
        assert!(said.contains("locked"), "{said}");
    }
    // Those attempts still counted (five more failures), and the lock was not shortened.
    let state = d.store().lock_state("root").unwrap();
    assert_eq!(state.failures, 5);
    assert_eq!(state.locked_until, Some(locked_until));
    // No code was spent: once unlocked, the same code opens a login.
    d.store().unlock("root").unwrap();
    assert_eq!(d.login("root", &[&code]).0, Outcome::Allow);
}

#[test]
fn failures_while_locked_count_and_never_shorten_a_longer_lock() {
    let d = TestDaemon::start(|c| c.lockout.max_failures = 3);
    d.enrol_totp("root");
    // Three logins reach the prompt; then a report locks for longer than a lockout would.
    let mut waiting: Vec<Live> = (0..3).map(|_| at_prompt(&d, "root")).collect();
    let far = T0 + 10 * 3600;
    d.store().lock_until("root", far).unwrap();
    for (n, client) in waiting.iter_mut().enumerate().take(2) {
        let (said, outcome) = answer(client, "123456");
        assert_eq!(outcome, Some(Outcome::Deny), "{said}");
        assert_eq!(d.store().lock_state("root").unwrap().failures, n as u32 + 1);
    }
    // The third reaches max_failures: a lockout of an hour, which must not replace the
    // ten-hour lock.
    let (said, _) = answer(&mut waiting[2], "123456");
    assert!(said.contains("locked"), "{said}");
    assert_eq!(
        d.store().lock_state("root").unwrap().locked_until,
        Some(far),
        "a lockout while locked must not bring the end of a longer lock forward"
    );
}

#[test]
fn a_user_name_in_another_case_is_the_same_account_with_one_lockout() {
    let accounts = mfad::accounts::AccountTable::new()
        .with("root", 0, &["root"])
        .with("alice", 4242, &["users"])
        .case_insensitive();
    let d = TestDaemon::start_with(|_| {}, Some(Arc::new(accounts)));
    d.enrol_totp("alice");
    // Five failures as ALICE and five as alice: one account, locked at the tenth.
    for name in ["ALICE", "alice", "Alice"] {
        d.login(name, &["000000", "000001", "000002"]);
    }
    let (_, script) = d.login("aLiCe", &["000003"]);
    assert!(script.text().contains("locked"), "{}", script.text());
    let (outcome, script) = d.run(auth("ALICE"), &[]);
    assert_eq!(outcome.unwrap(), Outcome::Deny);
    assert!(script.text().contains("locked"), "{}", script.text());
    // Nothing was recorded under another spelling.
    assert_eq!(d.store().lock_state("ALICE").unwrap().failures, 0);
    assert!(
        d.store()
            .lock_state("ALICE")
            .unwrap()
            .locked_until
            .is_none()
    );
    // The admin may name the user in any case too.
    let (outcome, _) = d.run(
        Operation::Admin(AdminOp::Unlock {
            user: "ALICE".into(),
        }),
        &[],
    );
    assert_eq!(outcome.unwrap(), Outcome::Allow);
    assert_eq!(d.login("ALICE", &[&d.code_now()]).0, Outcome::Allow);
}

#[test]
fn a_failed_group_lookup_decides_nothing_and_the_fail_mode_applies() {
    let accounts = || {
        mfad::accounts::AccountTable::new()
            .with("root", 0, &["root"])
            .failing_groups()
    };
    for tune in [
        (|c: &mut Config| c.policy.require_groups = vec!["staff".into()]) as fn(&mut Config),
        |c: &mut Config| c.policy.exempt_groups = vec!["robots".into()],
    ] {
        let d = TestDaemon::start_with(tune, Some(Arc::new(accounts())));
        d.enrol_totp("root");
        let (outcome, script) = d.run(auth("root"), &[]);
        match outcome {
            Err(ClientError::Unavailable(reason)) => {
                assert!(reason.contains("user database"), "{reason}")
            }
            other => panic!(
                "a group lookup failure decided {other:?}: {}",
                script.text()
            ),
        }
    }
    // A user lookup failure, too.
    let d = TestDaemon::start_with(
        |_| {},
        Some(Arc::new(mfad::accounts::AccountTable::new().failing())),
    );
    assert!(matches!(
        d.run(auth("root"), &[]).0,
        Err(ClientError::Unavailable(_))
    ));
}

/// Runs a whole login as uid 65534 (`nobody`, as the ForceCommand helper would), answering
/// each prompt from `answers`; returns mfad's messages as JSON.
fn helper_login_as_nobody(socket: &Path, rhost: &str, answers: &[&str]) -> String {
    let script = r#"
import json, socket, struct, sys
s = socket.socket(socket.AF_UNIX); s.settimeout(5); s.connect(sys.argv[1])
def send(obj):
    body = json.dumps(obj).encode(); s.sendall(struct.pack('>I', len(body)) + body)
answers = json.loads(sys.argv[3])
send({"type": "hello", "version": int(sys.argv[4]), "op": {"op": "authenticate", "user": "nobody",
      "service": "mfa-login-prompt", "rhost": sys.argv[2], "tty": None, "ssh_connection": None,
      "ssh_auth_info": None, "mode": "menu", "can_prompt": True}})
out = []
while True:
    hdr = s.recv(4, socket.MSG_WAITALL)
    if len(hdr) < 4: break
    msg = json.loads(s.recv(struct.unpack('>I', hdr)[0], socket.MSG_WAITALL))
    out.append(msg)
    if msg['type'] == 'prompt':
        send({"type": "answer", "text": answers.pop(0) if answers else None})
    if msg['type'] in ('done', 'unavailable'): break
print(json.dumps(out))
"#;
    let (answers, version) = (
        serde_json_list(answers),
        mfa_proto::PROTOCOL_VERSION.to_string(),
    );
    python_as_nobody(
        script,
        &[
            socket.as_os_str(),
            rhost.as_ref(),
            answers.as_ref(),
            version.as_ref(),
        ],
    )
}

fn serde_json_list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("\"{s}\"")).collect();
    format!("[{}]", quoted.join(","))
}

#[test]
fn a_login_remembered_by_the_users_own_helper_never_opens_an_sshd_login() {
    let d = TestDaemon::start(|c| c.policy.remember_for = 3600);
    d.enrol_totp("nobody");
    // The helper, running as the user, claims an address the user chose and passes.
    let reply = helper_login_as_nobody(&d.socket(), "203.0.113.9", &[&d.code_now()]);
    assert!(reply.contains(r#""outcome": "allow""#), "{reply}");
    // The helper's own next login from there is remembered...
    d.clock.advance(60);
    let reply = helper_login_as_nobody(&d.socket(), "203.0.113.9", &[]);
    assert!(reply.contains(r#""outcome": "allow""#), "{reply}");
    assert!(!reply.contains("prompt"), "{reply}");
    // ...but sshd (root) asking for a login from that address still gets the prompt.
    let (outcome, script) = login_op(
        &d,
        auth_from("nobody", "203.0.113.9", None),
        &["000000", "000001", "000002"],
    );
    assert_eq!(outcome, Outcome::Deny);
    assert!(script.text().contains("prompt:"), "{}", script.text());
}

#[test]
fn remembered_logins_are_forgotten_by_the_admin_and_on_unlock() {
    let d = TestDaemon::start(|c| c.policy.remember_for = 3600);
    d.enrol_totp("root");
    // One login from the same address and key, with a fresh code; whether it was asked.
    let asked = |d: &TestDaemon| {
        d.clock.advance(30);
        let (outcome, script) = d.run(
            auth_from("root", "198.51.100.7", Some("AAAAkey")),
            &[&d.code_now()],
        );
        assert_eq!(outcome.unwrap(), Outcome::Allow, "{}", script.text());
        script.text().contains("prompt:")
    };
    assert!(asked(&d));
    assert!(!asked(&d), "remembered");
    let (outcome, script) = d.run(
        Operation::Admin(AdminOp::Forget {
            user: "root".into(),
        }),
        &[],
    );
    assert_eq!(outcome.unwrap(), Outcome::Allow);
    assert!(script.text().contains("1 remembered"), "{}", script.text());
    assert!(asked(&d), "forgotten by `mfa admin forget`");
    assert!(!asked(&d), "remembered again");
    let (outcome, _) = d.run(
        Operation::Admin(AdminOp::Unlock {
            user: "root".into(),
        }),
        &[],
    );
    assert_eq!(outcome.unwrap(), Outcome::Allow);
    assert!(asked(&d), "forgotten by `mfa admin unlock`");
}

/// Randomness is a parameter of the daemon: with the test daemon's seeded generator, the
/// bypass codes a user is shown are the ones that seed gives, and they work.
#[test]
fn the_codes_a_user_is_shown_come_from_the_daemons_random_source() {
    let d = TestDaemon::start(|_| {});
    let expected =
        mfad::factor::bypass::generate(&mfad::random::SeededRandom::new(mfa_test_support::SEED)).0;
    let (outcome, script) = d.run(Operation::BypassCodes, &[]);
    assert_eq!(outcome.unwrap(), Outcome::Allow, "{}", script.text());
    for code in &expected {
        assert!(script.text().contains(code.as_str()), "{}", script.text());
    }
    let (outcome, script) = d.login("root", &[expected[0].as_str()]);
    assert_eq!(outcome, Outcome::Allow, "{}", script.text());
}

// ---- Directory lookups: who may cause them, and whose wait for whose ----

/// A directory of `root`, `alice` (4242) and `bob` (4343) that notes every name asked about
/// and holds each lookup of a name starting `slow-` until [`Gated::open`].
#[derive(Default)]
struct Gated {
    asked: std::sync::Mutex<Vec<String>>,
    slow_started: std::sync::atomic::AtomicUsize,
    open: std::sync::Mutex<bool>,
    opened: std::sync::Condvar,
}

impl Gated {
    fn table() -> mfad::accounts::AccountTable {
        mfad::accounts::AccountTable::new()
            .with("root", 0, &["root"])
            .with("alice", 4242, &["users"])
            .with("bob", 4343, &["users"])
    }
    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
    fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
    fn slow_started(&self) -> usize {
        self.slow_started.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl mfad::accounts::Accounts for Gated {
    fn by_name(
        &self,
        name: &str,
    ) -> Result<Option<mfad::accounts::Account>, mfad::accounts::AccountsError> {
        self.asked.lock().unwrap().push(name.to_string());
        if name.starts_with("slow-") {
            self.slow_started
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut open = self.open.lock().unwrap();
            while !*open {
                open = self.opened.wait(open).unwrap();
            }
        }
        Gated::table().by_name(name)
    }
    fn by_uid(
        &self,
        uid: u32,
    ) -> Result<Option<mfad::accounts::Account>, mfad::accounts::AccountsError> {
        Gated::table().by_uid(uid)
    }
    fn groups(
        &self,
        account: &mfad::accounts::Account,
    ) -> Result<Vec<String>, mfad::accounts::AccountsError> {
        Gated::table().groups(account)
    }
    fn group_exists(&self, name: &str) -> Result<bool, mfad::accounts::AccountsError> {
        Gated::table().group_exists(name)
    }
}

#[test]
fn a_user_asking_about_other_names_causes_no_lookup_of_them() {
    let directory = Arc::new(Gated::default());
    let d = TestDaemon::start_with(|_| {}, Some(directory.clone()));
    d.enrol_totp("alice");
    d.enrol_totp("bob");
    // alice's own process asks about bob and about names nobody has: refused, and the
    // directory is never asked about them (a local user could otherwise keep it busy with
    // lookups of made-up names, ahead of sshd's logins).
    let mut names = vec!["bob".to_string(), "ALICE".to_string()];
    names.extend((0..20).map(|i| format!("no-such-user-{i}")));
    for name in &names {
        let (outcome, script) = d.run_as(4242, auth(name), &[]);
        assert_eq!(outcome.unwrap(), Outcome::Deny, "{name}");
        assert!(
            script.text().contains("Only root may ask mfad"),
            "{name}: {}",
            script.text()
        );
    }
    let asked = directory.asked();
    assert!(names.iter().all(|n| !asked.contains(n)), "{asked:?}");
    // About herself she is asked for her code, as the ForceCommand helper is.
    let (outcome, script) = d.run_as(4242, auth("alice"), &[&d.code_now()]);
    assert_eq!(outcome.unwrap(), Outcome::Allow, "{}", script.text());
    // Root (sshd) may ask about anyone.
    assert_eq!(d.login("bob", &[&d.code_now()]).0, Outcome::Allow);
    assert!(directory.asked().contains(&"bob".to_string()));
}

#[test]
fn the_web_fronts_lookups_run_in_places_of_their_own_and_never_hold_up_a_login() {
    use mfa_proto::{WebReply, WebRequest};
    use mfad::core::{DIRECTORY_LOOKUPS, WEB_DIRECTORY_LOOKUPS};
    let directory = Arc::new(Gated::default());
    let d = TestDaemon::start_with(|c| c.web.portal = true, Some(directory.clone()));
    d.enrol_totp("alice");
    // More sign-ins of names whose lookups hang than sshd's logins have places.
    let sign_ins = DIRECTORY_LOOKUPS + 2;
    let (running, login, replies) = std::thread::scope(|s| {
        let waiting: Vec<_> = (0..sign_ins)
            .map(|i| {
                let d = &d;
                s.spawn(move || {
                    d.web(WebRequest::PortalSignIn {
                        user: format!("slow-{i}"),
                        password: mfa_proto::web::Password::new("x".into()),
                        client: Some("198.51.100.9".into()),
                    })
                })
            })
            .collect();
        let until = std::time::Instant::now() + Duration::from_secs(20);
        while directory.slow_started() < WEB_DIRECTORY_LOOKUPS && std::time::Instant::now() < until
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(300));
        let running = directory.slow_started();
        // A login meanwhile: its user is looked up at once, in sshd's own places.
        let (tx, rx) = std::sync::mpsc::channel();
        let d2 = &d;
        s.spawn(move || {
            let _ = tx.send(d2.run(auth("alice"), &[&d2.code_now()]).0.ok());
        });
        let login = rx.recv_timeout(Duration::from_secs(20));
        // Let everything finish before asserting, so that a failure fails and never hangs.
        directory.open();
        let replies: Vec<_> = waiting.into_iter().map(|w| w.join().unwrap()).collect();
        (running, login, replies)
    });
    assert_eq!(running, WEB_DIRECTORY_LOOKUPS, "the web's lookups at once");
    assert_eq!(
        login,
        Ok(Some(Outcome::Allow)),
        "the login waited for the web's lookups"
    );
    for reply in replies {
        assert!(matches!(reply, WebReply::SignInRefused { .. }), "{reply:?}");
    }
    assert_eq!(directory.slow_started(), sign_ins);
}
