//! The examples an admin copies (conf/pam.d-sshd, conf/sshd_config.snippet) work as shipped:
//! the full Debian sshd PAM stack with the one pam_mfa line asks for the password, then the
//! second factor.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mfa_e2e::TestEnv;
use mfa_e2e::paths::workspace_root;

fn shipped(name: &str) -> String {
    std::fs::read_to_string(workspace_root().join("conf").join(name)).unwrap()
}

#[test]
fn shipped_pam_and_sshd_examples_ask_for_password_then_passcode() {
    let env = TestEnv::builder()
        .pam_file(&shipped("pam.d-sshd"))
        .sshd_config_head(&shipped("sshd_config.snippet"))
        .start()
        .unwrap();
    let mut device = env.enroll_totp().unwrap();

    let code = device.totp.fresh_code();
    let login = env
        .login(&[&code], "echo through the shipped stack")
        .unwrap();
    assert!(login.logged_in(), "{}", login.describe());
    assert_eq!(login.stdout.trim(), "through the shipped stack");
    assert_eq!(login.prompts.len(), 2, "{}", login.describe());
    assert!(
        login.prompts[1].ends_with("Passcode: "),
        "{}",
        login.describe()
    );

    let wrong = device.totp.wrong_code();
    let refused = env.login(&[&wrong, &wrong, &wrong], "echo no").unwrap();
    assert!(refused.refused(), "{}", refused.describe());
}

#[test]
fn shipped_pam_stack_refuses_a_wrong_password_before_the_second_factor() {
    let env = TestEnv::builder()
        .pam_file(&shipped("pam.d-sshd"))
        .sshd_config_head(&shipped("sshd_config.snippet"))
        .start()
        .unwrap();
    let _device = env.enroll_totp().unwrap();

    let login = env
        .client
        .login(&["wrong password", "123456"], "echo no")
        .unwrap();
    assert!(login.refused(), "{}", login.describe());
    assert_eq!(
        login.prompts_containing("Passcode: "),
        0,
        "{}",
        login.describe()
    );
}
