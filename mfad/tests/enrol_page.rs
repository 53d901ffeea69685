//! mfa-web's enrolment pages (`unenrolled = "link"`), served in-process beside the test
//! daemon and relaying to it over its socket, driven with plain HTTP requests: the CSRF
//! token and its cookie, the security headers, the whole flow, a spent link. Needs root
//! (mfa-web refuses a socket root does not own).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mfa_proto::{AuthContext, Operation, Outcome};
use mfa_test_support::http::{between, get, post};
use mfa_test_support::{TEST_PASSWORD, TestDaemon};
use mfad::config::Unenrolled;
use mfad::factor::totp::{self, HashAlgorithm, TotpParams};

fn daemon() -> TestDaemon {
    TestDaemon::start(|c| {
        c.unenrolled = Unenrolled::Link;
        c.web.public_url = Some("https://mfa.example.org".into());
        c.policy.enroll_from_anywhere = true;
    })
}

/// The path of the link an unenrolled login of root was shown (`/enroll/TOKEN`).
fn link_path(d: &TestDaemon) -> String {
    let op = Operation::Authenticate(AuthContext {
        user: "root".into(),
        service: "sshd".into(),
        rhost: Some("192.0.2.7".into()),
        ..Default::default()
    });
    let (outcome, script) = d.run(op, &[]);
    assert_eq!(outcome.unwrap(), Outcome::Deny);
    let text = script.text();
    let at = text.find("https://mfa.example.org/enroll/").unwrap();
    let rest = &text[at + "https://mfa.example.org".len()..];
    rest.split_whitespace().next().unwrap().to_string()
}

fn params() -> TotpParams {
    TotpParams {
        algorithm: HashAlgorithm::Sha1,
        digits: 6,
        period: 30,
    }
}

#[test]
fn the_page_sets_a_strict_cookie_refuses_posts_without_its_csrf_token_and_enrols_once() {
    let d = daemon();
    let url = format!("{}{}", d.web_url().unwrap(), link_path(&d));

    let page = get(&url, None);
    assert_eq!(page.status, 200, "{}", page.body);
    let cookie = page.headers["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.starts_with("mfa_enrol="), "{cookie}");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(!cookie.contains("Secure"), "plain http: {cookie}");
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("script-src"), "no script allowed: {csp}");
    assert_eq!(page.headers["referrer-policy"], "no-referrer");
    assert!(
        page.body.contains("<label for=\"password\">"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("<script"), "{}", page.body);
    let csrf = between(&page.body, "name=\"csrf\" value=\"", "\"").to_string();
    let cookie_pair = cookie.split(';').next().unwrap().to_string();
    assert_eq!(cookie_pair, format!("mfa_enrol={csrf}"));

    // A post without the cookie (another site's form), or with another token: refused,
    // and the password is not even checked (no failure counted, nothing started).
    let form = [
        ("csrf", csrf.as_str()),
        ("step", "password"),
        ("password", TEST_PASSWORD),
    ];
    let page = post(&url, None, &form);
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(page.body.contains("Nothing was changed"), "{}", page.body);
    let forged = [
        ("csrf", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        ("step", "password"),
        ("password", "wrong"),
    ];
    let page = post(&url, Some(&cookie_pair), &forged);
    assert_eq!(page.status, 403, "{}", page.body);
    assert_eq!(d.store().lock_state("root").unwrap().failures, 0);

    // With both: the app page, its QR code as inline SVG and the secret.
    let page = post(&url, Some(&cookie_pair), &form);
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("<svg"), "{}", page.body);
    assert!(page.body.contains("<label for=\"code\">"), "{}", page.body);
    let secret = between(&page.body, "<code id=\"secret\">", "<").to_string();
    let secret = data_encoding::BASE32_NOPAD
        .decode(secret.as_bytes())
        .unwrap();
    let step = totp::step_of(mfad::Clock::now(&d.clock), params());
    let code = totp::code_at_step(&secret, params(), step).to_string();
    let page = post(
        &url,
        Some(&cookie_pair),
        &[("csrf", &csrf), ("step", "code"), ("code", &code)],
    );
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body
            .contains("Your next ssh login asks for a code from this app"),
        "{}",
        page.body
    );
    assert_eq!(d.store().devices("root").unwrap().len(), 1);

    // Spent: a clear page, and nothing more is enrolled.
    let page = get(&url, None);
    assert_eq!(page.status, 404);
    assert!(page.body.contains("already used"), "{}", page.body);
    let page = post(
        &url,
        Some(&cookie_pair),
        &[("csrf", &csrf), ("step", "code"), ("code", &code)],
    );
    assert_eq!(page.status, 404, "{}", page.body);
    assert_eq!(d.store().devices("root").unwrap().len(), 1);
}

#[test]
fn a_forged_link_gets_a_clear_page() {
    let d = daemon();
    let base = d.web_url().unwrap();
    let page = get(
        &format!("{base}/enroll/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        None,
    );
    assert_eq!(page.status, 404);
    assert!(page.body.contains("Enrolment link closed"), "{}", page.body);
    assert!(page.headers.get("set-cookie").is_none());
}
