//! The self-service portal end to end: headless Chromium signs in to the real mfa-web (beside
//! the real mfad) with the user's password (checked by mfad through the shipped PAM service)
//! and a code from the app `mfa enroll totp` set up, sees the device as the default method,
//! gets new bypass codes, and a real ssh login gets in with one of them. Screenshots under
//! `target/screenshots/`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mfa_e2e::TestEnv;
use mfa_e2e::browser::Browser;
use mfa_e2e::mfad::APPROVAL_PORT;
use mfa_e2e::sshd::PamService;

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
