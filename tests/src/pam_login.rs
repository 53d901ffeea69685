//! Logins through a PAM service without sshd: `pamtester SERVICE USER authenticate` as root,
//! typing bytes on its stdin. The real libpam, pam_unix and pam_mfa run, exactly the stack
//! sshd would run, but a login costs one small process instead of an ssh connection, so a
//! test can start a hundred at once.
//!
//! With [`PamTester::wrapped`], pamtester runs under pam_wrapper, which prints the modules'
//! `pam_syslog` lines on stderr: how a test reads pam_mfa's log without a syslog daemon.

use crate::error::{Context, Result};
use crate::process::timed;
use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Longest a pamtester run may take before `timeout` kills it.
pub const PAM_LOGIN_LIMIT: Duration = Duration::from_secs(90);

/// pam_wrapper copies its service directory to `/tmp/pam.X` with one of few names; two
/// wrapped runs at once could read each other's copy. One at a time in this process.
static WRAPPED: Mutex<()> = Mutex::new(());

/// What one pamtester run showed.
#[derive(Debug, Clone)]
pub struct PamLogin {
    /// Exit code; `None` when a signal ended it (a crash).
    pub status: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

impl PamLogin {
    pub fn succeeded(&self) -> bool {
        self.status == Some(0) && self.stdout.contains("successfully authenticated")
    }

    /// Refused by PAM (pamtester's own words for a failed authenticate), not crashed.
    pub fn refused(&self) -> bool {
        self.status == Some(1) && self.signal.is_none() && !self.succeeded()
    }

    /// Everything pamtester printed: the prompts and messages, and (wrapped) the modules' log.
    pub fn shown(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    pub fn describe(&self) -> String {
        format!(
            "pamtester exit {:?} signal {:?} after {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.status, self.signal, self.took, self.stdout, self.stderr
        )
    }
}

/// pamtester for one PAM service and one user name (any bytes).
#[derive(Debug, Clone)]
pub struct PamTester {
    service: String,
    /// pam_wrapper's service directory, when wrapped.
    wrapper_dir: Option<PathBuf>,
}

impl PamTester {
    /// The service in /etc/pam.d (as sshd would use it).
    pub fn new(service: &str) -> Self {
        PamTester {
            service: service.to_string(),
            wrapper_dir: None,
        }
    }

    /// The same service, read from `/etc/pam.d/SERVICE` into a pam_wrapper directory kept
    /// in `scratch`, so the modules' syslog lines appear on stderr.
    pub fn wrapped(service: &str, scratch: &Path) -> Result<Self> {
        let dir = scratch.join("pam_wrapper");
        std::fs::create_dir_all(&dir).context("creating the pam_wrapper dir")?;
        let text = std::fs::read_to_string(Path::new("/etc/pam.d").join(service))
            .context(format!("reading /etc/pam.d/{service}"))?;
        std::fs::write(dir.join(service), text).context("writing the wrapped service")?;
        std::fs::write(
            dir.join("other"),
            "auth required pam_deny.so\naccount required pam_deny.so\n",
        )
        .context("writing the wrapped `other`")?;
        Ok(PamTester {
            service: service.to_string(),
            wrapper_dir: Some(dir),
        })
    }

    /// Starts `pamtester SERVICE USER authenticate` with piped stdio.
    pub fn spawn(&self, user: &[u8]) -> Result<Child> {
        let mut cmd = timed(PAM_LOGIN_LIMIT, "pamtester");
        cmd.arg(&self.service)
            .arg(OsStr::from_bytes(user))
            .arg("authenticate")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(dir) = &self.wrapper_dir {
            cmd.env("LD_PRELOAD", "libpam_wrapper.so")
                .env("PAM_WRAPPER", "1")
                .env("PAM_WRAPPER_SERVICE_DIR", dir)
                .env("PAM_WRAPPER_DEBUGLEVEL", "2");
        }
        cmd.spawn()
            .context("starting pamtester (apt-get install pamtester)")
    }

    /// One whole login: types `input` (every answer, each ending in a newline) and waits.
    pub fn login(&self, user: &[u8], input: &[u8]) -> Result<PamLogin> {
        let _turn = self
            .wrapper_dir
            .as_ref()
            .map(|_| WRAPPED.lock().unwrap_or_else(|e| e.into_inner()));
        let started = Instant::now();
        let mut child = self.spawn(user)?;
        if let Some(mut stdin) = child.stdin.take() {
            // pamtester may stop reading early (a refused user name): its output says why.
            let _ = stdin.write_all(input);
        }
        finish(child, started)
    }
}

/// Waits for a spawned pamtester and collects what it printed.
pub fn finish(child: Child, started: Instant) -> Result<PamLogin> {
    use std::os::unix::process::ExitStatusExt;
    let out = child.wait_with_output().context("waiting for pamtester")?;
    Ok(PamLogin {
        status: out.status.code(),
        signal: out.status.signal(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: started.elapsed(),
    })
}

/// `sqlite3 DATABASE SQL` (read-only queries and checks), its stdout trimmed.
pub fn sqlite(database: &Path, sql: &str) -> Result<String> {
    let out = crate::process::run(
        timed(Duration::from_secs(30), "sqlite3")
            .arg(database)
            .arg(sql),
    )?;
    if !out.status.success() {
        crate::bail!(
            "sqlite3 {} {sql:?} failed: {}",
            database.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
