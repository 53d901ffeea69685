//! The self-service portal end to end: headless Chromium signs in to the real mfa-web (beside
//! the real mfad) with the user's password (checked by mfad through the shipped PAM service)
//! and a code from the app `mfa enroll totp` set up, sees the device as the default method,
//! adds a second app (secret read from the page, a code typed) that a real ssh login then
//! uses, gets new bypass codes, and a real ssh login gets in with one of them. An admin
//! unlocks a user locked by real ssh failures. Screenshots under
//! `target/screenshots/`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mfa_e2e::browser::Browser;
use mfa_e2e::mfad::APPROVAL_PORT;
use mfa_e2e::scratch::unique_name;
use mfa_e2e::sshd::PamService;
use mfa_e2e::user::{TestGroup, TestUser};
use mfa_e2e::{TestEnv, TotpSecret};

#[test]
fn in_chromium_a_user_signs_in_with_password_and_code_and_new_bypass_codes_open_ssh() {
    let port = APPROVAL_PORT;
    let pam = PamService::shipped_web().unwrap();
    let toml = format!(
        "[approval]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\n\
         [web]\npublic_url = \"http://127.0.0.1:{port}\"\nportal = true\n\
         pam_service = \"{}\"\n",
        pam.name
    );
    let env = TestEnv::builder().mfad_toml(&toml).start().unwrap();
    let mut device = env.enroll_totp().unwrap();

    let browser = Browser::start(&env.dir);
    let web = env.web_port().unwrap();
    browser.open(&format!("http://127.0.0.1:{web}/portal"));
    assert_eq!(browser.wait_title("Sign in"), "Sign in");
    browser.type_into("#user", env.username());
    browser.type_into("#password", "not-the-password");
    browser.click("button[type=submit]");
    assert_eq!(browser.wait_title("Sign in"), "Sign in");
    assert!(
        browser.text("main").contains("do not match"),
        "{}",
        browser.text("main")
    );
    browser.type_into("#user", env.username());
    browser.type_into("#password", env.password());
    browser.screenshot("portal-1-sign-in.png");
    browser.click("button[type=submit]");
    assert_eq!(browser.wait_title("Second factor"), "Second factor");
    browser.type_into("#code", &device.totp.fresh_code());
    browser.click("button[type=submit]");
    assert_eq!(
        browser.wait_title("My two-factor settings"),
        "My two-factor settings"
    );
    browser.screenshot("portal-2-devices.png");
    let main = browser.text("main");
    assert!(main.contains(env.username()), "{main}");
    assert!(
        main.contains("default: used by scp, sftp, rsync and file transfer apps"),
        "{main}"
    );
    assert!(main.contains("0 unused"), "{main}");

    // Add a second authenticator app: read its secret from the page, type its code.
    browser.click("input[value=begin-app] ~ button");
    assert_eq!(
        browser.wait_title("Add an authenticator app"),
        "Add an authenticator app"
    );
    browser.screenshot("portal-2b-new-app.png");
    let mut new_app = TotpSecret::from_base32(&browser.text("#secret"), 6, 30, 1).unwrap();
    browser.type_into("#code", &new_app.current_code());
    browser.click("button[type=submit]");
    assert_eq!(browser.wait_title("Done"), "Done");
    assert!(
        browser
            .text("#note")
            .starts_with("Added \"Authenticator app 2\"."),
        "{}",
        browser.text("#note")
    );
    browser.open(&format!("http://127.0.0.1:{web}/portal"));
    assert_eq!(
        browser.wait_title("My two-factor settings"),
        "My two-factor settings"
    );
    let added = env
        .login(&[&new_app.fresh_code()], "echo by-new-app")
        .unwrap();
    assert!(added.logged_in(), "{}", added.describe());

    browser.click("input[value=new-bypass-codes] ~ button");
    assert_eq!(browser.wait_title("Done"), "Done");
    browser.screenshot("portal-3-bypass-codes.png");
    let codes: Vec<String> = browser
        .text("#codes")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(codes.len(), 10, "{codes:?}");

    let login = env.login(&[&codes[0]], "echo in-by-portal-code").unwrap();
    assert!(login.logged_in(), "{}", login.describe());
    assert!(login.stdout.contains("in-by-portal-code"));

    // mfad logged the portal's steps with the browser's address, never a code.
    let log = env.mfad_log();
    assert!(
        log.lines()
            .any(|l| l.contains("portal; wrong password") && l.contains("127.0.0.1")),
        "{log}"
    );
    assert!(log.contains("portal; 10 new codes"), "{log}");
    assert!(!log.contains(&codes[1]), "{log}");
}

#[test]
fn in_chromium_an_admin_unlocks_a_user_locked_by_ssh_failures() {
    let port = APPROVAL_PORT;
    let pam = PamService::shipped_web().unwrap();
    let group = TestGroup::create().unwrap();
    let admin = TestUser::create(&unique_name()).unwrap();
    admin.join_group(&group.name).unwrap();
    let toml = format!(
        "user_cache = 0\n\
         [approval]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\n\
         [web]\npublic_url = \"http://127.0.0.1:{port}\"\nportal = true\n\
         pam_service = \"{}\"\nadmin_group = \"{}\"\n",
        pam.name, group.name
    );
    let env = TestEnv::builder()
        .lockout(3, 3600)
        .mfad_toml(&toml)
        .start()
        .unwrap();
    let mut victim = env.enroll_totp().unwrap();
    let (mut admin_app, _) = env.cli.enroll_totp(&admin, 6, 30, 1).unwrap();

    // Three wrong codes over ssh lock the user; the right code is then refused.
    let wrong = victim.totp.wrong_code();
    let login = env.login(&[&wrong, &wrong, &wrong], "true").unwrap();
    assert!(login.refused(), "{}", login.describe());
    let code = victim.totp.fresh_code();
    let locked = env.login(&[&code], "echo should not run").unwrap();
    assert!(locked.refused(), "{}", locked.describe());
    // The account was locked: the code was never checked, so it is still good.
    victim.totp.unused(&code);

    let browser = Browser::start(&env.dir);
    let web = env.web_port().unwrap();
    browser.open(&format!("http://127.0.0.1:{web}/portal"));
    assert_eq!(browser.wait_title("Sign in"), "Sign in");
    browser.type_into("#user", &admin.name);
    browser.type_into("#password", &admin.password);
    browser.click("button[type=submit]");
    assert_eq!(browser.wait_title("Second factor"), "Second factor");
    browser.type_into("#code", &admin_app.fresh_code());
    browser.click("button[type=submit]");
    assert_eq!(
        browser.wait_title("My two-factor settings"),
        "My two-factor settings"
    );
    let locked_list = browser.text("#locked");
    assert!(locked_list.contains(env.username()), "{locked_list}");
    browser.screenshot("portal-admin-1-locked.png");
    browser.click("#locked button");
    assert_eq!(browser.wait_title("Done"), "Done");
    let note = browser.text("#note");
    assert_eq!(
        note,
        format!(
            "{} is unlocked and its failure count is cleared.",
            env.username()
        )
    );
    browser.screenshot("portal-admin-2-unlocked.png");

    let back = env
        .login(&[&victim.totp.fresh_code()], "echo back-in")
        .unwrap();
    assert!(back.logged_in(), "{}", back.describe());
    let log = env.mfad_log();
    assert!(
        log.contains(&format!(
            "admin action=web-unlock user={} by={}",
            env.username(),
            admin.name
        )),
        "{log}"
    );
}
