//! The store on PostgreSQL: the same scenarios as on SQLite (one suite, generic over how a
//! store is opened), then what only a shared database has: two nodes racing on one code,
//! failures counted across nodes, concurrent migrations, TLS, and a slow, locked or dead
//! server. Each test starts (and stops) its own private server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mfa_test_support::postgres::TestPostgres;
use mfad::factor::bypass;
use mfad::factor::totp::{HashAlgorithm, TotpParams};
use mfad::sealing::StoreKey;
use mfad::store::postgres::{self, MIGRATIONS, PgBackend, PgOptions};
use mfad::store::{
    Backend, DeviceKind, FailureEffect, LockState, NewDeviceRow, OtpKey, RememberScope, Store,
    StoreError,
};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// [`Store::spend_totp_at_once_async`] from a test's thread: `None` where the store has no
/// such change (or a transaction is open).
fn at_once(s: &mut Store, user: &str, device: i64, step: u64, now: i64) -> Option<bool> {
    at_once_remembering(s, user, device, step, now, None)
}

/// [`at_once`], remembering a login from `remember` (an sshd-vouched address, until when).
fn at_once_remembering(
    s: &mut Store,
    user: &str,
    device: i64,
    step: u64,
    now: i64,
    remember: Option<(&str, i64)>,
) -> Option<bool> {
    let remember = remember.map(|(addr, until)| (RememberScope::Sshd, addr, "", until));
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(s.spend_totp_at_once_async(user, device, step, now, remember))
        .map(|r| r.unwrap())
}

/// The scenarios every backend must pass, each on a fresh, empty store from `open`.
mod suite {
    use super::*;

    pub type Open<'a> = &'a dyn Fn() -> Store;

    fn params() -> TotpParams {
        TotpParams {
            algorithm: HashAlgorithm::Sha1,
            digits: 6,
            period: 30,
        }
    }

    pub fn a_time_step_is_spent_once_and_older_steps_never(open: Open) {
        let mut s = open();
        let id = s
            .add_totp_device("alice", "phone", b"k", params(), 100, 0)
            .unwrap();
        assert!(
            !s.spend_totp_step(id, 100).unwrap(),
            "confirming step is spent"
        );
        assert!(s.spend_totp_step(id, 102).unwrap());
        assert!(!s.spend_totp_step(id, 102).unwrap());
        assert!(!s.spend_totp_step(id, 101).unwrap());
        assert!(s.spend_totp_step(id, 103).unwrap());
    }

    pub fn a_step_spent_with_the_locks_read_is_not_spent_while_the_lock_holds(open: Open) {
        let mut s = open();
        let id = s
            .add_totp_device("alice", "phone", b"k", params(), 100, 0)
            .unwrap();
        let now = 1_000;
        let tx = |s: &mut Store, step: u64| {
            s.in_transaction(|s| s.lock_state_and_spend_totp("alice", id, step, now))
                .unwrap()
        };
        let (lock, spent) = tx(&mut s, 102);
        assert_eq!(
            (lock.failures, lock.locked_until, spent),
            (0, None, Some(true))
        );
        assert_eq!(tx(&mut s, 102).1, Some(false), "a step is spent once");
        assert_eq!(tx(&mut s, 101).1, Some(false), "and older ones never");
        // Locked: the lock is told and nothing is spent.
        s.lock_until("alice", now + 60).unwrap();
        let (lock, spent) = tx(&mut s, 103);
        assert_eq!((lock.locked_until, spent), (Some(now + 60), None));
        // A lock that ends at `now` no longer holds (a lock is never shortened: unlock first).
        s.unlock("alice").unwrap();
        s.lock_until("alice", now).unwrap();
        let (lock, spent) = tx(&mut s, 103);
        assert_eq!((lock.locked_until, spent), (Some(now), Some(true)));
        assert!(!s.spend_totp_step(id, 103).unwrap());
        // Step 103 was spent by the second try only: 104 is still free.
        assert!(s.spend_totp_step(id, 104).unwrap());
    }

    pub fn a_good_totp_codes_write_at_once_spends_clears_and_never_while_locked(open: Open) {
        let mut s = open();
        let id = s
            .add_totp_device("alice", "phone", b"k", params(), 100, 0)
            .unwrap();
        let now = 1_000;
        if s.backend_kind() == "sqlite" {
            // No such statement: the caller's transaction does it all, and nothing changed.
            assert_eq!(at_once(&mut s, "alice", id, 102, now), None);
            assert!(s.spend_totp_step(id, 102).unwrap());
            return;
        }
        s.record_failure("alice", now, 5, 60).unwrap();
        s.record_failure("alice", now, 5, 60).unwrap();
        // A step not yet spent: spent, and the failures cleared with it.
        assert_eq!(at_once(&mut s, "alice", id, 102, now), Some(true));
        assert_eq!(s.lock_state("alice").unwrap(), LockState::default());
        // Once only, and never an older step; a failure counted is then kept.
        s.record_failure("alice", now, 5, 60).unwrap();
        assert_eq!(at_once(&mut s, "alice", id, 102, now), Some(false));
        assert_eq!(at_once(&mut s, "alice", id, 101, now), Some(false));
        assert_eq!(s.lock_state("alice").unwrap().failures, 1);
        // Locked: nothing spent, nothing cleared.
        s.lock_until("alice", now + 60).unwrap();
        let locked = s.lock_state("alice").unwrap();
        assert_eq!(at_once(&mut s, "alice", id, 103, now), Some(false));
        assert_eq!(s.lock_state("alice").unwrap(), locked);
        // A lock that has ended no longer holds.
        assert_eq!(at_once(&mut s, "alice", id, 103, now + 60), Some(true));
        assert!(!s.spend_totp_step(id, 103).unwrap());
        // A user the store has no row for (no failure yet), a device of another kind, a
        // device gone.
        let bob = s
            .add_totp_device("bob", "app", b"k", params(), 1, 0)
            .unwrap();
        assert_eq!(at_once(&mut s, "bob", bob, 5, now), Some(true));
        assert_eq!(s.lock_state("bob").unwrap(), LockState::default());
        let hotp = NewDeviceRow {
            kind: DeviceKind::Hotp,
            name: "token".into(),
            otp: Some(OtpKey {
                secret: Zeroizing::new(b"k".to_vec()),
                params: params(),
                counter: 0,
            }),
            address: None,
        };
        let token = s.add_device("bob", &hotp, 0).unwrap();
        assert_eq!(at_once(&mut s, "bob", token, 5, now), Some(false));
        s.remove_device("bob", bob).unwrap();
        assert_eq!(at_once(&mut s, "bob", bob, 6, now), Some(false));
        // Inside a transaction it is not this statement's to do.
        let inside = s
            .in_transaction(|s| Ok(at_once(s, "alice", id, 104, now)))
            .unwrap();
        assert_eq!(inside, None);
        assert!(s.spend_totp_step(id, 104).unwrap());
    }

    pub fn an_hotp_counter_moves_forward_only(open: Open) {
        let mut s = open();
        let id = s
            .add_device(
                "dave",
                &NewDeviceRow {
                    kind: DeviceKind::Hotp,
                    name: "token".into(),
                    otp: Some(OtpKey {
                        secret: Zeroizing::new(b"k".to_vec()),
                        params: TotpParams {
                            algorithm: HashAlgorithm::Sha1,
                            digits: 6,
                            period: 0,
                        },
                        counter: 0,
                    }),
                    address: None,
                },
                0,
            )
            .unwrap();
        assert!(s.spend_hotp_counter(id, 3).unwrap());
        assert_eq!(
            s.devices("dave").unwrap()[0].otp.as_ref().unwrap().counter,
            4
        );
        assert!(!s.spend_hotp_counter(id, 3).unwrap());
        assert!(!s.spend_hotp_counter(id, 2).unwrap());
        assert!(s.spend_hotp_counter(id, 4).unwrap());
    }

    pub fn the_first_device_is_the_default_and_removal_hands_it_on(open: Open) {
        let mut s = open();
        let a = s.add_totp_device("e", "a", b"k", params(), 1, 0).unwrap();
        let b = s.add_totp_device("e", "b", b"k", params(), 1, 0).unwrap();
        let c = s.add_totp_device("e", "c", b"k", params(), 1, 0).unwrap();
        let defaults = |s: &mut Store| -> Vec<i64> {
            s.devices("e")
                .unwrap()
                .iter()
                .filter(|d| d.is_default)
                .map(|d| d.id)
                .collect()
        };
        assert_eq!(defaults(&mut s), vec![a]);
        s.set_default("e", c).unwrap();
        assert_eq!(defaults(&mut s), vec![c]);
        s.remove_device("e", c).unwrap();
        assert_eq!(defaults(&mut s), vec![a]);
        s.remove_device("e", b).unwrap();
        assert_eq!(defaults(&mut s), vec![a]);
        // Another user's device id is not ours to remove.
        s.remove_device("f", a).unwrap();
        assert_eq!(s.devices("e").unwrap().len(), 1);
        // The secret comes back opened.
        assert_eq!(
            &s.devices("e").unwrap()[0].otp.as_ref().unwrap().secret[..],
            b"k"
        );
    }

    pub fn failures_lock_at_the_limit_and_reset(open: Open) {
        let mut s = open();
        for i in 1..3 {
            assert_eq!(
                s.record_failure("bob", 1000, 3, 60).unwrap(),
                FailureEffect::Counted { failures: i }
            );
        }
        assert_eq!(
            s.record_failure("bob", 1000, 3, 60).unwrap(),
            FailureEffect::Locked { until: 1060 }
        );
        assert_eq!(s.lock_state("bob").unwrap().locked_until, Some(1060));
        assert_eq!(s.locked_users(1059).unwrap(), 1);
        assert_eq!(s.locked_users(1060).unwrap(), 0);
        assert!(s.unlock("bob").unwrap());
        assert_eq!(s.lock_state("bob").unwrap(), LockState::default());
        assert!(!s.unlock("bob").unwrap());
    }

    pub fn bypass_codes_are_replaced_whole_and_spent_once(open: Open) {
        let mut s = open();
        let (_, first) = bypass::generate(&mfad::random::OsRandom);
        s.replace_bypass_codes("carol", &first, 0).unwrap();
        let (_, second) = bypass::generate(&mfad::random::OsRandom);
        s.replace_bypass_codes("carol", &second, 1).unwrap();
        let (shown, second) = bypass::generate(&mfad::random::OsRandom);
        s.replace_bypass_codes("carol", &second, 2).unwrap();
        let rows = s.unused_bypass_codes("carol").unwrap();
        assert_eq!(rows.len(), bypass::COUNT);
        assert!(s.code_matches(&rows[0].code, &shown[0]));
        assert!(!s.code_matches(&rows[1].code, &shown[0]));
        // What is stored is keyed: the plain salted hash of the code is not in the row.
        assert_ne!(rows[0].code.hash, second[0].hash);
        assert!(s.spend_bypass_code(rows[0].id, 5).unwrap());
        assert!(!s.spend_bypass_code(rows[0].id, 6).unwrap());
        assert_eq!(
            s.unused_bypass_codes("carol").unwrap().len(),
            bypass::COUNT - 1
        );
    }

    pub fn reset_forgets_the_user_only(open: Open) {
        let mut s = open();
        s.add_totp_device("a", "x", b"k", params(), 1, 0).unwrap();
        s.add_totp_device("b", "x", b"k", params(), 1, 0).unwrap();
        s.record_failure("a", 0, 10, 60).unwrap();
        s.reset_user("a").unwrap();
        assert!(s.devices("a").unwrap().is_empty());
        assert_eq!(s.lock_state("a").unwrap(), LockState::default());
        assert_eq!(s.devices("b").unwrap().len(), 1);
    }

    pub fn a_logins_one_read_holds_the_lock_devices_codes_left_and_remembered(open: Open) {
        let mut s = open();
        let sshd = RememberScope::Sshd;
        // A user the store does not know: nothing.
        let none = s
            .login_snapshot("nobody", Some((sshd, "192.0.2.1", "")), 10)
            .unwrap();
        assert_eq!(none.lock, LockState::default());
        assert!(none.devices.is_empty() && none.bypass_left == 0 && !none.remembered);

        let a = s
            .add_totp_device("u", "app", b"k1", params(), 1, 0)
            .unwrap();
        let b = s
            .add_totp_device("u", "spare", b"k2", params(), 1, 0)
            .unwrap();
        let (_, codes) = bypass::generate(&mfad::random::OsRandom);
        s.replace_bypass_codes("u", &codes, 0).unwrap();
        let first = s.unused_bypass_codes("u").unwrap()[0].id;
        assert!(s.spend_bypass_code(first, 5).unwrap());
        s.record_failure("u", 10, 5, 60).unwrap();
        s.remember("u", sshd, "192.0.2.1", "", 0, 1000).unwrap();

        let snap = s
            .login_snapshot("u", Some((sshd, "192.0.2.1", "")), 10)
            .unwrap();
        assert_eq!(snap.lock, s.lock_state("u").unwrap());
        assert_eq!(snap.lock.failures, 1);
        let ids: Vec<i64> = snap.devices.iter().map(|d| d.id).collect();
        assert_eq!(ids, [a, b]);
        assert_eq!(&snap.devices[1].otp.as_ref().unwrap().secret[..], b"k2");
        assert_eq!(snap.bypass_left, bypass::COUNT - 1);
        assert!(snap.remembered);
        // Another address, or no question asked: not remembered.
        let elsewhere = s
            .login_snapshot("u", Some((sshd, "192.0.2.2", "")), 10)
            .unwrap();
        assert!(!elsewhere.remembered);
        assert!(!s.login_snapshot("u", None, 10).unwrap().remembered);
        // The read left no transaction open: a write transaction follows and commits.
        let spent = s.in_transaction(|s| s.spend_totp_step(a, 3)).unwrap();
        assert!(spent);
        assert!(!s.spend_totp_step(a, 3).unwrap());

        // Every column as stored, empty ones included (a phone has no key, an HOTP device no
        // period), is what reading the tables one at a time gives, for a user with
        // everything, a user with only a lock, and a user the store does not know.
        let phone = NewDeviceRow {
            kind: DeviceKind::Phone,
            name: "desk".into(),
            otp: None,
            address: Some("+15555550100".into()),
        };
        s.add_device("u", &phone, 20).unwrap();
        let hotp = NewDeviceRow {
            kind: DeviceKind::Hotp,
            name: "token".into(),
            otp: Some(OtpKey {
                secret: Zeroizing::new(b"k3".to_vec()),
                params: TotpParams {
                    algorithm: HashAlgorithm::Sha256,
                    digits: 8,
                    period: 0,
                },
                counter: 7,
            }),
            address: None,
        };
        s.add_device("u", &hotp, 21).unwrap();
        s.record_failure("locked-only", 10, 1, 60).unwrap();
        for user in ["u", "locked-only", "nobody"] {
            for addr in [Some("192.0.2.1"), Some("192.0.2.2"), None] {
                let asked = addr.map(|addr| mfad::store::backend::Remembered {
                    user,
                    scope: sshd.as_str(),
                    addr,
                    key: "",
                });
                let at_once = s.backend().login_reads(user, asked.as_ref(), 10).unwrap();
                let one_by_one = mfad::store::backend::login_reads_one_by_one(
                    s.backend(),
                    user,
                    asked.as_ref(),
                    10,
                )
                .unwrap();
                assert_eq!(
                    format!("{at_once:?}"),
                    format!("{one_by_one:?}"),
                    "{user}, asked about {addr:?}"
                );
            }
        }
        // The same read on the caller's task, where the store makes it there.
        let on_task = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(s.login_snapshot_async("u", Some((sshd, "192.0.2.1", "")), 10));
        let blocking = s
            .login_snapshot("u", Some((sshd, "192.0.2.1", "")), 10)
            .unwrap();
        match on_task {
            None => assert_eq!(s.backend_kind(), "sqlite"),
            Some(on_task) => {
                let on_task = on_task.unwrap();
                assert_eq!(on_task.lock, blocking.lock);
                assert_eq!(on_task.bypass_left, blocking.bypass_left);
                assert_eq!(on_task.remembered, blocking.remembered);
                let ids = |d: &[mfad::store::Device]| d.iter().map(|d| d.id).collect::<Vec<_>>();
                assert_eq!(ids(&on_task.devices), ids(&blocking.devices));
            }
        }
        let reads = s.backend().login_reads("u", None, 10).unwrap();
        assert_eq!(reads.devices.len(), 4);
        assert_eq!(reads.bypass_codes.len(), bypass::COUNT);
        assert_eq!(reads.bypass_codes.iter().filter(|c| c.used).count(), 1);
    }

    pub fn remembered_logins_go_on_lock_report_unlock_and_device_removal(open: Open) {
        let mut s = open();
        let id = s.add_totp_device("u", "app", b"k", params(), 1, 0).unwrap();
        let sshd = RememberScope::Sshd;
        let remember = |s: &mut Store| s.remember("u", sshd, "192.0.2.1", "", 0, 1000).unwrap();
        let is = |s: &mut Store| s.is_remembered("u", sshd, "192.0.2.1", "", 10).unwrap();
        remember(&mut s);
        assert!(is(&mut s));
        assert!(
            !s.is_remembered("u", RememberScope::OwnHelper, "192.0.2.1", "", 10)
                .unwrap()
        );
        s.lock_until("u", 500).unwrap();
        assert!(!is(&mut s), "a report or lock forgets");
        remember(&mut s);
        s.unlock("u").unwrap();
        assert!(!is(&mut s), "an unlock forgets");
        remember(&mut s);
        for _ in 0..3 {
            s.record_failure("u", 10, 3, 60).unwrap();
        }
        assert!(!is(&mut s), "a lockout forgets");
        s.unlock("u").unwrap();
        remember(&mut s);
        s.remove_device("u", id).unwrap();
        assert!(!is(&mut s), "removing a device forgets");
        remember(&mut s);
        assert_eq!(s.forget_remembered("u").unwrap(), 1);
        assert!(!is(&mut s));
    }

    pub fn a_new_sms_code_replaces_every_earlier_one(open: Open) {
        let mut s = open();
        let mut shown = Vec::new();
        for _ in 0..3 {
            let (code, stored) = bypass::new_code(&mfad::random::OsRandom, 7);
            s.add_sms_code("u", &stored, 100, 400).unwrap();
            shown.push(code);
        }
        let rows = s.sms_codes("u", 100).unwrap();
        assert_eq!(rows.len(), 1, "one live SMS code per user");
        assert!(s.code_matches(&rows[0].code, &shown[2]));
        assert!(!s.code_matches(&rows[0].code, &shown[0]) || shown[0] == shown[2]);
        assert!(s.spend_sms_code(rows[0].id, 200).unwrap());
        assert!(!s.spend_sms_code(rows[0].id, 201).unwrap(), "spent once");
        assert!(s.sms_codes("u", 400).unwrap().is_empty(), "expired");
    }

    pub fn a_lock_is_never_shortened_by_a_lockout(open: Open) {
        let mut s = open();
        s.lock_until("u", 100_000).unwrap();
        for _ in 0..3 {
            s.record_failure("u", 1000, 3, 60).unwrap();
        }
        assert_eq!(s.lock_state("u").unwrap().locked_until, Some(100_000));
    }

    pub fn a_failed_transaction_leaves_nothing_behind(open: Open) {
        let mut s = open();
        let r: Result<(), StoreError> = s.in_transaction(|s| {
            s.lock_state("u")?;
            s.record_failure("u", 0, 10, 60)?;
            s.add_totp_device("u", "app", b"k", params(), 1, 0)?;
            Err(StoreError::Corrupt("the caller gave up"))
        });
        assert!(r.is_err());
        assert_eq!(s.lock_state("u").unwrap(), LockState::default());
        assert!(s.devices("u").unwrap().is_empty());
        s.in_transaction(|s| {
            s.lock_state("u")?;
            s.record_failure("u", 0, 10, 60)
        })
        .unwrap();
        assert_eq!(s.lock_state("u").unwrap().failures, 1);
    }

    pub fn a_dump_loads_into_an_empty_store_as_it_was(open: Open) {
        let mut s = open();
        assert!(s.backend().is_empty().unwrap());
        s.add_totp_device("u", "app", b"k", params(), 5, 7).unwrap();
        let (_, codes) = bypass::generate(&mfad::random::OsRandom);
        s.replace_bypass_codes("u", &codes, 3).unwrap();
        let (_, sms) = bypass::new_code(&mfad::random::OsRandom, 7);
        s.add_sms_code("v", &sms, 0, 900).unwrap();
        s.remember("u", RememberScope::Sshd, "192.0.2.1", "k1", 0, 99)
            .unwrap();
        s.lock_until("w", 1234).unwrap();
        assert!(!s.backend().is_empty().unwrap());
        let dump = s.backend().dump().unwrap();
        assert_eq!(dump.devices.len(), 1);
        assert_eq!(dump.bypass_codes.len(), bypass::COUNT);
        s.backend().load(&dump, true).unwrap();
        let mut again = s.backend().dump().unwrap();
        // Ids are the loader's own; everything else is as it was.
        for (_, d) in again.devices.iter_mut() {
            d.id = dump.devices[0].1.id;
        }
        assert_eq!(again, dump);
        let summaries = s.user_summaries().unwrap();
        let names: Vec<&str> = summaries.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["u", "w"]);
        assert_eq!(summaries[0].device_kinds, [DeviceKind::Totp]);
        assert_eq!(summaries[0].bypass_left as usize, bypass::COUNT);
        assert_eq!(summaries[1].locked_until, Some(1234));
    }

    pub fn an_enrolment_link_is_bound_to_its_user_spent_once_and_expires(open: Open) {
        let mut s = open();
        let (a, b) = ([1u8; 32], [2u8; 32]);
        s.add_enrol_link(&a, "alice", 100, 1000).unwrap();
        assert_eq!(
            s.enrol_link_user(&a, 999).unwrap().as_deref(),
            Some("alice")
        );
        assert_eq!(s.enrol_link_user(&a, 1000).unwrap(), None, "expired");
        assert!(
            !s.spend_enrol_link(&a, "bob", 500).unwrap(),
            "bound to alice"
        );
        assert!(!s.spend_enrol_link(&a, "alice", 1000).unwrap(), "expired");
        assert!(s.spend_enrol_link(&a, "alice", 500).unwrap());
        assert!(!s.spend_enrol_link(&a, "alice", 501).unwrap(), "once");
        assert_eq!(s.enrol_link_user(&a, 502).unwrap(), None);
        // A new link replaces the user's unspent one; a reset removes it.
        s.add_enrol_link(&b, "alice", 600, 1500).unwrap();
        let c = [3u8; 32];
        s.add_enrol_link(&c, "alice", 700, 1600).unwrap();
        assert_eq!(s.enrol_link_user(&b, 701).unwrap(), None);
        assert!(s.enrol_link_user(&c, 701).unwrap().is_some());
        s.reset_user("alice").unwrap();
        assert_eq!(s.enrol_link_user(&c, 702).unwrap(), None);
    }

    pub fn portal_sessions_are_kept_by_key_limited_and_dropped(open: Open) {
        use mfad::store::WebSessionStep as Step;
        let mut s = open();
        let (a, b) = ([5u8; 32], [6u8; 32]);
        s.add_web_session(&a, "alice", "csrf-a", 100, (0, 0))
            .unwrap();
        let r = s.web_session(&a).unwrap().unwrap();
        assert_eq!(
            (r.user.as_str(), r.created, r.last_seen),
            ("alice", 100, 100)
        );
        assert_eq!(
            (r.factor_at, r.code_tries, r.csrf.as_str()),
            (None, 0, "csrf-a")
        );
        assert_eq!(s.web_session(&b).unwrap(), None);
        for n in 1..=3 {
            assert_eq!(
                s.web_session_step(&a, Step::CodeMiss { max: 3 }, 110)
                    .unwrap(),
                Some(n)
            );
        }
        assert_eq!(
            s.web_session_step(&a, Step::CodeMiss { max: 3 }, 111)
                .unwrap(),
            None,
            "no more than max"
        );
        assert_eq!(s.web_session_step(&a, Step::Factor, 120).unwrap(), Some(0));
        let r = s.web_session(&a).unwrap().unwrap();
        assert_eq!(
            (r.factor_at, r.code_tries, r.last_seen),
            (Some(120), 0, 120)
        );
        assert_eq!(s.web_session_step(&a, Step::Touch, 130).unwrap(), Some(0));
        assert_eq!(s.web_session(&a).unwrap().unwrap().last_seen, 130);
        assert_eq!(s.web_session_step(&b, Step::Touch, 130).unwrap(), None);
        // A new session drops those past their limits (here: idle since before 131).
        s.add_web_session(&b, "bob", "csrf-b", 200, (0, 131))
            .unwrap();
        assert_eq!(s.web_session(&a).unwrap(), None);
        assert!(s.web_session(&b).unwrap().is_some());
        assert_eq!(s.web_session_step(&b, Step::End, 201).unwrap(), Some(0));
        assert_eq!(s.web_session_step(&b, Step::End, 202).unwrap(), None);
        assert_eq!(s.web_session(&b).unwrap(), None);
        // Devices are renamed by their owner only.
        let id = s
            .add_totp_device("alice", "old", b"0123456789", TotpParams::default(), 0, 300)
            .unwrap();
        assert!(!s.rename_device("bob", id, "stolen").unwrap());
        assert!(s.rename_device("alice", id, "new").unwrap());
        assert_eq!(s.devices("alice").unwrap()[0].name, "new");
        // A reset of the user ends their sessions.
        s.add_web_session(&a, "alice", "csrf-a2", 300, (0, 0))
            .unwrap();
        s.reset_user("alice").unwrap();
        assert_eq!(s.web_session(&a).unwrap(), None);
    }

    pub fn the_enrolment_pages_progress_is_held_with_the_link_and_limited(open: Open) {
        use mfad::store::EnrolLinkStep as Step;
        let mut s = open();
        let a = [4u8; 32];
        s.add_enrol_link(&a, "alice", 100, 1000).unwrap();
        let link = s.enrol_link(&a, 150).unwrap().unwrap();
        assert_eq!((link.user.as_str(), link.password_tries), ("alice", 0));
        assert!(!link.password_ok && link.secret.is_none() && link.last_step == 0);
        // Five passwords, then no more: one conditional write each.
        for n in 1..=5 {
            assert_eq!(
                s.enrol_link_step(&a, Step::Password { max: 5 }, 150)
                    .unwrap(),
                Some(n)
            );
        }
        assert_eq!(
            s.enrol_link_step(&a, Step::Password { max: 5 }, 151)
                .unwrap(),
            None
        );
        assert_eq!(
            s.enrol_link_step(&a, Step::PasswordOk, 160).unwrap(),
            Some(0)
        );
        let link = s.enrol_link(&a, 160).unwrap().unwrap();
        assert!(link.password_ok);
        assert_eq!(link.last_step, 160);
        // The pending app is sealed in the store and read back whole.
        assert!(s.enrol_link_pending(&a, "alice", b"new app", 170).unwrap());
        let link = s.enrol_link(&a, 170).unwrap().unwrap();
        assert_eq!(
            link.secret.as_deref().map(|v| v.as_slice()),
            Some(&b"new app"[..])
        );
        // Wrong codes count; the last one allowed drops the app.
        for n in 1..=2 {
            assert_eq!(
                s.enrol_link_step(&a, Step::CodeMiss { max: 3 }, 180)
                    .unwrap(),
                Some(n)
            );
            assert!(s.enrol_link(&a, 180).unwrap().unwrap().secret.is_some());
        }
        assert_eq!(
            s.enrol_link_step(&a, Step::CodeMiss { max: 3 }, 181)
                .unwrap(),
            Some(3)
        );
        assert!(s.enrol_link(&a, 181).unwrap().unwrap().secret.is_none());
        // A new app starts the code count again; going idle forgets the password and the
        // app but not the passwords tried.
        assert!(s.enrol_link_pending(&a, "alice", b"another", 190).unwrap());
        assert_eq!(s.enrol_link(&a, 190).unwrap().unwrap().code_tries, 0);
        s.enrol_link_step(&a, Step::Idle, 600).unwrap();
        let link = s.enrol_link(&a, 600).unwrap().unwrap();
        assert!(!link.password_ok && link.secret.is_none());
        assert_eq!((link.password_tries, link.code_tries), (5, 0));
        // No step lands on an expired or a spent link.
        assert_eq!(s.enrol_link_step(&a, Step::PasswordOk, 1000).unwrap(), None);
        assert!(!s.enrol_link_pending(&a, "alice", b"late", 1000).unwrap());
        assert!(s.spend_enrol_link(&a, "alice", 700).unwrap());
        assert_eq!(s.enrol_link_step(&a, Step::PasswordOk, 701).unwrap(), None);
        assert_eq!(
            s.enrol_link_step(&a, Step::CodeMiss { max: 3 }, 701)
                .unwrap(),
            None
        );
    }

    pub fn locked_accounts_are_listed_by_name_while_locked(open: Open) {
        let mut s = open();
        s.lock_until("carol", 500).unwrap();
        s.lock_until("alice", 300).unwrap();
        s.lock_until("bob", 50).unwrap();
        s.record_failure("dave", 10, 0, 0).unwrap();
        assert_eq!(
            s.locked_accounts(100, 10).unwrap(),
            [("alice".to_string(), 0, 300), ("carol".to_string(), 0, 500)]
        );
        assert_eq!(s.locked_accounts(100, 1).unwrap().len(), 1);
        assert!(s.locked_accounts(600, 10).unwrap().is_empty());
    }

    pub fn the_login_history_is_kept_per_user_newest_first_and_pruned(open: Open) {
        let mut s = open();
        let row = |user: &str, at: i64, outcome: &str| mfad::store::LoginRecord {
            id: 0,
            user: user.into(),
            at,
            host: "node1".into(),
            service: "sshd".into(),
            rhost: "192.0.2.7".into(),
            method: "totp".into(),
            outcome: outcome.into(),
            detail: "a reason, with \"quotes\" and é".into(),
        };
        s.record_logins(
            &[
                row("alice", 100, "refused"),
                row("bob", 150, "allowed"),
                row("alice", 200, "allowed"),
            ],
            0,
        )
        .unwrap();
        s.record_logins(&[row("alice", 200, "locked")], 0).unwrap();
        let alice = s.recent_logins("alice", 10).unwrap();
        let seen: Vec<_> = alice.iter().map(|r| (r.at, r.outcome.as_str())).collect();
        // Newest first; two rows of one second in the order they were written, reversed.
        assert_eq!(seen, [(200, "locked"), (200, "allowed"), (100, "refused")]);
        assert_eq!(
            alice[2],
            mfad::store::LoginRecord {
                id: alice[2].id,
                ..row("alice", 100, "refused")
            }
        );
        assert!(alice[0].id > alice[1].id && alice[1].id > alice[2].id);
        assert_eq!(s.recent_logins("alice", 2).unwrap().len(), 2);
        assert_eq!(s.recent_logins("bob", 10).unwrap().len(), 1);
        assert!(s.recent_logins("carol", 10).unwrap().is_empty());
        // Recording drops every row older than the bound, whoever's it is.
        s.record_logins(&[row("carol", 300, "allowed")], 160)
            .unwrap();
        let left: Vec<_> = s
            .recent_logins("alice", 10)
            .unwrap()
            .iter()
            .map(|r| r.at)
            .collect();
        assert_eq!(left, [200, 200]);
        assert!(s.recent_logins("bob", 10).unwrap().is_empty());
        assert_eq!(s.recent_logins("carol", 10).unwrap().len(), 1);
        // A reset of the user's devices keeps what happened.
        s.reset_user("alice").unwrap();
        assert_eq!(s.recent_logins("alice", 10).unwrap().len(), 2);
    }
}

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            use super::*;
            $(#[test]
            fn $name() {
                suite::$name(&|| Store::open_in_memory().unwrap());
            })*
        }
        mod on_postgresql {
            use super::*;
            $(#[test]
            fn $name() {
                let db = Db::start();
                suite::$name(&|| db.store());
            })*
        }
    };
}

on_both!(
    a_time_step_is_spent_once_and_older_steps_never,
    a_step_spent_with_the_locks_read_is_not_spent_while_the_lock_holds,
    a_good_totp_codes_write_at_once_spends_clears_and_never_while_locked,
    an_hotp_counter_moves_forward_only,
    the_first_device_is_the_default_and_removal_hands_it_on,
    failures_lock_at_the_limit_and_reset,
    bypass_codes_are_replaced_whole_and_spent_once,
    reset_forgets_the_user_only,
    remembered_logins_go_on_lock_report_unlock_and_device_removal,
    a_logins_one_read_holds_the_lock_devices_codes_left_and_remembered,
    a_new_sms_code_replaces_every_earlier_one,
    a_lock_is_never_shortened_by_a_lockout,
    a_failed_transaction_leaves_nothing_behind,
    the_enrolment_pages_progress_is_held_with_the_link_and_limited,
    portal_sessions_are_kept_by_key_limited_and_dropped,
    a_dump_loads_into_an_empty_store_as_it_was,
    an_enrolment_link_is_bound_to_its_user_spent_once_and_expires,
    the_login_history_is_kept_per_user_newest_first_and_pruned,
    locked_accounts_are_listed_by_name_while_locked,
);

/// A private server with the schema prepared, a runtime to connect on (each connection then
/// runs on a runtime of its own), and the store key.
struct Db {
    pg: TestPostgres,
    rt: tokio::runtime::Runtime,
    key: Arc<StoreKey>,
}

fn options(url: String, password_file: Option<PathBuf>) -> PgOptions {
    PgOptions {
        url,
        password_file,
        ca_file: None,
        connect_timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_secs(2),
    }
}

impl Db {
    fn start() -> Db {
        Db::with(TestPostgres::start())
    }

    fn with(pg: TestPostgres) -> Db {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let key = Arc::new(StoreKey::generate().unwrap());
        let db = Db { pg, rt, key };
        db.rt
            .block_on(postgres::prepare(&db.opts(), &db.key.check_value()))
            .unwrap();
        db
    }

    fn opts(&self) -> PgOptions {
        options(self.pg.url(), Some(self.pg.password_file()))
    }

    fn backend(&self) -> PgBackend {
        self.rt.block_on(postgres::connect(&self.opts())).unwrap()
    }

    fn store(&self) -> Store {
        Store::from_backend(Box::new(self.backend()), self.key.clone()).unwrap()
    }
}

fn totp() -> TotpParams {
    TotpParams {
        algorithm: HashAlgorithm::Sha1,
        digits: 6,
        period: 30,
    }
}

#[test]
fn two_nodes_racing_on_one_time_step_let_exactly_one_login_in() {
    race_on_time_steps(&Db::start());
}

/// A server whose default isolation is SERIALIZABLE would answer the loser of a race with a
/// serialization failure (a store error, so a failed login) instead of "already spent".
#[test]
fn a_server_defaulting_to_serializable_still_settles_races_cleanly() {
    let db = Db::start();
    db.pg
        .psql("ALTER DATABASE mfa SET default_transaction_isolation = 'serializable'");
    race_on_time_steps(&db);
}

fn race_on_time_steps(db: &Db) {
    let device = db
        .store()
        .add_totp_device("alice", "app", b"k", totp(), 1000, 0)
        .unwrap();
    let rounds = 100u64;
    let barrier = Arc::new(Barrier::new(2));
    // Per node: the steps it won, and its errors (kept, never raised in the thread: the
    // other node must not be left waiting at the barrier).
    let nodes: Vec<(Vec<u64>, Vec<String>)> = std::thread::scope(|scope| {
        let nodes: Vec<_> = (0..2)
            .map(|_| {
                let mut store = db.store();
                let barrier = barrier.clone();
                scope.spawn(move || {
                    let (mut won, mut errors) = (Vec::new(), Vec::new());
                    for step in 1001..=1000 + rounds {
                        barrier.wait();
                        match store.spend_totp_step(device, step) {
                            Ok(true) => won.push(step),
                            Ok(false) => {}
                            Err(e) => errors.push(format!("step {step}: {e}")),
                        }
                    }
                    (won, errors)
                })
            })
            .collect();
        nodes.into_iter().map(|n| n.join().unwrap()).collect()
    });
    let errors: Vec<&String> = nodes.iter().flat_map(|n| &n.1).collect();
    assert!(errors.is_empty(), "{errors:?}");
    let mut all: Vec<u64> = nodes.iter().flat_map(|n| n.0.clone()).collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (1001..=1000 + rounds).collect::<Vec<_>>(),
        "each step won by exactly one node (node 1 won {}, node 2 {})",
        nodes[0].0.len(),
        nodes[1].0.len()
    );
}

#[test]
fn ten_failures_split_over_two_nodes_lock_the_user() {
    let db = Db::start();
    let barrier = Arc::new(Barrier::new(2));
    // Errors are kept, never raised in a thread (the other would wait at the barrier).
    let effects: Vec<Result<FailureEffect, String>> = std::thread::scope(|scope| {
        let nodes: Vec<_> = (0..2)
            .map(|_| {
                let mut store = db.store();
                let barrier = barrier.clone();
                scope.spawn(move || {
                    (0..5)
                        .map(|_| {
                            barrier.wait();
                            store
                                .in_transaction(|s| {
                                    s.lock_state("bob")?;
                                    s.record_failure("bob", 1000, 10, 3600)
                                })
                                .map_err(|e| e.to_string())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        nodes.into_iter().flat_map(|n| n.join().unwrap()).collect()
    });
    let effects: Vec<FailureEffect> = effects.into_iter().map(|e| e.unwrap()).collect();
    let locked = effects
        .iter()
        .filter(|e| matches!(e, FailureEffect::Locked { until: 4600 }))
        .count();
    assert_eq!(locked, 1, "{effects:?}");
    assert_eq!(
        db.store().lock_state("bob").unwrap().locked_until,
        Some(4600)
    );
}

/// A login transaction that has read the lock holds the user's row: a lock set by another
/// node waits for it to end, so the code is never accepted against a lock already lifted
/// or set elsewhere in the meantime.
#[test]
fn a_login_transaction_holds_the_user_until_it_ends() {
    let db = Db::start();
    let mut login = db.backend();
    let mut other = db.store();
    // The user's row exists already (a failure counted earlier).
    other.record_failure("erin", 0, 10, 60).unwrap();
    login.begin().unwrap();
    assert_eq!(login.lock_state("erin").unwrap().failures, 1);
    let hold = Duration::from_millis(500);
    let waited = std::thread::scope(|scope| {
        let admin = scope.spawn(move || {
            let started = Instant::now();
            other.lock_until("erin", 7777).unwrap();
            started.elapsed()
        });
        std::thread::sleep(hold);
        // Still unlocked as far as the login's transaction is concerned, until it commits.
        assert_eq!(login.lock_state("erin").unwrap().locked_until, None);
        login.commit().unwrap();
        admin.join().unwrap()
    });
    assert!(waited >= hold - Duration::from_millis(50), "{waited:?}");
    assert_eq!(
        db.store().lock_state("erin").unwrap().locked_until,
        Some(7777)
    );
}

/// A good code's write in one statement, while another session is locking the user and has
/// not committed yet: it waits for that session and sees the lock it commits, so spends
/// nothing (a plain read of the user's row would have seen it unlocked, and spent).
#[test]
fn a_good_codes_write_at_once_waits_for_a_lock_being_set_and_spends_nothing() {
    let db = Db::start();
    let mut admin = db.backend();
    let mut login = db.store();
    let id = login
        .add_totp_device("erin", "app", b"k", totp(), 1, 0)
        .unwrap();
    // The user's row exists already (a failure counted earlier).
    login.record_failure("erin", 0, 10, 60).unwrap();
    admin.begin().unwrap();
    admin.lock_until("erin", 7777).unwrap();
    let spent = std::thread::scope(|scope| {
        let spend = scope.spawn(move || at_once(&mut login, "erin", id, 5, 1_000));
        // The statement is well under way, waiting on the admin's transaction.
        std::thread::sleep(Duration::from_millis(300));
        admin.commit().unwrap();
        spend.join().unwrap()
    });
    assert_eq!(spent, Some(false));
    let mut s = db.store();
    assert_eq!(s.lock_state("erin").unwrap().locked_until, Some(7777));
    assert_eq!(s.lock_state("erin").unwrap().failures, 1, "not cleared");
    assert!(s.spend_totp_step(id, 5).unwrap(), "step 5 was not spent");
}

/// A good code's write in one statement, for a login that remembers its address: the login
/// is remembered, the remembered logins that have ended are forgotten (as `remember` does),
/// and nothing of it happens when the step is not spent.
#[test]
fn a_good_codes_write_at_once_remembers_the_login_only_when_it_spends() {
    let db = Db::start();
    let mut s = db.store();
    let sshd = RememberScope::Sshd;
    let now = 1_000;
    let erin = s
        .add_totp_device("erin", "app", b"k", totp(), 1, 0)
        .unwrap();
    let frank = s
        .add_totp_device("frank", "app", b"k", totp(), 1, 0)
        .unwrap();
    // Ended: carol's, and erin's own from that address; still running: dave's.
    s.remember("carol", sshd, "192.0.2.7", "", 0, now - 1)
        .unwrap();
    s.remember("dave", sshd, "192.0.2.8", "", 0, now + 50)
        .unwrap();
    s.remember("erin", sshd, "192.0.2.9", "", 0, now).unwrap();
    let rows = || {
        db.pg
            .psql("SELECT owner || ' ' || addr || ' ' || until FROM remembered ORDER BY owner")
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect::<Vec<_>>()
    };
    let before = rows();
    assert_eq!(before.len(), 3, "{before:?}");
    // Not spent (frank is locked; a step already spent): nothing remembered or forgotten.
    s.lock_until("frank", now + 60).unwrap();
    let frank_from = Some(("192.0.2.10", now + 600));
    assert_eq!(
        at_once_remembering(&mut s, "frank", frank, 5, now, frank_from),
        Some(false)
    );
    let erin_from = Some(("192.0.2.9", now + 600));
    assert_eq!(
        at_once_remembering(&mut s, "erin", erin, 1, now, erin_from),
        Some(false)
    );
    assert_eq!(rows(), before);
    // Spent: erin's login from there renewed, carol's ended one forgotten, dave's kept.
    assert_eq!(
        at_once_remembering(&mut s, "erin", erin, 5, now, erin_from),
        Some(true)
    );
    assert_eq!(
        rows(),
        ["dave 192.0.2.8 1050", "erin 192.0.2.9 1600"],
        "{:?}",
        rows()
    );
    assert!(s.is_remembered("erin", sshd, "192.0.2.9", "", now).unwrap());
    // A first login from a new address is remembered too.
    assert_eq!(
        at_once_remembering(
            &mut s,
            "erin",
            erin,
            6,
            now,
            Some(("192.0.2.11", now + 600))
        ),
        Some(true)
    );
    assert!(
        s.is_remembered("erin", sshd, "192.0.2.11", "", now)
            .unwrap()
    );
}

/// PostgreSQL answers COMMIT of a transaction aborted by an error with a quiet rollback:
/// a caller that went on after an error must hear that nothing was written.
#[test]
fn a_transaction_that_hit_an_error_does_not_report_a_commit() {
    let db = Db::start();
    let mut s = db.store();
    let bogus = mfad::store::backend::Dump {
        devices: vec![(
            "u".to_string(),
            mfad::store::backend::DeviceRecord {
                id: 1,
                kind: "carrier-pigeon".into(),
                name: "x".into(),
                sealed_secret: None,
                algorithm: None,
                digits: None,
                period: None,
                counter: 0,
                address: None,
                is_default: false,
                created: 0,
            },
        )],
        ..Default::default()
    };
    let r = s.in_transaction(|s| {
        s.lock_state("u")?;
        assert!(
            s.backend().load(&bogus, false).is_err(),
            "the CHECK refuses it"
        );
        let _ = s.lock_until("u", 500);
        Ok(())
    });
    assert!(
        matches!(r, Err(StoreError::TransactionAborted)),
        "{:?}",
        r.err()
    );
    assert_eq!(s.lock_state("u").unwrap(), LockState::default());
    assert!(!s.is_broken(), "the connection itself is fine");
}

/// A host's SQLite state copied into the cluster's PostgreSQL store (`mfad --migrate-store`)
/// arrives whole: devices with their sealed secrets and counters, codes spent or not,
/// locks, remembered logins; and logins work on it.
#[test]
fn a_sqlite_store_migrates_into_postgresql_whole() {
    let db = Db::start();
    let backend = mfad::store::sqlite::SqliteBackend::open_in_memory(&db.key).unwrap();
    let mut host = Store::from_backend(Box::new(backend), db.key.clone()).unwrap();
    host.add_totp_device("u", "app", b"k-u", totp(), 500, 1)
        .unwrap();
    host.add_totp_device("v", "app", b"k-v", totp(), 9, 2)
        .unwrap();
    let (shown, codes) = bypass::generate(&mfad::random::OsRandom);
    host.replace_bypass_codes("u", &codes, 3).unwrap();
    let spent = host.unused_bypass_codes("u").unwrap()[0].id;
    assert!(host.spend_bypass_code(spent, 4).unwrap());
    host.record_failure("v", 5, 10, 60).unwrap();
    host.lock_until("w", 8888).unwrap();
    host.remember("u", RememberScope::Sshd, "192.0.2.1", "fp", 0, 777)
        .unwrap();
    let mut cluster = db.store();
    mfad::store::migrate::migrate(&mut host, &mut cluster, false).unwrap();
    let (mut from, mut to) = (
        host.backend().dump().unwrap(),
        cluster.backend().dump().unwrap(),
    );
    for (_, d) in from.devices.iter_mut().chain(to.devices.iter_mut()) {
        d.id = 0;
    }
    assert_eq!(to, from);
    let device = cluster.devices("u").unwrap().remove(0);
    assert_eq!(&device.otp.as_ref().unwrap().secret[..], b"k-u");
    assert!(
        !cluster.spend_totp_step(device.id, 500).unwrap(),
        "spent on the host"
    );
    assert!(cluster.spend_totp_step(device.id, 501).unwrap());
    let rows = cluster.unused_bypass_codes("u").unwrap();
    assert_eq!(rows.len(), bypass::COUNT - 1, "the spent code stays spent");
    assert!(cluster.code_matches(&rows[0].code, &shown[1]));
    assert_eq!(cluster.lock_state("v").unwrap().failures, 1);
    assert_eq!(cluster.lock_state("w").unwrap().locked_until, Some(8888));
    assert!(
        cluster
            .is_remembered("u", RememberScope::Sshd, "192.0.2.1", "fp", 10)
            .unwrap()
    );
}

/// The row a login transaction locks for a user the store does not know holds nothing:
/// the store still counts as empty, `mfa admin list` and a dump do not show the user.
#[test]
fn a_login_for_an_unknown_user_leaves_no_trace() {
    let db = Db::start();
    let mut s = db.store();
    let state = s.in_transaction(|s| s.lock_state("ghost")).unwrap();
    assert_eq!(state, LockState::default());
    assert!(s.backend().is_empty().unwrap());
    assert!(s.user_summaries().unwrap().is_empty());
    assert!(s.backend().dump().unwrap().users.is_empty());
    // Once there is something to keep, it shows.
    s.record_failure("ghost", 0, 10, 60).unwrap();
    assert!(!s.backend().is_empty().unwrap());
    assert_eq!(s.user_summaries().unwrap()[0].failures, 1);
}

/// A login's one read (BEGIN REPEATABLE READ READ ONLY, the reads and COMMIT in one round
/// trip) ends its transaction: the session is idle, not idle in a transaction, and what
/// another node commits next is seen by the following read, not hidden behind the first's
/// snapshot.
#[test]
fn a_logins_one_read_on_postgresql_leaves_no_transaction_or_snapshot_behind() {
    let db = Db::start();
    let mut one = db.store();
    let mut two = db.store();
    one.add_totp_device("u", "app", b"k", totp(), 1, 0).unwrap();
    let remembered = Some((RememberScope::Sshd, "192.0.2.1", ""));
    let snap = one.login_snapshot("u", remembered, 10).unwrap();
    assert_eq!(snap.lock.failures, 0);
    let in_transaction = db.pg.psql(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = 'mfa' \
         AND state LIKE 'idle in transaction%'",
    );
    assert_eq!(
        in_transaction.trim(),
        "0",
        "a session left in a transaction"
    );
    two.record_failure("u", 10, 5, 60).unwrap();
    two.remember("u", RememberScope::Sshd, "192.0.2.1", "", 0, 1000)
        .unwrap();
    let again = one.login_snapshot("u", remembered, 10).unwrap();
    assert_eq!(again.lock.failures, 1, "the other node's failure is seen");
    assert!(again.remembered);
}

#[test]
fn a_lock_set_on_one_node_is_seen_by_the_other_at_once() {
    let db = Db::start();
    let mut one = db.store();
    let mut two = db.store();
    assert_eq!(two.lock_state("carol").unwrap(), LockState::default());
    one.lock_until("carol", 9999).unwrap();
    assert_eq!(two.lock_state("carol").unwrap().locked_until, Some(9999));
    two.unlock("carol").unwrap();
    assert_eq!(one.lock_state("carol").unwrap().locked_until, None);
}

#[test]
fn two_nodes_starting_on_an_empty_database_migrate_it_once() {
    let pg = TestPostgres::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let key = StoreKey::generate().unwrap();
    let opts = options(pg.url(), Some(pg.password_file()));
    let check = key.check_value();
    let (a, b) = rt.block_on(async {
        tokio::join!(
            postgres::prepare(&opts, &check),
            postgres::prepare(&opts, &check)
        )
    });
    a.unwrap();
    b.unwrap();
    assert_eq!(
        pg.psql("SELECT version FROM schema_version").trim(),
        MIGRATIONS.len().to_string()
    );
    assert_eq!(
        pg.psql("SELECT count(*) FROM pg_tables WHERE tablename = 'devices'")
            .trim(),
        "1"
    );
    let mut backend = rt.block_on(postgres::connect(&opts)).unwrap();
    assert_eq!(backend.schema_version().unwrap(), MIGRATIONS.len() as i64);
}

#[test]
fn a_newer_schema_is_refused() {
    let db = Db::start();
    db.pg.psql("UPDATE schema_version SET version = 99");
    let err = db
        .rt
        .block_on(postgres::prepare(&db.opts(), &db.key.check_value()))
        .unwrap_err();
    assert!(matches!(err, StoreError::TooNew(99)), "{err}");
}

/// A connection's calls are driven through the runtime it was made on: a current-thread
/// runtime, which nothing drives between its own `block_on`s, is refused at once rather
/// than left to hang a later call.
#[test]
fn a_connection_is_refused_on_a_runtime_that_cannot_drive_it() {
    let db = Db::start();
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = current
        .block_on(postgres::connect(&db.opts()))
        .err()
        .unwrap();
    assert!(err.to_string().contains("multi-threaded runtime"), "{err}");
    // On the runtime mfad runs (and this test's own), it works.
    let mut ok = db.rt.block_on(postgres::connect(&db.opts())).unwrap();
    assert_eq!(ok.lock_state("nobody").unwrap(), LockState::default());
}

#[test]
fn another_key_is_refused() {
    let db = Db::start();
    let other = StoreKey::generate().unwrap();
    let err = db
        .rt
        .block_on(postgres::prepare(&db.opts(), &other.check_value()))
        .unwrap_err();
    assert!(matches!(err, StoreError::WrongKey), "{err}");
    let refused = Store::from_backend(Box::new(db.backend()), Arc::new(other));
    assert!(matches!(refused, Err(StoreError::WrongKey)));
}

#[test]
fn tls_with_verify_full_works_and_the_certificate_is_checked() {
    let pg = TestPostgres::start_tls();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let key = StoreKey::generate().unwrap();
    let mut opts = options(pg.url_tls(), Some(pg.password_file()));
    assert!(opts.url.contains("sslmode=verify-full"), "{}", opts.url);
    opts.ca_file = pg.ca_file().map(Into::into);
    rt.block_on(postgres::prepare(&opts, &key.check_value()))
        .unwrap();
    let mut backend = rt.block_on(postgres::connect(&opts)).unwrap();
    assert_eq!(backend.schema_version().unwrap(), MIGRATIONS.len() as i64);
    // Without our CA (the public roots only), the server's certificate is not trusted.
    opts.ca_file = None;
    let err = rt.block_on(postgres::connect(&opts)).err().unwrap();
    assert!(err.to_string().contains("certificate"), "{err}");
    // The server really spoke TLS to us.
    let ssl = pg.psql("SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE s.ssl AND a.application_name = 'mfad'");
    assert_eq!(ssl.trim(), "1");
}

#[test]
fn clear_text_to_another_host_and_a_password_in_the_url_are_refused_before_connecting() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let refusal = |url: &str| match rt.block_on(postgres::connect(&options(url.into(), None))) {
        Err(StoreError::Config(msg)) => msg,
        Err(e) => panic!("{url}: not a config error: {e}"),
        Ok(_) => panic!("{url}: accepted"),
    };
    // 192.0.2.0/24 is TEST-NET: nothing answers there, so a connect attempt would time out.
    let msg = refusal("postgresql://mfa@192.0.2.7:5432/mfa?sslmode=disable");
    assert!(
        msg.contains("sslmode=disable") && msg.contains("loopback"),
        "{msg}"
    );
    let msg = refusal("postgresql://mfa:hunter2@127.0.0.1:5432/mfa?sslmode=disable");
    assert!(
        msg.contains("password_file") && !msg.contains("hunter2"),
        "{msg}"
    );
}

#[test]
fn a_password_file_others_can_read_is_refused() {
    let pg = TestPostgres::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pgpass");
    std::fs::copy(pg.password_file(), &file).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let opts = options(pg.url(), Some(file.clone()));
    let err = rt.block_on(postgres::connect(&opts)).err().unwrap();
    let msg = err.to_string();
    assert!(
        matches!(err, StoreError::Config(_))
            && msg.contains(&file.display().to_string())
            && msg.contains("644"),
        "{msg}"
    );
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    rt.block_on(postgres::connect(&opts)).unwrap();
}

#[test]
fn a_statement_stuck_behind_a_lock_times_out_and_the_connection_is_dropped() {
    let db = Db::start();
    let mut opts = db.opts();
    opts.statement_timeout = Duration::from_secs(1);
    let mut backend = db.rt.block_on(postgres::connect(&opts)).unwrap();
    backend.lock_state("alice").unwrap();
    assert!(!backend.is_broken());
    let _held = db.pg.hold_lock("LOCK TABLE users IN ACCESS EXCLUSIVE MODE");
    let started = Instant::now();
    let err = backend.lock_state("alice").unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, StoreError::Timeout { .. }), "{err}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert!(
        backend.is_broken(),
        "a timed-out connection is not used again"
    );
    assert!(matches!(
        backend.lock_state("alice"),
        Err(StoreError::Broken)
    ));
}

/// The server's process for each of mfad's connections now.
fn mfad_backends(db: &Db) -> Vec<String> {
    let pids = db
        .pg
        .psql("SELECT pid FROM pg_stat_activity WHERE application_name = 'mfad' ORDER BY pid");
    pids.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// Ends mfad's connections from the server's side, as a restart would, and waits until
/// their processes are gone (pg_terminate_backend only signals them).
fn end_mfads_connections(db: &Db) {
    db.pg.psql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'mfad'",
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !mfad_backends(db).is_empty() {
        assert!(Instant::now() < deadline, "mfad's connections did not end");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_connection_the_server_closed_while_idle_is_made_again_for_the_next_call() {
    // Nothing reads a connection between calls: a server restart or an idle timeout is
    // only seen at the next call, which must not fail for it.
    let db = Db::start();
    let mut store = db.store();
    store.lock_until("dave", 50).unwrap();
    let before = mfad_backends(&db);
    assert_eq!(before.len(), 1, "{before:?}");
    end_mfads_connections(&db);
    assert_eq!(store.lock_state("dave").unwrap().locked_until, Some(50));
    assert!(!store.is_broken());
    let after = mfad_backends(&db);
    assert_eq!(after.len(), 1, "{after:?}");
    assert_ne!(after, before, "the call went over a new connection");
    // And the new one serves transactions as the first did.
    store.lock_until("erin", 60).unwrap();
    assert_eq!(store.lock_state("erin").unwrap().locked_until, Some(60));
}

#[test]
fn a_connection_made_again_checks_the_store_key_again() {
    let db = Db::start();
    let mut store = db.store();
    store.lock_until("dave", 50).unwrap();
    // The database now holds another key's check (as if restored from another site's).
    db.pg
        .psql("UPDATE meta SET value = '\\x00' WHERE key = 'key_check'");
    end_mfads_connections(&db);
    let err = store.lock_state("dave").unwrap_err();
    assert!(matches!(err, StoreError::WrongKey), "{err}");
    assert!(store.is_broken());
}

#[test]
fn a_dead_server_fails_calls_fast_and_a_new_connection_works_once_it_is_back() {
    let db = Db::start();
    let mut store = db.store();
    store.lock_until("dave", 50).unwrap();
    db.pg.kill();
    let started = Instant::now();
    let err = store.lock_state("dave").unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(store.is_broken(), "{err}");
    let started = Instant::now();
    assert!(db.rt.block_on(postgres::connect(&db.opts())).is_err());
    assert!(started.elapsed() < Duration::from_secs(5));
    db.pg.start_again();
    let mut again = db.store();
    assert_eq!(again.lock_state("dave").unwrap().locked_until, Some(50));
}
