//! The wire protocol between mfad and its clients (pam_mfa, mfa, mfa-login-prompt).
//!
//! A connection carries one conversation: the client opens it with [`ClientMsg::Hello`]
//! naming an [`Operation`]; from then on the daemon drives, sending [`ServerMsg`]s, and the
//! client answers each [`ServerMsg::Prompt`] with one [`ClientMsg::Answer`]. The conversation
//! ends with [`ServerMsg::Done`]. Frames are a 4-byte big-endian length and a JSON body of at
//! most [`MAX_FRAME`] bytes (see [`frame`]).

pub mod alloc;
pub mod client;
mod client_msg;
pub mod frame;
pub mod terminal;
pub mod text;
pub mod web;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

pub use client::{
    Client, ClientError, Conversation, FailMode, Transport, run_conversation, web_request,
};
pub use terminal::Terminal;
pub use web::{ApprovalPage, Closed, VoiceStep, WebAnswer, WebDecision, WebReply, WebRequest};

/// Bumped whenever a message changes shape. Version 2 added [`ServerMsg::KeepAlive`]; mfad
/// still serves version 1 clients (it sends them no keep-alives) and refuses other versions.
pub const PROTOCOL_VERSION: u32 = 2;

/// The oldest client version mfad still serves.
pub const MIN_PROTOCOL_VERSION: u32 = 1;

/// While mfad itself waits (a push or call pending, a provider's answer, the database), it
/// sends [`ServerMsg::KeepAlive`] this often, so that a client's read timeout measures
/// whether mfad is alive rather than how long the user's phone takes. A client's timeout
/// must be longer than this.
pub const KEEPALIVE_INTERVAL_SECS: u64 = 5;

/// Largest JSON body accepted on either side (a QR code in text is about 4 KiB).
pub const MAX_FRAME: usize = 64 * 1024;

/// Where mfad listens unless configured otherwise.
pub const DEFAULT_SOCKET: &str = "/run/mfa/mfad.sock";

/// Longest answer a client may send: far above any passcode, far below a frame.
pub const MAX_ANSWER: usize = 512;

/// First message of every connection.
///
/// Read by a reader of its own that needs no buffer (see `client_msg.rs`); written by
/// serde's derived writer, which puts each tag first.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMsg {
    Hello {
        version: u32,
        op: Operation,
    },
    /// The user's answer to the last prompt; `None` when the client could not ask.
    Answer {
        text: Option<Zeroizing<String>>,
    },
}

/// What the client wants the conversation to achieve.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Operation {
    /// Second factor for a login. Only uid 0 may ask this.
    Authenticate(AuthContext),
    /// Enrol an authenticator app for the caller's own account (same as `AddDevice(Totp)`).
    EnrollTotp { name: Option<String> },
    /// Replace the caller's own bypass codes.
    BypassCodes,
    /// List the caller's own devices.
    ListDevices,
    /// Add a device to the caller's own account.
    AddDevice(NewDevice),
    /// Make the caller's device number `index` (1-based, as listed) the default method.
    SetDefault { index: u32 },
    /// Remove the caller's device number `index` (1-based, as listed).
    RemoveDevice { index: u32 },
    /// Administrative operations; only uid 0.
    Admin(AdminOp),
    /// The web front's requests (approval pages, provider callbacks); only mfad's
    /// configured web user (and root). mfad answers with one [`ServerMsg::Web`].
    Web(WebRequest),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum AdminOp {
    Status {
        user: String,
    },
    Unlock {
        user: String,
    },
    Reset {
        user: String,
    },
    BypassCodes {
        user: String,
    },
    /// Forget the user's remembered logins, so the next login asks again.
    Forget {
        user: String,
    },
    /// Add hardware tokens from a CSV text (see `mfa admin import-tokens --help`).
    ImportTokens {
        csv: String,
    },
    /// The users mfad's store knows, filtered; as a table, or as one JSON document
    /// (fields in docs/admin-json.md).
    List {
        #[serde(default)]
        filter: ListFilter,
        /// "Low on bypass codes" means fewer unused codes than this.
        #[serde(default = "default_low_bypass")]
        low_bypass_below: u32,
        #[serde(default)]
        json: bool,
    },
    /// `Status` as one JSON document (fields in docs/admin-json.md).
    StatusJson {
        user: String,
    },
    /// A consistent copy of the store, written by mfad to `path` (absolute, a new file,
    /// mode 0600).
    Backup {
        path: String,
    },
    /// Enrolments from another second-factor module's files, all or none; with `dry_run`,
    /// only what would change is shown.
    Import {
        format: ImportFormat,
        files: Vec<ImportFile>,
        #[serde(default)]
        dry_run: bool,
    },
}

/// Whose files [`AdminOp::Import`] reads.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ImportFormat {
    /// google-authenticator-libpam: one `~/.google_authenticator` per user.
    GoogleAuthenticator,
    /// pam_oath: one users file (`/etc/users.oath`) for everyone.
    Oath,
}

/// One file to import, read by the `mfa` command (root) and sent whole.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImportFile {
    /// Where it was read, for messages naming the file and line.
    pub path: String,
    /// The user it belongs to (google-authenticator); none for a users file.
    pub user: Option<String>,
    pub text: Zeroizing<String>,
}

/// Which users `mfa admin list` shows.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ListFilter {
    /// Every user the store knows.
    #[default]
    All,
    /// With a device or an unused bypass code.
    Enrolled,
    /// Known to the store (failures, spent codes) but with no device and no unused code.
    Unenrolled,
    /// Locked out now.
    Locked,
    /// Enrolled, with fewer unused bypass codes than the threshold.
    LowBypass,
}

impl ListFilter {
    pub fn as_str(self) -> &'static str {
        match self {
            ListFilter::All => "all",
            ListFilter::Enrolled => "enrolled",
            ListFilter::Unenrolled => "unenrolled",
            ListFilter::Locked => "locked",
            ListFilter::LowBypass => "low_bypass",
        }
    }
}

/// The default threshold of [`AdminOp::List`]'s `low_bypass_below`.
pub const DEFAULT_LOW_BYPASS: u32 = 3;

fn default_low_bypass() -> u32 {
    DEFAULT_LOW_BYPASS
}

/// A device a user adds to their own account.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NewDevice {
    /// An authenticator app: the daemon makes the secret and shows a QR code.
    Totp { name: Option<String> },
    /// A hardware token counting events (RFC 4226), added by its secret.
    Hotp {
        name: Option<String>,
        secret: Zeroizing<String>,
        digits: u32,
    },
    /// A hardware token showing time-based codes (RFC 6238), added by its secret.
    TotpToken {
        name: Option<String>,
        secret: Zeroizing<String>,
        digits: u32,
        period: u64,
    },
    /// A phone number for SMS passcodes and calls.
    Phone {
        name: Option<String>,
        number: String,
    },
    /// A push notification target (an ntfy topic or the webhook's device id).
    Push {
        name: Option<String>,
        target: String,
    },
    /// An OpenSSH security-key public key: one line of its .pub file
    /// (`sk-ssh-ed25519@openssh.com AAAA… comment`).
    SecurityKey {
        name: Option<String>,
        public_key: String,
    },
}
impl From<AuthContext> for Operation {
    fn from(ctx: AuthContext) -> Self {
        Operation::Authenticate(ctx)
    }
}

/// What the PAM module (or login helper) knows about the login being authenticated.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuthContext {
    pub user: String,
    /// PAM_SERVICE, e.g. "sshd".
    pub service: String,
    /// PAM_RHOST: the client address as sshd saw it.
    pub rhost: Option<String>,
    /// PAM_TTY ("ssh" under sshd).
    pub tty: Option<String>,
    /// SSH_CONNECTION from the PAM environment: "client_ip client_port server_ip server_port".
    pub ssh_connection: Option<String>,
    /// SSH_AUTH_INFO_0 from the PAM environment (which key a publickey step used).
    pub ssh_auth_info: Option<String>,
    /// Menu, or run the default method at once (transfer hosts, non-interactive sessions).
    #[serde(default)]
    pub mode: AuthMode,
    /// Whether the client can show a prompt at all. The ForceCommand helper without a
    /// terminal cannot: then only methods that need no typing are usable.
    #[serde(default = "yes")]
    pub can_prompt: bool,
    /// The command the session will run (SSH_ORIGINAL_COMMAND), for logs and pushes.
    #[serde(default)]
    pub command: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// Show the menu; an empty answer runs the default method.
    #[default]
    Menu,
    /// No menu: run the user's default method at once.
    Auto,
}

impl Operation {
    /// A description for logs that never contains a credential.
    pub fn safe_string(&self) -> String {
        match self {
            Operation::Authenticate(ctx) => format!(
                "authenticate user={} service={} rhost={}",
                ctx.user,
                ctx.service,
                ctx.rhost.as_deref().unwrap_or("-")
            ),
            Operation::EnrollTotp { .. } => "enroll-totp".to_string(),
            Operation::BypassCodes => "bypass-codes".to_string(),
            Operation::ListDevices => "list-devices".to_string(),
            Operation::AddDevice(d) => format!(
                "add-device kind={}",
                match d {
                    NewDevice::Totp { .. } => "totp",
                    NewDevice::Hotp { .. } => "hotp",
                    NewDevice::TotpToken { .. } => "totp-token",
                    NewDevice::Phone { .. } => "phone",
                    NewDevice::Push { .. } => "push",
                    NewDevice::SecurityKey { .. } => "security-key",
                }
            ),
            Operation::SetDefault { index } => format!("set-default index={index}"),
            Operation::RemoveDevice { index } => format!("remove-device index={index}"),
            Operation::Admin(AdminOp::ImportTokens { csv }) => {
                format!("admin-import-tokens lines={}", csv.lines().count())
            }
            Operation::Admin(AdminOp::Status { user }) => format!("admin-status user={user}"),
            Operation::Admin(AdminOp::Unlock { user }) => format!("admin-unlock user={user}"),
            Operation::Admin(AdminOp::Reset { user }) => format!("admin-reset user={user}"),
            Operation::Admin(AdminOp::BypassCodes { user }) => {
                format!("admin-bypass-codes user={user}")
            }
            Operation::Admin(AdminOp::Forget { user }) => format!("admin-forget user={user}"),
            Operation::Admin(AdminOp::List { filter, .. }) => {
                format!("admin-list filter={}", filter.as_str())
            }
            Operation::Admin(AdminOp::Backup { .. }) => "admin-backup".to_string(),
            Operation::Admin(AdminOp::Import { files, .. }) => {
                format!("admin-import files={}", files.len())
            }
            Operation::Admin(AdminOp::StatusJson { user }) => {
                format!("admin-status-json user={user}")
            }
            Operation::Web(request) => request.safe_string(),
        }
    }
}

/// Everything the daemon sends.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    /// Text to show; no answer expected.
    Info { text: String },
    /// An error to show; no answer expected.
    Error { text: String },
    /// Ask the user; exactly one [`ClientMsg::Answer`] is expected.
    Prompt { text: String, echo: bool },
    /// The conversation is over.
    Done { outcome: Outcome },
    /// The daemon could not serve this client at all (e.g. protocol version). As the first
    /// message, clients treat it like an unreachable daemon: the fail mode decides. After
    /// any other message it ends the conversation as a refusal.
    Unavailable { reason: String },
    /// mfad is still working on the conversation (version 2 and later); no answer expected,
    /// nothing to show. It only proves mfad alive, so it never counts as mfad having spoken.
    KeepAlive,
    /// The one reply to an [`Operation::Web`] request; it ends the conversation.
    Web { reply: WebReply },
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The second factor was proven (or policy says none is needed).
    Allow,
    /// Refused.
    Deny,
    /// This module has no opinion (PAM_IGNORE).
    Ignore,
}

impl Default for AuthContext {
    fn default() -> Self {
        AuthContext {
            user: String::new(),
            service: String::new(),
            rhost: None,
            tty: None,
            ssh_connection: None,
            ssh_auth_info: None,
            mode: AuthMode::Menu,
            can_prompt: true,
            command: None,
        }
    }
}

/// Why a user name is refused before anything else happens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserNameError {
    #[error("the user name is empty")]
    Empty,
    #[error("the user name is longer than 256 bytes")]
    TooLong,
    #[error("the user name contains a control character, a space or a slash")]
    BadCharacter,
}

/// Checks a user name for what no system account can contain. Accepts what NSS backends
/// commonly allow (letters, digits, `._-@$\`, and non-ASCII letters).
pub fn check_user_name(name: &str) -> Result<(), UserNameError> {
    if name.is_empty() {
        return Err(UserNameError::Empty);
    }
    if name.len() > 256 {
        return Err(UserNameError::TooLong);
    }
    if name
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == '/' || c == ':')
    {
        return Err(UserNameError::BadCharacter);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_with_control_characters_are_refused() {
        assert_eq!(check_user_name("alice"), Ok(()));
        assert_eq!(check_user_name("a.b-c_d@example.org"), Ok(()));
        assert_eq!(check_user_name(""), Err(UserNameError::Empty));
        assert_eq!(check_user_name("a\nb"), Err(UserNameError::BadCharacter));
        assert_eq!(
            check_user_name("a\u{1b}[2J"),
            Err(UserNameError::BadCharacter)
        );
        assert_eq!(check_user_name("../etc"), Err(UserNameError::BadCharacter));
        assert_eq!(check_user_name("a b"), Err(UserNameError::BadCharacter));
        assert_eq!(
            check_user_name(&"x".repeat(257)),
            Err(UserNameError::TooLong)
        );
    }

    #[test]
    fn messages_round_trip_as_tagged_json() {
        let hello = ClientMsg::Hello {
            version: PROTOCOL_VERSION,
            op: Operation::Authenticate(AuthContext {
                user: "alice".into(),
                service: "sshd".into(),
                ..Default::default()
            }),
        };
        let json = serde_json::to_string(&hello).unwrap();
        assert!(json.contains(r#""type":"hello""#), "{json}");
        assert!(json.contains(r#""op":"authenticate""#), "{json}");
        let back: ClientMsg = serde_json::from_str(&json).unwrap();
        assert_eq!(back, hello);
    }

    #[test]
    fn safe_string_has_no_secret_of_the_operations_that_carry_one() {
        const SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
        let ops = [
            (
                Operation::AddDevice(NewDevice::Hotp {
                    name: Some("YubiKey".into()),
                    secret: Zeroizing::new(SECRET.into()),
                    digits: 6,
                }),
                "add-device kind=hotp",
            ),
            (
                Operation::AddDevice(NewDevice::TotpToken {
                    name: None,
                    secret: Zeroizing::new(SECRET.into()),
                    digits: 8,
                    period: 60,
                }),
                "add-device kind=totp-token",
            ),
            (
                Operation::Admin(AdminOp::ImportTokens {
                    csv: format!("user,kind,secret\nbob,hotp,{SECRET}\n"),
                }),
                "admin-import-tokens lines=2",
            ),
        ];
        for (op, expected) in ops {
            let safe = op.safe_string();
            assert_eq!(safe, expected);
            // Not even a part of the secret (a prefix shown "for debugging").
            assert!(!safe.contains(&SECRET[..8]), "{safe}");
        }
    }
}
