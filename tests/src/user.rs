//! Throwaway Unix users: created with a home and a password, removed with `userdel -r`.

use crate::bail;
use crate::clock;
use crate::error::{Context, Result};
use crate::process::{run, run_with_input, text};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

/// useradd/userdel lock /etc/passwd; tests of one binary take turns instead of failing.
static ACCOUNTS: Mutex<()> = Mutex::new(());

/// Marks harness users in the GECOS field, with the pid of the test process that made them.
pub(crate) const GECOS_MARK: &str = "mfa-e2e throwaway pid=";

pub struct TestUser {
    pub name: String,
    pub password: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

impl TestUser {
    pub fn create(name: &str) -> Result<Self> {
        crate::leftovers::sweep();
        let password = format!(
            "E2e-{:x}-{}",
            (clock::unix_now() * 1e6) as u64,
            std::process::id()
        );
        let gecos = format!("{GECOS_MARK}{}", std::process::id());
        accounts_cmd(
            Command::new("useradd")
                .args(["-m", "-s", "/bin/bash", "-c", &gecos])
                .arg(name),
        )
        .context(format!("creating user {name}"))?;
        let user = TestUser {
            name: name.to_string(),
            password,
            uid: id_of(name, "-u")?,
            gid: id_of(name, "-g")?,
            home: format!("/home/{name}"),
        };
        // From here on, Drop removes the user even if setting the password fails.
        let out = run_with_input(
            &mut Command::new("chpasswd"),
            &format!("{}:{}\n", user.name, user.password),
        )?;
        if !out.status.success() {
            bail!("chpasswd for {name} failed: {}", text(&out.stderr));
        }
        let home = run(Command::new("getent").args(["passwd", name]))?;
        if let Some(dir) = text(&home.stdout).trim().split(':').nth(5) {
            let mut u = user;
            u.home = dir.to_string();
            return Ok(u);
        }
        Ok(user)
    }
}

impl TestUser {
    /// Adds `public_key` (one line of a .pub file) to `~/.ssh/authorized_keys`, owned by the
    /// user as sshd expects.
    pub fn authorize_key(&self, public_key: &str) -> Result<()> {
        use std::io::Write;
        let ssh = std::path::Path::new(&self.home).join(".ssh");
        std::fs::create_dir_all(&ssh).context("creating ~/.ssh")?;
        let path = ssh.join("authorized_keys");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .context(format!("opening {}", path.display()))?;
        writeln!(file, "{}", public_key.trim()).context("writing authorized_keys")?;
        for p in [&ssh, &path] {
            std::os::unix::fs::chown(p, Some(self.uid), Some(self.gid))
                .context(format!("chown {}", p.display()))?;
        }
        Ok(())
    }

    /// Adds the user to `group` (its supplementary groups).
    pub fn join_group(&self, group: &str) -> Result<()> {
        accounts_cmd(Command::new("usermod").args(["-a", "-G", group, &self.name]))
            .context(format!("adding {} to group {group}", self.name))
    }
}

/// A throwaway group, removed on drop (also by the leftovers sweep when its test was killed).
pub struct TestGroup {
    pub name: String,
}

impl TestGroup {
    pub fn create() -> Result<Self> {
        crate::leftovers::sweep();
        let name = crate::scratch::unique_name();
        accounts_cmd(Command::new("groupadd").arg(&name))
            .context(format!("creating group {name}"))?;
        Ok(TestGroup { name })
    }
}

impl Drop for TestGroup {
    fn drop(&mut self) {
        remove_group(&self.name);
    }
}

pub(crate) fn remove_group(name: &str) {
    if let Err(e) = accounts_cmd(Command::new("groupdel").arg(name)) {
        eprintln!("mfa-e2e: could not remove group {name}: {e}");
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        remove_user(&self.name);
    }
}

fn id_of(name: &str, flag: &str) -> Result<u32> {
    let out = run(Command::new("id").arg(flag).arg(name))?;
    text(&out.stdout)
        .trim()
        .parse()
        .context(format!("id {flag} {name}"))
}

/// Runs useradd/userdel, retrying while another process holds the account files' lock.
fn accounts_cmd(cmd: &mut Command) -> Result<()> {
    let mut last = String::new();
    for _ in 0..20 {
        let out = {
            let _turn = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
            run(cmd)?
        };
        if out.status.success() {
            return Ok(());
        }
        last = format!("{}: {}", out.status, text(&out.stderr));
        if !last.contains("lock") {
            break;
        }
        clock::pause(Duration::from_millis(250));
    }
    bail!("{cmd:?} failed: {last}")
}

pub(crate) fn remove_user(name: &str) {
    // A session process may still be closing; userdel refuses while it runs, so retry, then
    // force.
    for _ in 0..10 {
        if accounts_cmd(Command::new("userdel").args(["-r", name])).is_ok() || !exists(name) {
            return;
        }
        clock::pause(Duration::from_millis(300));
    }
    let forced = accounts_cmd(Command::new("userdel").args(["-f", "-r", name]));
    match forced {
        Err(e) if exists(name) => eprintln!("mfa-e2e: could not remove user {name}: {e}"),
        _ => {}
    }
}

fn exists(name: &str) -> bool {
    run(Command::new("getent").args(["passwd", name]))
        .map(|o| o.status.success())
        .unwrap_or(false)
}
