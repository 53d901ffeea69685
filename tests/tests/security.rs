//! What the security review asked to be shown end to end (docs/SECURITY.md): what runs
//! before the second factor in each sshd setup.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mfa_e2e::TestEnv;
use mfa_e2e::env::{SftpSubsystem, SshSetup};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Makes the user's `~/.bashrc` leave a mark when it runs; returns the mark's path.
fn bashrc_marks(env: &TestEnv) -> PathBuf {
    let home = Path::new(&env.user().unwrap().home).to_path_buf();
    let mark = home.join("bashrc-ran");
    let rc = home.join(".bashrc");
    std::fs::write(&rc, format!("touch {}\n", mark.display())).unwrap();
    let status = Command::new("chown")
        .arg(format!("{}:", env.username()))
        .arg(&rc)
        .status()
        .unwrap();
    assert!(status.success());
    mark
}

/// sshd runs a ForceCommand through the user's shell, so with the helper setup the user's
/// shell start-up files run before the helper asks anything (docs/SECURITY.md, "What runs
/// before the second factor"). With the second factor in PAM, nothing of the user's runs
/// until it is passed.
#[test]
fn the_users_shell_files_run_before_the_helper_but_not_before_pam_mfa() {
    let env = TestEnv::builder()
        .setup(SshSetup::KeyThenLoginPrompt(SftpSubsystem::Server))
        .start()
        .unwrap();
    let _device = env.enroll_totp().unwrap();
    let mark = bashrc_marks(&env);
    // No terminal and no push or phone default: the helper refuses.
    let run = env.client.login(&[], "echo should-not-run").unwrap();
    assert_ne!(run.status, Some(0), "{}", run.describe());
    assert!(!run.stdout.contains("should-not-run"), "{}", run.describe());
    assert!(
        mark.exists(),
        "Debian's bash read ~/.bashrc for the ForceCommand before the helper refused; if this \
         changed, update docs/SECURITY.md"
    );
    drop(env);

    let env = TestEnv::builder()
        .setup(SshSetup::KeyThenPam)
        .pam_file(
            "auth required pam_mfa.so socket=/run/mfa/mfad.sock mode=auto\n\
             account required pam_unix.so\n\
             session required pam_unix.so\n",
        )
        .start()
        .unwrap();
    let mut device = env.enroll_totp().unwrap();
    let mark = bashrc_marks(&env);
    let run = env
        .client
        .login(&["000000", "000001", "000002"], "echo should-not-run")
        .unwrap();
    assert_ne!(run.status, Some(0), "{}", run.describe());
    assert!(!mark.exists(), "~/.bashrc ran before pam_mfa's refusal");
    // And it does run once the second factor is passed (the mark is a real probe).
    let run = env
        .client
        .login(&[&device.totp.fresh_code()], "true")
        .unwrap();
    assert_eq!(run.status, Some(0), "{}", run.describe());
    assert!(mark.exists());
}
