//! The system clock stepping backwards (an NTP correction, a VM restored from a snapshot)
//! and forwards again, with a clock the test controls. Fail closed: no spent code opens a
//! login again, the refusal says why and is logged, bypass codes still get the user in,
//! and nothing in the store is lost.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mfa_proto::{AuthContext, Outcome};
use mfa_test_support::{T0, TestDaemon};
use mfad::factor::bypass;
use mfad::factor::totp::{self, HashAlgorithm, TotpParams};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECRET: &[u8] = b"clock-step-test-key!";

fn params() -> TotpParams {
    TotpParams {
        algorithm: HashAlgorithm::Sha1,
        digits: 6,
        period: 30,
    }
}

fn code_at(t: i64) -> String {
    totp::code_at_step(SECRET, params(), totp::step_of(t, params())).to_string()
}

/// mfad's log lines, captured from the tracing subscriber.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// One login of root from 192.0.2.9 answering `answer`: the outcome, what was shown, and
/// how long it took.
fn login(d: &TestDaemon, answer: &str) -> (Outcome, String, Duration) {
    let started = Instant::now();
    let ctx = AuthContext {
        user: "root".into(),
        service: "sshd".into(),
        rhost: Some("192.0.2.9".into()),
        ..Default::default()
    };
    let (outcome, script) = d.run(ctx, &[answer]);
    (outcome.unwrap(), script.text(), started.elapsed())
}

#[test]
fn a_clock_stepping_back_an_hour_never_reopens_a_spent_code_and_loses_nothing() {
    let log = Log::default();
    let writer = log.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();
    let d = TestDaemon::start(|c| c.max_attempts = 1);
    let mut store = d.store();
    store
        .add_totp_device(
            "root",
            "phone",
            SECRET,
            params(),
            totp::step_of(T0, params()) - 5,
            T0,
        )
        .unwrap();
    let (shown_codes, stored) = bypass::generate(&mfad::random::OsRandom);
    store.replace_bypass_codes("root", &stored, T0).unwrap();
    drop(store);
    let clock = d.clock.clone();

    // A login at T0 spends T0's step.
    let (outcome, shown, _) = login(&d, &code_at(T0));
    assert_eq!(outcome, Outcome::Allow, "{shown}");

    // The clock steps back an hour. The code the app now shows belongs to a step before
    // the one spent: refused, and the user is told to wait rather than that it is wrong.
    clock.set(T0 - 3600);
    let (outcome, shown, took) = login(&d, &code_at(T0 - 3600));
    assert_eq!(outcome, Outcome::Deny, "{shown}");
    assert!(shown.contains("already used"), "{shown}");
    assert!(took < Duration::from_secs(10));
    // T0's own code, far outside the window now, is simply wrong.
    let (outcome, shown, _) = login(&d, &code_at(T0));
    assert_eq!(outcome, Outcome::Deny, "{shown}");
    assert!(shown.contains("Incorrect passcode"), "{shown}");
    // A bypass code does not depend on the clock: the user still has a way in.
    let (outcome, shown, _) = login(&d, &shown_codes[0]);
    assert_eq!(outcome, Outcome::Allow, "{shown}");

    // The clock is corrected: the next step's code works at once.
    clock.set(T0 + 30);
    let (outcome, shown, _) = login(&d, &code_at(T0 + 30));
    assert_eq!(outcome, Outcome::Allow, "{shown}");
    // And T0's step, spent before the step back, stays spent.
    let (outcome, _, _) = login(&d, &code_at(T0));
    assert_eq!(outcome, Outcome::Deny);

    let database = d.config.database.clone();
    let mut store = d.store();
    let text = log.text();
    assert!(
        text.contains("outcome=deny reason=\"code already used; 1 consecutive failures\""),
        "the refusal is logged with its reason:\n{text}"
    );
    assert!(
        !text.contains(&code_at(T0 - 3600)),
        "a code reached the log"
    );

    let devices = store.devices("root").unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(
        devices[0].otp.as_ref().unwrap().counter,
        totp::step_of(T0 + 30, params()) as i64,
        "the last step spent is the corrected clock's"
    );
    assert_eq!(store.unused_bypass_codes("root").unwrap().len(), 9);
    let conn = rusqlite::Connection::open(&database).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    drop(d);
}
