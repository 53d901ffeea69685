//! mfad checks who is calling (SO_PEERCRED): only root may manage or authenticate others.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mfa_e2e::TestEnv;
use mfa_e2e::process::{run_with_input, text, timed};
use std::os::unix::process::CommandExt;
use std::time::Duration;

#[test]
fn non_root_user_cannot_run_admin_commands() {
    let env = TestEnv::new().unwrap();
    let user = env.user().unwrap();
    // The refusal comes from mfad, which saw the caller's uid on the socket.

    for args in [
        ["admin", "status", "root"],
        ["admin", "unlock", "root"],
        ["admin", "reset", "root"],
        ["admin", "bypass-codes", "root"],
        ["admin", "status", user.name.as_str()],
    ] {
        let out = env.cli.as_user(user, &args, "").unwrap();
        println!("mfa {args:?} as {}: {}", user.name, out.describe());
        assert_eq!(
            out.status,
            Some(1),
            "mfa {args:?} as a user:\n{}",
            out.describe()
        );
        assert!(
            out.stderr.contains("Only root"),
            "a refusal should say why: {}",
            out.describe()
        );
    }
}

#[test]
fn non_root_process_cannot_use_mfad_to_check_another_users_login() {
    // pam_mfa loaded by an unprivileged program (pamtester run as the user) reaches mfad. A
    // user may prove their own second factor (that is what the ForceCommand helper does, as
    // the user), but mfad refuses to check anyone else's, so it is no oracle for other users.
    // The stack has pam_mfa alone: pam_unix would stop an unprivileged caller before it.
    let env = TestEnv::builder()
        .pam_file(
            "auth required pam_mfa.so socket=/run/mfa/mfad.sock\naccount required pam_permit.so\n",
        )
        .start()
        .unwrap();
    let mut device = env.enroll_totp().unwrap();
    let user = env.user().unwrap();
    let code = device.totp.fresh_code();

    let mut cmd = timed(Duration::from_secs(30), "pamtester");
    cmd.args([&env.pam_service(), "root", "authenticate"])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .current_dir(&user.home)
        .uid(user.uid)
        .gid(user.gid);
    let out = run_with_input(&mut cmd, &format!("{}\n{code}\n", user.password)).unwrap();
    let shown = format!("{}{}", text(&out.stdout), text(&out.stderr));
    println!("pamtester as {}: {}\n{shown}", user.name, out.status);

    assert!(!out.status.success(), "{shown}\n{}", env.diagnostics());
    assert!(!shown.contains("successfully authenticated"), "{shown}");
    assert!(
        env.mfad_log().contains("is not root"),
        "mfad should log the refused caller:\n{}",
        env.diagnostics()
    );
}
