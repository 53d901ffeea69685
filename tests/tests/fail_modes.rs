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

    assert!(login.refused(), "{}", login.describe());
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
