//! A login through Duo, as pam_duo and login_duo run it, from inside the daemon: group
//! check, `/preauth`, then Duo's own menu (or, without a terminal, Duo's default factor),
//! then `/auth`, with push and phone progress from `/auth_status` shown as Duo reports it.
//! Every text from Duo is cleaned of control characters before a user sees it. When Duo
//! cannot be asked, the client is told "unavailable" and its fail mode decides.

use super::api::{AuthAnswer, DuoDevice, DuoError, Outage, Preauth, PreauthResult};
use super::sign::{self, Params};
use super::{Duo, clean_text};
use crate::conn::{Conn, ConnError};
use crate::daemon::{Daemon, Result, SessionError, Who, decision};
use crate::policy;
use crate::text::{self, clean};
use mfa_proto::{AuthContext, AuthMode, Outcome, ServerMsg};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::mpsc;
use zeroize::Zeroizing;

/// What ends a Duo login early: the client's connection, or Duo out of reach.
enum Stop {
    Session(SessionError),
    Outage(Outage),
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

type Flow<T> = std::result::Result<T, Stop>;

/// A factor as `/auth` takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Factor {
    Push {
        device: String,
    },
    Phone {
        device: String,
    },
    Sms {
        device: String,
    },
    /// Duo picks (the user's default device and method).
    Auto {
        device: String,
    },
    Passcode(Zeroizing<String>),
}

impl Factor {
    /// The method named in decision logs.
    pub fn method(&self) -> &'static str {
        match self {
            Factor::Push { .. } => "duo-push",
            Factor::Phone { .. } => "duo-phone",
            Factor::Sms { .. } => "duo-sms",
            Factor::Auto { .. } => "duo-auto",
            Factor::Passcode(_) => "duo-passcode",
        }
    }

    /// Push, phone and auto end on the phone: asked asynchronously, then polled.
    fn is_async(&self) -> bool {
        matches!(
            self,
            Factor::Push { .. } | Factor::Phone { .. } | Factor::Auto { .. }
        )
    }
}

/// A factor name of Duo's text prompt (`push1`, `phone2`, `sms`, `auto`) against the
/// devices of `/preauth`: the number picks the device (1-based), none means Duo's choice.
pub fn factor_from_name(name: &str, devices: &[DuoDevice]) -> Option<Factor> {
    let split = name
        .find(|c: char| c.is_ascii_digit())
        .unwrap_or(name.len());
    let (kind, number) = name.split_at(split);
    let device = if number.is_empty() {
        "auto".to_string()
    } else {
        let n: usize = number.parse().ok()?;
        devices.get(n.checked_sub(1)?)?.device.clone()
    };
    Some(match kind {
        "push" => Factor::Push { device },
        "phone" => Factor::Phone { device },
        "sms" => Factor::Sms { device },
        "auto" => Factor::Auto { device },
        _ => return None,
    })
}

/// What the user typed at the menu: an option number, a factor name, or a passcode. An empty
/// answer is the default factor. `None`: not even a passcode.
pub fn interpret(
    answer: &str,
    factors: &BTreeMap<String, String>,
    devices: &[DuoDevice],
) -> Option<Factor> {
    let a = answer.trim();
    if a.is_empty() {
        let default = factors.get("default").map(String::as_str).unwrap_or("auto");
        return factor_from_name(default, devices);
    }
    if let Some(name) = factors.get(a) {
        return factor_from_name(name, devices);
    }
    if let Some(f) = factor_from_name(a, devices) {
        return Some(f);
    }
    // Duo passcodes: app and SMS codes, bypass codes, hardware tokens (YubiKey OTPs are 44
    // letters). Nothing with spaces or control characters.
    if a.len() <= 64 && a.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Some(Factor::Passcode(Zeroizing::new(a.to_string())));
    }
    None
}

/// Duo's menu and what its answers select: the text prompt of `/preauth` when Duo sent one,
/// else the same menu built from the devices.
pub fn menu(user: &str, pre: &Preauth) -> (String, BTreeMap<String, String>) {
    if let Some(p) = &pre.prompt
        && !p.text.trim().is_empty()
    {
        return (clean_text(&p.text), p.factors.clone());
    }
    let mut text = format!(
        "Duo two-factor login for {user}\n\nEnter a passcode or select one of the following options:\n\n"
    );
    let mut factors = BTreeMap::new();
    let mut n = 0;
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
                n += 1;
                let factor = format!("{cap}{}", i + 1);
                if !factors.contains_key("default") && cap != "sms" {
                    factors.insert("default".to_string(), factor.clone());
                }
                factors.insert(n.to_string(), factor);
                text.push_str(&format!(" {n}. {label} {name}\n"));
            }
        }
    }
    text.push_str(&if n == 0 {
        "\nPasscode: ".to_string()
    } else {
        format!("\nPasscode or option (1-{n}): ")
    });
    (text, factors)
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

enum Poll {
    Status(String),
    Done(std::result::Result<AuthAnswer, DuoError>),
}

/// Aborts the poller when the login ends first.
struct AbortOnDrop(tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Daemon {
    /// The whole second factor of a login through Duo.
    pub(crate) async fn duo_login(
        &self,
        conn: &mut Conn,
        who: &Who<'_>,
        ctx: &AuthContext,
        duo: &Arc<Duo>,
    ) -> Result<()> {
        match self.duo_flow(conn, who, ctx, duo).await {
            Ok(()) => Ok(()),
            Err(Stop::Session(e)) => Err(e),
            Err(Stop::Outage(o)) => {
                decision(who, "duo", "unavailable", &clean(&o.to_string()));
                conn.unavailable(o.to_string()).await?;
                Ok(())
            }
        }
    }

    async fn duo_flow(
        &self,
        conn: &mut Conn,
        who: &Who<'_>,
        ctx: &AuthContext,
        duo: &Arc<Duo>,
    ) -> Flow<()> {
        if let Some(groups) = &duo.groups {
            let user = ctx.user.clone();
            let member_of = tokio::task::spawn_blocking(move || policy::groups_of(&user))
                .await
                .map_err(SessionError::from)?;
            if !groups.matches(&member_of) {
                decision(who, "duo", "allow", "in none of the Duo groups");
                conn.done(Outcome::Allow).await?;
                return Ok(());
            }
        }
        let ipaddr = client_ip(ctx, duo.fallback_local_ip);
        duo.client.sync_clock().await.map_err(outage)?;
        let pre = match duo
            .client
            .preauth(&ctx.user, ipaddr.as_deref(), &duo.hostname)
            .await
        {
            Ok(p) => p,
            Err(DuoError::Unavailable(o)) => return Err(o.into()),
            Err(DuoError::Refused { message, .. }) => {
                decision(
                    who,
                    "duo",
                    "deny",
                    &format!("preauth refused: {}", clean(&message)),
                );
                self.deny(conn, format!("Duo refused this login: {message}"))
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
                conn.done(Outcome::Allow).await?;
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
                self.deny(conn, shown).await?;
                return Ok(());
            }
            PreauthResult::Enroll => return self.duo_enroll(conn, who, ctx, &pre).await,
            PreauthResult::Auth => {}
        }
        let headless = ctx.mode == AuthMode::Auto || !ctx.can_prompt || duo.autopush;
        if headless {
            self.duo_default_factor(conn, who, ctx, duo, &pre, ipaddr.as_deref())
                .await
        } else {
            self.duo_menu(conn, who, ctx, duo, &pre, ipaddr.as_deref())
                .await
        }
    }

    /// Not enrolled: Duo's enrolment message, with a QR code of the portal when a terminal
    /// shows it. The login is refused; the user comes back once enrolled.
    async fn duo_enroll(
        &self,
        conn: &mut Conn,
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
        conn.done(Outcome::Deny).await?;
        Ok(())
    }

    /// The menu, up to `prompts` rounds.
    async fn duo_menu(
        &self,
        conn: &mut Conn,
        who: &Who<'_>,
        ctx: &AuthContext,
        duo: &Arc<Duo>,
        pre: &Preauth,
        ipaddr: Option<&str>,
    ) -> Flow<()> {
        let (text, factors) = menu(&ctx.user, pre);
        for _ in 0..duo.prompts {
            let Some(answer) = conn.prompt(text.clone(), true).await? else {
                decision(
                    who,
                    "duo",
                    "deny",
                    "the client could not ask for a passcode",
                );
                self.deny(conn, "No passcode was entered; login refused.")
                    .await?;
                return Ok(());
            };
            let Some(factor) = interpret(&answer, &factors, &pre.devices) else {
                conn.error("That is neither an option nor a passcode.")
                    .await?;
                continue;
            };
            if let End::Over = self
                .duo_factor(conn, who, ctx, duo, &factor, ipaddr)
                .await?
            {
                return Ok(());
            }
        }
        decision(who, "duo", "deny", "no attempts left");
        self.deny(conn, "Too many attempts; login refused.").await?;
        Ok(())
    }

    /// No menu (no terminal, PAM mode=auto, or autopush): Duo's default factor at once, as
    /// login_duo does for scp, sftp and rsync.
    async fn duo_default_factor(
        &self,
        conn: &mut Conn,
        who: &Who<'_>,
        ctx: &AuthContext,
        duo: &Arc<Duo>,
        pre: &Preauth,
        ipaddr: Option<&str>,
    ) -> Flow<()> {
        let default = pre
            .prompt
            .as_ref()
            .and_then(|p| p.factors.get("default"))
            .map(String::as_str)
            .unwrap_or("auto");
        let factor = factor_from_name(default, &pre.devices).unwrap_or(Factor::Auto {
            device: "auto".into(),
        });
        let line = match &factor {
            Factor::Push { .. } => "Autopushing login request to phone...",
            Factor::Phone { .. } => "Calling your phone...",
            _ => "Using default second-factor authentication.",
        };
        if matches!(factor, Factor::Sms { .. }) && !who.can_prompt {
            decision(
                who,
                "duo-sms",
                "deny",
                "default factor needs typing; no terminal",
            );
            self.deny(
                conn,
                format!(
                    "Duo's default method for {} is SMS passcodes, which need a terminal to \
                     type them. Make Duo Push or a phone call your default method, or log in \
                     with `ssh` in a terminal.",
                    who.user
                ),
            )
            .await?;
            return Ok(());
        }
        conn.info(line).await?;
        if let End::Over = self
            .duo_factor(conn, who, ctx, duo, &factor, ipaddr)
            .await?
        {
            return Ok(());
        }
        if matches!(factor, Factor::Sms { .. })
            && let Some(answer) = conn.prompt("Passcode: ", true).await?
            && let Some(code @ Factor::Passcode(_)) = interpret(&answer, &BTreeMap::new(), &[])
            && let End::Over = self.duo_factor(conn, who, ctx, duo, &code, ipaddr).await?
        {
            return Ok(());
        }
        decision(
            who,
            factor.method(),
            "deny",
            "default factor did not succeed",
        );
        conn.done(Outcome::Deny).await?;
        Ok(())
    }

    /// Runs one factor and tells the user how it ended. Allowed and final refusals end the
    /// conversation here.
    async fn duo_factor(
        &self,
        conn: &mut Conn,
        who: &Who<'_>,
        ctx: &AuthContext,
        duo: &Arc<Duo>,
        factor: &Factor,
        ipaddr: Option<&str>,
    ) -> Flow<End> {
        let mut params: Params = vec![
            ("username".into(), ctx.user.clone()),
            ("hostname".into(), duo.hostname.clone()),
        ];
        if let Some(ip) = ipaddr {
            params.push(("ipaddr".into(), ip.into()));
        }
        let (name, device) = match factor {
            Factor::Push { device } => ("push", Some(device)),
            Factor::Phone { device } => ("phone", Some(device)),
            Factor::Sms { device } => ("sms", Some(device)),
            Factor::Auto { device } => ("auto", Some(device)),
            Factor::Passcode(code) => {
                params.push(("passcode".into(), code.to_string()));
                ("passcode", None)
            }
        };
        params.push(("factor".into(), name.into()));
        if let Some(d) = device {
            params.push(("device".into(), d.clone()));
        }
        if factor.is_async() {
            params.push(("async".into(), "1".into()));
            if duo.pushinfo {
                params.push((
                    "pushinfo".into(),
                    pushinfo(&duo.hostname, ipaddr, ctx.command.as_deref()),
                ));
            }
        }
        let answer = match duo.client.auth(params).await {
            Ok(a) if factor.is_async() => match a.txid {
                Some(txid) => self.duo_wait(conn, who, duo, txid).await?,
                // Decided at once (a locked-out account, say).
                None if a.result.is_some() => a,
                None => return Err(Outage::BadResponse.into()),
            },
            Ok(a) => a,
            Err(DuoError::Unavailable(o)) => return Err(o.into()),
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
            if duo.motd && ctx.service == "mfa-login-prompt" {
                let motd = tokio::task::spawn_blocking(read_motd)
                    .await
                    .map_err(SessionError::from)?;
                if !motd.is_empty() {
                    conn.info(motd).await?;
                }
            }
            conn.done(Outcome::Allow).await?;
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
            self.deny(conn, shown).await?;
            return Ok(End::Over);
        }
        decision(
            who,
            factor.method(),
            "failed",
            &format!("Duo: {} ({})", clean(&status), clean(&msg)),
        );
        conn.error(shown).await?;
        Ok(End::Again)
    }

    /// Polls `/auth_status` for a push or call, showing each new status line. With
    /// `wait_prompt`, the first line goes into a prompt the user confirms with Enter, since
    /// OpenSSH before 10.3 shows PAM text only with a prompt; the lines that arrive meanwhile
    /// follow once it is answered, and the rest as they come.
    async fn duo_wait(
        &self,
        conn: &mut Conn,
        who: &Who<'_>,
        duo: &Arc<Duo>,
        txid: String,
    ) -> Flow<AuthAnswer> {
        let first = duo.client.auth_status(&txid).await.map_err(outage)?;
        if !first.is_waiting() {
            return Ok(first);
        }
        let first_msg = clean_text(first.status_msg.as_deref().unwrap_or("Waiting for Duo..."));
        let (tx, mut rx) = mpsc::channel(16);
        let poller = Arc::clone(duo);
        let limit = duo.client.status_limit();
        let last = first_msg.clone();
        let _guard = AbortOnDrop(tokio::spawn(async move {
            let mut last = last;
            let deadline = tokio::time::Instant::now() + limit;
            loop {
                let polled =
                    tokio::time::timeout_at(deadline, poller.client.auth_status(&txid)).await;
                let event = match polled {
                    Err(_) => Poll::Done(Err(Outage::Timeout(limit).into())),
                    Ok(Err(e)) => Poll::Done(Err(e)),
                    Ok(Ok(a)) if a.is_waiting() => {
                        let msg = clean_text(a.status_msg.as_deref().unwrap_or_default());
                        if msg.is_empty() || msg == last {
                            continue;
                        }
                        last = msg.clone();
                        Poll::Status(msg)
                    }
                    Ok(Ok(a)) => Poll::Done(Ok(a)),
                };
                let done = matches!(event, Poll::Done(_));
                if tx.send(event).await.is_err() || done {
                    return;
                }
            }
        }));
        let mut early = None;
        let mut held = Vec::new();
        if self.config.wait_prompt && who.can_prompt {
            conn.send(&ServerMsg::Prompt {
                text: format!("{first_msg}\nPress Enter once you have answered it: "),
                echo: true,
            })
            .await?;
            let answer = conn.answer();
            tokio::pin!(answer);
            loop {
                tokio::select! {
                    a = &mut answer => {
                        a?;
                        break;
                    }
                    event = rx.recv(), if early.is_none() => match event {
                        Some(Poll::Status(m)) => held.push(m),
                        Some(Poll::Done(r)) => early = Some(r),
                        None => early = Some(Err(Outage::BadResponse.into())),
                    },
                }
            }
        } else {
            conn.info(first_msg).await?;
        }
        for m in held {
            conn.info(m).await?;
        }
        let result = match early {
            Some(r) => r,
            None => loop {
                match rx.recv().await {
                    Some(Poll::Status(m)) => conn.info(m).await?,
                    Some(Poll::Done(r)) => break r,
                    None => break Err(Outage::BadResponse.into()),
                }
            },
        };
        match result {
            Ok(a) => Ok(a),
            Err(DuoError::Unavailable(o)) => Err(o.into()),
            Err(DuoError::Refused { message, .. }) => Ok(AuthAnswer {
                result: Some("deny".into()),
                status: Some("refused".into()),
                status_msg: Some(message),
                txid: None,
            }),
        }
    }
}

/// A refusal from a call where any answer other than success means Duo is out of reach
/// (`/ping`, `/auth_status`).
fn outage(e: DuoError) -> Stop {
    match e {
        DuoError::Unavailable(o) => Stop::Outage(o),
        DuoError::Refused { .. } => Stop::Outage(Outage::BadResponse),
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

    fn device(id: &str) -> DuoDevice {
        DuoDevice {
            device: id.into(),
            display_name: Some("iOS (XXX-XXX-1234)".into()),
            name: None,
            number: Some("XXX-XXX-1234".into()),
            capabilities: vec!["auto".into(), "push".into(), "sms".into(), "phone".into()],
        }
    }

    #[test]
    fn factor_names_pick_devices_by_number() {
        let devices = [device("D1"), device("D2")];
        assert_eq!(
            factor_from_name("push1", &devices),
            Some(Factor::Push {
                device: "D1".into()
            })
        );
        assert_eq!(
            factor_from_name("phone2", &devices),
            Some(Factor::Phone {
                device: "D2".into()
            })
        );
        assert_eq!(
            factor_from_name("sms", &devices),
            Some(Factor::Sms {
                device: "auto".into()
            })
        );
        assert_eq!(factor_from_name("push3", &devices), None);
        assert_eq!(factor_from_name("push0", &devices), None);
        assert_eq!(factor_from_name("fax1", &devices), None);
    }

    #[test]
    fn answers_are_options_names_or_passcodes() {
        let devices = [device("D1")];
        let factors: BTreeMap<String, String> =
            [("1", "push1"), ("2", "phone1"), ("default", "push1")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        assert_eq!(
            interpret("1", &factors, &devices),
            Some(Factor::Push {
                device: "D1".into()
            })
        );
        assert_eq!(
            interpret(" ", &factors, &devices),
            Some(Factor::Push {
                device: "D1".into()
            })
        );
        assert_eq!(
            interpret("phone", &factors, &devices),
            Some(Factor::Phone {
                device: "auto".into()
            })
        );
        assert_eq!(
            interpret("123456", &factors, &devices),
            Some(Factor::Passcode(Zeroizing::new("123456".into())))
        );
        assert_eq!(interpret("12 34", &factors, &devices), None);
        assert_eq!(interpret("a\u{1b}b", &factors, &devices), None);
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
