//! mfa-web's portal pages (`[web] portal = true`), served in-process beside the test daemon
//! and driven with plain HTTP requests as a browser's forms send them: the sign-in form's
//! CSRF cookie, the session cookie's attributes, forged forms refused with nothing changed,
//! the second factor, new bypass codes shown once, sign-out.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mfa_proto::Outcome;
use mfa_test_support::http::{between, get, post};
use mfa_test_support::{TEST_PASSWORD, TestDaemon};
use mfad::factor::totp::{self, TotpParams};

const SECRET: &[u8] = b"12345678901234567890";

fn code(d: &TestDaemon) -> String {
    let step = totp::step_of(mfad::Clock::now(&d.clock), TotpParams::default());
    totp::code_at_step(SECRET, TotpParams::default(), step).to_string()
}

#[test]
fn sign_in_with_password_and_code_get_new_bypass_codes_once_and_sign_out() {
    let d = TestDaemon::start(|c| {
        c.web.portal = true;
        c.web.public_url = Some("https://mfa.example.org".into());
    });
    let now = mfad::Clock::now(&d.clock);
    let step = totp::step_of(now, TotpParams::default());
    d.store()
        .add_totp_device(
            "root",
            "phone app",
            SECRET,
            TotpParams::default(),
            step - 1,
            now,
        )
        .unwrap();
    let base = d.web_url().unwrap();
    let portal = format!("{base}/portal");

    // The sign-in form: its token equals a strict cookie.
    let page = get(&portal, None);
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("<label for=\"user\">"), "{}", page.body);
    assert!(!page.body.contains("<script"), "{}", page.body);
    let set = page.set_cookie("mfa_signin").unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/portal"] {
        assert!(set.contains(attribute), "{set}");
    }
    let signin = page.cookie("mfa_signin").unwrap();
    let csrf = between(&page.body, "name=\"csrf\" value=\"", "\"").to_string();
    assert_eq!(signin, format!("mfa_signin={csrf}"));
    let form = [
        ("csrf", csrf.as_str()),
        ("user", "root"),
        ("password", TEST_PASSWORD),
    ];
    // Another site's form carries no cookie: refused before the password is checked.
    let page = post(&format!("{portal}/sign-in"), None, &form);
    assert_eq!(page.status, 403, "{}", page.body);
    let wrong = [
        ("csrf", csrf.as_str()),
        ("user", "root"),
        ("password", "no"),
    ];
    let page = post(&format!("{portal}/sign-in"), Some(&signin), &wrong);
    assert_eq!(page.status, 200);
    assert!(page.body.contains("do not match"), "{}", page.body);
    assert_eq!(d.store().lock_state("root").unwrap().failures, 1);

    let page = post(&format!("{portal}/sign-in"), Some(&signin), &form);
    assert_eq!(page.status, 303, "{}", page.body);
    assert_eq!(page.headers["location"], "/portal");
    let set = page.set_cookie("mfa_session").unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/portal"] {
        assert!(set.contains(attribute), "{set}");
    }
    let session = page.cookie("mfa_session").unwrap();

    // The code form, with the session's own token.
    let page = get(&portal, Some(&session));
    assert!(
        page.body.contains("<h1>Second factor</h1>"),
        "{}",
        page.body
    );
    let csrf = between(&page.body, "name=\"csrf\" value=\"", "\"").to_string();
    let page = post(
        &format!("{portal}/code"),
        Some(&session),
        &[("csrf", &csrf), ("code", "000000")],
    );
    assert!(page.body.contains("4 tries left"), "{}", page.body);
    let page = post(
        &format!("{portal}/code"),
        Some(&session),
        &[("csrf", &csrf), ("code", &code(&d))],
    );
    assert_eq!(page.status, 303, "{}", page.body);
    let page = get(&portal, Some(&session));
    assert!(
        page.body.contains("My two-factor settings"),
        "{}",
        page.body
    );
    assert!(page.body.contains("phone app"), "{}", page.body);
    assert!(
        page.body
            .contains("default: used by scp, sftp, rsync and file transfer apps"),
        "{}",
        page.body
    );
    assert!(page.body.contains("0 unused"), "{}", page.body);

    // Every device has a labelled rename form; renaming through it.
    assert!(
        page.body.contains("<label for=\"name-1\">"),
        "{}",
        page.body
    );
    let id = d.store().devices("root").unwrap()[0].id.to_string();
    let page = post(
        &format!("{portal}/change"),
        Some(&session),
        &[
            ("csrf", &csrf),
            ("action", "rename"),
            ("device", &id),
            ("name", "work phone"),
        ],
    );
    assert!(page.body.contains("is now called"), "{}", page.body);
    assert_eq!(d.store().devices("root").unwrap()[0].name, "work phone");

    // A change without the session's token: refused, nothing changed.
    let page = post(
        &format!("{portal}/change"),
        Some(&session),
        &[("csrf", "forged"), ("action", "new-bypass-codes")],
    );
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(d.store().unused_bypass_codes("root").unwrap().is_empty());

    let page = post(
        &format!("{portal}/change"),
        Some(&session),
        &[("csrf", &csrf), ("action", "new-bypass-codes")],
    );
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(page.headers["cache-control"], "no-store");
    let list = between(&page.body, "<ol id=\"codes\" class=\"codes\">", "</ol>");
    let codes: Vec<&str> = list
        .split("<code>")
        .skip(1)
        .filter_map(|c| c.split('<').next())
        .collect();
    assert_eq!(codes.len(), 10, "{list}");
    let (outcome, script) = d.login("root", &[codes[0]]);
    assert_eq!(outcome, Outcome::Allow, "{}", script.text());

    // Signed out: the session is gone from the store; the old cookie gets the sign-in form.
    let page = post(
        &format!("{portal}/sign-out"),
        Some(&session),
        &[("csrf", &csrf)],
    );
    assert!(page.body.contains("Signed out"), "{}", page.body);
    let page = get(&portal, Some(&session));
    assert!(page.body.contains("<h1>Sign in</h1>"), "{}", page.body);
    let page = post(
        &format!("{portal}/change"),
        Some(&session),
        &[("csrf", &csrf), ("action", "new-bypass-codes")],
    );
    assert!(!page.body.contains("<ol id=\"codes\""), "{}", page.body);
}
