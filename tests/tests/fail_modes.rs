//! What pam_mfa does when mfad is down or does not answer: failmode=secure refuses,
//! failmode=safe lets the password login through. Neither hangs sshd.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mfa_e2e::{FailMode, TestEnv};
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

#[test]
fn mfad_stopped_with_failmode_secure_refuses_the_login() {
    let mut env = TestEnv::builder()
        .failmode(FailMode::Secure)
        .start()
        .unwrap();
    let mut device = env.enroll_totp().unwrap();
    env.stop_mfad();
    assert!(!env.mfad_running());

    let code = device.totp.fresh_code();
    let login = env.login(&[&code], "echo should not run").unwrap();

    assert!(login.refused(), "{}", login.describe());
    assert!(login.stdout.is_empty(), "{}", login.describe());
    assert_eq!(
        login.prompts_containing("Passcode: "),
        0,
        "{}",
        login.describe()
    );
}

#[test]
fn mfad_stopped_with_failmode_safe_lets_the_password_login_through() {
    let mut env = TestEnv::builder().failmode(FailMode::Safe).start().unwrap();
    let _device = env.enroll_totp().unwrap();
    env.stop_mfad();

    let login = env.login(&[], "echo in without mfad").unwrap();

    assert!(login.logged_in(), "{}", login.describe());
    assert_eq!(login.stdout.trim(), "in without mfad");
    assert_eq!(
        login.prompts.len(),
        1,
        "only the password: {}",
        login.describe()
    );
}

#[test]
fn mfad_running_with_failmode_safe_still_asks_for_the_code() {
    let env = TestEnv::builder().failmode(FailMode::Safe).start().unwrap();
    let device = env.enroll_totp().unwrap();
    let wrong = device.totp.wrong_code();

    let login = env
        .login(&[&wrong, &wrong, &wrong], "echo should not run")
        .unwrap();

    // mfad is up, so the fail mode plays no part: the user is asked for the code three
    // times and told each wrong one is wrong.
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
    let log = env.mfad_log();
    assert!(
        log.lines()
            .any(|l| l.contains(&format!("user={}", env.username())) && l.contains("outcome=deny")),
        "{log}"
    );
}

/// Replaces mfad by a socket that accepts connections and never answers.
fn silent_daemon(env: &mut TestEnv) -> UnixListener {
    env.stop_mfad();
    let _ = std::fs::remove_file(env.socket());
    UnixListener::bind(env.socket()).unwrap()
}

#[test]
fn silent_mfad_with_failmode_secure_refuses_within_the_timeout() {
    let mut env = TestEnv::builder().module_timeout(3).start().unwrap();
    let mut device = env.enroll_totp().unwrap();
    let _listener = silent_daemon(&mut env);

    let code = device.totp.fresh_code();
    let started = Instant::now();
    let login = env.login(&[&code], "echo should not run").unwrap();
    let took = started.elapsed();

    assert!(login.refused(), "{}", login.describe());
    assert!(
        took < Duration::from_secs(20),
        "took {took:?}: {}",
        login.describe()
    );
}

#[test]
fn silent_mfad_with_failmode_safe_lets_the_login_through_within_the_timeout() {
    let mut env = TestEnv::builder()
        .failmode(FailMode::Safe)
        .module_timeout(3)
        .start()
        .unwrap();
    let _device = env.enroll_totp().unwrap();
    let _listener = silent_daemon(&mut env);

    let started = Instant::now();
    let login = env.login(&[], "echo in despite a silent mfad").unwrap();
    let took = started.elapsed();

    assert!(login.logged_in(), "{}", login.describe());
    assert!(took < Duration::from_secs(20), "took {took:?}");
}

/// The audit's reproduction (issue 9, item 3): mfad's `answer_timeout` is 5 s; the user
/// types nothing for 7 s, then anything. mfad has asked, so only its verdict may end the
/// login: it refuses, and `failmode=safe` does not let the user in.
#[test]
fn waiting_at_the_prompt_past_mfads_answer_timeout_is_refused_even_with_failmode_safe() {
    use mfa_e2e::mfad::Mfad;
    use mfa_e2e::pam_login::{PamTester, finish};
    use std::io::Write;
    let mut env = TestEnv::builder()
        .failmode(FailMode::Safe)
        .pam_file(
            "auth required pam_mfa.so socket=/run/mfa/mfad.sock failmode=safe timeout=20 \
             connect_timeout=2\naccount required pam_permit.so\n",
        )
        .start()
        .unwrap();
    let mut device = env.enroll_totp().unwrap();
    env.stop_mfad();
    let mut config = env.config.clone();
    config.answer_timeout = 5;
    let _mfad = Mfad::start(&env.dir.join("mfad"), &config).unwrap();

    let started = Instant::now();
    let mut pamtester = PamTester::new(&env.pam_service())
        .spawn(env.username().as_bytes())
        .unwrap();
    // Answer only once mfad has given up waiting (it logs the refusal at its 5 s).
    let gave_up = mfa_e2e::clock::wait_for(Duration::from_secs(20), || {
        env.mfad_log()
            .contains("no answer within 5 s")
            .then_some(())
    });
    assert!(gave_up.is_some(), "{}", env.diagnostics());
    let late = device.totp.fresh_code();
    if let Some(mut stdin) = pamtester.stdin.take() {
        let _ = stdin.write_all(format!("{late}\n").as_bytes());
    }
    let login = finish(pamtester, started).unwrap();

    assert!(
        login.refused(),
        "{}\n{}",
        login.describe(),
        env.diagnostics()
    );
    assert!(
        login
            .shown()
            .contains("No answer within 5 seconds; login refused."),
        "{}",
        login.describe()
    );
    assert!(
        !login.shown().contains("continuing without it"),
        "{}",
        login.describe()
    );
    assert!(
        env.mfad_log()
            .contains("outcome=deny reason=\"no answer within 5 s\""),
        "{}",
        env.diagnostics()
    );
}
