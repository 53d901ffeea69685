//! mfa-login-prompt: the second factor for sites that put it after key authentication with
//! `ForceCommand /usr/sbin/mfa-login-prompt` (as Duo's login_duo).
//!
//! On a terminal it shows the menu. Without one (scp, sftp, rsync, `ssh host cmd`) it asks
//! mfad for the user's default method and writes nothing to stdout, which belongs to the
//! sftp or scp stream. Then it replaces itself with the user's shell or command, so exit
//! status, environment and signals are the ones the user expects.

use clap::Parser;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use mfa_proto::client::{INTERRUPTED_TEXT, UNAVAILABLE_SECURE_TEXT};
use mfa_proto::{AuthContext, AuthMode, Client, FailMode, Operation, Outcome, Terminal};
use std::io::IsTerminal;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Duration;

#[derive(Parser)]
#[command(
    version,
    about = "Second factor for sshd's ForceCommand, then the user's shell or command"
)]
pub(crate) struct Args {
    /// mfad's socket.
    #[arg(long, default_value = mfa_proto::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// What to do when mfad cannot be reached or answers nonsense: `secure` refuses the
    /// session (default); `safe` lets it through and says so on stderr. Once mfad has spoken,
    /// a broken conversation is refused in either mode.
    #[arg(
        long,
        default_value = "secure",
        value_parser = PossibleValuesParser::new(FailMode::NAMES).try_map(|s| s.parse::<FailMode>())
    )]
    failmode: FailMode,
    /// Seconds to wait for each message from mfad; keep it above 5, as mfad sends a
    /// keep-alive every 5 s while a push or call is pending.
    #[arg(long, default_value_t = 75)]
    timeout: u64,
    /// The program run for `Subsystem sftp internal-sftp` setups, where sshd hands the
    /// helper the word `internal-sftp` instead of a program.
    #[arg(long, default_value = "/usr/lib/openssh/sftp-server")]
    sftp_server: PathBuf,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// With ExposeAuthInfo, sshd names a file listing the methods (and keys) this session used.
fn auth_info() -> Option<String> {
    let path = env("SSH_USER_AUTH")?;
    let text = std::fs::read_to_string(path).ok()?;
    Some(text.chars().take(16 * 1024).collect())
}

// The helper runs as the user and reads its own passwd entry (name, shell): it is not mfad,
// whose lookups go through its Accounts trait.
#[allow(clippy::disallowed_methods)]
fn main() -> ExitCode {
    let args = Args::parse();
    let uid = nix::unistd::getuid();
    let Ok(Some(me)) = nix::unistd::User::from_uid(uid) else {
        eprintln!("mfa-login-prompt: uid {uid} has no user name; refusing the session");
        return ExitCode::from(1);
    };
    let command = env("SSH_ORIGINAL_COMMAND");
    let interactive = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    let ssh_connection = env("SSH_CONNECTION");
    let ctx = AuthContext {
        user: me.name.clone(),
        service: "mfa-login-prompt".into(),
        rhost: ssh_connection
            .as_deref()
            .and_then(|c| c.split_whitespace().next())
            .map(String::from),
        tty: env("SSH_TTY"),
        ssh_connection,
        ssh_auth_info: auth_info(),
        mode: if interactive {
            AuthMode::Menu
        } else {
            AuthMode::Auto
        },
        can_prompt: interactive,
        command: command.clone(),
    };
    let mut terminal = Terminal::for_login_prompt(interactive);
    let result = Client::connect(
        &args.socket,
        Duration::from_secs(3),
        Duration::from_secs(args.timeout.clamp(1, 3600)),
    )
    .and_then(|mut c| {
        mfa_proto::run_conversation(&mut c, Operation::Authenticate(ctx), &mut terminal)
    });
    match result {
        Ok(Outcome::Allow) => {}
        Ok(Outcome::Deny | Outcome::Ignore) => return ExitCode::from(1),
        // Once mfad has spoken, only its verdict lets anyone in: waiting at the prompt
        // until mfad gives up must not turn into failmode=safe.
        Err(e) if e.mfad_had_spoken() => {
            eprintln!("{INTERRUPTED_TEXT} ({e})");
            return ExitCode::from(1);
        }
        Err(e) if args.failmode == FailMode::Safe => {
            eprintln!(
                "mfa-login-prompt: two-factor service unavailable ({e}); failmode=safe lets you in"
            );
        }
        Err(e) => {
            eprintln!("{UNAVAILABLE_SECURE_TEXT} ({e})");
            return ExitCode::from(1);
        }
    }
    let shell = if me.shell.as_os_str().is_empty() {
        PathBuf::from("/bin/sh")
    } else {
        me.shell.clone()
    };
    // exec only returns on failure.
    let err = match command.as_deref() {
        Some("internal-sftp") => Command::new(&args.sftp_server).exec(),
        Some(cmd) => Command::new(&shell).arg("-c").arg(cmd).exec(),
        None => {
            // A login shell, as sshd starts it: argv[0] is the shell's name with a dash.
            let name = shell
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "sh".into());
            Command::new(&shell).arg0(format!("-{name}")).exec()
        }
    };
    eprintln!("mfa-login-prompt: cannot run {}: {err}", shell.display());
    ExitCode::from(127)
}
