//! Files that hold secrets (the config with provider tokens, `*_file` keys, pam_duo.conf,
//! the store key): readable by root alone, or mfad refuses to start.
//!
//! The rule is pam_duo's: a secret file that its group or others may read is refused, not
//! silently used. The owner must be root (or the user mfad runs as, for unprivileged tests).

use std::fs::Metadata;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use zeroize::Zeroizing;

/// Refuses `meta` (of `path`, named `what` in the message) unless only its owner can read
/// or write it and the owner is root or mfad's own user.
pub fn check_private(path: &Path, meta: &Metadata, what: &str) -> Result<(), String> {
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != euid {
        return Err(format!(
            "{what}: {} is owned by uid {}, and it holds a secret; it must belong to root \
             (chown root:root it)",
            path.display(),
            meta.uid()
        ));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "{what}: {} can be read or written by its group or others (mode {:o}), and it \
             holds a secret; chmod 600 it",
            path.display(),
            meta.permissions().mode() & 0o7777
        ));
    }
    Ok(())
}

/// Reads a secret from `path` after [`check_private`]: the whole file, without a trailing
/// newline. An empty file is an error.
pub fn read_secret(path: &Path, what: &str) -> Result<Zeroizing<String>, String> {
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("{what}: cannot read {}: {e}", path.display()))?;
    check_private(path, &meta, what)?;
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| format!("{what}: cannot read {}: {e}", path.display()))?,
    );
    let value = Zeroizing::new(text.trim_end_matches(['\n', '\r']).to_string());
    if value.is_empty() {
        return Err(format!("{what}: {} is empty", path.display()));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::Permissions;

    #[test]
    fn a_file_others_can_read_is_refused_and_a_private_one_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret\n").unwrap();
        std::fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        let err = read_secret(&path, "twilio.auth_token_file").unwrap_err();
        assert!(
            err.contains("twilio.auth_token_file") && err.contains("chmod 600"),
            "{err}"
        );
        std::fs::set_permissions(&path, Permissions::from_mode(0o640)).unwrap();
        assert!(read_secret(&path, "x").is_err());
        std::fs::set_permissions(&path, Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_secret(&path, "x").unwrap().as_str(), "s3cret");
        std::fs::write(&path, "\n").unwrap();
        assert!(read_secret(&path, "x").unwrap_err().contains("empty"));
    }
}
