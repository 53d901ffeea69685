//! The web role: what mfa-web (the unprivileged web front) may ask mfad, and mfad's replies.
//!
//! mfa-web holds no secret and decides nothing: each page view, answer or provider callback
//! becomes one [`WebRequest`] in a [`crate::Operation::Web`] hello, and mfad answers with one
//! [`crate::ServerMsg::Web`]. mfad honours the role only for its configured web user (and
//! root), recognised by the connection's peer credentials.

use serde::{Deserialize, Serialize};

/// One request of the web front. Tokens are the bearer secrets of approval links: never
/// logged (see [`WebRequest::safe_string`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum WebRequest {
    /// What the approval page for `token` shows (a GET: it decides nothing).
    ShowApproval { token: String },
    /// The answer posted from the approval page.
    DecideApproval {
        token: String,
        answer: WebAnswer,
        /// The number typed for a verified push.
        #[serde(default)]
        number: Option<String>,
    },
    /// The enrolment page for an enrolment link's `token` (a GET: it decides nothing):
    /// whose link it is, or [`WebReply::Closed`].
    OpenEnrolment { token: String },
    /// The password typed on the enrolment page, for the link's user (mfad checks it
    /// through its own PAM service; a wrong one counts toward the user's lockout).
    EnrolmentPassword {
        token: String,
        password: Password,
        /// The browser's address as mfa-web saw it (for the logs and PAM's rhost).
        #[serde(default)]
        client: Option<String>,
    },
    /// After the password: a new authenticator app's secret, held pending in mfad for the
    /// link until a code from it is confirmed.
    BeginTotp { token: String },
    /// A code from the new app: enrols it and spends the link, once.
    ConfirmTotp {
        token: String,
        code: String,
        /// The browser's address as mfa-web saw it (for the logs).
        #[serde(default)]
        client: Option<String>,
    },
    /// The portal's sign-in form: the password (mfad checks it through its PAM service; a
    /// wrong one counts toward the user's lockout). Right: a session that still needs the
    /// second factor.
    PortalSignIn {
        user: String,
        password: Password,
        #[serde(default)]
        client: Option<String>,
    },
    /// A code (authenticator app, hardware token, bypass or texted code) for the session:
    /// the second factor of the sign-in, or a fresh one before a change.
    PortalCode {
        session: String,
        csrf: String,
        code: String,
        #[serde(default)]
        client: Option<String>,
    },
    /// What the portal shows the session (a GET: it changes nothing but the idle clock).
    PortalView { session: String },
    /// A change to the signed-in user's settings; needs a second factor proved in the last
    /// few minutes.
    PortalChange {
        session: String,
        csrf: String,
        change: PortalChange,
        #[serde(default)]
        client: Option<String>,
    },
    /// Ends the session.
    PortalSignOut { session: String, csrf: String },
    /// The browser's answer to the security-key challenge of [`WebReply::KeyCeremony`]
    /// (the `PublicKeyCredential` as JSON, binary fields in base64url) for the sign-in's
    /// second factor, or a fresh one before a change.
    PortalKey {
        session: String,
        csrf: String,
        response: String,
        #[serde(default)]
        client: Option<String>,
    },
    /// The second factor by phone instead of a typed code: a texted code (then typed on
    /// the code form), or a push or call whose approval proves the factor.
    PortalSend {
        session: String,
        csrf: String,
        via: PortalVia,
        #[serde(default)]
        client: Option<String>,
    },
    /// An administrator's action on `user` (the session's user must be in `[web]
    /// admin_group`; changes need a fresh second factor, as the user's own do).
    PortalAdmin {
        session: String,
        csrf: String,
        user: String,
        action: AdminAction,
        #[serde(default)]
        client: Option<String>,
    },
    /// A voice provider's callback, forwarded raw: mfad checks its signature with the auth
    /// token only mfad holds, over `{approval.public_url}{path}` and `params`.
    VoiceCallback {
        step: VoiceStep,
        token: String,
        /// The request's path and query as the web front received them.
        path: String,
        /// The posted form fields, in order.
        params: Vec<(String, String)>,
        /// The `X-Twilio-Signature` header, if any.
        signature: Option<String>,
    },
}

impl WebRequest {
    /// A description for logs: never the token.
    pub fn safe_string(&self) -> String {
        match self {
            WebRequest::ShowApproval { .. } => "web-show-approval".to_string(),
            WebRequest::DecideApproval { answer, .. } => {
                format!("web-decide-approval answer={}", answer.as_str())
            }
            WebRequest::VoiceCallback { step, .. } => {
                format!("web-voice-callback step={}", step.as_str())
            }
            WebRequest::OpenEnrolment { .. } => "web-open-enrolment".to_string(),
            WebRequest::EnrolmentPassword { .. } => "web-enrolment-password".to_string(),
            WebRequest::BeginTotp { .. } => "web-begin-totp".to_string(),
            WebRequest::ConfirmTotp { .. } => "web-confirm-totp".to_string(),
            WebRequest::PortalSignIn { .. } => "web-portal-sign-in".to_string(),
            WebRequest::PortalCode { .. } => "web-portal-code".to_string(),
            WebRequest::PortalView { .. } => "web-portal-view".to_string(),
            WebRequest::PortalChange { change, .. } => {
                format!("web-portal-change {}", change.as_str())
            }
            WebRequest::PortalSignOut { .. } => "web-portal-sign-out".to_string(),
            WebRequest::PortalKey { .. } => "web-portal-key".to_string(),
            WebRequest::PortalSend { via, .. } => format!("web-portal-send {}", via.as_str()),
            WebRequest::PortalAdmin { action, .. } => {
                format!("web-portal-admin {}", action.as_str())
            }
        }
    }
}

/// A password on its way to mfad: never shown by `Debug`, wiped when dropped.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Password(String);

impl Password {
    pub fn new(password: String) -> Self {
        Password(password)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(hidden)")
    }
}

impl Drop for Password {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

/// A new authenticator app's secret, for the enrolment page to show (QR code of `uri`,
/// and the base32 `secret` to type by hand).
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NewApp {
    pub user: String,
    pub uri: String,
    pub secret: String,
    pub digits: u32,
    pub period: u64,
}

impl std::fmt::Debug for NewApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewApp")
            .field("user", &self.user)
            .field("secret", &"(hidden)")
            .finish()
    }
}

impl Drop for NewApp {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.uri);
        zeroize::Zeroize::zeroize(&mut self.secret);
    }
}

/// Bypass codes on their way to the page that shows them once: never shown by `Debug`,
/// wiped when dropped.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct ShownCodes(pub Vec<String>);

impl std::fmt::Debug for ShownCodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ShownCodes({} hidden)", self.0.len())
    }
}

impl Drop for ShownCodes {
    fn drop(&mut self) {
        for code in &mut self.0 {
            zeroize::Zeroize::zeroize(code);
        }
    }
}

/// A change the portal's user asks for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum PortalChange {
    /// Make device `device` (an id from [`PortalDevice`]) the default method.
    SetDefault { device: i64 },
    /// Remove device `device`.
    Remove { device: i64 },
    /// Give device `device` another name.
    Rename { device: i64, name: String },
    /// New bypass codes (the earlier ones stop working), shown once.
    NewBypassCodes,
    /// A new authenticator app: its secret, held in the session until a code from it is
    /// confirmed (reply [`WebReply::NewApp`]).
    BeginApp,
    /// A code from the new app: adds it as a device.
    ConfirmApp { code: String },
    /// "This wasn't me" on login `login` of the recent logins: locks the account, alerts
    /// and ends the session (no fresh code needed: it only takes access away).
    NotMe { login: i64 },
    /// A phone for SMS codes (and calls): a code is texted to `number`, and the phone is
    /// added once that code comes back ([`PortalChange::ConfirmPhone`]).
    BeginPhone { name: String, number: String },
    /// The code texted to the new phone.
    ConfirmPhone { code: String },
    /// A push device: mfad makes a private ntfy topic for the phone to subscribe to.
    BeginPush { name: String },
    /// Send the test notification to the new push device.
    TestPush,
    /// Whether the test notification was approved: the device is added once it is.
    CheckPush,
    /// A hardware token (`hotp`: counter-based, or `totp`: time-based) from its secret
    /// (base32 or hex) and a code it shows now.
    AddToken {
        kind: String,
        name: String,
        secret: zeroize::Zeroizing<String>,
        code: String,
    },
    /// A WebAuthn security key for the portal: mfad makes the registration challenge
    /// (reply [`WebReply::KeyCeremony`]), held in the session until the browser answers.
    BeginKey { name: String },
    /// The browser's answer to that challenge (the new credential as JSON): adds the key.
    FinishKey { response: String },
}

impl PortalChange {
    pub fn as_str(&self) -> &'static str {
        match self {
            PortalChange::SetDefault { .. } => "set-default",
            PortalChange::Remove { .. } => "remove",
            PortalChange::Rename { .. } => "rename",
            PortalChange::NewBypassCodes => "new-bypass-codes",
            PortalChange::BeginApp => "begin-app",
            PortalChange::ConfirmApp { .. } => "confirm-app",
            PortalChange::NotMe { .. } => "not-me",
            PortalChange::BeginPhone { .. } => "begin-phone",
            PortalChange::ConfirmPhone { .. } => "confirm-phone",
            PortalChange::BeginPush { .. } => "begin-push",
            PortalChange::TestPush => "test-push",
            PortalChange::CheckPush => "check-push",
            PortalChange::AddToken { .. } => "add-token",
            PortalChange::BeginKey { .. } => "begin-key",
            PortalChange::FinishKey { .. } => "finish-key",
        }
    }
}

/// What an administrator does on the portal.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AdminAction {
    /// Devices, bypass codes left, failures, lock.
    Status,
    /// Lifts a lock and clears the failure count.
    Unlock,
    /// Removes every device, code and failure: the user enrols again.
    Reset,
    /// New bypass codes for the user (shown once, to hand over).
    BypassCodes,
}

impl AdminAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AdminAction::Status => "status",
            AdminAction::Unlock => "unlock",
            AdminAction::Reset => "reset",
            AdminAction::BypassCodes => "bypass-codes",
        }
    }
}

/// A locked account, as the admin part of the portal lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LockedUser {
    pub user: String,
    pub failures: u32,
    /// When the lock ends, as shown (UTC).
    pub until: String,
}

/// A device as the portal lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PortalDevice {
    pub id: i64,
    /// `totp`, `hotp`, `phone`, `push`, `security-key` (OpenSSH) or `webauthn` (the
    /// portal's security keys).
    pub kind: String,
    pub name: String,
    /// What identifies it to its owner (a phone's last digits, a key's fingerprint).
    pub detail: String,
    pub default: bool,
}

/// The portal's page for a signed-in session.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PortalPage {
    pub user: String,
    /// The token every form of this session carries.
    pub csrf: String,
    pub devices: Vec<PortalDevice>,
    pub bypass_left: u32,
    /// Seconds a change may still be made without a new code (0: the next change asks).
    pub fresh_for: u64,
    /// The user is in `[web] admin_group`: the admin part is shown, with the locked
    /// accounts.
    #[serde(default)]
    pub admin: bool,
    #[serde(default)]
    pub locked: Vec<LockedUser>,
    /// The user's recent logins, newest first (empty when no history is kept).
    #[serde(default)]
    pub logins: Vec<PortalLogin>,
    /// The login history could not be read just now: `logins` is empty for that reason, not
    /// because there were none (the page says so rather than show an empty list, which
    /// could hide a login the user did not make).
    #[serde(default)]
    pub logins_unreadable: bool,
    /// Phones can be added here (SMS is configured).
    #[serde(default)]
    pub can_add_phone: bool,
    /// Push devices can be added here (ntfy with topics mfad makes).
    #[serde(default)]
    pub can_add_push: bool,
    /// WebAuthn security keys can be added here (`[web] public_url` names a host).
    #[serde(default)]
    pub can_add_key: bool,
}

/// How the portal's second factor may come by phone.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PortalVia {
    /// A code texted to the user's phone.
    Sms,
    /// A push to the user's push device, approved there.
    Push,
    /// A call to the user's phone, answered with 1.
    Call,
    /// The user's WebAuthn security key, touched in this browser.
    Key,
}

impl PortalVia {
    pub fn as_str(self) -> &'static str {
        match self {
            PortalVia::Sms => "sms",
            PortalVia::Push => "push",
            PortalVia::Call => "call",
            PortalVia::Key => "key",
        }
    }
}

/// One of the user's recent logins, as the portal lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PortalLogin {
    /// The history row, for "this wasn't me".
    pub id: i64,
    /// When, in UTC (`2026-11-30 14:02 UTC`).
    pub at: String,
    /// The node that served it.
    pub host: String,
    pub service: String,
    /// The client's address (`-` when none was given).
    pub address: String,
    pub method: String,
    /// `allowed`, `refused`, `locked`, `reported`, `unavailable` or `abandoned`.
    pub outcome: String,
    pub detail: String,
}

/// Why a portal sign-in was refused.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SignInRefusal {
    /// Unknown user or wrong password (alike to the visitor).
    Wrong,
    Locked,
    /// Nothing is enrolled: the portal needs a second factor to sign in.
    NotEnrolled,
}

/// The three buttons of the approval page.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WebAnswer {
    Approve,
    Deny,
    /// Deny, and report a login the user did not start (mfad locks the account and alerts).
    Report,
}

impl WebAnswer {
    pub fn as_str(self) -> &'static str {
        match self {
            WebAnswer::Approve => "approve",
            WebAnswer::Deny => "deny",
            WebAnswer::Report => "report",
        }
    }
}

/// Which of a phone call's two callbacks.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum VoiceStep {
    /// The call was answered: what to say and which keys to gather.
    Voice,
    /// The callee pressed a key (`Digits`).
    Gather,
}

impl VoiceStep {
    pub fn as_str(self) -> &'static str {
        match self {
            VoiceStep::Voice => "voice",
            VoiceStep::Gather => "gather",
        }
    }
}

/// What an approval page shows about the login waiting for an answer. The text is the
/// client's as mfad holds it; the web front escapes it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApprovalPage {
    pub user: String,
    pub host: String,
    pub rhost: String,
    /// When the login asked, as shown (UTC).
    pub time: String,
    /// The request adds a phone rather than logs in.
    pub adding_device: bool,
    /// Verified push: the page asks for the number shown at the login prompt.
    pub needs_number: bool,
}

/// The decision an answer led to.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WebDecision {
    Approved,
    Denied,
    /// A verified push's number did not match: denied.
    WrongNumber,
    Reported,
}

/// Why a request can no longer be answered.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Closed {
    /// Unknown, expired or already answered (all look alike to a stranger).
    Unknown,
    Expired,
    /// The login that made it is no longer waiting.
    Abandoned,
    /// mfad cannot take answers right now (its cluster relay is down).
    Unavailable,
}

/// mfad's one reply to a [`WebRequest`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum WebReply {
    /// The approval page's content.
    Approval { page: ApprovalPage },
    /// The answer was taken; `waiting`: the login was still waiting for it.
    Decided {
        decision: WebDecision,
        waiting: bool,
    },
    /// The request is closed (or was never open).
    Closed { why: Closed },
    /// The document to return to the voice provider (TwiML).
    Voice { twiml: String },
    /// A callback without a valid signature: nothing was done.
    Forbidden,
    /// The enrolment link is live: the page for `user` (asks for the password first).
    Enrolment { user: String },
    /// The password was right: the page may go on to [`WebRequest::BeginTotp`].
    PasswordAccepted,
    /// The password was wrong (counted toward the lockout), or the account is locked, or
    /// too many passwords were tried for this link.
    PasswordRefused { locked: bool },
    /// The new app to show.
    NewApp { app: NewApp },
    /// The code did not match the new app; `tries_left` before the app must start again.
    WrongCode { tries_left: u32 },
    /// The app is enrolled and the link spent.
    Enrolled { user: String },
    /// The request needs an earlier step first (the password, or the app).
    OutOfOrder,
    /// The portal's password was right: a session (its cookie value) that needs a code.
    PortalStarted { session: String, csrf: String },
    /// The portal's sign-in or code was refused.
    SignInRefused { why: SignInRefusal },
    /// The session needs a code first (`for_change`: a fresh one before a change), or an
    /// approval by one of the `offers`.
    PortalNeedsCode {
        user: String,
        csrf: String,
        for_change: bool,
        #[serde(default)]
        offers: Vec<PortalVia>,
    },
    /// A code was texted, or a push or call is on its way: what to tell the user.
    PortalSent { via: PortalVia, note: String },
    /// The signed-in session's page.
    Portal { page: PortalPage },
    /// A change was made: what to tell the user, and new bypass codes to show once.
    PortalChanged { note: String, codes: ShownCodes },
    /// The form's CSRF token is not the session's: nothing was done.
    BadForm,
    /// An account's status for an administrator: the text to show, and the user it is of.
    AdminStatus { user: String, report: String },
    /// The session's user is not an administrator: nothing was done.
    NotAdmin,
    /// A code was texted to the new phone (`masked`: its number as shown).
    PhoneCodeSent { masked: String },
    /// The new push device's private topic, to subscribe to on `server` (ntfy).
    NewPushTopic { topic: String, server: String },
    /// The test notification is on its way, or still waiting for the phone's answer.
    PushWaiting { note: String },
    /// A security-key challenge for the browser (`navigator.credentials`): `options` is
    /// the JSON mfad made (`{"publicKey": …}`, binary fields in base64url); `adding`: a
    /// registration (a new key), else an assertion (the second factor).
    KeyCeremony { options: String, adding: bool },
}

/// Approval tokens are 43 characters of URL-safe base64; anything much longer, or with
/// other characters, is not one: neither the web front nor mfad looks it up.
pub const MAX_TOKEN_LEN: usize = 64;

/// Whether `token` could be an approval token (see [`MAX_TOKEN_LEN`]).
pub fn looks_like_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= MAX_TOKEN_LEN
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClientMsg, Operation, ServerMsg};

    #[test]
    fn web_messages_round_trip_and_log_no_token() {
        let token = "abcDEF0123456789abcDEF0123456789abcDEF01234";
        let hello = ClientMsg::Hello {
            version: crate::PROTOCOL_VERSION,
            op: Operation::Web(WebRequest::DecideApproval {
                token: token.into(),
                answer: WebAnswer::Report,
                number: None,
            }),
        };
        let json = serde_json::to_string(&hello).unwrap();
        assert!(json.contains(r#""op":"web""#), "{json}");
        assert_eq!(serde_json::from_str::<ClientMsg>(&json).unwrap(), hello);
        let ClientMsg::Hello { op, .. } = hello else {
            unreachable!()
        };
        assert!(!op.safe_string().contains(token));
        let reply = ServerMsg::Web {
            reply: WebReply::Decided {
                decision: WebDecision::Reported,
                waiting: true,
            },
        };
        let json = serde_json::to_string(&reply).unwrap();
        assert_eq!(serde_json::from_str::<ServerMsg>(&json).unwrap(), reply);
    }
}
