//! A private sshd on 127.0.0.1 with its own port, host key and PAM service.
//!
//! OpenSSH 9.2 has no PAMServiceName: sshd uses its program name as the PAM service, so the
//! binary is copied into the test directory under the service's name.

use crate::bail;
use crate::clock;
use crate::error::{Context, Result};
use crate::process::{run_ok, terminate};
use crate::scratch::write_file;
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const SYSTEM_SSHD: &str = "/usr/sbin/sshd";

/// The distribution's own sshd config (Debian 12's, from openssh-server).
pub const STOCK_CONFIG: &str = "/etc/ssh/sshd_config";

/// `/etc/pam.d/NAME`, removed on drop.
pub struct PamService {
    pub name: String,
    pub path: PathBuf,
}

impl PamService {
    pub fn install(name: &str, contents: &str) -> Result<Self> {
        let path = Path::new("/etc/pam.d").join(name);
        write_file(&path, contents, 0o644)?;
        Ok(PamService {
            name: name.to_string(),
            path,
        })
    }
}

impl PamService {
    /// The PAM service the package ships for mfad's password checks
    /// (`packaging/pam.d/mfa-web`), installed under a name of this test's own for
    /// `[web] pam_service` (removed on drop, or by the next run's sweep: "sshd-", the scratch
    /// prefix and this process's id).
    pub fn shipped_web() -> Result<Self> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let shipped = crate::paths::workspace_root().join("packaging/pam.d/mfa-web");
        let text = std::fs::read_to_string(&shipped)
            .map_err(|e| crate::HarnessError::new(format!("reading {}: {e}", shipped.display())))?;
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!(
            "sshd-{}{}xweb{n}",
            crate::scratch::PREFIX,
            std::process::id()
        );
        PamService::install(&name, &text)
    }
}

impl Drop for PamService {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The PAM stack of a test login: the password first, then the second factor (when
/// `second_factor` holds the pam_mfa line).
pub fn pam_stack(second_factor: Option<&str>) -> String {
    let mut s = String::from("# Written by the mfa-e2e harness for one test.\n");
    s.push_str("auth requisite pam_unix.so\n");
    if let Some(line) = second_factor {
        s.push_str(line);
        s.push('\n');
    }
    s.push_str("account required pam_unix.so\n");
    s.push_str("session required pam_unix.so\n");
    s
}

pub struct PrivateSshd {
    child: Option<Child>,
    pub port: u16,
    pub log_path: PathBuf,
    pub config_path: PathBuf,
}

impl PrivateSshd {
    /// Starts sshd from `dir` as PAM service `service` (whose /etc/pam.d file must exist).
    /// `head` goes first in its config: for sshd the first value of a keyword wins.
    pub fn start(dir: &Path, service: &str, head: &str) -> Result<Self> {
        std::fs::create_dir_all("/run/sshd").context("creating /run/sshd")?;
        run_ok(Command::new("chmod").args(["0755", "/run/sshd"]))?;
        let program = dir.join(service);
        std::fs::copy(SYSTEM_SSHD, &program).context(format!(
            "copying {SYSTEM_SSHD} (is openssh-server installed?)"
        ))?;
        let host_key = dir.join("ssh_host_ed25519_key");
        run_ok(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "mfa-e2e", "-f"])
                .arg(&host_key),
        )?;
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port()?;
            match Self::try_start(dir, &program, &host_key, port, head) {
                Ok(sshd) => return Ok(sshd),
                Err(e) => last_error = e.to_string(),
            }
        }
        bail!("could not start a private sshd: {last_error}")
    }

    fn try_start(
        dir: &Path,
        program: &Path,
        host_key: &Path,
        port: u16,
        head: &str,
    ) -> Result<Self> {
        let config_path = dir.join("sshd_config");
        // sshd refuses a second `Subsystem sftp`: a head that sets one replaces the default.
        let subsystem = if head
            .lines()
            .any(|l| l.split_whitespace().next() == Some("Subsystem"))
        {
            ""
        } else {
            "Subsystem sftp /usr/lib/openssh/sftp-server\n"
        };
        // A Match block runs to the end of the file: the head's go after the harness's own
        // lines (which sshd would refuse inside one), where they still override them.
        let (head, matches) = split_at_first_match(head);
        let config = format!(
            "{head}\n# Written by the mfa-e2e harness.\n\
             Port {port}\n\
             ListenAddress 127.0.0.1\n\
             HostKey {host_key}\n\
             PidFile {pid}\n\
             UsePAM yes\n\
             KbdInteractiveAuthentication yes\n\
             PasswordAuthentication no\n\
             PubkeyAuthentication no\n\
             AuthenticationMethods keyboard-interactive\n\
             PermitRootLogin no\n\
             StrictModes no\n\
             ExposeAuthInfo yes\n\
             UseDNS no\n\
             PrintMotd no\n\
             PrintLastLog no\n\
             MaxStartups 50\n\
             LogLevel VERBOSE\n\
             {subsystem}{matches}",
            host_key = host_key.display(),
            pid = dir.join("sshd.pid").display(),
        );
        write_file(&config_path, &config, 0o644)?;
        Self::launch(dir, program, config_path, port)
    }

    /// Starts sshd from `dir` as PAM service `service` with a copy of this machine's stock
    /// `/etc/ssh/sshd_config` (Debian's), whose `Include` is pointed at a private
    /// `sshd_config.d` holding `mfa.conf` (the text an admin would drop in) and, sorted
    /// first, `00-mfa-e2e.conf`: only this test's port, address, host key, pid file,
    /// `StrictModes no` (keys under /tmp) and `AuthorizedKeysFile .ssh/authorized_keys
    /// KEYS/%u`, so `root`'s key can live in the test directory. Everything else is
    /// Debian's default, `PermitRootLogin prohibit-password` included.
    pub fn start_stock_debian(
        dir: &Path,
        service: &str,
        mfa_conf: &str,
        keys: &Path,
    ) -> Result<Self> {
        std::fs::create_dir_all("/run/sshd").context("creating /run/sshd")?;
        run_ok(Command::new("chmod").args(["0755", "/run/sshd"]))?;
        let program = dir.join(service);
        std::fs::copy(SYSTEM_SSHD, &program).context(format!(
            "copying {SYSTEM_SSHD} (is openssh-server installed?)"
        ))?;
        let host_key = dir.join("ssh_host_ed25519_key");
        run_ok(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "mfa-e2e", "-f"])
                .arg(&host_key),
        )?;
        let stock = std::fs::read_to_string(STOCK_CONFIG)
            .context(format!("reading {STOCK_CONFIG} (openssh-server's own)"))?;
        let confd = dir.join("sshd_config.d");
        std::fs::create_dir_all(&confd).context("creating sshd_config.d")?;
        let config_path = dir.join("sshd_config");
        let included = stock.replace(
            "Include /etc/ssh/sshd_config.d/*.conf",
            &format!("Include {}/*.conf", confd.display()),
        );
        if included == stock {
            bail!("{STOCK_CONFIG} has no `Include /etc/ssh/sshd_config.d/*.conf` line");
        }
        write_file(&config_path, &included, 0o644)?;
        write_file(&confd.join("mfa.conf"), &format!("{mfa_conf}\n"), 0o644)?;
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port()?;
            let test_conf = format!(
                "# Written by the mfa-e2e harness: only what a private sshd needs.\n\
                 Port {port}\n\
                 ListenAddress 127.0.0.1\n\
                 HostKey {host_key}\n\
                 PidFile {pid}\n\
                 StrictModes no\n\
                 AuthorizedKeysFile .ssh/authorized_keys {keys}/%u\n\
                 UseDNS no\n\
                 MaxStartups 50\n\
                 LogLevel VERBOSE\n",
                host_key = host_key.display(),
                pid = dir.join("sshd.pid").display(),
                keys = keys.display(),
            );
            write_file(&confd.join("00-mfa-e2e.conf"), &test_conf, 0o644)?;
            match Self::launch(dir, &program, config_path.clone(), port) {
                Ok(sshd) => return Ok(sshd),
                Err(e) => last_error = e.to_string(),
            }
        }
        bail!("could not start a private sshd on the stock config: {last_error}")
    }

    /// `sshd -t` on this sshd's config: `Err` with sshd's complaint when it fails.
    pub fn check_config(&self) -> Result<()> {
        let out = crate::process::run(
            Command::new(SYSTEM_SSHD)
                .arg("-t")
                .arg("-f")
                .arg(&self.config_path),
        )?;
        if !out.status.success() {
            bail!(
                "sshd -t -f {} failed: {}",
                self.config_path.display(),
                crate::process::text(&out.stderr)
            );
        }
        Ok(())
    }

    /// Runs `program -D -f CONFIG -E LOG` and waits until it listens on `port`.
    fn launch(dir: &Path, program: &Path, config_path: PathBuf, port: u16) -> Result<Self> {
        let log_path = dir.join("sshd.log");
        // A fresh log per attempt, so the readiness check reads only this attempt's lines.
        File::create(&log_path).context("creating sshd log")?;
        let child = Command::new(program)
            .arg("-D")
            .arg("-f")
            .arg(&config_path)
            .arg("-E")
            .arg(&log_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(dir.join("sshd.stderr")).context("creating sshd stderr")?)
            .spawn()
            .context(format!("starting {}", program.display()))?;
        let mut sshd = PrivateSshd {
            child: Some(child),
            port,
            log_path,
            config_path,
        };
        let listening = format!("Server listening on 127.0.0.1 port {port}");
        let ready = clock::wait_for(Duration::from_secs(10), || {
            if sshd.log().contains(&listening) {
                return Some(Ok(()));
            }
            match sshd.child.as_mut().map(|c| c.try_wait()) {
                Some(Ok(Some(status))) => Some(Err(status.to_string())),
                _ => None,
            }
        });
        match ready {
            Some(Ok(())) => Ok(sshd),
            Some(Err(status)) => {
                let stderr = std::fs::read_to_string(dir.join("sshd.stderr")).unwrap_or_default();
                bail!("sshd exited ({status}): {stderr}{}", sshd.log())
            }
            None => bail!(
                "sshd did not listen on port {port} within 10 s: {}",
                sshd.log()
            ),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, Duration::from_secs(5));
        }
    }
}

impl Drop for PrivateSshd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `config` cut before its first `Match` line: (the global part, the Match blocks).
fn split_at_first_match(config: &str) -> (String, String) {
    let mut global = String::new();
    let mut matches = String::new();
    for line in config.lines() {
        let is_match = line
            .split_whitespace()
            .next()
            .is_some_and(|w| w.eq_ignore_ascii_case("match"));
        if is_match || !matches.is_empty() {
            matches.push_str(line);
            matches.push('\n');
        } else {
            global.push_str(line);
            global.push('\n');
        }
    }
    (global, matches)
}

/// A port of 127.0.0.1 nobody listens on right now (sshd start retries if it is taken).
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr().context("finding a free port")?.port())
}
