//! The harness on its own, without the second factor: if these fail, the harness or the
//! machine is broken, not mfa.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mfa_e2e::TestEnv;

#[test]
fn password_only_login_through_the_private_sshd_runs_a_command() {
    let env = TestEnv::builder().without_second_factor().start().unwrap();
    let login = env.login(&[], "echo hello from $(id -un)").unwrap();
    assert!(login.logged_in(), "{}", login.describe());
    assert_eq!(
        login.stdout.trim(),
        format!("hello from {}", env.username())
    );
    assert_eq!(login.prompts.len(), 1, "{}", login.describe());
    assert_eq!(
        login.prompts[0],
        format!("({}@127.0.0.1) Password: ", env.username())
    );
}

#[test]
fn wrong_password_is_refused_by_the_password_only_stack() {
    let env = TestEnv::builder().without_second_factor().start().unwrap();
    let login = env.client.login(&["not-the-password"], "true").unwrap();
    assert!(login.refused(), "{}", login.describe());
    assert_eq!(login.prompts.len(), 1, "{}", login.describe());
}
