//! Drives the real OpenSSH client without a terminal.
//!
//! ssh asks every keyboard-interactive prompt through `SSH_ASKPASS` (forced, in a new session
//! with no tty). The askpass program written here records each prompt text it is given and
//! answers from a queue, so a test can check what the user saw and what was asked when.

use crate::error::Result;
use crate::process::{run, text};
use crate::scratch::write_file;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Separates recorded prompts (a prompt may span lines).
const RECORD_SEPARATOR: char = '\u{1e}';

/// Longest a single client run may take.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

const ASKPASS: &str = r#"#!/bin/sh
# mfa-e2e askpass: record the prompt, answer with the next line of the queue.
d='@DIR@'
printf '%s\036' "$1" >> "$d/prompts"
n=$(cat "$d/count" 2>/dev/null || echo 0)
n=$((n + 1))
echo "$n" > "$d/count"
if [ "$n" -gt "$(wc -l < "$d/answers")" ]; then
    exit 1
fi
a=$(sed -n "${n}p" "$d/answers")
case "$a" in
'<'*)
    # An answer known only during the login (a code sent by SMS): wait for its file.
    f=${a#<}
    i=0
    while [ ! -s "$f" ] && [ "$i" -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
    cat "$f" 2>/dev/null || exit 1
    ;;
*) printf '%s\n' "$a" ;;
esac
"#;

/// An answer for [`SshClient::login`] that is read from `path` when its prompt comes,
/// waiting up to 30 s for the file: for a code the test learns only during the login.
pub fn answer_from_file(path: &Path) -> String {
    format!("<{}", path.display())
}

/// What one client run showed and did.
#[derive(Debug, Clone)]
pub struct LoginOutcome {
    /// Exit code of the client (255: ssh refused or failed; 124: killed by the time limit).
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// Every prompt text ssh passed to askpass, in order.
    pub prompts: Vec<String>,
}

impl LoginOutcome {
    pub fn logged_in(&self) -> bool {
        self.status == Some(0)
    }

    /// Refused by the server: ssh's own "Permission denied", not a timeout or crash.
    pub fn refused(&self) -> bool {
        self.status == Some(255) && self.stderr.contains("Permission denied")
    }

    /// Everything the user was shown: prompts and the client's stderr.
    pub fn shown(&self) -> String {
        let mut s = self.prompts.join("\n");
        s.push('\n');
        s.push_str(&self.stderr);
        s
    }

    pub fn prompts_containing(&self, needle: &str) -> usize {
        self.prompts.iter().filter(|p| p.contains(needle)).count()
    }

    /// A readable account of the run, for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "client exit {:?}\n--- prompts ---\n{}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.status,
            self.prompts
                .iter()
                .enumerate()
                .map(|(i, p)| format!("[{}] {p:?}", i + 1))
                .collect::<Vec<_>>()
                .join("\n"),
            self.stdout,
            self.stderr
        )
    }
}

/// The ssh/scp client of one test, pointed at its private sshd.
pub struct SshClient {
    pub port: u16,
    pub user: String,
    dir: PathBuf,
    runs: AtomicU32,
}

impl SshClient {
    pub fn new(dir: &Path, port: u16, user: &str) -> Self {
        SshClient {
            port,
            user: user.to_string(),
            dir: dir.to_path_buf(),
            runs: AtomicU32::new(0),
        }
    }

    /// Options every client run uses: no config files, no agent, no host key questions,
    /// keyboard-interactive only, one PAM conversation per connection.
    pub fn common_options(connect_timeout: u64) -> Vec<String> {
        [
            "-F",
            "/dev/null",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "PreferredAuthentications=keyboard-interactive",
            "-o",
            "KexAlgorithms=curve25519-sha256",
            "-o",
            "NumberOfPasswordPrompts=1",
            "-o",
            "BatchMode=no",
            "-o",
            "IdentityAgent=none",
            "-o",
            "LogLevel=INFO",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([
            "-o".to_string(),
            format!("ConnectTimeout={connect_timeout}"),
        ])
        .collect()
    }

    /// `ssh user@127.0.0.1 -- command`, answering prompts in order with `answers`.
    pub fn login(&self, answers: &[&str], command: &str) -> Result<LoginOutcome> {
        let mut args: Vec<OsString> = Self::common_options(10)
            .into_iter()
            .map(OsString::from)
            .collect();
        args.push("-p".into());
        args.push(self.port.to_string().into());
        args.push(format!("{}@127.0.0.1", self.user).into());
        args.push("--".into());
        args.push(command.into());
        self.run_client("ssh", args, answers)
    }

    /// `scp local user@127.0.0.1:remote`, answering prompts with `answers`.
    pub fn scp_upload(&self, local: &Path, remote: &str, answers: &[&str]) -> Result<LoginOutcome> {
        let mut args: Vec<OsString> = Self::common_options(10)
            .into_iter()
            .map(OsString::from)
            .collect();
        args.push("-P".into());
        args.push(self.port.to_string().into());
        args.push(local.as_os_str().to_os_string());
        args.push(format!("{}@127.0.0.1:{remote}", self.user).into());
        self.run_client("scp", args, answers)
    }

    fn run_client(
        &self,
        program: &str,
        args: Vec<OsString>,
        answers: &[&str],
    ) -> Result<LoginOutcome> {
        let n = self.runs.fetch_add(1, Ordering::Relaxed) + 1;
        let dir = self.dir.join(format!("client-{n}"));
        std::fs::create_dir_all(&dir)?;
        let mut queue = String::new();
        for a in answers {
            queue.push_str(a);
            queue.push('\n');
        }
        write_file(&dir.join("answers"), &queue, 0o600)?;
        let askpass = dir.join("askpass");
        write_file(
            &askpass,
            &ASKPASS.replace("@DIR@", &dir.display().to_string()),
            0o700,
        )?;
        // A new session without a controlling tty, so ssh cannot fall back to the terminal.
        let mut cmd = Command::new("setsid");
        cmd.arg("-w")
            .arg("timeout")
            .args(["-k", "5"])
            .arg(CLIENT_TIMEOUT.as_secs().to_string())
            .arg(program)
            .args(&args)
            .env("SSH_ASKPASS", &askpass)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("DISPLAY", ":0")
            .env_remove("SSH_AUTH_SOCK");
        let out = run(&mut cmd)?;
        let prompts = std::fs::read_to_string(dir.join("prompts"))
            .unwrap_or_default()
            .split(RECORD_SEPARATOR)
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect();
        Ok(LoginOutcome {
            status: out.status.code(),
            stdout: text(&out.stdout),
            stderr: text(&out.stderr),
            prompts,
        })
    }
}
