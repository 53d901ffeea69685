//! packaging/mfa-web.service: the unit that runs mfa-web as its own unprivileged user is
//! well-formed (`systemd-analyze verify`) and keeps its hardening.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mfa_e2e::paths::{built, workspace_root};
use mfa_e2e::process::{run, text};
use mfa_e2e::scratch::{ScratchDir, unique_name};
use std::process::Command;

#[test]
fn mfa_web_service_passes_systemd_analyze_verify_and_is_hardened() {
    let scratch = ScratchDir::new(&unique_name()).unwrap();
    let program = built("mfa-web").unwrap();
    let unit = std::fs::read_to_string(workspace_root().join("packaging/mfa-web.service"))
        .unwrap()
        .replace("/usr/sbin/mfa-web", &program.display().to_string());
    for line in [
        "User=mfa-web",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "CapabilityBoundingSet=\n",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "SystemCallFilter=@system-service",
    ] {
        assert!(unit.contains(line), "missing {line:?}:\n{unit}");
    }
    // No writable path: mfa-web writes nothing.
    assert!(!unit.contains("ReadWritePaths"), "{unit}");
    let path = scratch.join("mfa-web.service");
    std::fs::write(&path, unit).unwrap();
    let out = run(Command::new("systemd-analyze").arg("verify").arg(&path)).unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}\n{}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn example_mfa_web_toml_is_accepted_by_mfa_web() {
    let out = run(Command::new(built("mfa-web").unwrap())
        .arg("--config")
        .arg(workspace_root().join("conf/mfa-web.toml"))
        .arg("--check-config"))
    .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains(": OK"), "{}", text(&out.stdout));
}
