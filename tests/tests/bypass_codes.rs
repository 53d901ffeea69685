//! Bypass codes: ten single-use codes, made by the user or issued by an admin.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mfa_e2e::TestEnv;

#[test]
fn bypass_code_opens_one_login_only() {
    let env = TestEnv::new().unwrap();
    let mut device = env.enroll_totp().unwrap();
    let codes = env.user_bypass_codes(&mut device).unwrap();
    assert_eq!(codes.len(), 10);

    let first = env.login(&[&codes[0]], "echo by bypass code").unwrap();
    assert!(first.logged_in(), "{}", first.describe());
    assert_eq!(first.stdout.trim(), "by bypass code");

    let again = env
        .login(&[&codes[0], &codes[0], &codes[0]], "echo should not run")
        .unwrap();
    assert!(again.refused(), "{}", again.describe());
    assert!(again.stdout.is_empty(), "{}", again.describe());
    assert!(
        again
            .shown()
            .contains("That bypass code was already used; each one works once."),
        "{}",
        again.describe()
    );

    // Another code of the set still works.
    let other = env.login(&[&codes[1]], "echo second code").unwrap();
    assert!(other.logged_in(), "{}", other.describe());
}

#[test]
fn admin_issued_bypass_codes_let_a_user_who_lost_their_phone_in() {
    let env = TestEnv::new().unwrap();
    let _lost = env.enroll_totp().unwrap();

    let reset = env.admin("reset").unwrap();
    assert_eq!(reset.status, Some(0), "{}", reset.describe());
    let codes = env.admin_bypass_codes().unwrap();

    let login = env.login(&[&codes[3]], "echo back in").unwrap();
    assert!(login.logged_in(), "{}", login.describe());
    assert_eq!(login.stdout.trim(), "back in");
}
