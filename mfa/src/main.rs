//! mfa: the command line for users (enrol, bypass codes) and administrators (status, unlock,
//! reset). It only relays: mfad decides who may do what, from the caller's uid.

use clap::{Parser, Subcommand};
use mfa_proto::{
    AdminOp, Client, ClientError, Conversation, ImportFile, ImportFormat, ListFilter, NewDevice,
    Operation, Outcome, Terminal,
};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use zeroize::Zeroizing;

/// The end of `mfa --help` (and the EXAMPLES section of mfa(1)).
const AFTER_HELP: &str = "\
Examples:
  mfa enroll totp                     enrol an authenticator app (QR code, then one code)
  mfa enroll security-key ~/.ssh/id_ed25519_sk.pub   register an OpenSSH security key
  mfa devices                         your devices, numbered, and bypass codes left
  mfa default 2                       make device 2 your default (used by scp, sftp, rsync)
  mfa bypass-codes                    ten new single-use codes, for when the phone is lost
  mfa add hotp --name yubikey < key   add a hardware token, secret read from standard input
  sudo mfa admin status alice         alice's devices, failures and lock
  sudo mfa admin unlock alice         lift alice's lockout
  sudo mfa admin reset alice          remove everything alice had (lost every device)
  sudo mfa admin backup /var/backups/mfa.db

Exit status: 0 done, 1 refused or failed, 2 usage error, 3 mfad unreachable.
See mfa(1), mfad(8), mfad.toml(5), pam_mfa(8).";

#[derive(Parser)]
#[command(
    version,
    about = "Manage your second factor for SSH logins",
    after_help = AFTER_HELP
)]
pub(crate) struct Cli {
    /// mfad's socket.
    #[arg(long, env = "MFA_SOCKET", default_value = mfa_proto::DEFAULT_SOCKET, global = true)]
    socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Enrol a second factor for your own account.
    Enroll {
        #[command(subcommand)]
        kind: EnrollKind,
    },
    /// Add a device: an authenticator app, a hardware token, a phone, or a push target.
    Add {
        #[command(subcommand)]
        kind: AddKind,
    },
    /// List your devices and how many bypass codes you have left.
    Devices,
    /// Make device N (as `mfa devices` numbers them) your default method.
    Default {
        /// The device's number in `mfa devices`.
        n: u32,
    },
    /// Remove device N (as `mfa devices` numbers them).
    Remove {
        /// The device's number in `mfa devices`.
        n: u32,
    },
    /// Make ten new single-use bypass codes (the old ones stop working).
    BypassCodes,
    /// Administrator commands (root only).
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Subcommand)]
enum EnrollKind {
    /// An authenticator app (TOTP): shows a QR code, then asks for one code to confirm.
    Totp {
        /// A name for the device, shown in `mfa devices` and `mfa admin status`.
        #[arg(long)]
        name: Option<String>,
    },
    /// An OpenSSH security key (FIDO): the public key of a key made with
    /// `ssh-keygen -t ed25519-sk` (or ecdsa-sk). Where the host turns it on
    /// (`[policy] security_key`), an ssh login with that key needs no other second factor.
    SecurityKey {
        /// The public key file (e.g. ~/.ssh/id_ed25519_sk.pub); `-` or nothing reads it from
        /// standard input.
        file: Option<PathBuf>,
        /// A name for the device, shown in `mfa devices` and `mfa admin status`.
        #[arg(long)]
        name: Option<String>,
    },
}

#[derive(Subcommand)]
enum AddKind {
    /// An authenticator app (same as `mfa enroll totp`).
    Totp {
        /// A name for the device, shown in `mfa devices` and `mfa admin status`.
        #[arg(long)]
        name: Option<String>,
    },
    /// A hardware token that counts button presses (HOTP, RFC 4226). Its secret is read
    /// from standard input, never from the command line.
    Hotp {
        /// A name for the device, shown in `mfa devices` and `mfa admin status`.
        #[arg(long)]
        name: Option<String>,
        /// Digits per code the token shows (6 or 8).
        #[arg(long, default_value_t = 6)]
        digits: u32,
    },
    /// A phone number for SMS passcodes and phone calls (E.164, e.g. +15555551234). A code is
    /// sent to it, and the phone is added once you type that code.
    Phone {
        /// The phone number in E.164 form: +, country code, number (e.g. +15555551234).
        number: String,
        /// A name for the device, shown in `mfa devices` and `mfa admin status`.
        #[arg(long)]
        name: Option<String>,
    },
    /// Push approvals. With ntfy, leave out the target: mfad makes a private topic and shows
    /// it (a webhook site gives its device id). A test push is sent, and the device is added
    /// once you approve it.
    Push {
        /// The push target: with ntfy, leave it out (mfad makes the topic); with a webhook
        /// notifier, the device id the site gave.
        target: Option<String>,
        /// A name for the device, shown in `mfa devices` and `mfa admin status`.
        #[arg(long)]
        name: Option<String>,
    },
    /// A hardware token showing time-based codes (TOTP, RFC 6238). Its secret is read from
    /// standard input, never from the command line.
    TotpToken {
        /// A name for the device, shown in `mfa devices` and `mfa admin status`.
        #[arg(long)]
        name: Option<String>,
        /// Digits per code the token shows (6 or 8).
        #[arg(long, default_value_t = 6)]
        digits: u32,
        /// Seconds each code of the token is valid (its time step, usually 30 or 60).
        #[arg(long, default_value_t = 30)]
        period: u64,
    },
}

/// The account an admin command acts on.
#[derive(clap::Args)]
struct Account {
    /// The user's login name.
    user: String,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Show a user's devices, bypass codes, failures and lock.
    Status {
        /// The user's login name.
        user: String,
        /// One JSON document (fields in docs/admin-json.md) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List the users mfad knows: their methods, bypass codes left, failures and lock.
    #[command(group(clap::ArgGroup::new("filter").multiple(false)))]
    List {
        /// Only users with a device or an unused bypass code.
        #[arg(long, group = "filter")]
        enrolled: bool,
        /// Only users mfad has a record of (failures, spent codes) but nothing to log in
        /// with: no device and no unused bypass code.
        #[arg(long, group = "filter")]
        unenrolled: bool,
        /// Only users locked out now.
        #[arg(long, group = "filter")]
        locked: bool,
        /// Only enrolled users with fewer than N unused bypass codes (N: --low-bypass-below).
        #[arg(long, group = "filter")]
        low_bypass: bool,
        /// The threshold of --low-bypass.
        #[arg(long, value_name = "N", default_value_t = mfa_proto::DEFAULT_LOW_BYPASS)]
        low_bypass_below: u32,
        /// One JSON document (fields in docs/admin-json.md) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Lift a lockout and clear the failure count.
    Unlock(Account),
    /// Remove all of a user's devices and codes (for a user who lost everything).
    Reset(Account),
    /// Issue new bypass codes for a user (the old ones stop working).
    BypassCodes(Account),
    /// Forget a user's remembered logins (`remember_for`), so the next login asks again.
    Forget(Account),
    /// Import enrolments from google-authenticator or pam_oath, all or none.
    Import {
        #[command(subcommand)]
        from: ImportFrom,
    },
    /// Write a consistent copy of mfad's database to FILE (a new file, mode 0600), while
    /// mfad runs. Restoring is done with mfad stopped: `mfad --restore FILE`.
    Backup {
        /// Where to write the copy: a new file (mfad refuses to overwrite one), written by
        /// mfad as root.
        file: PathBuf,
    },
    /// Add hardware tokens from a file, all or none. One token per line:
    /// `user,kind,name,secret,digits[,extra]` where kind is hotp or totp, the secret is
    /// base32 (or hex after `hex:`), and extra is the HOTP start counter (default 0) or the
    /// TOTP period (default 30). Blank lines and lines starting with # are skipped.
    ImportTokens {
        /// The token file (lines as above), at most 63 KiB: split a larger one.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum ImportFrom {
    /// Each user's `~/.google_authenticator` (google-authenticator-libpam): the secret,
    /// TOTP or HOTP, the codes already used (DISALLOW_REUSE); scratch codes become bypass
    /// codes. Without USERs, every HOME_ROOT/NAME/.google_authenticator there is.
    GoogleAuthenticator {
        /// Where home directories are: USER's file is HOME_ROOT/USER/.google_authenticator.
        /// Default: each USER's home directory as the user database (passwd, LDAP...) gives
        /// it; /home when no USER is named.
        #[arg(long, value_name = "DIR")]
        home_root: Option<PathBuf>,
        /// Where each USER's file is, as pam_google_authenticator's `secret=` option says it:
        /// `${USER}`, `${HOME}` and a leading `~` are replaced, e.g. `/var/lib/ga/${USER}`.
        /// Needs the USERs named.
        #[arg(long, value_name = "PATH", conflicts_with = "home_root")]
        secret: Option<String>,
        /// Show what would be imported; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// The users to import (default: every file under HOME_ROOT, /home).
        users: Vec<String>,
    },
    /// A pam_oath users file (`/etc/users.oath`): HOTP and TOTP tokens, digits, counters.
    Oath {
        /// The pam_oath users file, e.g. /etc/users.oath.
        file: PathBuf,
        /// Show what would be imported; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// The home directory the user database gives `user`.
// The CLI only finds which file to read; mfad looks the account up again and decides.
#[allow(clippy::disallowed_methods)]
fn home_of(user: &str) -> Result<PathBuf, InputError> {
    match nix::unistd::User::from_name(user) {
        Ok(Some(u)) => Ok(u.dir),
        Ok(None) => Err(InputError::NoSuchUser(user.into())),
        Err(why) => Err(InputError::Lookup {
            user: user.into(),
            why,
        }),
    }
}

/// Why what the CLI was to read and send (import files, a public key) could not be read.
#[derive(Debug, thiserror::Error)]
enum InputError {
    #[error("{0}: no such user")]
    NoSuchUser(String),
    #[error("{user}: cannot look the user up: {why}")]
    Lookup { user: String, why: nix::Error },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not UTF-8 text", .0.display())]
    NotText(PathBuf),
    #[error("--secret needs the users to import named")]
    SecretNeedsUsers,
    #[error("cannot list {}: {source}", dir.display())]
    List {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("no {}/*/.google_authenticator found", .0.display())]
    NoneFound(PathBuf),
    #[error("too much to import at once; give fewer users per run")]
    TooMuch,
    #[error("{} is not an OpenSSH .pub file", .0.display())]
    NotAPublicKey(PathBuf),
    #[error("no public key given on standard input")]
    NoPublicKey,
}

/// Where `user`'s google-authenticator file is: `secret` (pam_google_authenticator's
/// `secret=` syntax), else HOME_ROOT/USER, else the user's home directory.
fn ga_file(
    user: &str,
    home_root: Option<&std::path::Path>,
    secret: Option<&str>,
) -> Result<PathBuf, InputError> {
    if let Some(template) = secret {
        let needs_home = template.starts_with('~') || template.contains("${HOME}");
        let home = if needs_home {
            home_of(user)?.display().to_string()
        } else {
            String::new()
        };
        let mut path = template.replace("${USER}", user).replace("${HOME}", &home);
        if let Some(rest) = path.strip_prefix('~') {
            path = format!("{home}{rest}");
        }
        return Ok(PathBuf::from(path));
    }
    let home = match home_root {
        Some(root) => root.join(user),
        None => home_of(user)?,
    };
    Ok(home.join(".google_authenticator"))
}

/// Reads a file to import, naming it in any error.
fn read_import(path: &std::path::Path, user: Option<String>) -> Result<ImportFile, InputError> {
    let bytes = std::fs::read(path).map_err(|source| InputError::Read {
        path: path.into(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|_| InputError::NotText(path.into()))?;
    Ok(ImportFile {
        path: path.display().to_string(),
        user,
        text: Zeroizing::new(text),
    })
}

/// The files `mfa admin import` sends, or the error to print.
fn import_files(from: &ImportFrom) -> Result<(ImportFormat, Vec<ImportFile>, bool), InputError> {
    let (format, files, dry_run) = match from {
        ImportFrom::Oath { file, dry_run } => {
            (ImportFormat::Oath, vec![read_import(file, None)?], *dry_run)
        }
        ImportFrom::GoogleAuthenticator {
            home_root,
            secret,
            dry_run,
            users,
        } => {
            let users = if users.is_empty() {
                if secret.is_some() {
                    return Err(InputError::SecretNeedsUsers);
                }
                let home_root = home_root.clone().unwrap_or_else(|| PathBuf::from("/home"));
                let mut found = Vec::new();
                let dir = std::fs::read_dir(&home_root).map_err(|source| InputError::List {
                    dir: home_root.clone(),
                    source,
                })?;
                for entry in dir.flatten() {
                    if entry.path().join(".google_authenticator").is_file() {
                        found.push(entry.file_name().to_string_lossy().into_owned());
                    }
                }
                found.sort();
                if found.is_empty() {
                    return Err(InputError::NoneFound(home_root));
                }
                found
            } else {
                users.clone()
            };
            let mut files = Vec::new();
            for user in users {
                let path = ga_file(&user, home_root.as_deref(), secret.as_deref())?;
                files.push(read_import(&path, Some(user))?);
            }
            (ImportFormat::GoogleAuthenticator, files, *dry_run)
        }
    };
    let size: usize = files.iter().map(|f| f.text.len() + f.path.len() + 64).sum();
    if size > mfa_proto::MAX_FRAME / 2 {
        return Err(InputError::TooMuch);
    }
    Ok((format, files, dry_run))
}

/// An OpenSSH .pub file's text, or (`-` or no file) one line read from standard input, so
/// that a code for the fresh second factor can follow it there.
fn read_public_key(
    file: Option<&std::path::Path>,
    terminal: &mut Terminal,
) -> Result<String, InputError> {
    match file.filter(|p| p.as_os_str() != "-") {
        Some(path) => {
            // A .pub line is short; a file much longer is not one.
            let bytes = std::fs::read(path).map_err(|source| InputError::Read {
                path: path.into(),
                source,
            })?;
            if bytes.len() > 16 * 1024 {
                return Err(InputError::NotAPublicKey(path.into()));
            }
            String::from_utf8(bytes).map_err(|_| InputError::NotText(path.into()))
        }
        None => terminal
            .prompt("Public key (the line of the .pub file): ", true)
            .map(|line| line.to_string())
            .ok_or(InputError::NoPublicKey),
    }
}

/// Reads a token secret from stdin without echo (or from a pipe); `None` when there is none.
fn read_secret(terminal: &mut Terminal) -> Option<Zeroizing<String>> {
    let secret = terminal.prompt("Token secret (base32, or hex:...): ", false);
    if secret.is_none() {
        eprintln!("mfa: no secret given");
    }
    secret
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut terminal = Terminal::for_cli();
    let op = match cli.command {
        Command::Enroll {
            kind: EnrollKind::Totp { name },
        } => Operation::EnrollTotp { name },
        Command::Enroll {
            kind: EnrollKind::SecurityKey { file, name },
        } => match read_public_key(file.as_deref(), &mut terminal) {
            Ok(public_key) => Operation::AddDevice(NewDevice::SecurityKey { name, public_key }),
            Err(e) => {
                eprintln!("mfa: {e}; nothing was added");
                return ExitCode::from(2);
            }
        },
        Command::BypassCodes => Operation::BypassCodes,
        Command::Devices => Operation::ListDevices,
        Command::Default { n } => Operation::SetDefault { index: n },
        Command::Remove { n } => Operation::RemoveDevice { index: n },
        Command::Add { kind } => Operation::AddDevice(match kind {
            AddKind::Totp { name } => NewDevice::Totp { name },
            AddKind::Phone { number, name } => NewDevice::Phone { name, number },
            // An empty target asks mfad to generate the topic.
            AddKind::Push { target, name } => NewDevice::Push {
                name,
                target: target.unwrap_or_default(),
            },
            AddKind::Hotp { name, digits } => match read_secret(&mut terminal) {
                Some(secret) => NewDevice::Hotp {
                    name,
                    secret,
                    digits,
                },
                None => return ExitCode::from(2),
            },
            AddKind::TotpToken {
                name,
                digits,
                period,
            } => match read_secret(&mut terminal) {
                Some(secret) => NewDevice::TotpToken {
                    name,
                    secret,
                    digits,
                    period,
                },
                None => return ExitCode::from(2),
            },
        }),
        Command::Admin { command } => Operation::Admin(match command {
            AdminCommand::Status { user, json: false } => AdminOp::Status { user },
            AdminCommand::Status { user, json: true } => AdminOp::StatusJson { user },
            AdminCommand::List {
                enrolled,
                unenrolled,
                locked,
                low_bypass,
                low_bypass_below,
                json,
            } => AdminOp::List {
                filter: match (enrolled, unenrolled, locked, low_bypass) {
                    (true, ..) => ListFilter::Enrolled,
                    (_, true, ..) => ListFilter::Unenrolled,
                    (_, _, true, _) => ListFilter::Locked,
                    (.., true) => ListFilter::LowBypass,
                    _ => ListFilter::All,
                },
                low_bypass_below,
                json,
            },
            AdminCommand::Unlock(Account { user }) => AdminOp::Unlock { user },
            AdminCommand::Reset(Account { user }) => AdminOp::Reset { user },
            AdminCommand::BypassCodes(Account { user }) => AdminOp::BypassCodes { user },
            AdminCommand::Forget(Account { user }) => AdminOp::Forget { user },
            AdminCommand::Import { from } => match import_files(&from) {
                Ok((format, files, dry_run)) => AdminOp::Import {
                    format,
                    files,
                    dry_run,
                },
                Err(e) => {
                    eprintln!("mfa: {e}; nothing was imported");
                    return ExitCode::from(2);
                }
            },
            AdminCommand::Backup { file } => {
                // mfad writes the file: give it the path as seen from here.
                let file = if file.is_absolute() {
                    file
                } else {
                    match std::env::current_dir() {
                        Ok(dir) => dir.join(file),
                        Err(e) => {
                            eprintln!("mfa: cannot tell the current directory: {e}");
                            return ExitCode::from(2);
                        }
                    }
                };
                match file.to_str() {
                    Some(path) => AdminOp::Backup {
                        path: path.to_string(),
                    },
                    None => {
                        eprintln!("mfa: {} is not a UTF-8 path", file.display());
                        return ExitCode::from(2);
                    }
                }
            }
            AdminCommand::ImportTokens { file } => {
                let csv = match std::fs::read(&file) {
                    Ok(bytes) if bytes.len() > mfa_proto::MAX_FRAME - 1024 => {
                        eprintln!(
                            "mfa: {} is larger than {} KiB; split it into smaller files",
                            file.display(),
                            (mfa_proto::MAX_FRAME - 1024) / 1024
                        );
                        return ExitCode::from(2);
                    }
                    Ok(bytes) => match String::from_utf8(bytes) {
                        Ok(s) => s,
                        Err(_) => {
                            eprintln!("mfa: {} is not UTF-8 text", file.display());
                            return ExitCode::from(2);
                        }
                    },
                    Err(e) => {
                        eprintln!("mfa: cannot read {}: {e}", file.display());
                        return ExitCode::from(2);
                    }
                };
                AdminOp::ImportTokens { csv }
            }
        }),
    };
    let result = Client::connect(&cli.socket, Duration::from_secs(3), Duration::from_secs(30))
        .and_then(|mut client| mfa_proto::run_conversation(&mut client, op, &mut terminal));
    match result {
        Ok(Outcome::Allow) => ExitCode::SUCCESS,
        Ok(Outcome::Deny | Outcome::Ignore) => ExitCode::from(1),
        Err(e @ ClientError::Connect { .. }) => {
            eprintln!("mfa: {e}\nmfa: is mfad running? (systemctl status mfad)");
            ExitCode::from(3)
        }
        Err(e) => {
            eprintln!("mfa: {e}");
            ExitCode::from(3)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ga_file;
    use std::path::{Path, PathBuf};

    #[test]
    fn a_users_google_authenticator_file_is_found_where_pam_google_authenticator_looks() {
        // Default: the home directory the user database gives.
        assert_eq!(
            ga_file("root", None, None).ok(),
            Some(PathBuf::from("/root/.google_authenticator"))
        );
        assert_eq!(
            ga_file("root", Some(Path::new("/srv/homes")), None).ok(),
            Some(PathBuf::from("/srv/homes/root/.google_authenticator"))
        );
        // pam_google_authenticator's secret= syntax.
        assert_eq!(
            ga_file("root", None, Some("/var/lib/ga/${USER}")).ok(),
            Some(PathBuf::from("/var/lib/ga/root"))
        );
        assert_eq!(
            ga_file("root", None, Some("~/.ga-${USER}")).ok(),
            Some(PathBuf::from("/root/.ga-root"))
        );
        assert_eq!(
            ga_file("root", None, Some("${HOME}/.config/ga")).ok(),
            Some(PathBuf::from("/root/.config/ga"))
        );
        let unknown = ga_file("no-such-user-mfa-test", None, None)
            .unwrap_err()
            .to_string();
        assert!(unknown.contains("no such user"), "{unknown}");
    }
}
