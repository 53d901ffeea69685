//! The self-service portal's requests (`[web] portal = true`), in process with a clock the
//! test controls: sign-in with the password and a code (both counted toward the lockout
//! shared with ssh), sessions held in the store with idle and absolute limits, CSRF tokens,
//! and changes that need a fresh second factor.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mfa_proto::web::{AdminAction, Password, PortalChange, PortalPage, SignInRefusal};
use mfa_proto::{Closed, Outcome, WebReply, WebRequest};
use mfa_test_support::{TEST_PASSWORD, TestDaemon};
use mfad::factor::totp::{self, TotpParams};
use mfad::portal::{ABSOLUTE_SECS, FRESH_SECS, IDLE_SECS};

const SECRET: &[u8] = b"12345678901234567890";
const USER: &str = "root";

const GONE: WebReply = WebReply::Closed {
    why: Closed::Unknown,
};

fn portal(tune: impl FnOnce(&mut mfad::Config)) -> TestDaemon {
    let d = TestDaemon::start(|c| {
        c.web.portal = true;
        tune(c);
    });
    let step = totp::step_of(now(&d), TotpParams::default());
    d.store()
        .add_totp_device(
            USER,
            "phone app",
            SECRET,
            TotpParams::default(),
            step - 5,
            now(&d),
        )
        .unwrap();
    d
}

fn now(d: &TestDaemon) -> i64 {
    mfad::Clock::now(&d.clock)
}

/// The code of the enrolled app `offset` steps from now.
fn code(d: &TestDaemon, offset: i64) -> String {
    let step = totp::step_of(now(d), TotpParams::default()) as i64 + offset;
    totp::code_at_step(SECRET, TotpParams::default(), step as u64).to_string()
}

fn web(d: &TestDaemon, request: WebRequest) -> WebReply {
    d.web(request)
}

fn sign_in(d: &TestDaemon, user: &str, password: &str) -> WebReply {
    web(
        d,
        WebRequest::PortalSignIn {
            user: user.into(),
            password: Password::new(password.into()),
            client: Some("198.51.100.9".into()),
        },
    )
}

/// A session past the password: (cookie, csrf).
fn started(d: &TestDaemon) -> (String, String) {
    match sign_in(d, USER, TEST_PASSWORD) {
        WebReply::PortalStarted { session, csrf } => (session, csrf),
        other => panic!("not started: {other:?}"),
    }
}

fn send_code(d: &TestDaemon, s: &(String, String), code: &str) -> WebReply {
    web(
        d,
        WebRequest::PortalCode {
            session: s.0.clone(),
            csrf: s.1.clone(),
            code: code.into(),
            client: None,
        },
    )
}

fn view(d: &TestDaemon, s: &(String, String)) -> WebReply {
    web(
        d,
        WebRequest::PortalView {
            session: s.0.clone(),
        },
    )
}

fn change(d: &TestDaemon, s: &(String, String), change: PortalChange) -> WebReply {
    web(
        d,
        WebRequest::PortalChange {
            session: s.0.clone(),
            csrf: s.1.clone(),
            change,
            client: None,
        },
    )
}

fn page(reply: WebReply) -> PortalPage {
    match reply {
        WebReply::Portal { page } => page,
        other => panic!("no page: {other:?}"),
    }
}

/// Signed in with the app's current code.
fn signed_in(d: &TestDaemon) -> (String, String) {
    let s = started(d);
    page(send_code(d, &s, &code(d, 0)));
    s
}

/// An app of the user `nobody` (another user than the portal's), named `name`: its id.
fn nobodys_app(d: &TestDaemon, name: &str) -> i64 {
    d.store()
        .add_totp_device("nobody", name, SECRET, TotpParams::default(), 0, now(d))
        .unwrap()
}

fn failures(d: &TestDaemon, user: &str) -> u32 {
    d.store().lock_state(user).unwrap().failures
}

#[test]
fn without_portal_on_nothing_is_served() {
    let d = TestDaemon::start(|_| {});
    assert_eq!(sign_in(&d, USER, TEST_PASSWORD), GONE);
    assert_eq!(failures(&d, USER), 0);
}

#[test]
fn signing_in_takes_the_password_then_a_code_and_each_wrong_one_counts_toward_the_lockout() {
    let d = portal(|_| {});
    let wrong = WebReply::SignInRefused {
        why: SignInRefusal::Wrong,
    };
    assert_eq!(sign_in(&d, USER, "not it"), wrong);
    assert_eq!(failures(&d, USER), 1);
    // No such user, or no user name at all: the same answer, and nothing is stored.
    assert_eq!(sign_in(&d, "no-such-user-mfat", "x"), wrong);
    assert_eq!(sign_in(&d, "no-such-user-mfat", TEST_PASSWORD), wrong);
    assert_eq!(sign_in(&d, "../etc", "x"), wrong);
    assert!(
        d.store()
            .user_summaries()
            .unwrap()
            .iter()
            .all(|u| u.name == USER)
    );

    let s = started(&d);
    assert_eq!(
        view(&d, &s),
        WebReply::PortalNeedsCode {
            user: USER.into(),
            csrf: s.1.clone(),
            for_change: false,
            offers: vec![],
        }
    );
    // No change before the code.
    assert!(matches!(
        change(&d, &s, PortalChange::NewBypassCodes),
        WebReply::PortalNeedsCode { .. }
    ));
    assert_eq!(
        send_code(&d, &s, "000000"),
        WebReply::WrongCode { tries_left: 4 }
    );
    assert_eq!(failures(&d, USER), 2);
    let first = code(&d, 0);
    let p = page(send_code(&d, &s, &first));
    assert_eq!(failures(&d, USER), 0, "a right code clears the count");
    assert_eq!(p.user, USER);
    assert_eq!(p.devices.len(), 1);
    assert_eq!(p.devices[0].name, "phone app");
    assert!(p.devices[0].default);
    assert!(p.devices[0].detail.contains("6 digits every 30 s"));
    assert_eq!(p.fresh_for, FRESH_SECS as u64);
    assert_eq!(page(view(&d, &s)).user, USER);

    // The code is spent, as at an ssh prompt: not in another session, not over ssh.
    let other = started(&d);
    assert_eq!(
        send_code(&d, &other, &first),
        WebReply::WrongCode { tries_left: 4 }
    );
    let (outcome, _) = d.login(USER, &[&first, &first, &first]);
    assert_eq!(outcome, Outcome::Deny);
}

#[test]
fn five_wrong_codes_end_the_session_and_enough_failures_lock_the_account() {
    let d = portal(|c| c.lockout.max_failures = 6);
    let signed = signed_in(&d);
    let s = started(&d);
    for left in (1..5).rev() {
        assert_eq!(
            send_code(&d, &s, "000000"),
            WebReply::WrongCode { tries_left: left }
        );
    }
    assert_eq!(send_code(&d, &s, "000000"), GONE);
    assert_eq!(view(&d, &s), GONE);
    assert_eq!(failures(&d, USER), 5);
    // The sixth failure (shared with ssh) locks: sign-in is refused, even with the right
    // password.
    assert_eq!(
        sign_in(&d, USER, "wrong"),
        WebReply::SignInRefused {
            why: SignInRefusal::Locked
        }
    );
    assert_eq!(
        sign_in(&d, USER, TEST_PASSWORD),
        WebReply::SignInRefused {
            why: SignInRefusal::Locked
        }
    );
    // A session signed in before the lock ends with it.
    assert_eq!(
        view(&d, &signed),
        WebReply::SignInRefused {
            why: SignInRefusal::Locked
        }
    );
    assert_eq!(view(&d, &signed), GONE);
}

#[test]
fn changes_need_the_sessions_csrf_token_and_a_fresh_factor() {
    let d = portal(|_| {});
    let step = totp::step_of(now(&d), TotpParams::default());
    let second = d
        .store()
        .add_totp_device(
            USER,
            "spare token",
            SECRET,
            TotpParams::default(),
            step + 10,
            now(&d),
        )
        .unwrap();
    let s = signed_in(&d);

    // A forged form (another CSRF token): refused, nothing changed.
    let forged = (s.0.clone(), "A".repeat(43));
    assert_eq!(
        change(&d, &forged, PortalChange::SetDefault { device: second }),
        WebReply::BadForm
    );
    assert!(!d.store().devices(USER).unwrap()[1].is_default);

    let WebReply::PortalChanged { note, codes } =
        change(&d, &s, PortalChange::SetDefault { device: second })
    else {
        panic!("not changed")
    };
    assert!(note.contains("scp, sftp, rsync"), "{note}");
    assert!(codes.0.is_empty());
    assert!(d.store().devices(USER).unwrap()[1].is_default);

    // Minutes later, a change asks for a new code first; after it, the change is made.
    d.clock.advance(FRESH_SECS);
    assert_eq!(
        change(&d, &s, PortalChange::NewBypassCodes),
        WebReply::PortalNeedsCode {
            user: USER.into(),
            csrf: s.1.clone(),
            for_change: true,
            offers: vec![],
        }
    );
    assert_eq!(d.store().unused_bypass_codes(USER).unwrap().len(), 0);
    page(send_code(&d, &s, &code(&d, 0)));
    let WebReply::PortalChanged { codes, .. } = change(&d, &s, PortalChange::NewBypassCodes) else {
        panic!("no codes")
    };
    assert_eq!(codes.0.len(), 10);
    assert_eq!(page(view(&d, &s)).bypass_left, 10);
    // A code shown on the page opens an ssh login, once.
    let (outcome, script) = d.login(USER, &[&codes.0[0]]);
    assert_eq!(outcome, Outcome::Allow, "{}", script.text());
    assert_eq!(page(view(&d, &s)).bypass_left, 9);
}

#[test]
fn only_the_users_own_devices_change_and_the_last_one_stays() {
    let d = portal(|_| {});
    let s = signed_in(&d);
    let only = d.store().devices(USER).unwrap()[0].id;
    // Another user's device id: nothing happens to either user.
    let other = nobodys_app(&d, "theirs");
    assert_eq!(change(&d, &s, PortalChange::Remove { device: other }), GONE);
    assert_eq!(
        change(&d, &s, PortalChange::SetDefault { device: other }),
        GONE
    );
    assert!(d.store().devices(USER).unwrap()[0].is_default);
    assert_eq!(d.store().devices("nobody").unwrap().len(), 1);
    // The only device: kept, with the reason.
    let WebReply::PortalChanged { note, .. } =
        change(&d, &s, PortalChange::Remove { device: only })
    else {
        panic!("no answer")
    };
    assert!(note.contains("only device"), "{note}");
    assert_eq!(d.store().devices(USER).unwrap().len(), 1);
    // With a second one, the first can go.
    let step = totp::step_of(now(&d), TotpParams::default());
    d.store()
        .add_totp_device(
            USER,
            "new",
            SECRET,
            TotpParams::default(),
            step + 10,
            now(&d),
        )
        .unwrap();
    let WebReply::PortalChanged { note, .. } =
        change(&d, &s, PortalChange::Remove { device: only })
    else {
        panic!("not removed")
    };
    assert_eq!(note, "Removed \"phone app\".");
    let left = d.store().devices(USER).unwrap();
    assert_eq!(left.len(), 1);
    assert!(left[0].is_default, "the default is handed on");
}

#[test]
fn sessions_end_after_ten_idle_minutes_or_an_hour_and_at_sign_out() {
    let d = portal(|_| {});
    let idle = signed_in(&d);
    d.clock.advance(IDLE_SECS);
    assert_eq!(view(&d, &idle), GONE);

    // Used every few minutes, a session still ends an hour after its sign-in.
    let busy = signed_in(&d);
    let mut lived = 0;
    while lived + 300 < ABSOLUTE_SECS {
        d.clock.advance(300);
        lived += 300;
        page(view(&d, &busy));
    }
    d.clock.advance(ABSOLUTE_SECS - lived);
    assert_eq!(view(&d, &busy), GONE);

    let s = signed_in(&d);
    let forged = (s.0.clone(), "B".repeat(43));
    assert_eq!(
        web(
            &d,
            WebRequest::PortalSignOut {
                session: forged.0,
                csrf: forged.1
            }
        ),
        WebReply::BadForm
    );
    page(view(&d, &s));
    assert_eq!(
        web(
            &d,
            WebRequest::PortalSignOut {
                session: s.0.clone(),
                csrf: s.1.clone()
            }
        ),
        GONE
    );
    assert_eq!(view(&d, &s), GONE);
    // Forged cookies get nothing.
    let forged = ("C".repeat(43), s.1.clone());
    assert_eq!(view(&d, &forged), GONE);
    assert_eq!(send_code(&d, &forged, &code(&d, 0)), GONE);
}

#[test]
fn a_session_lives_in_the_store_so_a_restarted_mfad_serves_it() {
    let dir = tempfile::tempdir().unwrap();
    let tune = |c: &mut mfad::Config| {
        c.database = dir.path().join("mfa.db");
        c.store_key = dir.path().join("store.key");
    };
    let first = portal(tune);
    let s = started(&first);
    drop(first);
    let second = TestDaemon::start(|c| {
        c.web.portal = true;
        tune(c);
    });
    let p = page(send_code(&second, &s, &code(&second, 0)));
    assert_eq!(p.user, USER);
    assert!(
        second
            .store()
            .lock_state(USER)
            .unwrap()
            .locked_until
            .is_none()
    );
}

#[test]
fn a_user_with_nothing_that_gives_codes_cannot_sign_in() {
    let d = TestDaemon::start(|c| c.web.portal = true);
    assert_eq!(
        sign_in(&d, USER, TEST_PASSWORD),
        WebReply::SignInRefused {
            why: SignInRefusal::NotEnrolled
        }
    );
}

fn admin(d: &TestDaemon, s: &(String, String), user: &str, action: AdminAction) -> WebReply {
    web(
        d,
        WebRequest::PortalAdmin {
            session: s.0.clone(),
            csrf: s.1.clone(),
            user: user.into(),
            action,
            client: Some("198.51.100.20".into()),
        },
    )
}

#[test]
fn an_admin_sees_locked_users_unlocks_one_and_issues_codes_and_a_non_admin_is_refused() {
    // root is in group root; nobody is not.
    let d = portal(|c| c.web.admin_group = Some("root".into()));
    let now = now(&d);
    nobodys_app(&d, "app");
    // nobody locked by failures (as ssh would lock them).
    for _ in 0..5 {
        d.store().record_failure("nobody", now, 5, 900).unwrap();
    }
    assert!(
        d.store()
            .lock_state("nobody")
            .unwrap()
            .locked_until
            .is_some()
    );

    let s = signed_in(&d);
    let p = page(view(&d, &s));
    assert!(p.admin);
    assert_eq!(p.locked.len(), 1);
    assert_eq!(p.locked[0].user, "nobody");
    assert_eq!(
        p.locked[0].failures,
        d.store().lock_state("nobody").unwrap().failures
    );

    let WebReply::AdminStatus { user, report } = admin(&d, &s, "nobody", AdminAction::Status)
    else {
        panic!("no status")
    };
    assert_eq!(user, "nobody");
    assert!(report.contains("Locked:       yes"), "{report}");
    // A forged form changes nothing.
    let forged = (s.0.clone(), "D".repeat(43));
    assert_eq!(
        admin(&d, &forged, "nobody", AdminAction::Unlock),
        WebReply::BadForm
    );
    assert!(
        d.store()
            .lock_state("nobody")
            .unwrap()
            .locked_until
            .is_some()
    );

    let WebReply::PortalChanged { note, .. } = admin(&d, &s, "nobody", AdminAction::Unlock) else {
        panic!("not unlocked")
    };
    assert_eq!(note, "nobody is unlocked and its failure count is cleared.");
    let lock = d.store().lock_state("nobody").unwrap();
    assert_eq!((lock.failures, lock.locked_until), (0, None));
    assert!(page(view(&d, &s)).locked.is_empty());

    let WebReply::PortalChanged { codes, .. } = admin(&d, &s, "nobody", AdminAction::BypassCodes)
    else {
        panic!("no codes")
    };
    assert_eq!(codes.0.len(), 10);
    assert_eq!(d.store().unused_bypass_codes("nobody").unwrap().len(), 10);

    // Changes need a recent code; a look does not.
    d.clock.advance(FRESH_SECS);
    assert!(matches!(
        admin(&d, &s, "nobody", AdminAction::Reset),
        WebReply::PortalNeedsCode {
            for_change: true,
            ..
        }
    ));
    assert_eq!(d.store().devices("nobody").unwrap().len(), 1);
    assert!(matches!(
        admin(&d, &s, "nobody", AdminAction::Status),
        WebReply::AdminStatus { .. }
    ));
    page(send_code(&d, &s, &code(&d, 0)));
    assert!(matches!(
        admin(&d, &s, "nobody", AdminAction::Reset),
        WebReply::PortalChanged { .. }
    ));
    assert!(d.store().devices("nobody").unwrap().is_empty());

    // nobody, signed in with a code, is no admin: refused, root untouched.
    nobodys_app(&d, "app");
    let theirs = match sign_in(&d, "nobody", TEST_PASSWORD) {
        WebReply::PortalStarted { session, csrf } => (session, csrf),
        other => panic!("{other:?}"),
    };
    page(send_code(&d, &theirs, &code(&d, 1)));
    let p = page(view(&d, &theirs));
    assert!(!p.admin && p.locked.is_empty());
    d.store().record_failure(USER, now, 5, 900).unwrap();
    assert_eq!(
        admin(&d, &theirs, USER, AdminAction::Unlock),
        WebReply::NotAdmin
    );
    assert_eq!(
        admin(&d, &theirs, USER, AdminAction::Status),
        WebReply::NotAdmin
    );
    assert_eq!(d.store().lock_state(USER).unwrap().failures, 1);
}

#[test]
fn without_an_admin_group_nobody_is_an_admin() {
    let d = portal(|_| {});
    let s = signed_in(&d);
    assert!(!page(view(&d, &s)).admin);
    assert_eq!(
        admin(&d, &s, "nobody", AdminAction::Status),
        WebReply::NotAdmin
    );
}

#[test]
fn an_app_added_on_the_portal_needs_a_code_from_it_and_then_opens_logins() {
    let d = portal(|_| {});
    let s = signed_in(&d);
    let WebReply::NewApp { app } = change(&d, &s, PortalChange::BeginApp) else {
        panic!("no app")
    };
    assert_eq!(app.user, USER);
    assert!(app.uri.starts_with("otpauth://totp/"), "{}", app.uri);
    let secret = data_encoding::BASE32_NOPAD
        .decode(app.secret.as_bytes())
        .unwrap();
    let app_code = |offset: u64| {
        let step = totp::step_of(now(&d), TotpParams::default()) + offset;
        totp::code_at_step(&secret, TotpParams::default(), step).to_string()
    };
    let confirm = |code: &str| {
        change(
            &d,
            &s,
            PortalChange::ConfirmApp {
                code: code.to_string(),
            },
        )
    };
    assert_eq!(confirm("000000"), WebReply::WrongCode { tries_left: 4 });
    assert_eq!(d.store().devices(USER).unwrap().len(), 1);
    let WebReply::PortalChanged { note, .. } = confirm(&app_code(0)) else {
        panic!("not added")
    };
    assert_eq!(
        note,
        "Added \"Authenticator app\". Your logins can use its codes from now on."
    );
    let devices = d.store().devices(USER).unwrap();
    assert_eq!(devices.len(), 2);
    assert!(!devices[1].is_default, "the first device stays the default");
    // Once only: the pending app is gone, and the confirming step is spent.
    let WebReply::PortalChanged { note, .. } = confirm(&app_code(0)) else {
        panic!("no answer")
    };
    assert!(note.contains("add the app first"), "{note}");
    let (outcome, _) = d.login(USER, &[&app_code(0), &app_code(0), &app_code(0)]);
    assert_eq!(outcome, Outcome::Deny);
    d.clock.advance(30);
    let (outcome, script) = d.login(USER, &[&app_code(0)]);
    assert_eq!(outcome, Outcome::Allow, "{}", script.text());

    // Later, adding another needs a recent code first.
    d.clock.advance(FRESH_SECS);
    assert!(matches!(
        change(&d, &s, PortalChange::BeginApp),
        WebReply::PortalNeedsCode {
            for_change: true,
            ..
        }
    ));
}

#[test]
fn a_device_is_renamed_by_its_owner_only_and_a_bad_name_changes_nothing() {
    let d = portal(|_| {});
    let s = signed_in(&d);
    let mine = d.store().devices(USER).unwrap()[0].id;
    let theirs = nobodys_app(&d, "theirs");
    let rename = |device: i64, name: &str| {
        change(
            &d,
            &s,
            PortalChange::Rename {
                device,
                name: name.to_string(),
            },
        )
    };
    assert_eq!(rename(theirs, "mine now"), GONE);
    assert_eq!(d.store().devices("nobody").unwrap()[0].name, "theirs");
    for bad in ["", "   ", "tab\there", &"x".repeat(65)] {
        let WebReply::PortalChanged { note, .. } = rename(mine, bad) else {
            panic!("no answer")
        };
        assert!(note.contains("Nothing was changed"), "{bad:?}: {note}");
        assert_eq!(d.store().devices(USER).unwrap()[0].name, "phone app");
    }
    let WebReply::PortalChanged { note, .. } = rename(mine, "  work phone ") else {
        panic!("not renamed")
    };
    assert_eq!(note, "\"phone app\" is now called \"work phone\".");
    assert_eq!(d.store().devices(USER).unwrap()[0].name, "work phone");
    assert_eq!(page(view(&d, &s)).devices[0].name, "work phone");
    // Like every change, it needs a recent code.
    d.clock.advance(FRESH_SECS);
    assert!(matches!(
        rename(mine, "later"),
        WebReply::PortalNeedsCode { .. }
    ));
    assert_eq!(d.store().devices(USER).unwrap()[0].name, "work phone");
}

/// The page once the history holds `n` logins of the user (it is written off the logins'
/// path, a moment after each).
fn with_logins(d: &TestDaemon, s: &(String, String), n: usize) -> PortalPage {
    for _ in 0..200 {
        let p = page(view(d, s));
        if p.logins.len() >= n {
            return p;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    panic!(
        "the history never showed {n} logins: {:?}",
        page(view(d, s)).logins
    );
}

#[test]
fn recent_logins_are_listed_and_this_wasnt_me_locks_the_account_and_ends_the_session() {
    let d = portal(|_| {});
    let (outcome, _) = d.login(USER, &["000000", "000000", "000000"]);
    assert_eq!(outcome, Outcome::Deny);
    let (outcome, _) = d.login(USER, &[&code(&d, 0)]);
    assert_eq!(outcome, Outcome::Allow);
    // Another user's login, and a name with no account (no row at all).
    let (outcome, _) = d.login("nobody", &[]);
    assert_eq!(outcome, Outcome::Deny);
    d.login("no-such-user-here", &[]);

    d.clock.advance(30);
    let s = signed_in(&d);
    let p = with_logins(&d, &s, 2);
    assert_eq!(p.logins.len(), 2, "{:?}", p.logins);
    let (newest, oldest) = (&p.logins[0], &p.logins[1]);
    assert_eq!(
        (newest.outcome.as_str(), newest.method.as_str()),
        ("allowed", "totp"),
        "{newest:?}"
    );
    assert_eq!(oldest.outcome, "refused", "{oldest:?}");
    for l in &p.logins {
        assert_eq!(
            (l.address.as_str(), l.service.as_str()),
            ("192.0.2.7", "sshd")
        );
        assert!(l.at.ends_with(" UTC"), "{l:?}");
    }
    // The portal's own sign-in is not an ssh login, and nobody's row is not the user's.
    let nobodys = d.store().recent_logins("nobody", 20).unwrap();
    assert_eq!(nobodys.len(), 1, "{nobodys:?}");
    assert!(
        d.store()
            .recent_logins("no-such-user-here", 20)
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        change(
            &d,
            &s,
            PortalChange::NotMe {
                login: nobodys[0].id
            }
        ),
        GONE
    );
    assert_eq!(d.store().lock_state(USER).unwrap().locked_until, None);

    // "This wasn't me" needs no fresh code, only the session's form.
    d.clock.advance(FRESH_SECS);
    let forged = web(
        &d,
        WebRequest::PortalChange {
            session: s.0.clone(),
            csrf: "forged".into(),
            change: PortalChange::NotMe { login: oldest.id },
            client: None,
        },
    );
    assert_eq!(forged, WebReply::BadForm);
    assert_eq!(d.store().lock_state(USER).unwrap().locked_until, None);
    let WebReply::PortalChanged { note, .. } =
        change(&d, &s, PortalChange::NotMe { login: oldest.id })
    else {
        panic!("not reported")
    };
    assert!(note.contains("Your account is locked until"), "{note}");
    let until = d.store().lock_state(USER).unwrap().locked_until.unwrap();
    assert!(until >= now(&d) + 3600, "locked for at least an hour");
    assert_eq!(view(&d, &s), GONE, "the session ended");
    let (outcome, script) = d.login(USER, &[]);
    assert_eq!(outcome, Outcome::Deny);
    assert!(script.text().contains("locked"), "{}", script.text());
}

#[test]
fn a_login_history_that_cannot_be_read_leaves_the_devices_and_says_so() {
    let d = portal(|_| {});
    // The history's own file (opened at first use) is not a database.
    let history = mfad::store::sqlite::history_path(&d.config.database);
    std::fs::write(&history, vec![b'x'; 8192]).unwrap();
    let (outcome, _) = d.login(USER, &[&code(&d, 0)]);
    assert_eq!(outcome, Outcome::Allow, "logins do not need the history");
    d.clock.advance(30);
    let s = signed_in(&d);
    let p = page(view(&d, &s));
    assert!(p.logins_unreadable, "{p:?}");
    assert!(p.logins.is_empty());
    assert_eq!(p.devices.len(), 1);
    assert_eq!(p.devices[0].name, "phone app");
    // Its devices can still be changed.
    let WebReply::PortalChanged { .. } = change(
        &d,
        &s,
        PortalChange::Rename {
            device: p.devices[0].id,
            name: "work phone".into(),
        },
    ) else {
        panic!("not renamed")
    };
    assert_eq!(d.store().devices(USER).unwrap()[0].name, "work phone");
    // Readable again: the list is back, and says nothing is missing.
    std::fs::remove_file(&history).unwrap();
    let p = page(view(&d, &s));
    assert!(!p.logins_unreadable, "{p:?}");
}

#[test]
fn without_a_login_history_nothing_is_kept() {
    let d = portal(|c| c.login_history = 0);
    let (outcome, _) = d.login(USER, &[&code(&d, 0)]);
    assert_eq!(outcome, Outcome::Allow);
    d.clock.advance(30);
    let s = signed_in(&d);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(page(view(&d, &s)).logins.is_empty());
    assert!(d.store().recent_logins(USER, 20).unwrap().is_empty());
}

#[test]
fn a_hardware_token_is_added_only_with_a_code_it_shows_and_that_code_is_spent() {
    let d = portal(|_| {});
    let s = signed_in(&d);
    let token_secret = b"abcdefghij0123456789";
    let hex = format!("hex:{}", data_encoding::HEXLOWER.encode(token_secret));
    let add = |kind: &str, name: &str, code: &str| {
        change(
            &d,
            &s,
            PortalChange::AddToken {
                kind: kind.into(),
                name: name.into(),
                secret: zeroize::Zeroizing::new(hex.clone()),
                code: code.into(),
            },
        )
    };
    let note = |reply: WebReply| match reply {
        WebReply::PortalChanged { note, .. } => note,
        other => panic!("no note: {other:?}"),
    };
    let step = totp::step_of(now(&d), TotpParams::default());
    let token_code =
        |step: u64| totp::code_at_step(token_secret, TotpParams::default(), step).to_string();
    let wrong = if token_code(step) == "123456" {
        "654321"
    } else {
        "123456"
    };
    assert!(note(add("totp", "Token", wrong)).contains("does not match"));
    assert_eq!(
        add("smartcard", "Token", &token_code(step)),
        WebReply::BadForm
    );
    assert!(note(add("totp", "a\u{7}b", &token_code(step))).contains("control characters"));
    assert_eq!(d.store().devices(USER).unwrap().len(), 1, "nothing added");
    assert_eq!(
        note(add("totp", "", &token_code(step))),
        "Added \"Hardware token\". Your logins can use its codes from now on."
    );
    // The confirming code's step is spent: it does not open a login.
    let (outcome, _) = d.login(
        USER,
        &[&token_code(step), &token_code(step), &token_code(step)],
    );
    assert_eq!(outcome, Outcome::Deny);
    // A counter-based token already pressed 7 times: confirmed with its 8th code (counter
    // 7), that code is spent and the next one (counter 8) opens a login.
    let hotp = |counter: u64| {
        mfad::factor::hotp::code_at(token_secret, TotpParams::default(), counter).to_string()
    };
    assert!(note(add("hotp", "Key fob", &hotp(7))).starts_with("Added \"Key fob\"."));
    let devices = d.store().devices(USER).unwrap();
    assert_eq!(devices.len(), 3);
    d.clock.advance(30);
    let (outcome, script) = d.login(USER, &[&hotp(7), &hotp(8)]);
    assert_eq!(outcome, Outcome::Allow, "{}", script.text());
}

#[test]
fn without_sms_or_push_the_portal_offers_neither_and_refuses_both_with_a_reason() {
    let d = portal(|_| {});
    let s = signed_in(&d);
    let p = page(view(&d, &s));
    assert!(!p.can_add_phone && !p.can_add_push);
    let note = |reply: WebReply| match reply {
        WebReply::PortalChanged { note, .. } => note,
        other => panic!("no note: {other:?}"),
    };
    let phone = PortalChange::BeginPhone {
        name: String::new(),
        number: "+15555550123".into(),
    };
    assert!(note(change(&d, &s, phone)).starts_with("Phone numbers need SMS"));
    let push = PortalChange::BeginPush {
        name: String::new(),
    };
    assert!(note(change(&d, &s, push)).starts_with("Push notifications are not configured"));
    // A step without its start is told to start again, and changes nothing.
    let confirm = PortalChange::ConfirmPhone {
        code: "123456".into(),
    };
    assert!(note(change(&d, &s, confirm)).contains("Start again"));
    assert!(note(change(&d, &s, PortalChange::CheckPush)).contains("Start again"));
    assert_eq!(d.store().devices(USER).unwrap().len(), 1);
    // No phone to text or push to: the code form offers none, and asking anyway is told so.
    d.clock.advance(FRESH_SECS);
    let WebReply::PortalNeedsCode { offers, .. } = change(&d, &s, PortalChange::NewBypassCodes)
    else {
        panic!("no code form")
    };
    assert!(offers.is_empty(), "{offers:?}");
    let send = |via| {
        web(
            &d,
            WebRequest::PortalSend {
                session: s.0.clone(),
                csrf: s.1.clone(),
                via,
                client: None,
            },
        )
    };
    assert_eq!(
        send(mfa_proto::web::PortalVia::Push),
        WebReply::PortalSent {
            via: mfa_proto::web::PortalVia::Push,
            note: "You have no device for that here. Type a code instead.".into()
        }
    );
    let forged = web(
        &d,
        WebRequest::PortalSend {
            session: s.0.clone(),
            csrf: "forged".into(),
            via: mfa_proto::web::PortalVia::Sms,
            client: None,
        },
    );
    assert_eq!(forged, WebReply::BadForm);
}

/// A device of kind `webauthn` for the portal's user, straight into the store (what it
/// holds is not a credential: this key cannot sign anything).
fn web_key(d: &TestDaemon, name: &str) -> i64 {
    let row = mfad::store::NewDeviceRow {
        kind: mfad::store::DeviceKind::WebKey,
        name: name.into(),
        otp: None,
        address: Some("{}".into()),
    };
    d.store().add_device(USER, &row, now(d)).unwrap()
}

#[test]
fn security_keys_need_a_host_name_and_a_registration_answer_that_checks_out() {
    // At an IP address (no WebAuthn relying party): not offered, and refused with why.
    let d = portal(|c| c.web.public_url = Some("http://127.0.0.1:8443".into()));
    let s = signed_in(&d);
    assert!(!page(view(&d, &s)).can_add_key);
    let WebReply::PortalChanged { note, .. } = change(
        &d,
        &s,
        PortalChange::BeginKey {
            name: String::new(),
        },
    ) else {
        panic!("no answer")
    };
    assert!(note.contains("not a host name"), "{note}");

    // At a host name: the challenge names the site, and is held in the session.
    let d = portal(|c| c.web.public_url = Some("https://mfa.example.org".into()));
    let s = signed_in(&d);
    assert!(page(view(&d, &s)).can_add_key);
    let begin = PortalChange::BeginKey {
        name: "Blue key".into(),
    };
    let WebReply::KeyCeremony { options, adding } = change(&d, &s, begin) else {
        panic!("no challenge")
    };
    assert!(adding);
    let options: serde_json::Value = serde_json::from_str(&options).unwrap();
    assert_eq!(options["publicKey"]["rp"]["id"], "mfa.example.org");
    assert_eq!(options["publicKey"]["user"]["name"], USER);
    assert!(options["publicKey"]["challenge"].as_str().unwrap().len() >= 43);
    // A forged answer adds nothing, and the challenge is gone with it.
    let forged = PortalChange::FinishKey {
        response: r#"{"id":"AA","rawId":"AA","type":"public-key","response":{"attestationObject":"AA","clientDataJSON":"AA"}}"#.into(),
    };
    let WebReply::PortalChanged { note, .. } = change(&d, &s, forged.clone()) else {
        panic!("no answer")
    };
    assert!(note.starts_with("The key was not added"), "{note}");
    assert_eq!(d.store().devices(USER).unwrap().len(), 1);
    let WebReply::PortalChanged { note, .. } = change(&d, &s, forged) else {
        panic!("no answer")
    };
    assert!(note.contains("add the security key first"), "{note}");
    // An answer to a sign-in challenge that was never made: nothing to check it against.
    let reply = web(
        &d,
        WebRequest::PortalKey {
            session: s.0.clone(),
            csrf: s.1.clone(),
            response: "{}".into(),
            client: None,
        },
    );
    assert_eq!(reply, GONE);
    // And without the session's CSRF token, not even that.
    let reply = web(
        &d,
        WebRequest::PortalKey {
            session: s.0.clone(),
            csrf: "forged".into(),
            response: "{}".into(),
            client: None,
        },
    );
    assert_eq!(reply, WebReply::BadForm);
}

#[test]
fn a_web_security_key_is_never_the_default_nor_the_last_device_ssh_can_use() {
    let d = portal(|c| c.web.public_url = Some("https://mfa.example.org".into()));
    let s = signed_in(&d);
    let app = d.store().devices(USER).unwrap()[0].id;
    let key = web_key(&d, "Blue key");
    let WebReply::PortalChanged { note, .. } =
        change(&d, &s, PortalChange::SetDefault { device: key })
    else {
        panic!("no answer")
    };
    assert!(note.contains("cannot be the default"), "{note}");
    assert!(d.store().devices(USER).unwrap()[0].is_default);
    let WebReply::PortalChanged { note, .. } = change(&d, &s, PortalChange::Remove { device: app })
    else {
        panic!("no answer")
    };
    assert!(note.contains("ssh logins cannot use"), "{note}");
    assert_eq!(d.store().devices(USER).unwrap().len(), 2);
    // The key itself may go.
    let WebReply::PortalChanged { note, .. } = change(&d, &s, PortalChange::Remove { device: key })
    else {
        panic!("no answer")
    };
    assert_eq!(note, "Removed \"Blue key\".");
}

#[test]
fn an_ssh_login_of_a_user_with_only_a_web_security_key_is_refused_with_why() {
    let d = portal(|_| {});
    let app = d.store().devices(USER).unwrap()[0].id;
    web_key(&d, "Blue key");
    d.store().remove_device(USER, app).unwrap();
    let (outcome, script) = d.login(USER, &[]);
    assert_eq!(outcome, Outcome::Deny);
    assert!(
        script
            .text()
            .contains("security key for the web pages, which ssh cannot use"),
        "{}",
        script.text()
    );
}
