//! `unenrolled = "link"`: a login of a user with nothing enrolled is refused with a one-time
//! enrolment link (and its QR code on a terminal), bound to the user, expiring; offered where
//! in-login enrolment would be. In-process, with a clock the test controls.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mfa_proto::{AuthContext, Operation, Outcome};
use mfa_test_support::{Script, TestDaemon};
use mfad::config::Unenrolled;
use mfad::enrol_link;

const BASE: &str = "https://mfa.example.org";

fn linking(trusted: bool) -> TestDaemon {
    TestDaemon::start(|c| {
        c.unenrolled = Unenrolled::Link;
        c.web.public_url = Some(format!("{BASE}/"));
        if trusted {
            c.policy.trusted_networks = vec!["192.0.2.0/24".parse().unwrap()];
        } else {
            c.policy.trusted_networks = vec!["10.0.0.0/8".parse().unwrap()];
        }
    })
}

fn login_from(d: &TestDaemon, user: &str, rhost: &str, can_prompt: bool) -> (Outcome, Script) {
    let op = Operation::Authenticate(AuthContext {
        user: user.into(),
        service: "sshd".into(),
        rhost: Some(rhost.into()),
        tty: Some("ssh".into()),
        can_prompt,
        ..Default::default()
    });
    let (outcome, script) = d.run(op, &[]);
    script.all_answered();
    (outcome.unwrap(), script)
}

/// The token of the link the user was shown.
fn token_shown(script: &Script) -> String {
    let text = script.text();
    let at = text
        .find(&format!("Please enroll at {BASE}/enroll/"))
        .unwrap_or_else(|| panic!("no link shown:\n{text}"));
    let rest = &text[at + format!("Please enroll at {BASE}/enroll/").len()..];
    let token: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    assert!(mfa_proto::web::looks_like_token(&token), "{token:?}");
    token
}

fn now(d: &TestDaemon) -> i64 {
    mfad::Clock::now(&d.clock)
}

#[test]
fn an_unenrolled_login_is_refused_with_a_link_and_its_qr_code_bound_to_the_user() {
    let d = linking(true);
    let (outcome, script) = login_from(&d, "root", "192.0.2.7", true);
    assert_eq!(outcome, Outcome::Deny, "{}", script.text());
    let text = script.text();
    assert!(text.contains("no device is enrolled"), "{text}");
    assert!(text.contains("works once, for 15 minutes"), "{text}");
    assert!(
        text.contains("Login refused until a device is enrolled."),
        "{text}"
    );
    // The QR code: half-block characters.
    assert!(text.contains('▀') || text.contains('▄'), "{text}");
    assert!(script.prompts().is_empty());

    // Only the token's hash is stored, bound to root.
    let token = token_shown(&script);
    let mut store = d.store();
    let key = enrol_link::key_of(&token);
    assert_eq!(
        store.enrol_link_user(&key, now(&d)).unwrap().as_deref(),
        Some("root")
    );
    // Bound to its user: another user cannot spend it; root can, once.
    assert!(!store.spend_enrol_link(&key, "nobody", now(&d)).unwrap());
    assert!(store.spend_enrol_link(&key, "root", now(&d)).unwrap());
    assert!(!store.spend_enrol_link(&key, "root", now(&d)).unwrap());
    assert_eq!(store.enrol_link_user(&key, now(&d)).unwrap(), None);
    // Nothing was enrolled by the link alone.
    assert!(store.devices("root").unwrap().is_empty());
}

#[test]
fn without_a_terminal_the_link_is_shown_without_the_qr_code() {
    let d = linking(true);
    let (outcome, script) = login_from(&d, "root", "192.0.2.7", false);
    assert_eq!(outcome, Outcome::Deny);
    token_shown(&script);
    let text = script.text();
    assert!(!text.contains('▀') && !text.contains('▄'), "{text}");
}

#[test]
fn a_link_expires_after_enroll_link_ttl_and_a_new_login_replaces_it() {
    let d = linking(true);
    let (_, first) = login_from(&d, "root", "192.0.2.7", true);
    let first = enrol_link::key_of(&token_shown(&first));
    let mut store = d.store();
    // A second login issues a new link; the first stops working.
    let (_, second) = login_from(&d, "root", "192.0.2.7", true);
    let second = enrol_link::key_of(&token_shown(&second));
    assert_ne!(first, second);
    assert_eq!(store.enrol_link_user(&first, now(&d)).unwrap(), None);
    assert!(!store.spend_enrol_link(&first, "root", now(&d)).unwrap());

    d.clock.advance(899);
    assert_eq!(
        store.enrol_link_user(&second, now(&d)).unwrap().as_deref(),
        Some("root")
    );
    d.clock.advance(1);
    assert_eq!(store.enrol_link_user(&second, now(&d)).unwrap(), None);
    assert!(!store.spend_enrol_link(&second, "root", now(&d)).unwrap());
}

#[test]
fn the_ttl_is_configurable() {
    let d = TestDaemon::start(|c| {
        c.unenrolled = Unenrolled::Link;
        c.web.public_url = Some(BASE.into());
        c.web.enroll_link_ttl = 120;
        c.policy.enroll_from_anywhere = true;
    });
    let (_, script) = login_from(&d, "root", "198.51.100.1", true);
    assert!(script.text().contains("for 2 minutes"), "{}", script.text());
    let key = enrol_link::key_of(&token_shown(&script));
    let mut store = d.store();
    d.clock.advance(119);
    assert!(store.enrol_link_user(&key, now(&d)).unwrap().is_some());
    d.clock.advance(1);
    assert!(store.enrol_link_user(&key, now(&d)).unwrap().is_none());
}

#[test]
fn outside_trusted_networks_no_link_is_issued_unless_enroll_from_anywhere() {
    let d = linking(false);
    let (outcome, script) = login_from(&d, "root", "192.0.2.7", true);
    assert_eq!(outcome, Outcome::Deny);
    let text = script.text();
    assert!(!text.contains("/enroll/"), "{text}");
    assert!(
        text.contains("Enrolment links are only offered from the site's own networks"),
        "{text}"
    );

    let d = TestDaemon::start(|c| {
        c.unenrolled = Unenrolled::Link;
        c.web.public_url = Some(BASE.into());
        c.policy.trusted_networks = vec!["10.0.0.0/8".parse().unwrap()];
        c.policy.enroll_from_anywhere = true;
    });
    let (outcome, script) = login_from(&d, "root", "192.0.2.7", true);
    assert_eq!(outcome, Outcome::Deny);
    token_shown(&script);
}

#[test]
fn link_without_web_public_url_is_refused_by_the_config_check() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mfad.toml");
    std::fs::write(&path, "unenrolled = \"link\"\n").unwrap();
    let err = mfad::config::Config::load(&path).unwrap_err().to_string();
    assert!(err.contains("public_url"), "{err}");
    std::fs::write(
        &path,
        "unenrolled = \"link\"\n[web]\npublic_url = \"https://mfa.example.org\"\n",
    )
    .unwrap();
    let c = mfad::config::Config::load(&path).unwrap();
    assert_eq!(c.unenrolled, Unenrolled::Link);
    assert_eq!(c.web.enroll_link_ttl, 900);
}

// The enrolment page's requests (mfa-web's web role), answered by mfad.

use mfa_proto::web::Password;
use mfa_proto::{Closed, WebReply, WebRequest};
use mfa_test_support::TEST_PASSWORD;
use mfad::factor::totp::{self, HashAlgorithm, TotpParams};

fn web(d: &TestDaemon, request: WebRequest) -> WebReply {
    d.web(request)
}

fn open(d: &TestDaemon, token: &str) -> WebReply {
    web(
        d,
        WebRequest::OpenEnrolment {
            token: token.into(),
        },
    )
}

fn password(d: &TestDaemon, token: &str, password: &str) -> WebReply {
    web(
        d,
        WebRequest::EnrolmentPassword {
            token: token.into(),
            password: Password::new(password.into()),
            client: Some("198.51.100.4".into()),
        },
    )
}

fn begin(d: &TestDaemon, token: &str) -> WebReply {
    web(
        d,
        WebRequest::BeginTotp {
            token: token.into(),
        },
    )
}

fn confirm(d: &TestDaemon, token: &str, code: &str) -> WebReply {
    web(
        d,
        WebRequest::ConfirmTotp {
            token: token.into(),
            code: code.into(),
            client: None,
        },
    )
}

const GONE: WebReply = WebReply::Closed {
    why: Closed::Unknown,
};

fn params() -> TotpParams {
    TotpParams {
        algorithm: HashAlgorithm::Sha1,
        digits: 6,
        period: 30,
    }
}

/// The current code of the app whose base32 secret the page showed.
fn app_code(d: &TestDaemon, b32: &str) -> String {
    let secret = data_encoding::BASE32_NOPAD.decode(b32.as_bytes()).unwrap();
    let step = totp::step_of(now(d), params());
    totp::code_at_step(&secret, params(), step).to_string()
}

fn link_for_root(d: &TestDaemon) -> String {
    let (outcome, script) = login_from(d, "root", "192.0.2.7", true);
    assert_eq!(outcome, Outcome::Deny);
    token_shown(&script)
}

#[test]
fn the_page_enrols_an_app_after_the_password_and_a_code_once_and_the_next_login_asks_for_it() {
    // Links from anywhere, so that the next login (from 192.0.2.7) is asked.
    let d = TestDaemon::start(|c| {
        c.unenrolled = Unenrolled::Link;
        c.web.public_url = Some(BASE.into());
        c.policy.enroll_from_anywhere = true;
    });
    let token = link_for_root(&d);
    assert_eq!(
        open(&d, &token),
        WebReply::Enrolment {
            user: "root".into()
        }
    );
    // No secret before the password.
    assert_eq!(begin(&d, &token), WebReply::OutOfOrder);
    assert_eq!(
        password(&d, &token, "wrong"),
        WebReply::PasswordRefused { locked: false }
    );
    assert_eq!(d.store().lock_state("root").unwrap().failures, 1);
    assert_eq!(
        password(&d, &token, TEST_PASSWORD),
        WebReply::PasswordAccepted
    );
    let WebReply::NewApp { app } = begin(&d, &token) else {
        panic!("no app")
    };
    assert_eq!(app.user, "root");
    assert!(app.uri.starts_with("otpauth://totp/"), "{}", app.uri);
    assert!(app.uri.contains(&app.secret));
    assert_eq!(
        confirm(&d, &token, "000000"),
        WebReply::WrongCode { tries_left: 4 }
    );
    assert!(d.store().devices("root").unwrap().is_empty());
    let code = app_code(&d, &app.secret);
    assert_eq!(
        confirm(&d, &token, &code),
        WebReply::Enrolled {
            user: "root".into()
        }
    );
    assert_eq!(d.store().devices("root").unwrap().len(), 1);
    // One-time: the link is spent, whatever is asked next.
    assert_eq!(open(&d, &token), GONE);
    assert_eq!(confirm(&d, &token, &code), GONE);
    assert_eq!(password(&d, &token, TEST_PASSWORD), GONE);
    assert_eq!(d.store().devices("root").unwrap().len(), 1);

    // The next login asks for a code from the new app (the confirming step is spent).
    d.clock.advance(30);
    let (outcome, script) = d.login("root", &[&app_code(&d, &app.secret)]);
    assert_eq!(outcome, Outcome::Allow, "{}", script.text());
    assert!(!script.text().contains("/enroll/"));
}

#[test]
fn forged_and_expired_links_get_nothing_and_change_nothing() {
    let d = linking(true);
    let token = link_for_root(&d);
    let forged = format!("{}A", &token[..token.len() - 1]);
    let forged = if forged == token {
        format!("{}B", &token[..token.len() - 1])
    } else {
        forged
    };
    assert_eq!(open(&d, &forged), GONE);
    assert_eq!(password(&d, &forged, TEST_PASSWORD), GONE);
    assert_eq!(password(&d, "../../etc/passwd", TEST_PASSWORD), GONE);
    assert_eq!(d.store().lock_state("root").unwrap().failures, 0);

    assert_eq!(
        password(&d, &token, TEST_PASSWORD),
        WebReply::PasswordAccepted
    );
    let WebReply::NewApp { app } = begin(&d, &token) else {
        panic!("no app")
    };
    d.clock.advance(900);
    assert_eq!(open(&d, &token), GONE);
    assert_eq!(confirm(&d, &token, &app_code(&d, &app.secret)), GONE);
    assert!(d.store().devices("root").unwrap().is_empty());
}

#[test]
fn wrong_passwords_count_toward_the_lockout_and_a_link_takes_five() {
    let d = linking(true);
    let token = link_for_root(&d);
    for _ in 0..5 {
        assert_eq!(
            password(&d, &token, "guess"),
            WebReply::PasswordRefused { locked: false }
        );
    }
    assert_eq!(d.store().lock_state("root").unwrap().failures, 5);
    // The sixth is refused without being checked, even the right one.
    assert_eq!(
        password(&d, &token, TEST_PASSWORD),
        WebReply::PasswordRefused { locked: false }
    );
    assert_eq!(d.store().lock_state("root").unwrap().failures, 5);
    assert_eq!(begin(&d, &token), WebReply::OutOfOrder);
}

#[test]
fn a_locked_account_cannot_use_its_link() {
    let d = linking(true);
    let token = link_for_root(&d);
    d.store().lock_until("root", now(&d) + 3600).unwrap();
    assert_eq!(
        password(&d, &token, TEST_PASSWORD),
        WebReply::PasswordRefused { locked: true }
    );
    assert_eq!(begin(&d, &token), WebReply::OutOfOrder);
}

#[test]
fn a_page_idle_for_five_minutes_must_give_the_password_again() {
    let d = linking(true);
    let token = link_for_root(&d);
    assert_eq!(
        password(&d, &token, TEST_PASSWORD),
        WebReply::PasswordAccepted
    );
    let WebReply::NewApp { app } = begin(&d, &token) else {
        panic!("no app")
    };
    d.clock.advance(301);
    assert_eq!(
        confirm(&d, &token, &app_code(&d, &app.secret)),
        WebReply::OutOfOrder
    );
    assert!(d.store().devices("root").unwrap().is_empty());
    assert_eq!(begin(&d, &token), WebReply::OutOfOrder);
    assert_eq!(
        password(&d, &token, TEST_PASSWORD),
        WebReply::PasswordAccepted
    );
    assert!(matches!(begin(&d, &token), WebReply::NewApp { .. }));
}

#[test]
fn the_pages_progress_is_in_the_store_so_a_restarted_mfad_takes_the_next_step() {
    // What a cluster needs (any node's mfa-web serves the next step): the password accepted
    // and the new app are held with the link in the store, not in one mfad's memory.
    let dir = tempfile::tempdir().unwrap();
    let tune = |c: &mut mfad::Config| {
        c.unenrolled = Unenrolled::Link;
        c.web.public_url = Some(BASE.into());
        c.policy.enroll_from_anywhere = true;
        c.database = dir.path().join("mfa.db");
        c.store_key = dir.path().join("store.key");
    };
    let first = TestDaemon::start(tune);
    let token = link_for_root(&first);
    assert_eq!(
        password(&first, &token, TEST_PASSWORD),
        WebReply::PasswordAccepted
    );
    let WebReply::NewApp { app } = begin(&first, &token) else {
        panic!("no app")
    };
    assert_eq!(
        confirm(&first, &token, "000000"),
        WebReply::WrongCode { tries_left: 4 }
    );
    drop(first);

    let second = TestDaemon::start(tune);
    // The wrong code counted on the first is remembered by the second.
    assert_eq!(
        confirm(&second, &token, "000001"),
        WebReply::WrongCode { tries_left: 3 }
    );
    let code = app_code(&second, &app.secret);
    assert_eq!(
        confirm(&second, &token, &code),
        WebReply::Enrolled {
            user: "root".into()
        }
    );
    assert_eq!(second.store().devices("root").unwrap().len(), 1);
    assert_eq!(open(&second, &token), GONE);
}
