//! Files that hold secrets (the config with provider tokens, `*_file` keys, pam_duo.conf,
//! the store key): readable by root alone, or mfad refuses to start.
//!
//! The rule is pam_duo's: a secret file that its group or others may read is refused, not
//! silently used. The owner must be root (or the user mfad runs as, for unprivileged tests).

use std::fs::Metadata;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Why a secret file was refused. `what` names the setting that points at it.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    #[error("{what}: cannot read {}: {source}", path.display())]
    Read {
        what: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{what}: {} is owned by uid {uid}, and it holds a secret; it must belong to root \
         (chown root:root it)",
        path.display()
    )]
    Owner {
        what: String,
        path: PathBuf,
        uid: u32,
    },
    #[error(
        "{what}: {} can be read or written by its group or others (mode {mode:o}), and it \
         holds a secret; chmod 600 it",
        path.display()
    )]
    Mode {
        what: String,
        path: PathBuf,
        mode: u32,
    },
    #[error("{what}: {} is empty", path.display())]
    Empty { what: String, path: PathBuf },
}

/// Refuses `meta` (of `path`, named `what` in the message) unless only its owner can read
/// or write it and the owner is root or mfad's own user.
pub fn check_private(path: &Path, meta: &Metadata, what: &str) -> Result<(), SecretFileError> {
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != euid {
        return Err(SecretFileError::Owner {
            what: what.into(),
            path: path.into(),
            uid: meta.uid(),
        });
    }
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(SecretFileError::Mode {
            what: what.into(),
            path: path.into(),
            mode: meta.permissions().mode() & 0o7777,
        });
    }
    Ok(())
}

/// Reads a secret from `path` after [`check_private`]: the whole file, without a trailing
/// newline. An empty file is an error.
pub fn read_secret(path: &Path, what: &str) -> Result<Zeroizing<String>, SecretFileError> {
    let read_err = |source| SecretFileError::Read {
        what: what.into(),
        path: path.into(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    check_private(path, &meta, what)?;
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(read_err)?);
    let value = Zeroizing::new(text.trim_end_matches(['\n', '\r']).to_string());
    if value.is_empty() {
        return Err(SecretFileError::Empty {
            what: what.into(),
            path: path.into(),
        });
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
        let err = read_secret(&path, "twilio.auth_token_file")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("twilio.auth_token_file") && err.contains("chmod 600"),
            "{err}"
        );
        std::fs::set_permissions(&path, Permissions::from_mode(0o640)).unwrap();
        assert!(read_secret(&path, "x").is_err());
        std::fs::set_permissions(&path, Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_secret(&path, "x").unwrap().as_str(), "s3cret");
        std::fs::write(&path, "\n").unwrap();
        assert!(matches!(
            read_secret(&path, "x"),
            Err(SecretFileError::Empty { .. })
        ));
    }
}
