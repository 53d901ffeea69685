//! An interactive login through a real pseudo-terminal, typed by `expect`: the way a person
//! at a terminal meets the prompts.

use crate::error::Result;
use crate::process::{run, text, timed};
use crate::scratch::write_file;
use crate::ssh::SshClient;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Types the password and the passcode at their prompts, runs `echo E2E-$((6*7))` in the
/// login shell (so the typed command and its output differ) and exits. Exit codes name the
/// step that went wrong.
const SCRIPT: &str = r#"
set timeout 30
log_user 1
spawn ssh {*}$argv
expect {
    -re {Password: $} { send -- "$env(E2E_PASSWORD)\r" }
    timeout { puts "\nE2E: no password prompt"; exit 10 }
    eof { puts "\nE2E: closed before the password prompt"; exit 11 }
}
expect {
    -re {Passcode: $} { send -- "$env(E2E_CODE)\r" }
    timeout { puts "\nE2E: no passcode prompt"; exit 12 }
    eof { puts "\nE2E: closed before the passcode prompt"; exit 13 }
}
expect {
    -re {\$ $} { send -- "echo E2E-\$((6*7))\r" }
    timeout { puts "\nE2E: no shell prompt"; exit 14 }
    eof { puts "\nE2E: closed before the shell prompt"; exit 15 }
}
expect {
    "E2E-42" { send -- "exit\r" }
    timeout { puts "\nE2E: the command did not run"; exit 16 }
    eof { puts "\nE2E: closed before the command ran"; exit 17 }
}
expect eof
catch wait result
exit [lindex $result 3]
"#;

/// A key login whose second factor is asked after authentication, by the ForceCommand
/// helper on the terminal: answers its prompt (the menu's, or the passcode's) with the code,
/// then as [`SCRIPT`].
const KEY_SCRIPT: &str = r#"
set timeout 30
log_user 1
spawn ssh {*}$argv
expect {
    -re {(Passcode or option \([0-9-]+\)|Passcode): $} { send -- "$env(E2E_CODE)\r" }
    -re {Password: $} { puts "\nE2E: asked for a password"; exit 10 }
    timeout { puts "\nE2E: no passcode prompt"; exit 12 }
    eof { puts "\nE2E: closed before the passcode prompt"; exit 13 }
}
expect {
    -re {\$ $} { send -- "echo E2E-\$((6*7))\r" }
    timeout { puts "\nE2E: no shell prompt"; exit 14 }
    eof { puts "\nE2E: closed before the shell prompt"; exit 15 }
}
expect {
    "E2E-42" { send -- "exit\r" }
    timeout { puts "\nE2E: the command did not run"; exit 16 }
    eof { puts "\nE2E: closed before the command ran"; exit 17 }
}
expect eof
catch wait result
exit [lindex $result 3]
"#;

#[derive(Debug, Clone)]
pub struct Transcript {
    pub status: Option<i32>,
    /// Everything the terminal showed (expect echoes the session).
    pub screen: String,
    pub stderr: String,
}

impl Transcript {
    pub fn describe(&self) -> String {
        format!(
            "expect exit {:?}\n--- terminal ---\n{}\n--- stderr ---\n{}",
            self.status, self.screen, self.stderr
        )
    }
}

/// Logs in as `user` on `port` through a pty, typing `password` and `code`.
pub fn terminal_login(
    dir: &Path,
    port: u16,
    user: &str,
    password: &str,
    code: &str,
) -> Result<Transcript> {
    let script = dir.join("login.exp");
    write_file(&script, SCRIPT, 0o600)?;
    let mut cmd: Command = timed(Duration::from_secs(90), "expect");
    cmd.arg("-f")
        .arg(&script)
        .arg("--")
        .args(SshClient::common_options(10))
        .args(["-tt", "-p", &port.to_string()])
        .arg(format!("{user}@127.0.0.1"))
        .env("E2E_PASSWORD", password)
        .env("E2E_CODE", code)
        .env("TERM", "xterm")
        .env_remove("SSH_ASKPASS")
        .env_remove("SSH_AUTH_SOCK");
    let out = run(&mut cmd)?;
    Ok(Transcript {
        status: out.status.code(),
        screen: text(&out.stdout),
        stderr: text(&out.stderr),
    })
}

/// Logs in through a pty with `client` (its key), typing `code` at the second-factor prompt
/// the ForceCommand helper shows on the terminal.
pub fn terminal_key_login(dir: &Path, client: &SshClient, code: &str) -> Result<Transcript> {
    let script = dir.join("key-login.exp");
    write_file(&script, KEY_SCRIPT, 0o600)?;
    let mut cmd: Command = timed(Duration::from_secs(90), "expect");
    cmd.arg("-f")
        .arg(&script)
        .arg("--")
        .args(client.options())
        .args(["-tt", "-p", &client.port.to_string()])
        .arg(format!("{}@127.0.0.1", client.user))
        .env("E2E_CODE", code)
        .env("TERM", "xterm")
        .env_remove("SSH_ASKPASS")
        .env_remove("SSH_AUTH_SOCK");
    let out = run(&mut cmd)?;
    Ok(Transcript {
        status: out.status.code(),
        screen: text(&out.stdout),
        stderr: text(&out.stderr),
    })
}
