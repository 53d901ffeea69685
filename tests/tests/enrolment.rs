//! Enrolling with `mfa enroll totp`, and what happens to users who have not.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mfa_e2e::TestEnv;

#[test]
fn enrolment_shows_secret_otpauth_uri_and_qr_code() {
    let env = TestEnv::new().unwrap();
    let device = env.enroll_totp().unwrap();
    let out = &device.output.stdout;

    assert_eq!(
        device.output.status,
        Some(0),
        "{}",
        device.output.describe()
    );
    let uri = out
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("otpauth://totp/"))
        .unwrap_or_else(|| panic!("no otpauth:// line:\n{out}"));
    assert!(
        uri.contains(&format!("secret={}", device.totp.base32())),
        "{uri}"
    );
    assert!(uri.contains(env.username()), "{uri}");
    assert!(uri.contains("issuer=mfa-e2e"), "{uri}");
    // The QR code drawn in the terminal is that URI, as a phone's camera reads it.
    let scanned = mfa_e2e::qr::decode_drawn_qr(out, &env.dir).unwrap();
    assert_eq!(scanned, uri);
}

#[test]
fn enrolment_with_a_wrong_code_enrols_nothing() {
    let env = TestEnv::new().unwrap();
    let user = env.user().unwrap();

    let out = env
        .cli
        .as_user(user, &["enroll", "totp"], "000000\n")
        .unwrap();
    assert_ne!(out.status, Some(0), "{}", out.describe());

    let login = env.login(&["000000"], "echo should not run").unwrap();
    assert!(login.refused(), "{}", login.describe());
    assert!(
        login.shown().contains("mfa enroll totp"),
        "{}",
        login.describe()
    );
}

#[test]
fn unenrolled_user_is_refused_with_a_hint_to_enrol() {
    let env = TestEnv::new().unwrap();

    let login = env.login(&[], "echo should not run").unwrap();
    println!("{}", login.describe());

    assert!(login.refused(), "{}", login.describe());
    assert_eq!(
        login.prompts_containing("Passcode: "),
        0,
        "{}",
        login.describe()
    );
    assert!(
        login.shown().contains("mfa enroll totp"),
        "{}",
        login.describe()
    );
}

#[test]
fn unenrolled_user_logs_in_with_the_password_when_unenrolled_is_allow() {
    let env = TestEnv::builder().allow_unenrolled().start().unwrap();

    let login = env.login(&[], "echo password only").unwrap();

    assert!(login.logged_in(), "{}", login.describe());
    assert_eq!(login.stdout.trim(), "password only");
    assert_eq!(login.prompts.len(), 1, "{}", login.describe());
}

#[test]
fn admin_reset_removes_the_enrolment() {
    let env = TestEnv::new().unwrap();
    let mut device = env.enroll_totp().unwrap();

    let reset = env.admin("reset").unwrap();
    assert_eq!(reset.status, Some(0), "{}", reset.describe());

    let code = device.totp.fresh_code();
    let login = env.login(&[&code], "echo should not run").unwrap();
    assert!(login.refused(), "{}", login.describe());
    assert!(
        login.shown().contains("mfa enroll totp"),
        "{}",
        login.describe()
    );
}
