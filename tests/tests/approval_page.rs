//! The approval page as a person meets it: Debian's Chromium, headless, driven through
//! chromedriver's W3C WebDriver API, opens the link of the push that ntfy was asked to send,
//! shows the login's context and takes the tap that lets the waiting ssh login in (or denies
//! and reports it). Screenshots are kept under `target/screenshots/` (see
//! [`mfa_e2e::browser`]).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mfa_e2e::browser::Browser;
use mfa_e2e::fake_phone::{
    ACCOUNT_SID, AUTH_TOKEN, Answer, FROM, FakePhone, PUSH_TOKEN, approval_link,
};
use mfa_e2e::mfad::APPROVAL_PORT;
use mfa_e2e::{LoginOutcome, TestEnv};
use std::time::Duration;

/// Long enough for a browser on a busy two-core machine, short enough to fail fast.
const TOKEN_TTL: u64 = 30;

/// A world whose pushes go to the fake ntfy, with a push device added (the fake phone
/// approved the test push); from then on the phone only records, and Chromium answers.
fn world(phone: &FakePhone) -> TestEnv {
    let port = APPROVAL_PORT;
    let toml = format!(
        "[approval]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\n\
         token_ttl = {TOKEN_TTL}\n\
         [push]\nurl = \"{ntfy}\"\ntoken = \"{PUSH_TOKEN}\"\ntimeout = 3\n\
         [twilio]\napi_base = \"{twilio}\"\naccount_sid = \"{ACCOUNT_SID}\"\n\
         auth_token = \"{AUTH_TOKEN}\"\nfrom = \"{FROM}\"\ntimeout = 3\n",
        ntfy = phone.ntfy_url(),
        twilio = phone.twilio_url(),
    );
    let env = TestEnv::builder()
        .module_timeout(60)
        .mfad_toml(&toml)
        .start()
        .unwrap();
    let out = env
        .cli
        .as_user(
            env.user().unwrap(),
            &["add", "push", "--name", "Pixel 8"],
            // Enter once subscribed to the generated topic, Enter at the test push.
            "\n\n",
        )
        .unwrap();
    assert_eq!(out.status, Some(0), "{}", out.describe());
    phone.on_push(Answer::Ignore);
    env
}

/// Starts an ssh login that picks the push (option 1) while the test plays the phone's
/// owner in Chromium with `act`; returns the login once ssh ends.
fn login_while(env: &TestEnv, command: &str, act: impl FnOnce()) -> LoginOutcome {
    std::thread::scope(|s| {
        let login = s.spawn(|| env.login(&["1", ""], command).unwrap());
        act();
        let login = login.join().unwrap();
        println!("{}", login.describe());
        login
    })
}

/// Opens the login's push in Chromium and checks the page names the login.
fn open_the_push(browser: &Browser, phone: &FakePhone, env: &TestEnv, shot: &str) {
    // The test push of `mfa add push` was the first; this login's is the second.
    let note = phone
        .wait_notification(2, Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no push for the login:\n{}", env.diagnostics()));
    let link = approval_link(&note).unwrap();
    browser.open(&link);
    assert_eq!(browser.title(), "Login request");
    let text = browser.text("main");
    println!("the page says:\n{text}");
    let user = env.username();
    for part in [
        format!("Someone is logging in as {user}."),
        // The context, one term and its value per line as the grid lays them out.
        format!("User\n{user}\n"),
        "Host\nmfa-e2e\n".to_string(),
        "From\n127.0.0.1\n".to_string(),
        "Time\n".to_string(),
        "Approve".to_string(),
        "Deny and report".to_string(),
    ] {
        assert!(text.contains(&part), "the page lacks {part:?}:\n{text}");
    }
    browser.screenshot(shot);
}

#[test]
fn approving_in_chromium_lets_the_waiting_ssh_login_in() {
    let phone = FakePhone::start().unwrap();
    let env = world(&phone);
    let browser = Browser::start(&env.dir);
    let login = login_while(&env, "echo approved in chromium", || {
        open_the_push(&browser, &phone, &env, "approval-page.png");
        browser.click("button.approve");
        assert_eq!(browser.wait_title("Approved"), "Approved");
        assert!(browser.text("main").contains("The login may go ahead."));
        browser.screenshot("approval-page-approved.png");
    });
    assert!(
        login.logged_in(),
        "{}\n{}",
        login.describe(),
        env.diagnostics()
    );
    assert_eq!(login.stdout.trim(), "approved in chromium");
    // The fake phone answered only the test push of `mfa add push`: Chromium let this login in.
    assert_eq!(phone.steps().len(), 2, "{:?}", phone.steps());
}

#[test]
fn deny_and_report_in_chromium_refuses_the_login_and_locks_the_account() {
    let phone = FakePhone::start().unwrap();
    let env = world(&phone);
    let browser = Browser::start(&env.dir);
    let login = login_while(&env, "echo should not run", || {
        open_the_push(&browser, &phone, &env, "approval-page-before-report.png");
        browser.click("button.report");
        assert_eq!(
            browser.wait_title("Denied and reported"),
            "Denied and reported"
        );
        browser.screenshot("approval-page-reported.png");
    });
    assert!(login.refused(), "{}", login.describe());
    assert!(login.stdout.is_empty());
    let status = env.admin("status").unwrap();
    assert!(
        status.stdout.contains("Locked:       yes"),
        "{}",
        status.describe()
    );
}
