//! The real mfad binary on files of its own in a temporary directory: for the tests that
//! are about the program itself (its config, files and modes, logs, backups, metrics). The
//! caller passes the binary (`env!("CARGO_BIN_EXE_mfad")` in mfad's own tests).

use mfad::Store;
use mfad::factor::totp::{HashAlgorithm, TotpParams};
use std::ops::Deref;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// An authenticator app's usual parameters (SHA-1, 6 digits, 30 s), as mfad enrols them.
pub fn params() -> TotpParams {
    TotpParams {
        algorithm: HashAlgorithm::Sha1,
        digits: 6,
        period: 30,
    }
}

/// The real time in seconds: the binary under test reads the wall clock, so its tests do.
#[allow(clippy::disallowed_methods)]
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// mfad's config and files in one directory, so it can be stopped and started again on
/// them.
pub struct BinaryHost {
    program: PathBuf,
    dir: tempfile::TempDir,
}

impl BinaryHost {
    /// Writes `mfad.toml`: the socket, database and store key in the directory, no syslog,
    /// and `extra` (top-level keys first, then tables).
    pub fn new(program: impl AsRef<Path>, extra: &str) -> BinaryHost {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let d = dir.path().display();
        std::fs::write(
            dir.path().join("mfad.toml"),
            format!(
                "socket = \"{d}/run/mfad.sock\"\ndatabase = \"{d}/lib/mfa.db\"\n\
                 store_key = \"{d}/lib/store.key\"\n{extra}\n[log]\nsyslog = false\n"
            ),
        )
        .unwrap();
        BinaryHost {
            program: program.as_ref().to_path_buf(),
            dir,
        }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// `mfad --config mfad.toml ARGS`, not started.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.program);
        c.arg("--config").arg(self.path("mfad.toml")).args(args);
        c
    }

    /// Starts mfad in the foreground, its log appended to `stderr`; returns once its socket
    /// exists.
    pub fn start(&self) -> Running {
        let _ = std::fs::remove_file(self.socket());
        let child = self
            .command(&["--foreground"])
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.path("stderr"))
                    .unwrap(),
            )
            .spawn()
            .unwrap();
        let running = Running { child };
        self.wait_for_socket();
        running
    }

    /// Returns once mfad's socket exists (it listens); panics with its log after 10 s.
    pub fn wait_for_socket(&self) {
        let start = Instant::now();
        while !self.socket().exists() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "mfad did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.path("run/mfad.sock")
    }

    pub fn db(&self) -> PathBuf {
        self.path("lib/mfa.db")
    }

    /// A handle on the database, with the host's store key.
    pub fn store(&self) -> Store {
        Store::open_with_key_file(&self.db(), &self.path("lib/store.key")).unwrap()
    }

    /// What mfad wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("stderr")).unwrap_or_default()
    }
}

/// A running mfad, stopped with SIGTERM (as systemd stops it) and reaped on drop.
pub struct Running {
    child: Child,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

/// The usual case: a host with mfad running on it. Stops mfad before the files go.
pub struct BinaryMfad {
    running: Running,
    host: BinaryHost,
}

impl BinaryMfad {
    pub fn start(program: impl AsRef<Path>, extra: &str) -> BinaryMfad {
        let host = BinaryHost::new(program, extra);
        BinaryMfad {
            running: host.start(),
            host,
        }
    }

    /// The running mfad's process id.
    pub fn pid(&self) -> u32 {
        self.running.pid()
    }
}

impl Deref for BinaryMfad {
    type Target = BinaryHost;
    fn deref(&self) -> &BinaryHost {
        &self.host
    }
}
