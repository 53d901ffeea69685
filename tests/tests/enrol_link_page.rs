//! `unenrolled = "link"` end to end: a real ssh login of an unenrolled throwaway user prints
//! the enrolment link and is refused; headless Chromium opens the link (served by the real
//! mfa-web beside the real mfad), types the user's password (checked by mfad through PAM),
//! reads the new app's secret from the page and types a code from it; a second real ssh
//! login with a code from that secret gets in. Screenshots under `target/screenshots/`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mfa_e2e::browser::Browser;
use mfa_e2e::mfad::APPROVAL_PORT;
use mfa_e2e::sshd::PamService;
use mfa_e2e::{TestEnv, TotpSecret};

#[test]
fn an_unenrolled_ssh_login_gets_a_link_and_the_page_in_chromium_enrols_the_app_for_the_next_login()
{
    let port = APPROVAL_PORT;
    // The password is checked through the PAM service the package ships.
    let pam = PamService::shipped_web().unwrap();
    let service = &pam.name;
    // mfa-web starts beside mfad when [approval] has `listen`; links point to it.
    let toml = format!(
        "[approval]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\n\
         [web]\npublic_url = \"http://127.0.0.1:{port}\"\npam_service = \"{service}\"\n\
         [policy]\nenroll_from_anywhere = true\n"
    );
    let env = TestEnv::builder()
        .unenrolled("link")
        .mfad_toml(&toml)
        .start()
        .unwrap();

    let login = env.login(&[], "echo should not run").unwrap();
    println!("{}", login.describe());
    assert!(login.refused(), "{}", login.describe());
    assert!(!login.stdout.contains("should not run"));
    let shown = login.shown();
    let link = shown
        .split_whitespace()
        .find(|w| w.contains("/enroll/"))
        .unwrap_or_else(|| panic!("no link shown:\n{}", login.describe()))
        .to_string();
    assert!(
        shown.contains(&format!("Please enroll at {link}")),
        "{shown}"
    );
    assert!(
        env.mfad_log()
            .contains("not enrolled; enrolment link issued"),
        "{}",
        env.mfad_log()
    );

    let browser = Browser::start(&env.dir);
    browser.open(&link);
    assert_eq!(
        browser.wait_title("Set up two-factor login"),
        "Set up two-factor login"
    );
    browser.screenshot("enrol-link-1-password.png");
    // A wrong password: PAM (through mfad) refuses it, and it counts toward the lockout.
    browser.type_into("#password", "not-the-password");
    browser.click("button[type=submit]");
    // The same title before and after: wait for the answer's words.
    let main = browser.wait_text("main", "That password is not right");
    assert!(main.contains("That password is not right"), "{main}");
    assert_eq!(browser.title(), "Set up two-factor login");
    // Logged with the browser's address (mfa-web passes it; PAM gets it as PAM_RHOST).
    let log = env.mfad_log();
    assert!(
        log.lines()
            .any(|l| l.contains("enrolment page; wrong password") && l.contains("127.0.0.1")),
        "{log}"
    );
    browser.type_into("#password", env.password());
    browser.click("button[type=submit]");
    assert_eq!(browser.wait_title("Add the app"), "Add the app");
    browser.screenshot("enrol-link-2-app.png");
    let secret = browser.text("#secret");
    let mut totp = TotpSecret::from_base32(&secret, 6, 30, 1).unwrap();
    browser.type_into("#code", &totp.current_code());
    browser.click("button[type=submit]");
    assert_eq!(browser.wait_title("Done"), "Done");
    browser.screenshot("enrol-link-3-done.png");
    assert!(
        browser
            .text("main")
            .contains("Your next ssh login asks for a code from this app"),
        "{}",
        browser.text("main")
    );

    // The link is spent.
    browser.open(&link);
    assert_eq!(
        browser.wait_title("Enrolment link closed"),
        "Enrolment link closed"
    );

    let login = env.login(&[&totp.fresh_code()], "echo logged-in").unwrap();
    println!("{}", login.describe());
    assert!(login.logged_in(), "{}", login.describe());
    assert!(login.stdout.contains("logged-in"));
    assert!(!login.shown().contains("/enroll/"), "{}", login.describe());
}
