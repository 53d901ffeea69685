//! Unique names and throwaway directories.
//!
//! Names carry the test process id (`mfat<pid>x<n>`), so tests running at the same time never
//! collide and leftovers of a killed run can be told apart from live ones.

use crate::error::{Context, Result};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(1);

/// Prefix of every name the harness gives to users, PAM services and directories.
pub const PREFIX: &str = "mfat";

/// A short name unique on this machine while this process lives, e.g. `mfat4242x3`.
pub fn unique_name() -> String {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{PREFIX}{}x{n}", std::process::id())
}

/// A directory under the system temp dir, removed with everything in it on drop.
///
/// Mode 0755: throwaway users must reach the mfad socket inside it.
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    pub fn new(name: &str) -> Result<Self> {
        let path = std::env::temp_dir().join(format!("mfa-e2e-{name}"));
        if path.exists() {
            std::fs::remove_dir_all(&path).context(format!("removing old {}", path.display()))?;
        }
        std::fs::create_dir(&path).context(format!("creating {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .context(format!("chmod {}", path.display()))?;
        Ok(ScratchDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }

    /// A subdirectory with the given mode.
    pub fn subdir(&self, name: &str, mode: u32) -> Result<PathBuf> {
        let p = self.path.join(name);
        std::fs::create_dir_all(&p).context(format!("creating {}", p.display()))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
            .context(format!("chmod {}", p.display()))?;
        Ok(p)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if std::env::var_os("MFA_E2E_KEEP").is_some() {
            eprintln!("MFA_E2E_KEEP set: leaving {}", self.path.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Writes a file with the given mode.
pub fn write_file(path: &Path, contents: &str, mode: u32) -> Result<()> {
    std::fs::write(path, contents).context(format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .context(format!("chmod {}", path.display()))
}
