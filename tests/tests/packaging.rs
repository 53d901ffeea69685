//! What README.md tells an admin to install: the systemd unit and the example config.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mfa_e2e::paths::{built, workspace_root};
use mfa_e2e::process::{run, text};
use mfa_e2e::scratch::{ScratchDir, unique_name};
use std::process::Command;

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(workspace_root().join("packaging/mfad.service")).unwrap();
    let mfad = built("mfad").unwrap();
    let dir = ScratchDir::new(&unique_name()).unwrap();
    // verify needs the program to exist: point the unit at the built one.
    let path = dir.join("mfad.service");
    std::fs::write(
        &path,
        unit.replace("/usr/sbin/mfad", &mfad.display().to_string()),
    )
    .unwrap();
    // The service Requires= its socket unit: verify finds it beside the service.
    std::fs::copy(
        workspace_root().join("packaging/mfad.socket"),
        dir.join("mfad.socket"),
    )
    .unwrap();

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
fn example_mfad_toml_is_accepted_by_mfad() {
    let mfad = built("mfad").unwrap();
    let conf = workspace_root().join("conf/mfad.toml");

    let out = run(Command::new(mfad)
        .arg("--config")
        .arg(&conf)
        .arg("--check-config"))
    .unwrap();

    assert!(
        out.status.success(),
        "{}\n{}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}
