//! Drives the real OpenSSH client without a terminal.
//!
//! ssh asks every keyboard-interactive prompt through `SSH_ASKPASS` (forced, in a new session
//! with no tty). The askpass program written here records each prompt text it is given and
//! answers from a queue, so a test can check what the user saw and what was asked when.
//! scp, sftp and rsync run ssh underneath and meet the same askpass.

use crate::error::Result;
use crate::process::{run, text};
use crate::scratch::write_file;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Numbers client runs, so clients of one test (other keys, other addresses) never share a
/// record directory.
static RUNS: AtomicU32 = AtomicU32::new(0);

/// An askpass answer computed when the prompt comes: the current TOTP code of the `Secret:`
/// the prompt shows (in-login enrolment), by `oathtool`.
pub const CODE_OF_SHOWN_SECRET: &str = "@code-of-shown-secret@";

/// Separates recorded prompts (a prompt may span lines).
const RECORD_SEPARATOR: char = '\u{1e}';

/// Longest a single client run may take.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

const ASKPASS: &str = r#"#!/bin/sh
# mfa-e2e askpass: record the prompt, answer with the next line of the queue.
d='@DIR@'
# A notice with nothing to answer ("Confirm user presence for key ...", a security key):
# ssh kills it once the key has signed, so it must not take an answer from the queue.
[ "$SSH_ASKPASS_PROMPT" = none ] && exit 0
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
'@code-of-shown-secret@')
    # The current code of the TOTP secret this prompt shows (in-login enrolment).
    s=$(printf '%s\n' "$1" | sed -n 's/^Secret: *\([A-Z2-7]*\).*/\1/p' | head -n 1)
    oathtool --totp -b "$s" || exit 1
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
#[derive(Debug, Clone)]
pub struct SshClient {
    pub port: u16,
    pub user: String,
    dir: PathBuf,
    /// The private key offered first (publickey), when the login uses one.
    pub identity: Option<PathBuf>,
    /// The local address connections come from (`BindAddress`), e.g. 127.0.0.2.
    pub source: Option<String>,
    /// More `-o` options, before all others (e.g. `SecurityKeyProvider=…`).
    pub extra_options: Vec<String>,
}

impl SshClient {
    pub fn new(dir: &Path, port: u16, user: &str) -> Self {
        SshClient {
            port,
            user: user.to_string(),
            dir: dir.to_path_buf(),
            identity: None,
            source: None,
            extra_options: Vec::new(),
        }
    }

    /// The same client with `-o OPTION` added (`Name=value`).
    pub fn with_option(&self, option: &str) -> Self {
        let mut c = self.clone();
        c.extra_options.push(option.to_string());
        c
    }

    /// The same client, logging in with the key `identity` (then keyboard-interactive).
    pub fn with_key(&self, identity: &Path) -> Self {
        let mut c = self.clone();
        c.identity = Some(identity.to_path_buf());
        c
    }

    /// The same client, connecting from the local address `source` (any of 127.0.0.0/8).
    pub fn from_address(&self, source: &str) -> Self {
        let mut c = self.clone();
        c.source = Some(source.to_string());
        c
    }

    /// This client's ssh options: its key and source address, then [`Self::common_options`]
    /// (for ssh the first value of an option wins).
    pub fn options(&self) -> Vec<String> {
        let mut o = Vec::new();
        for extra in &self.extra_options {
            o.extend(["-o".to_string(), extra.clone()]);
        }
        if let Some(key) = &self.identity {
            o.extend([
                "-o".to_string(),
                format!("IdentityFile={}", key.display()),
                "-o".to_string(),
                "IdentitiesOnly=yes".to_string(),
                "-o".to_string(),
                "PreferredAuthentications=publickey,keyboard-interactive".to_string(),
            ]);
        }
        if let Some(addr) = &self.source {
            o.extend(["-o".to_string(), format!("BindAddress={addr}")]);
        }
        o.extend(Self::common_options(10));
        o
    }

    /// `user@127.0.0.1:path`, the remote side of a copy.
    pub fn remote(&self, path: &str) -> String {
        format!("{}@127.0.0.1:{path}", self.user)
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
        let mut args: Vec<OsString> = self.options().into_iter().map(OsString::from).collect();
        args.push("-p".into());
        args.push(self.port.to_string().into());
        args.push(format!("{}@127.0.0.1", self.user).into());
        args.push("--".into());
        args.push(command.into());
        self.run_client("ssh", args, answers)
    }

    /// `scp local user@127.0.0.1:remote`, answering prompts with `answers`.
    pub fn scp_upload(&self, local: &Path, remote: &str, answers: &[&str]) -> Result<LoginOutcome> {
        self.scp(&[], local.as_os_str(), self.remote(remote), answers)
    }

    /// `scp EXTRA from to` (`-O`: the legacy scp protocol instead of sftp).
    pub fn scp(
        &self,
        extra: &[&str],
        from: impl AsRef<OsStr>,
        to: impl AsRef<OsStr>,
        answers: &[&str],
    ) -> Result<LoginOutcome> {
        let mut args: Vec<OsString> = self.options().into_iter().map(OsString::from).collect();
        args.extend(extra.iter().map(OsString::from));
        args.push("-P".into());
        args.push(self.port.to_string().into());
        args.push(from.as_ref().to_os_string());
        args.push(to.as_ref().to_os_string());
        self.run_client("scp", args, answers)
    }

    /// `sftp -b BATCH`: the batch file's commands, stopping at the first that fails.
    /// `BatchMode=no` comes before `-b` (which would turn keyboard-interactive off).
    pub fn sftp_batch(&self, batch: &Path, answers: &[&str]) -> Result<LoginOutcome> {
        let mut args: Vec<OsString> = self.options().into_iter().map(OsString::from).collect();
        args.push("-o".into());
        args.push("BatchMode=no".into());
        args.push("-b".into());
        args.push(batch.as_os_str().to_os_string());
        args.push("-P".into());
        args.push(self.port.to_string().into());
        args.push(format!("{}@127.0.0.1", self.user).into());
        self.run_client("sftp", args, answers)
    }

    /// `rsync -e "ssh OPTIONS -p PORT" RSYNC_ARGS`.
    pub fn rsync(&self, rsync_args: &[&OsStr], answers: &[&str]) -> Result<LoginOutcome> {
        let mut rsh = vec!["ssh".to_string()];
        rsh.extend(self.options());
        rsh.extend(["-p".to_string(), self.port.to_string()]);
        let mut args: Vec<OsString> = vec!["-e".into(), rsh.join(" ").into()];
        args.extend(rsync_args.iter().map(OsString::from));
        self.run_client("rsync", args, answers)
    }

    /// Runs `program ARGS` the way every client here runs: no tty, prompts through the
    /// recording askpass answered from `answers`, bounded by [`CLIENT_TIMEOUT`].
    pub fn run_client(
        &self,
        program: &str,
        args: Vec<OsString>,
        answers: &[&str],
    ) -> Result<LoginOutcome> {
        let n = RUNS.fetch_add(1, Ordering::Relaxed) + 1;
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
