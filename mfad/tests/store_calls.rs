//! What one login asks of the store, watched at the backend: one read before the first
//! prompt (lock, devices with their secrets, bypass codes left, remembered) and one write
//! transaction for the answer (lock re-read under the write lock, the spend, the count
//! cleared). The device rows, secrets included, are read once per login.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mfa_proto::Outcome;
use mfa_test_support::{T0, TestDaemon};
use mfad::factor::totp::{self, HashAlgorithm, TotpParams};
use mfad::store::backend::{
    CodeRecord, DeviceRecord, Dump, EnrolLinkRecord, EnrolLinkStep, Failure, LoginReads,
    NewBypassCodes, NewDeviceRecord, NewEnrolLink, NewSmsCode, NewWebSession, Remembered,
    WebSessionRecord, WebSessionStep,
};
use mfad::store::{Backend, FailureEffect, LockState, LoginRecord, StoreError, UserSummary};
use std::sync::{Arc, Mutex};

const SECRET: &[u8] = b"an-authenticator-key";

fn params() -> TotpParams {
    TotpParams {
        algorithm: HashAlgorithm::Sha1,
        digits: 6,
        period: 30,
    }
}

type Calls = Arc<Mutex<Vec<&'static str>>>;

/// A backend that records the name of every call, then makes it on `inner`.
struct Counting {
    inner: Box<dyn Backend>,
    calls: Calls,
}

macro_rules! pass {
    ($self:ident, $name:ident ( $($arg:expr),* )) => {{
        $self.calls.lock().unwrap().push(stringify!($name));
        $self.inner.$name($($arg),*)
    }};
}

impl Backend for Counting {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    fn begin(&mut self) -> Result<(), StoreError> {
        pass!(self, begin())
    }
    fn commit(&mut self) -> Result<(), StoreError> {
        pass!(self, commit())
    }
    fn rollback(&mut self) {
        pass!(self, rollback())
    }
    // Inline use is how a login's calls are made; not a call of its own.
    fn set_inline(&mut self, on: bool) -> bool {
        self.inner.set_inline(on)
    }
    fn take_unsynced(&mut self) -> Option<mfad::store::backend::DurableFuture> {
        self.inner.take_unsynced()
    }
    fn schema_version(&mut self) -> Result<i64, StoreError> {
        pass!(self, schema_version())
    }
    fn check_key(&mut self, check: &[u8; 32]) -> Result<(), StoreError> {
        pass!(self, check_key(check))
    }
    fn lock_state(&mut self, user: &str) -> Result<LockState, StoreError> {
        pass!(self, lock_state(user))
    }
    fn login_reads(
        &mut self,
        user: &str,
        remembered: Option<&Remembered<'_>>,
        now: i64,
    ) -> Result<LoginReads, StoreError> {
        pass!(self, login_reads(user, remembered, now))
    }
    fn record_failure(&mut self, f: &Failure<'_>) -> Result<FailureEffect, StoreError> {
        pass!(self, record_failure(f))
    }
    fn clear_failures(&mut self, user: &str) -> Result<(), StoreError> {
        pass!(self, clear_failures(user))
    }
    fn unlock(&mut self, user: &str) -> Result<bool, StoreError> {
        pass!(self, unlock(user))
    }
    fn lock_until(&mut self, user: &str, until: i64) -> Result<(), StoreError> {
        pass!(self, lock_until(user, until))
    }
    fn forget_remembered(&mut self, user: &str) -> Result<usize, StoreError> {
        pass!(self, forget_remembered(user))
    }
    fn locked_users(&mut self, now: i64) -> Result<i64, StoreError> {
        pass!(self, locked_users(now))
    }
    fn replace_sms_code(&mut self, code: &NewSmsCode<'_>) -> Result<(), StoreError> {
        pass!(self, replace_sms_code(code))
    }
    fn sms_codes(&mut self, user: &str, now: i64) -> Result<Vec<CodeRecord>, StoreError> {
        pass!(self, sms_codes(user, now))
    }
    fn spend_sms_code(&mut self, id: i64, now: i64) -> Result<bool, StoreError> {
        pass!(self, spend_sms_code(id, now))
    }
    fn add_enrol_link(&mut self, link: &NewEnrolLink<'_>) -> Result<(), StoreError> {
        pass!(self, add_enrol_link(link))
    }
    fn enrol_link(
        &mut self,
        key: &[u8; 32],
        now: i64,
    ) -> Result<Option<EnrolLinkRecord>, StoreError> {
        pass!(self, enrol_link(key, now))
    }
    fn add_web_session(&mut self, session: &NewWebSession<'_>) -> Result<(), StoreError> {
        pass!(self, add_web_session(session))
    }
    fn web_session(&mut self, key: &[u8; 32]) -> Result<Option<WebSessionRecord>, StoreError> {
        pass!(self, web_session(key))
    }
    fn web_session_step(
        &mut self,
        key: &[u8; 32],
        step: WebSessionStep<'_>,
        now: i64,
    ) -> Result<Option<u32>, StoreError> {
        pass!(self, web_session_step(key, step, now))
    }
    fn enrol_link_step(
        &mut self,
        key: &[u8; 32],
        step: EnrolLinkStep<'_>,
        now: i64,
    ) -> Result<Option<u32>, StoreError> {
        pass!(self, enrol_link_step(key, step, now))
    }
    fn spend_enrol_link(
        &mut self,
        key: &[u8; 32],
        user: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        pass!(self, spend_enrol_link(key, user, now))
    }
    fn remember(&mut self, l: &Remembered<'_>, now: i64, until: i64) -> Result<(), StoreError> {
        pass!(self, remember(l, now, until))
    }
    fn is_remembered(&mut self, l: &Remembered<'_>, now: i64) -> Result<bool, StoreError> {
        pass!(self, is_remembered(l, now))
    }
    fn reset_user(&mut self, user: &str) -> Result<(), StoreError> {
        pass!(self, reset_user(user))
    }
    fn devices(&mut self, user: &str) -> Result<Vec<DeviceRecord>, StoreError> {
        pass!(self, devices(user))
    }
    fn add_devices(&mut self, rows: &[NewDeviceRecord], now: i64) -> Result<Vec<i64>, StoreError> {
        pass!(self, add_devices(rows, now))
    }
    fn set_default(&mut self, user: &str, device: i64) -> Result<(), StoreError> {
        pass!(self, set_default(user, device))
    }
    fn rename_device(&mut self, user: &str, device: i64, name: &str) -> Result<bool, StoreError> {
        pass!(self, rename_device(user, device, name))
    }
    fn locked_accounts(
        &mut self,
        now: i64,
        limit: u32,
    ) -> Result<Vec<(String, u32, i64)>, StoreError> {
        pass!(self, locked_accounts(now, limit))
    }
    fn record_logins(&mut self, rows: &[LoginRecord], before: i64) -> Result<(), StoreError> {
        pass!(self, record_logins(rows, before))
    }
    fn recent_logins(&mut self, user: &str, limit: u32) -> Result<Vec<LoginRecord>, StoreError> {
        pass!(self, recent_logins(user, limit))
    }
    fn remove_device(&mut self, user: &str, device: i64) -> Result<(), StoreError> {
        pass!(self, remove_device(user, device))
    }
    fn spend_totp_step(&mut self, device: i64, step: u64) -> Result<bool, StoreError> {
        pass!(self, spend_totp_step(device, step))
    }
    fn spend_hotp_counter(&mut self, device: i64, counter: u64) -> Result<bool, StoreError> {
        pass!(self, spend_hotp_counter(device, counter))
    }
    fn bypass_codes(&mut self, user: &str) -> Result<Vec<CodeRecord>, StoreError> {
        pass!(self, bypass_codes(user))
    }
    fn replace_bypass_codes(&mut self, new: &NewBypassCodes<'_>) -> Result<(), StoreError> {
        pass!(self, replace_bypass_codes(new))
    }
    fn spend_bypass_code(&mut self, id: i64, now: i64) -> Result<bool, StoreError> {
        pass!(self, spend_bypass_code(id, now))
    }
    fn user_summaries(&mut self) -> Result<Vec<UserSummary>, StoreError> {
        pass!(self, user_summaries())
    }
    fn dump(&mut self) -> Result<Dump, StoreError> {
        pass!(self, dump())
    }
    fn is_empty(&mut self) -> Result<bool, StoreError> {
        pass!(self, is_empty())
    }
    fn load(&mut self, dump: &Dump, replace: bool) -> Result<(), StoreError> {
        pass!(self, load(dump, replace))
    }
}

fn daemon(tune: impl FnOnce(&mut mfad::Config)) -> (TestDaemon, Calls) {
    let calls: Calls = Arc::default();
    let seen = Arc::clone(&calls);
    let d = TestDaemon::start_wrapping_backend(tune, move |inner| {
        Box::new(Counting { inner, calls: seen })
    });
    let step = totp::step_of(mfad::Clock::now(&d.clock), params());
    d.store()
        .add_totp_device("root", "phone", SECRET, params(), step - 5, T0)
        .unwrap();
    calls.lock().unwrap().clear();
    (d, calls)
}

/// The calls a login made, without the login history's write: that one is made later by
/// the history's own task, in its own transaction, whenever it runs.
fn login_calls(calls: &Calls) -> Vec<&'static str> {
    let mut seen = calls.lock().unwrap().clone();
    seen.retain(|c| *c != "record_logins");
    seen
}

/// Waits until the history task has written the login's row, and returns every call.
fn calls_after_history(calls: &Calls) -> Vec<&'static str> {
    for _ in 0..500 {
        let seen = calls.lock().unwrap().clone();
        if seen.contains(&"record_logins") {
            return seen;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!(
        "the login history was never written: {:?}",
        calls.lock().unwrap()
    );
}

fn code_now(d: &TestDaemon) -> String {
    let step = totp::step_of(mfad::Clock::now(&d.clock), params());
    totp::code_at_step(SECRET, params(), step).to_string()
}

#[test]
fn a_totp_login_reads_the_store_once_and_writes_once() {
    let (d, calls) = daemon(|_| {});
    let (outcome, _) = d.login("root", &[&code_now(&d)]);
    assert_eq!(outcome, Outcome::Allow);
    assert_eq!(
        login_calls(&calls),
        [
            // The one read before the prompt (lock, devices, bypass codes left).
            "login_reads",
            // The one write transaction for the answer.
            "begin",
            "lock_state",
            "spend_totp_step",
            // No failure to clear: the lock read in this transaction said so.
            "commit",
        ]
    );
    // The history row is written afterwards, on its own, never inside the login's
    // transaction.
    let all = calls_after_history(&calls);
    let commit = all.iter().position(|c| *c == "commit").unwrap();
    let history = all.iter().position(|c| *c == "record_logins").unwrap();
    assert!(history > commit, "{all:?}");
}

#[test]
fn with_remembered_logins_the_read_asks_and_the_one_write_remembers_the_success() {
    let (d, calls) = daemon(|c| c.policy.remember_for = 3600);
    let (outcome, _) = d.login("root", &[&code_now(&d)]);
    assert_eq!(outcome, Outcome::Allow);
    assert_eq!(
        login_calls(&calls),
        [
            // The one read asks about the remembered login too.
            "login_reads",
            "begin",
            "lock_state",
            "spend_totp_step",
            // Remembered in the same transaction: one write per login.
            "remember",
            "commit",
        ]
    );
}

#[test]
fn a_wrong_code_then_a_right_one_reads_the_devices_once() {
    let (d, calls) = daemon(|_| {});
    let (outcome, _) = d.login("root", &["000000", &code_now(&d)]);
    assert_eq!(outcome, Outcome::Allow);
    let calls = login_calls(&calls);
    assert_eq!(
        calls.iter().filter(|c| **c == "login_reads").count(),
        1,
        "{calls:?}"
    );
    assert!(!calls.contains(&"devices"), "{calls:?}");
    assert_eq!(
        calls.iter().filter(|c| **c == "begin").count(),
        2,
        "{calls:?}"
    );
    assert_eq!(calls.iter().filter(|c| **c == "record_failure").count(), 1);
    // The right code clears the failure the wrong one counted.
    assert_eq!(calls.iter().filter(|c| **c == "clear_failures").count(), 1);
    assert_eq!(d.store().lock_state("root").unwrap().failures, 0);
}

#[test]
fn a_login_that_meets_another_transaction_waits_for_it_then_spends_its_code() {
    // A second handle on the daemon's own connection, as another conversation holds.
    let held: Arc<Mutex<Option<Box<dyn Backend>>>> = Arc::default();
    let stash = Arc::clone(&held);
    let d = TestDaemon::start_wrapping_backend(
        |_| {},
        move |inner| {
            *stash.lock().unwrap() = inner.handle();
            inner
        },
    );
    let step = totp::step_of(mfad::Clock::now(&d.clock), params());
    d.store()
        .add_totp_device("root", "phone", SECRET, params(), step - 5, T0)
        .unwrap();
    let mut other = held.lock().unwrap().take().unwrap();
    other.begin().unwrap();
    other.lock_until("someone-else", 1).unwrap();
    let code = code_now(&d);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| {
            let (outcome, _) = d.login("root", &[&code]);
            tx.send(outcome).unwrap();
        });
        // The login's read and write cannot go around the open transaction (tried on the
        // conversation's thread, they are run again where they may wait).
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(500))
                .is_err()
        );
        other.commit().unwrap();
        assert_eq!(
            rx.recv_timeout(std::time::Duration::from_secs(20)).unwrap(),
            Outcome::Allow
        );
    });
    // Its code is spent, durably: the same code again is refused.
    let (again, script) = d.login("root", &[&code, &code, &code]);
    assert_eq!(again, Outcome::Deny, "{}", script.text());
    assert!(script.text().contains("already used"), "{}", script.text());
}
