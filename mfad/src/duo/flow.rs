//! A login through Duo, as pam_duo and login_duo run it, from inside the daemon: group
//! check, `/preauth`, then Duo's own menu (or, without a terminal, Duo's default factor),
//! then `/auth`, with push and phone progress from `/auth_status` shown as Duo reports it.
//! Every text from Duo is cleaned of control characters before a user sees it. When Duo
//! cannot be asked before it challenged the user (`/ping`, `/preauth`), the client is told
//! "unavailable" and its fail mode decides; once Duo has asked for a second factor, any
//! failure refuses the login, as pam_duo does. Rate limiting is a refusal, never an outage.

use super::api::{AuthAnswer, DuoError, Outage, Preauth, PreauthResult};
use super::sign::{self, Params};
use super::{Duo, clean_text};
use crate::accounts::Account;
use crate::conn::{Conn, ConnError};
use crate::core::Core;
use crate::daemon::{Result, SessionError, Who, decision};
use crate::policy;
use crate::providers::menu::{self, Answer};
use crate::providers::{LoginContext, SecondFactor, Verdict};
use crate::text::{self, clean};
use mfa_proto::{AuthContext, AuthMode, Outcome};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use zeroize::Zeroizing;

/// What ends a Duo login early: the client's connection, Duo out of reach (before the
/// challenge), Duo failing after it challenged the user, or Duo rate-limiting us.
enum Stop {
    Session(SessionError),
    Outage(Outage),
    AfterChallenge(Outage),
    RateLimited,
}

impl From<SessionError> for Stop {
    fn from(e: SessionError) -> Self {
        Stop::Session(e)
    }
}
impl From<ConnError> for Stop {
    fn from(e: ConnError) -> Self {
        Stop::Session(SessionError::Conn(e))
    }
}
impl From<Outage> for Stop {
    fn from(o: Outage) -> Self {
        Stop::Outage(o)
    }
}
/// From a call where any answer other than success means Duo could not be asked (`/ping`,
/// `/auth_status`): a refusal there is an answer of the wrong kind.
impl From<DuoError> for Stop {
    fn from(e: DuoError) -> Self {
        match e {
            DuoError::Unavailable(o) => Stop::Outage(o),
            DuoError::RateLimited => Stop::RateLimited,
            DuoError::Refused { .. } => Stop::Outage(Outage::BadResponse),
        }
    }
}

type Flow<T> = std::result::Result<T, Stop>;

/// What an option of Duo's prompt ends in, for the status line and the decision log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Push,
    /// `phone` and `voice`.
    Phone,
    /// `sms` and `smsrefresh`: new passcodes sent, typed at the next prompt.
    Sms,
    /// Duo picks (the user's default device and method).
    Auto,
}

/// A factor as `/auth` takes it. Options go as Duo's own client sends them, `factor=prompt`
/// with `prompt=<the option's name>`, and Duo resolves the name (`push1`, `phone2`,
/// `smsrefresh1`...) against the user's devices; mfad needs no `devices` list for that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Factor {
    Option { kind: Kind, name: String },
    Passcode(Zeroizing<String>),
}

impl Factor {
    /// The method named in decision logs.
    pub fn method(&self) -> &'static str {
        match self {
            Factor::Option {
                kind: Kind::Push, ..
            } => "duo-push",
            Factor::Option {
                kind: Kind::Phone, ..
            } => "duo-phone",
            Factor::Option {
                kind: Kind::Sms, ..
            } => "duo-sms",
            Factor::Option {
                kind: Kind::Auto, ..
            } => "duo-auto",
            Factor::Passcode(_) => "duo-passcode",
        }
    }

    fn kind(&self) -> Option<Kind> {
        match self {
            Factor::Option { kind, .. } => Some(*kind),
            Factor::Passcode(_) => None,
        }
    }

    /// `/auth` parameters of this factor (besides user, host and address).
    fn params(&self) -> Params {
        let (factor, value) = match self {
            // Bare `auto` (no `default` in the prompt): the documented form.
            Factor::Option {
                kind: Kind::Auto,
                name,
            } if name == "auto" => {
                return vec![
                    ("factor".into(), "auto".into()),
                    ("device".into(), "auto".into()),
                    ("async".into(), "1".into()),
                ];
            }
            Factor::Option { name, .. } => ("prompt", name.clone()),
            Factor::Passcode(code) => ("prompt", code.to_string()),
        };
        vec![
            ("factor".into(), factor.into()),
            ("prompt".into(), value),
            ("async".into(), "1".into()),
        ]
    }
}

/// A factor name of Duo's text prompt (`push1`, `phone2`, `voice1`, `sms1`, `smsrefresh1`,
/// `auto`): the kind from the name, the device left to Duo. `None`: not a factor name.
pub fn factor_from_name(name: &str) -> Option<Factor> {
    let name = name.trim().to_ascii_lowercase();
    let kind = name.trim_end_matches(|c: char| c.is_ascii_digit());
    let kind = match kind {
        "push" => Kind::Push,
        "phone" | "voice" => Kind::Phone,
        "sms" | "smsrefresh" => Kind::Sms,
        "auto" => Kind::Auto,
        _ => return None,
    };
    Some(Factor::Option { kind, name })
}

/// What the user typed at the menu ([`menu::read_answer`], shared with mfad's own
/// factors): an option number (through Duo's `factors`), a factor name, or a passcode. An
/// empty answer is the default factor. `Err`: what to tell the user.
pub fn interpret(
    answer: &str,
    factors: &BTreeMap<String, String>,
) -> std::result::Result<Factor, String> {
    let neither = || "That is neither an option nor a passcode.".to_string();
    let options = factors
        .keys()
        .filter(|k| k.parse::<usize>().is_ok())
        .count();
    let a = match menu::read_answer(answer, options) {
        Answer::Default => {
            let default = factors.get("default").map(String::as_str).unwrap_or("auto");
            return factor_from_name(default).ok_or_else(neither);
        }
        Answer::Option(i) => {
            return factors
                .get(&(i + 1).to_string())
                .and_then(|name| factor_from_name(name))
                .ok_or_else(neither);
        }
        Answer::NoSuchOption(message) => {
            return factors
                .get(answer.trim())
                .and_then(|name| factor_from_name(name))
                .ok_or(message);
        }
        Answer::Other(a) => a,
    };
    if let Some(name) = factors.get(a) {
        return factor_from_name(name).ok_or_else(neither);
    }
    if let Some(f) = factor_from_name(a) {
        return Ok(f);
    }
    // Duo passcodes: app and SMS codes, bypass codes, hardware tokens (YubiKey OTPs are 44
    // letters). Nothing with spaces or control characters.
    if a.len() <= 64 && a.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Ok(Factor::Passcode(Zeroizing::new(a.to_string())));
    }
    Err(neither())
}

/// Duo's menu and what its answers select: the text prompt of `/preauth` when Duo sent one,
/// else the same menu built from the devices.
pub fn menu(user: &str, pre: &Preauth) -> (String, BTreeMap<String, String>) {
    if let Some(p) = &pre.prompt
        && !p.text.trim().is_empty()
    {
        return (clean_text(&p.text), p.factors.clone());
    }
    let mut labels = Vec::new();
    let mut factors = BTreeMap::new();
    for (i, d) in pre.devices.iter().enumerate() {
        let name = clean_text(
            d.display_name
                .as_deref()
                .or(d.name.as_deref())
                .unwrap_or("your device"),
        );
        for (cap, label) in [
            ("push", "Duo Push to"),
            ("phone", "Phone call to"),
            ("sms", "SMS passcodes to"),
        ] {
            if d.capabilities.iter().any(|c| c == cap) {
                let factor = format!("{cap}{}", i + 1);
                if !factors.contains_key("default") && cap != "sms" {
                    factors.insert("default".to_string(), factor.clone());
                }
                labels.push(format!("{label} {name}"));
                factors.insert(labels.len().to_string(), factor);
            }
        }
    }
    let (text, prompt) = menu::render(
        &format!("Duo two-factor login for {user}"),
        &labels,
        "Enter a passcode.",
    );
    (format!("{text}\n{prompt}"), factors)
}

/// The client's address as Duo should see it: PAM_RHOST or SSH_CONNECTION's first field;
/// with `fallback_local_ip`, this server's address (SSH_CONNECTION's third field) instead of
/// a host name.
pub fn client_ip(ctx: &AuthContext, fallback_local_ip: bool) -> Option<String> {
    if let Some(ip) = policy::client_addr(ctx.rhost.as_deref(), ctx.ssh_connection.as_deref()) {
        return Some(ip.to_string());
    }
    if fallback_local_ip {
        return ctx
            .ssh_connection
            .as_deref()
            .and_then(|c| c.split_whitespace().nth(2))
            .and_then(|s| s.parse::<std::net::IpAddr>().ok())
            .map(|ip| ip.to_string());
    }
    None
}

/// Duo's `pushinfo`: URL-encoded pairs shown in Duo Mobile with the request.
pub fn pushinfo(hostname: &str, ipaddr: Option<&str>, command: Option<&str>) -> String {
    let mut pairs = vec![("Server", hostname.to_string())];
    if let Some(ip) = ipaddr {
        pairs.push(("From", ip.to_string()));
    }
    if let Some(cmd) = command {
        pairs.push(("Command", cmd.chars().take(500).collect()));
    }
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", sign::encode(k), sign::encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// How one factor ended.
enum End {
    /// The conversation is over (allowed, or refused for good).
    Over,
    /// The user may try again (wrong passcode, push denied, SMS passcodes sent).
    Again,
}

/// How a Duo login went, for the login pipeline to conclude.
#[derive(Debug, Default)]
pub(crate) struct DuoRun {
    /// The answer to give; `None` while undecided.
    pub(crate) outcome: Option<Outcome>,
    /// Factor attempts that failed (wrong passcode, push denied or unanswered).
    pub(crate) failures: u32,
    /// The user reported the request as fraud in Duo Mobile.
    pub(crate) reported: bool,
}

/// Aborts the poller when the login ends first.
struct AbortOnDrop(tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Duo as a second-factor provider: its own enrolment, menu, factors and verdicts, below
/// mfad's pipeline (which adds the local policy unless `[duo] local_policy = false`).
pub(crate) struct DuoProvider<'a> {
    pub(crate) core: &'a Core,
    pub(crate) duo: &'a Arc<Duo>,
}

impl SecondFactor for DuoProvider<'_> {
    async fn authenticate(&self, conn: &mut Conn, login: &LoginContext<'_>) -> Result<Verdict> {
        let run = self
            .duo_login(conn, &login.who, login.ctx, login.account)
            .await?;
        Ok(match run {
            None => Verdict::Answered,
            Some(DuoRun {
                outcome: Some(Outcome::Allow),
                ..
            }) => Verdict::Passed {
                method: "duo",
                accepted: false,
                say_success: false,
            },
            Some(run) => Verdict::Refused {
                failures: run.failures,
                reported: run.reported,
            },
        })
    }
}

impl DuoProvider<'_> {
    /// The second factor of a login through Duo. Returns how it went for the login
    /// pipeline to conclude (count failures, remember, answer), or `None` when this has
    /// already ended the conversation (Duo unreachable before the challenge, the user
    /// database down): then nothing more is said.
    pub(crate) async fn duo_login(
        &self,
        conn: &mut Conn,
        who: &Who<'_>,
        ctx: &AuthContext,
        account: &Account,
    ) -> Result<Option<DuoRun>> {
        let mut run = DuoRun::default();
        match self.duo_flow(conn, &mut run, who, ctx, account).await {
            Ok(()) if run.outcome.is_some() => Ok(Some(run)),
            Ok(()) => Ok(None),
            Err(Stop::Session(e)) => Err(e),
            Err(Stop::Outage(o)) => {
                decision(who, "duo", "unavailable", &clean(&o.to_string()));
                conn.unavailable(o.to_string()).await?;
                Ok(None)
            }
            // Duo asked for a second factor: whatever fails now, the answer is no, whatever
            // the client's fail mode (pam_duo refuses here too).
            Err(Stop::AfterChallenge(o)) => {
                decision(
                    who,
                    "duo",
                    "deny",
                    &format!(
                        "Duo failed after asking for a second factor: {}",
                        clean(&o.to_string())
                    ),
                );
                self.duo_refuse(
                    conn,
                    &mut run,
                    format!("{o}, after it had asked for a second factor; login refused."),
                )
                .await?;
                Ok(Some(run))
            }
            Err(Stop::RateLimited) => {
                decision(who, "duo", "deny", "Duo is rate-limiting requests");
                self.duo_refuse(
                    conn,
                    &mut run,
                    "Duo is rate-limiting logins right now; login refused. Try again in a minute.",
                )
                .await?;
                Ok(Some(run))
            }
        }
    }

    /// Tells the user why, and marks the login refused.
    async fn duo_refuse(
        &self,
        conn: &mut Conn,
        run: &mut DuoRun,
        message: impl Into<String>,
    ) -> Result<()> {
        conn.error(message).await?;
        run.outcome = Some(Outcome::Deny);
        Ok(())
    }

    async fn duo_flow(
        &self,
        conn: &mut Conn,
        run: &mut DuoRun,
        who: &Who<'_>,
        ctx: &AuthContext,
        account: &Account,
    ) -> Flow<()> {
        if let Some(groups) = &self.duo.groups {
            // A failed lookup decides nothing (pam_duo refuses too): the fail mode decides.
            let member_of = match self.core.groups(account, conn.uid()).await {
                Ok(g) => g,
                Err(e) => return Ok(self.core.directory_down(conn, who, &e).await?),
            };
            if !groups.matches(&member_of) {
                decision(who, "duo", "allow", "in none of the Duo groups");
                run.outcome = Some(Outcome::Allow);
                return Ok(());
            }
        }
        let ipaddr = client_ip(ctx, self.duo.fallback_local_ip);
        self.duo.client.sync_clock().await?;
        let pre = match self
            .duo
            .client
            .preauth(&ctx.user, ipaddr.as_deref(), &self.duo.hostname)
            .await
        {
            Ok(p) => p,
            Err(DuoError::Unavailable(o)) => return Err(o.into()),
            Err(DuoError::RateLimited) => return Err(Stop::RateLimited),
            Err(DuoError::Refused { message, .. }) => {
                decision(
                    who,
                    "duo",
                    "deny",
                    &format!("preauth refused: {}", clean(&message)),
                );
                self.duo_refuse(conn, run, format!("Duo refused this login: {message}"))
                    .await?;
                return Ok(());
            }
        };
        let status = clean_text(&pre.status_msg);
        match pre.result {
            PreauthResult::Allow => {
                decision(
                    who,
                    "duo",
                    "allow",
                    &format!("Duo preauth: {}", clean(&status)),
                );
                if !status.is_empty() {
                    conn.info(status).await?;
                }
                run.outcome = Some(Outcome::Allow);
                return Ok(());
            }
            PreauthResult::Deny => {
                let outcome = if is_lockout(None, &status) {
                    "locked-out"
                } else {
                    "deny"
                };
                decision(
                    who,
                    "duo",
                    outcome,
                    &format!("Duo preauth: {}", clean(&status)),
                );
                let shown = if status.is_empty() {
                    "Duo denied this login.".to_string()
                } else {
                    status
                };
                self.duo_refuse(conn, run, shown).await?;
                return Ok(());
            }
            PreauthResult::Enroll => return self.duo_enroll(conn, run, who, ctx, &pre).await,
            PreauthResult::Auth => {}
        }
        let headless = !menu::shows_menu(ctx) || self.duo.autopush;
        let challenged = if headless {
            self.duo_default_factor(conn, run, who, ctx, &pre, ipaddr.as_deref())
                .await
        } else {
            self.duo_menu(conn, run, who, ctx, &pre, ipaddr.as_deref())
                .await
        };
        match challenged {
            Err(Stop::Outage(o)) => Err(Stop::AfterChallenge(o)),
            other => other,
        }
    }

    /// Not enrolled: Duo's enrolment message, with a QR code of the portal when a terminal
    /// shows it. The login is refused; the user comes back once enrolled.
    async fn duo_enroll(
        &self,
        conn: &mut Conn,
        run: &mut DuoRun,
        who: &Who<'_>,
        ctx: &AuthContext,
        pre: &Preauth,
    ) -> Flow<()> {
        let prompt_text = pre.prompt.as_ref().map(|p| clean_text(&p.text));
        let url = pre
            .enroll_portal_url
            .as_deref()
            .map(clean_text)
            .or_else(|| {
                prompt_text
                    .as_deref()
                    .and_then(|t| t.split_whitespace().find(|w| w.starts_with("https://")))
                    .map(str::to_string)
            })
            .filter(|u| u.starts_with("https://") && !u.contains(char::is_whitespace));
        let mut message = match (&prompt_text, &url) {
            (Some(t), _) if !t.trim().is_empty() => t.trim_end().to_string(),
            (_, Some(u)) => format!("Please enroll at {u}"),
            _ => clean_text(&pre.status_msg),
        };
        if let Some(u) = &url
            && ctx.mode == AuthMode::Menu
            && ctx.can_prompt
        {
            message.push_str("\n\n");
            message.push_str(&text::qr_code(u));
        }
        decision(
            who,
            "duo",
            "enroll",
            "not enrolled in Duo; enrolment link shown",
        );
        conn.info(message).await?;
        run.outcome = Some(Outcome::Deny);
        Ok(())
    }

    /// The menu, up to `prompts` rounds.
    async fn duo_menu(
        &self,
        conn: &mut Conn,
        run: &mut DuoRun,
        who: &Who<'_>,
        ctx: &AuthContext,
        pre: &Preauth,
        ipaddr: Option<&str>,
    ) -> Flow<()> {
        let (text, factors) = menu(&ctx.user, pre);
        for _ in 0..self.duo.prompts {
            let Some(answer) = conn.prompt(text.clone(), true).await? else {
                decision(
                    who,
                    "duo",
                    "deny",
                    "the client could not ask for a passcode",
                );
                self.duo_refuse(conn, run, "No passcode was entered; login refused.")
                    .await?;
                return Ok(());
            };
            let factor = match interpret(&answer, &factors) {
                Ok(factor) => factor,
                Err(message) => {
                    conn.error(message).await?;
                    continue;
                }
            };
            if let End::Over = self
                .duo_factor(conn, run, who, ctx, &factor, ipaddr)
                .await?
            {
                return Ok(());
            }
        }
        decision(who, "duo", "deny", "no attempts left");
        self.duo_refuse(conn, run, "Too many attempts; login refused.")
            .await?;
        Ok(())
    }

    /// No menu (no terminal, PAM mode=auto, or autopush): Duo's default factor at once, as
    /// login_duo does for scp, sftp and rsync.
    async fn duo_default_factor(
        &self,
        conn: &mut Conn,
        run: &mut DuoRun,
        who: &Who<'_>,
        ctx: &AuthContext,
        pre: &Preauth,
        ipaddr: Option<&str>,
    ) -> Flow<()> {
        let default = pre
            .prompt
            .as_ref()
            .and_then(|p| p.factors.get("default"))
            .map(String::as_str)
            .unwrap_or("auto");
        let factor = factor_from_name(default).unwrap_or(Factor::Option {
            kind: Kind::Auto,
            name: "auto".into(),
        });
        let line = match factor.kind() {
            Some(Kind::Push) => "Autopushing login request to phone...",
            Some(Kind::Phone) => "Calling your phone...",
            _ => "Using default second-factor authentication.",
        };
        if factor.kind() == Some(Kind::Sms) && !who.can_prompt {
            decision(
                who,
                "duo-sms",
                "deny",
                "default factor needs typing; no terminal",
            );
            self.duo_refuse(
                conn,
                run,
                menu::no_headless_default(
                    who.user,
                    Some("Duo's SMS passcodes"),
                    "Make Duo Push or a phone call your default method, or log in with `ssh` \
                     in a terminal.",
                ),
            )
            .await?;
            return Ok(());
        }
        conn.info(line).await?;
        if let End::Over = self
            .duo_factor(conn, run, who, ctx, &factor, ipaddr)
            .await?
        {
            return Ok(());
        }
        if factor.kind() == Some(Kind::Sms)
            && let Some(answer) = conn.prompt("Passcode: ", true).await?
            && let Ok(code @ Factor::Passcode(_)) = interpret(&answer, &BTreeMap::new())
            && let End::Over = self.duo_factor(conn, run, who, ctx, &code, ipaddr).await?
        {
            return Ok(());
        }
        decision(
            who,
            factor.method(),
            "deny",
            "default factor did not succeed",
        );
        run.outcome = Some(Outcome::Deny);
        Ok(())
    }

    /// Runs one factor and tells the user how it ended. Allowed and final refusals end the
    /// conversation here.
    async fn duo_factor(
        &self,
        conn: &mut Conn,
        run: &mut DuoRun,
        who: &Who<'_>,
        ctx: &AuthContext,
        factor: &Factor,
        ipaddr: Option<&str>,
    ) -> Flow<End> {
        let mut params: Params = vec![
            ("username".into(), ctx.user.clone()),
            ("hostname".into(), self.duo.hostname.clone()),
        ];
        if let Some(ip) = ipaddr {
            params.push(("ipaddr".into(), ip.into()));
        }
        params.extend(factor.params());
        if self.duo.pushinfo && factor.kind().is_some() {
            params.push((
                "pushinfo".into(),
                pushinfo(&self.duo.hostname, ipaddr, ctx.command.as_deref()),
            ));
        }
        let answer = match self.duo.client.auth(params).await {
            // Sent with async=1: a txid to follow through /auth_status.
            Ok(AuthAnswer {
                txid: Some(txid), ..
            }) => self.duo_wait(conn, who, txid).await?,
            // Decided at once (a passcode, a locked-out account).
            Ok(a) if a.result.is_some() => a,
            Ok(_) => return Err(Outage::BadResponse.into()),
            Err(DuoError::Unavailable(o)) => return Err(o.into()),
            Err(DuoError::RateLimited) => return Err(Stop::RateLimited),
            Err(DuoError::Refused { message, .. }) => AuthAnswer {
                result: Some("deny".into()),
                status: Some("refused".into()),
                status_msg: Some(message),
                txid: None,
            },
        };
        let status = answer.status.clone().unwrap_or_default();
        let msg = clean_text(answer.status_msg.as_deref().unwrap_or_default());
        if answer.is_allow() {
            decision(
                who,
                factor.method(),
                "allow",
                &format!("Duo: {}", clean(&status)),
            );
            if !msg.is_empty() {
                conn.info(msg).await?;
            }
            if self.duo.motd && ctx.service == "mfa-login-prompt" {
                let motd = tokio::task::spawn_blocking(read_motd)
                    .await
                    .map_err(SessionError::from)?;
                if !motd.is_empty() {
                    conn.info(motd).await?;
                }
            }
            run.outcome = Some(Outcome::Allow);
            return Ok(End::Over);
        }
        if answer.result.as_deref() != Some("deny") {
            return Err(Outage::BadResponse.into());
        }
        if status == "sent" {
            // SMS passcodes are on their way: the user types one at the next prompt.
            decision(who, factor.method(), "sent", "Duo sent SMS passcodes");
            conn.info(if msg.is_empty() {
                "New SMS passcodes sent.".into()
            } else {
                msg
            })
            .await?;
            return Ok(End::Again);
        }
        let shown = if msg.is_empty() {
            "Duo denied this login.".to_string()
        } else {
            msg.clone()
        };
        if is_lockout(Some(&status), &msg) || status == "fraud" {
            // "Deny and report" in Duo Mobile: mfad locks too, as for its own pushes.
            run.reported |= status == "fraud";
            let outcome = if status == "fraud" {
                "fraud"
            } else {
                "locked-out"
            };
            decision(
                who,
                factor.method(),
                outcome,
                &format!("Duo: {}", clean(&msg)),
            );
            self.duo_refuse(conn, run, shown).await?;
            return Ok(End::Over);
        }
        decision(
            who,
            factor.method(),
            "failed",
            &format!("Duo: {} ({})", clean(&status), clean(&msg)),
        );
        // A wrong passcode, a denied or unanswered push: counted toward mfad's lockout.
        run.failures += 1;
        conn.error(shown).await?;
        Ok(End::Again)
    }

    /// Polls `/auth_status` for a push or call, showing each new status line. With
    /// `wait_prompt`, the first line goes into a prompt the user confirms with Enter, since
    /// OpenSSH before 10.3 shows PAM text only with a prompt; the lines that arrive meanwhile
    /// follow once it is answered, and the rest as they come.
    async fn duo_wait(&self, conn: &mut Conn, who: &Who<'_>, txid: String) -> Flow<AuthAnswer> {
        let first = self.duo.client.auth_status(&txid).await?;
        if !first.is_waiting() {
            return Ok(first);
        }
        let first_msg = clean_text(first.status_msg.as_deref().unwrap_or("Waiting for Duo..."));
        // The poller sends each new status line, then the verdict.
        let (lines, updates) = mpsc::channel(16);
        let (verdict, decided) = oneshot::channel();
        let poller = Arc::clone(self.duo);
        let limit = self.duo.client.status_limit();
        let last = first_msg.clone();
        let _guard = AbortOnDrop(tokio::spawn(async move {
            let mut last = last;
            let deadline = tokio::time::Instant::now() + limit;
            let result = loop {
                let polled =
                    tokio::time::timeout_at(deadline, poller.client.auth_status(&txid)).await;
                match polled {
                    Err(_) => break Err(Outage::Timeout(limit).into()),
                    Ok(Err(e)) => break Err(e),
                    Ok(Ok(a)) if a.is_waiting() => {
                        let msg = clean_text(a.status_msg.as_deref().unwrap_or_default());
                        if msg.is_empty() || msg == last {
                            continue;
                        }
                        last = msg.clone();
                        if lines.send(msg).await.is_err() {
                            return;
                        }
                    }
                    Ok(Ok(a)) => break Ok(a),
                }
            };
            let _ = verdict.send(result);
        }));
        let press_enter = self.core.config.wait_prompt && who.can_prompt;
        let decided = async {
            decided
                .await
                .unwrap_or_else(|_| Err(Outage::BadResponse.into()))
        };
        let result =
            menu::wait_for_phone(conn, &first_msg, press_enter, Some(updates), decided).await?;
        match result {
            Ok(a) => Ok(a),
            Err(DuoError::Unavailable(o)) => Err(o.into()),
            Err(DuoError::RateLimited) => Err(Stop::RateLimited),
            Err(DuoError::Refused { message, .. }) => Ok(AuthAnswer {
                result: Some("deny".into()),
                status: Some("refused".into()),
                status_msg: Some(message),
                txid: None,
            }),
        }
    }
}

/// Duo's lockout: status `locked_out`, or a preauth denial that says so.
fn is_lockout(status: Option<&str>, msg: &str) -> bool {
    status == Some("locked_out") || msg.to_ascii_lowercase().contains("locked out")
}

/// /etc/motd, cleaned, at most 8 KiB.
fn read_motd() -> String {
    use std::io::Read;
    let mut buf = Vec::new();
    if let Ok(f) = std::fs::File::open("/etc/motd") {
        let _ = f.take(8192).read_to_end(&mut buf);
    }
    clean_text(String::from_utf8_lossy(&buf).trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::duo::api::DuoDevice;

    fn device(id: &str) -> DuoDevice {
        DuoDevice {
            device: id.into(),
            display_name: Some("iOS (XXX-XXX-1234)".into()),
            name: None,
            number: Some("XXX-XXX-1234".into()),
            capabilities: vec!["auto".into(), "push".into(), "sms".into(), "phone".into()],
        }
    }

    fn option(kind: Kind, name: &str) -> Option<Factor> {
        Some(Factor::Option {
            kind,
            name: name.into(),
        })
    }

    #[test]
    fn every_factor_name_of_duos_prompt_is_known_without_devices() {
        assert_eq!(factor_from_name("push1"), option(Kind::Push, "push1"));
        assert_eq!(factor_from_name("phone2"), option(Kind::Phone, "phone2"));
        assert_eq!(factor_from_name("voice1"), option(Kind::Phone, "voice1"));
        assert_eq!(factor_from_name("sms3"), option(Kind::Sms, "sms3"));
        assert_eq!(
            factor_from_name("smsrefresh1"),
            option(Kind::Sms, "smsrefresh1")
        );
        assert_eq!(factor_from_name("auto"), option(Kind::Auto, "auto"));
        assert_eq!(factor_from_name("Push"), option(Kind::Push, "push"));
        assert_eq!(factor_from_name("fax1"), None);
        assert_eq!(factor_from_name("123456"), None);
    }

    #[test]
    fn options_go_to_duo_as_factor_prompt_with_the_name() {
        let sent = |f: Factor| -> Vec<(String, String)> { f.params() };
        let p = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            sent(factor_from_name("phone2").unwrap()),
            p(&[("factor", "prompt"), ("prompt", "phone2"), ("async", "1")])
        );
        assert_eq!(
            sent(Factor::Passcode(Zeroizing::new("123456".into()))),
            p(&[("factor", "prompt"), ("prompt", "123456"), ("async", "1")])
        );
        assert_eq!(
            sent(factor_from_name("auto").unwrap()),
            p(&[("factor", "auto"), ("device", "auto"), ("async", "1")])
        );
    }

    #[test]
    fn answers_are_options_names_or_passcodes() {
        let factors: BTreeMap<String, String> = [
            ("1", "push1"),
            ("2", "voice1"),
            ("3", "smsrefresh1"),
            ("default", "push1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let got = |a: &str| interpret(a, &factors).ok();
        assert_eq!(got("1"), option(Kind::Push, "push1"));
        assert_eq!(got("2"), option(Kind::Phone, "voice1"));
        assert_eq!(got("3"), option(Kind::Sms, "smsrefresh1"));
        assert_eq!(got(" "), option(Kind::Push, "push1"));
        assert_eq!(got("phone"), option(Kind::Phone, "phone"));
        assert_eq!(
            got("123456"),
            Some(Factor::Passcode(Zeroizing::new("123456".into())))
        );
        assert_eq!(
            interpret("7", &factors),
            Err("There is no option 7; choose 1 to 3.".to_string())
        );
        assert_eq!(got("12 34"), None);
        assert_eq!(got("a\u{1b}b"), None);
    }

    #[test]
    fn a_menu_is_built_from_devices_when_duo_sends_no_prompt() {
        let pre = Preauth {
            result: PreauthResult::Auth,
            status_msg: String::new(),
            enroll_portal_url: None,
            devices: vec![device("D1")],
            prompt: None,
        };
        let (text, factors) = menu("abc123", &pre);
        assert_eq!(
            text,
            "Duo two-factor login for abc123\n\nEnter a passcode or select one of the following \
             options:\n\n 1. Duo Push to iOS (XXX-XXX-1234)\n 2. Phone call to iOS (XXX-XXX-1234)\n \
             3. SMS passcodes to iOS (XXX-XXX-1234)\n\nPasscode or option (1-3): "
        );
        assert_eq!(factors.get("default").map(String::as_str), Some("push1"));
        assert_eq!(factors.get("3").map(String::as_str), Some("sms1"));
    }

    #[test]
    fn pushinfo_carries_host_address_and_command() {
        assert_eq!(
            pushinfo("login1", Some("192.0.2.7"), Some("scp -t /data")),
            "Server=login1&From=192.0.2.7&Command=scp%20-t%20%2Fdata"
        );
        assert_eq!(pushinfo("login1", None, None), "Server=login1");
    }

    #[test]
    fn the_client_address_falls_back_to_this_host_only_when_asked() {
        let ctx = AuthContext {
            rhost: Some("client.example.org".into()),
            ssh_connection: Some("client.example.org 50000 192.0.2.1 22".into()),
            ..Default::default()
        };
        assert_eq!(client_ip(&ctx, false), None);
        assert_eq!(client_ip(&ctx, true).as_deref(), Some("192.0.2.1"));
        let ctx = AuthContext {
            rhost: Some("198.51.100.4".into()),
            ..Default::default()
        };
        assert_eq!(client_ip(&ctx, true).as_deref(), Some("198.51.100.4"));
    }
}
