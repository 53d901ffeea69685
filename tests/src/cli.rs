//! Runs the `mfa` CLI as root or as a throwaway user, the way people would.

use crate::bail;
use crate::error::{Context, Result};
use crate::process::{run_with_input, text, timed};
use crate::totp::TotpSecret;
use crate::user::TestUser;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const CLI_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct CliOutput {
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    pub fn describe(&self) -> String {
        format!(
            "mfa exit {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// The `mfa` program and the socket it talks to.
#[derive(Debug, Clone)]
pub struct MfaCli {
    pub program: PathBuf,
    pub socket: PathBuf,
}

impl MfaCli {
    fn command(&self, user: Option<&TestUser>, args: &[&str]) -> Command {
        let mut cmd = timed(CLI_TIMEOUT, &self.program);
        cmd.arg("--socket").arg(&self.socket).args(args);
        if let Some(u) = user {
            cmd.env_clear()
                .env("PATH", "/usr/local/bin:/usr/bin:/bin")
                .env("HOME", &u.home)
                .env("USER", &u.name)
                .env("LOGNAME", &u.name)
                .current_dir(&u.home)
                .uid(u.uid)
                .gid(u.gid);
        }
        cmd
    }

    /// Runs `mfa --socket S ARGS` as root, with `input` on stdin.
    pub fn as_root(&self, args: &[&str], input: &str) -> Result<CliOutput> {
        output(&mut self.command(None, args), input)
    }

    /// Runs `mfa --socket S ARGS` as `user`, with `input` on stdin.
    pub fn as_user(&self, user: &TestUser, args: &[&str], input: &str) -> Result<CliOutput> {
        output(&mut self.command(Some(user), args), input)
    }

    /// Starts `mfa --socket S ARGS` as `user` with piped stdin, stdout and stderr, for a
    /// conversation whose answers are known only as it goes (a code sent by SMS). Bounded
    /// like every CLI run; the caller waits for it.
    pub fn spawn_as_user(&self, user: &TestUser, args: &[&str]) -> Result<std::process::Child> {
        self.command(Some(user), args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context(format!("starting mfa {}", args.join(" ")))
    }

    /// `mfa enroll totp` as `user`: reads the secret it prints, answers its prompt with the
    /// current code, and returns the secret once mfa reports success.
    pub fn enroll_totp(
        &self,
        user: &TestUser,
        digits: u32,
        period: u64,
        window: u64,
    ) -> Result<(TotpSecret, CliOutput)> {
        let mut cmd = self.command(Some(user), &["enroll", "totp"]);
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting mfa enroll totp")?;
        let (Some(stdout), Some(mut stderr), Some(mut stdin)) =
            (child.stdout.take(), child.stderr.take(), child.stdin.take())
        else {
            bail!("mfa enroll totp: no pipes");
        };
        let (tx, rx) = mpsc::channel::<String>();
        let out_reader = std::thread::spawn(move || {
            let mut all = String::new();
            for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                let _ = tx.send(line.clone());
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        let err_reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let mut secret = None;
        while secret.is_none() {
            match rx.recv_timeout(CLI_TIMEOUT) {
                Ok(line) => secret = secret_in_line(&line),
                Err(_) => break,
            }
        }
        let totp = match secret {
            Some(s) => {
                let mut t = TotpSecret::from_base32(&s, digits, period, window)?;
                let code = t.current_code();
                let _ = stdin.write_all(format!("{code}\n").as_bytes());
                Some(t)
            }
            None => None,
        };
        drop(stdin);
        let status = child.wait().context("waiting for mfa enroll totp")?;
        let result = CliOutput {
            status: status.code(),
            stdout: out_reader.join().unwrap_or_default(),
            stderr: err_reader.join().unwrap_or_default(),
        };
        match totp {
            Some(t) if status.success() => Ok((t, result)),
            Some(_) => bail!("mfa enroll totp refused the code:\n{}", result.describe()),
            None => bail!(
                "mfa enroll totp printed no `Secret:` line:\n{}",
                result.describe()
            ),
        }
    }
}

fn output(cmd: &mut Command, input: &str) -> Result<CliOutput> {
    let out = run_with_input(cmd, input)?;
    Ok(CliOutput {
        status: out.status.code(),
        stdout: text(&out.stdout),
        stderr: text(&out.stderr),
    })
}

/// The base32 secret in a line `Secret: ABCD...` (or in an otpauth:// URI).
pub fn secret_in_line(line: &str) -> Option<String> {
    let t = line.trim();
    if let Some(rest) = t.strip_prefix("Secret:") {
        let s: String = rest.chars().filter(|c| !c.is_whitespace()).collect();
        if !s.is_empty() {
            return Some(s);
        }
    }
    None
}

/// The eight-digit codes of `mfa bypass-codes` output, one per line.
pub fn parse_bypass_codes(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .map(str::trim)
        .filter(|l| l.len() == 8 && l.bytes().all(|b| b.is_ascii_digit()))
        .map(str::to_string)
        .collect()
}

/// Copies `program` to `dir` so a throwaway user can run it wherever the checkout lives.
pub fn copy_for_users(program: &Path, dir: &Path) -> Result<PathBuf> {
    let name = program.file_name().unwrap_or_default();
    let dest = dir.join(name);
    std::fs::copy(program, &dest).context(format!("copying {}", program.display()))?;
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_secret_and_bypass_codes() {
        assert_eq!(
            secret_in_line("Secret: JBSW Y3DP"),
            Some("JBSWY3DP".to_string())
        );
        assert_eq!(secret_in_line("otpauth://totp/x"), None);
        let codes = parse_bypass_codes("Your codes:\n  12345678\n87654321 \n123\n");
        assert_eq!(codes, vec!["12345678", "87654321"]);
    }
}
