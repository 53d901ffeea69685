//! Logging in with a password and a TOTP code, with the real ssh, scp and a real terminal.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mfa_e2e::TestEnv;

#[test]
fn password_and_current_totp_code_log_in_and_the_command_runs() {
    let env = TestEnv::new().unwrap();
    let mut device = env.enroll_totp().unwrap();
    let user = env.username();

    let code = device.totp.fresh_code();
    let login = env.login(&[&code], "echo logged in as $(id -un)").unwrap();
    println!("{}", login.describe());

    assert!(login.logged_in(), "{}", login.describe());
    assert_eq!(login.stdout.trim(), format!("logged in as {user}"));
    // What the user saw: the password, then one second-factor prompt naming the account.
    assert_eq!(login.prompts.len(), 2, "{}", login.describe());
    assert!(
        login.prompts[0].ends_with("Password: "),
        "{}",
        login.describe()
    );
    assert!(
        login.prompts[1].contains(&format!("Two-factor login for {user}")),
        "{}",
        login.describe()
    );
    assert!(
        login.prompts[1].ends_with("Passcode: "),
        "{}",
        login.describe()
    );
    // The decision is logged with user, remote host, method and outcome, never the code.
    let log = env.mfad_log();
    let decision = log
        .lines()
        .find(|l| l.contains(&format!("user={user}")) && l.contains("outcome=allow"))
        .unwrap_or_else(|| panic!("no allow decision for {user} in the mfad log:\n{log}"));
    assert!(decision.contains("rhost=127.0.0.1"), "{decision}");
    assert!(decision.contains("method=totp"), "{decision}");
    assert!(
        !log.contains(&code),
        "the passcode leaked into the log:\n{log}"
    );
}

#[test]
fn wrong_code_is_refused_after_three_attempts() {
    let env = TestEnv::new().unwrap();
    let device = env.enroll_totp().unwrap();
    let wrong = device.totp.wrong_code();

    let login = env
        .login(&[&wrong, &wrong, &wrong], "echo should not run")
        .unwrap();

    assert!(login.refused(), "{}", login.describe());
    assert!(login.stdout.is_empty(), "{}", login.describe());
    assert_eq!(
        login.prompts_containing("Passcode: "),
        3,
        "{}",
        login.describe()
    );
    assert!(
        login.shown().contains("Incorrect passcode"),
        "{}",
        login.describe()
    );
}

#[test]
fn mistyped_code_can_be_corrected_within_the_same_login() {
    let env = TestEnv::new().unwrap();
    let mut device = env.enroll_totp().unwrap();
    let wrong = device.totp.wrong_code();
    let right = device.totp.fresh_code();

    let login = env.login(&[&wrong, &right], "echo second try").unwrap();
    println!("{}", login.describe());

    assert!(login.logged_in(), "{}", login.describe());
    assert_eq!(login.stdout.trim(), "second try");
    assert_eq!(
        login.prompts_containing("Passcode: "),
        2,
        "{}",
        login.describe()
    );
    assert!(
        login.prompts[2].contains("Incorrect passcode"),
        "the retry prompt should say why: {}",
        login.describe()
    );
}

#[test]
fn same_code_cannot_open_a_second_login() {
    let env = TestEnv::new().unwrap();
    let mut device = env.enroll_totp().unwrap();
    let code = device.totp.fresh_code();

    let first = env.login(&[&code], "echo first").unwrap();
    assert!(first.logged_in(), "{}", first.describe());

    let second = env.login(&[&code, &code, &code], "echo second").unwrap();
    println!("{}", second.describe());
    assert!(second.refused(), "{}", second.describe());
    assert!(second.stdout.is_empty(), "{}", second.describe());
    assert!(
        second.shown().contains("already used"),
        "the user should learn the code was spent: {}",
        second.describe()
    );

    // The account itself is fine: the next code opens the next login.
    let next = device.totp.fresh_code();
    let third = env.login(&[&next], "echo third").unwrap();
    assert!(third.logged_in(), "{}", third.describe());
}

#[test]
fn scp_copies_a_file_after_the_second_factor() {
    let env = TestEnv::new().unwrap();
    let mut device = env.enroll_totp().unwrap();
    let local = env.dir.join("payload.txt");
    std::fs::write(&local, "carried by scp\n").unwrap();

    let code = device.totp.fresh_code();
    let answers = [env.password(), code.as_str()];
    let copy = env
        .client
        .scp_upload(&local, "payload.txt", &answers)
        .unwrap();

    assert_eq!(copy.status, Some(0), "{}", copy.describe());
    assert_eq!(
        copy.prompts_containing("Passcode: "),
        1,
        "{}",
        copy.describe()
    );
    let landed = format!("{}/payload.txt", env.user().unwrap().home);
    assert_eq!(
        std::fs::read_to_string(&landed).unwrap(),
        "carried by scp\n"
    );
}

#[test]
fn interactive_terminal_login_asks_for_password_then_passcode() {
    let env = TestEnv::new().unwrap();
    let mut device = env.enroll_totp().unwrap();
    let code = device.totp.fresh_code();

    let session = env.terminal_login(&code).unwrap();
    println!("{}", session.describe());

    assert_eq!(session.status, Some(0), "{}", session.describe());
    let screen = &session.screen;
    let password_at = screen.find("Password: ").unwrap();
    let banner_at = screen
        .find(&format!("Two-factor login for {}", env.username()))
        .unwrap_or_else(|| panic!("no two-factor banner on the terminal:\n{screen}"));
    let passcode_at = screen.find("Passcode: ").unwrap();
    assert!(
        password_at < banner_at && banner_at < passcode_at,
        "{screen}"
    );
    assert!(screen.contains("E2E-42"), "{screen}");
}
