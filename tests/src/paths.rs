//! Where the harness finds the workspace, the built programs and root.

use crate::bail;
use crate::error::{Context, Result};
use std::path::PathBuf;

/// The workspace checkout (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(PathBuf::from).unwrap_or(here)
}

/// Directory holding the built `mfad`, `mfa` and `libpam_mfa.so`: `$MFA_E2E_BIN_DIR`, or
/// `$CARGO_TARGET_DIR/debug`, or `target/debug` of the workspace.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MFA_E2E_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    target.join("debug")
}

/// A built artefact of the workspace, or an error saying how to build it.
pub fn built(name: &str) -> Result<PathBuf> {
    let path = bin_dir().join(name);
    if !path.is_file() {
        bail!(
            "{} is missing: build the workspace first (`cargo build --workspace`, or run \
             scripts/test.sh which builds and then tests)",
            path.display()
        );
    }
    Ok(path)
}

/// The effective uid of this process.
pub fn euid() -> Result<u32> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let effective = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().nth(1));
    if let Some(e) = effective {
        return e.parse().context("parsing Uid in /proc/self/status");
    }
    bail!("no Uid line in /proc/self/status")
}

/// Fails unless running as root: these tests create users, write /etc/pam.d and start sshd.
pub fn require_root() -> Result<()> {
    if euid()? != 0 {
        bail!(
            "the end-to-end tests must run as root (they create throwaway users, write \
             /etc/pam.d/ and start a private sshd); run `sudo scripts/test.sh`"
        );
    }
    Ok(())
}
