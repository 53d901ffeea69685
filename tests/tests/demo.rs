//! The newcomer's demo (README.md): `scripts/demo.sh --check` starts the sandboxed demo, logs
//! in once through it with the real ssh client, and cleans up.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mfa_e2e::paths::{require_root, workspace_root};
use mfa_e2e::process::{run, text, timed};
use mfa_e2e::sshd::free_port;
use std::time::Duration;

#[test]
fn demo_script_logs_in_with_password_and_totp_and_cleans_up() {
    require_root().unwrap();
    let root = workspace_root();
    // The build is scripts/test.sh's first step; a free port keeps clear of a running demo.
    let port = free_port().unwrap();
    let out = run(
        timed(Duration::from_secs(180), root.join("scripts/demo.sh"))
            .args(["--check", "--no-build", "--port", &port.to_string()])
            .current_dir(&root),
    )
    .unwrap();
    let shown = format!("{}{}", text(&out.stdout), text(&out.stderr));

    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("demo check: OK"), "{shown}");
    assert!(shown.contains("demo login ok: mfademo"), "{shown}");
    assert!(shown.contains("Demo stopped and cleaned up."), "{shown}");
    assert!(!std::path::Path::new("/etc/pam.d/sshd-mfademo").exists());
    let user = run(std::process::Command::new("getent").args(["passwd", "mfademo"])).unwrap();
    assert!(!user.status.success(), "the demo user was not removed");
}
