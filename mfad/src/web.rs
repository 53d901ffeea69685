//! The web role: the narrow requests of mfa-web, the unprivileged web front that serves the
//! approval pages and the voice provider's callbacks. mfa-web holds no secret and decides
//! nothing; this service looks tokens up, takes answers, verifies callback signatures (the
//! provider's auth token never leaves mfad) and runs the report hook.
//!
//! The role is honoured only for root and the uid of `[web] user` (peer credentials); anyone
//! else asking for it is refused and logged.

use crate::accounts::Accounts;
use crate::conn::Conn;
use crate::daemon::Result;
use crate::oob::approvals::{ApprovalDecision, ApprovalRequest, ApprovalStore, DecideError};
use crate::oob::config::Secret;
use crate::oob::notify::visible;
use crate::oob::twilio;
use crate::text::{clean, utc};
use mfa_proto::{
    ApprovalPage, Closed, ServerMsg, VoiceStep, WebAnswer, WebDecision, WebReply, WebRequest,
};
use serde::Deserialize;
use std::sync::Arc;
use tracing::{info, warn};

/// `[web]`: who mfa-web runs as.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// The system user mfa-web runs as; only it (and root) may use the web role. Default
    /// `mfa-web` (made by the package). A user that does not exist lets nobody but root in.
    pub user: String,
    /// The address users' browsers reach mfa-web at (`https://mfa.example.org`): enrolment
    /// links (`unenrolled = "link"`) are `{public_url}/enroll/{token}`. Required by `link`.
    pub public_url: Option<String>,
    /// Seconds an enrolment link stays valid (default 900: 15 minutes).
    pub enroll_link_ttl: u64,
    /// Whether the self-service portal (`{public_url}/portal`: sign in with password and a
    /// code, then devices, the default method, bypass codes) is served. Default false.
    pub portal: bool,
    /// Members of this group (as the host's user directory has it) get the portal's admin
    /// part: the locked accounts, and status, unlock, reset and bypass codes for any user.
    /// Default: none.
    pub admin_group: Option<String>,
    /// The PAM service mfad checks passwords typed on the enrolment page through
    /// (`/etc/pam.d/{pam_service}`, shipped by the package; default `mfa-web`). Read at
    /// start.
    pub pam_service: String,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            user: "mfa-web".to_string(),
            public_url: None,
            enroll_link_ttl: 900,
            portal: false,
            admin_group: None,
            pam_service: crate::password::DEFAULT_SERVICE.to_string(),
        }
    }
}

impl WebConfig {
    /// Checks `[web]`; `links`: `unenrolled = "link"` needs `public_url`.
    pub fn validate(&self, links: bool) -> std::result::Result<(), String> {
        match self.public_url.as_deref() {
            None if links => {
                return Err("unenrolled = \"link\" needs [web] public_url, the address \
                            enrolment links point to"
                    .into());
            }
            None => {}
            Some(url) => {
                let plain_ok = url.starts_with("http://127.0.0.1")
                    || url.starts_with("http://localhost")
                    || url.starts_with("http://[::1]");
                if !(url.starts_with("https://") || plain_ok) || url.contains(char::is_whitespace) {
                    return Err(format!(
                        "web.public_url = {url:?} must be an https:// URL (plain http:// only \
                         to localhost)"
                    ));
                }
            }
        }
        let service_ok = !self.pam_service.is_empty()
            && self.pam_service.len() <= 64
            && !self.pam_service.starts_with('.')
            && self
                .pam_service
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !service_ok {
            return Err(format!(
                "web.pam_service = {:?} must be a file name in /etc/pam.d (letters, digits, \
                 '.', '_', '-')",
                self.pam_service
            ));
        }
        if !(60..=86_400).contains(&self.enroll_link_ttl) {
            return Err(format!(
                "web.enroll_link_ttl = {} must be 60 to 86400 seconds",
                self.enroll_link_ttl
            ));
        }
        Ok(())
    }

    /// `public_url` without its trailing slash.
    pub fn public_base(&self) -> Option<&str> {
        self.public_url.as_deref().map(|u| u.trim_end_matches('/'))
    }
}

fn closed_unknown() -> WebReply {
    WebReply::Closed {
        why: Closed::Unknown,
    }
}

/// What the daemon does when a phone answers. Called from the web service's tasks; must not
/// block for long.
pub trait ApprovalHooks: Send + Sync {
    /// The user pressed "Deny and report" (or 9 on the call): they did not start this
    /// login. The daemon locks the account and logs an alert. Called even when the login
    /// had already stopped waiting.
    fn reported(&self, request: &ApprovalRequest);

    /// Every answer taken through the web front, for the decision log.
    fn decided(&self, _request: &ApprovalRequest, _decision: ApprovalDecision) {}
}

/// The web front's requests, answered against the pending approvals.
pub struct WebService {
    approvals: Arc<ApprovalStore>,
    hooks: Arc<dyn ApprovalHooks>,
    accounts: Arc<dyn Accounts>,
    /// `[web] user`.
    web_user: String,
    /// `[approval] public_url` without its trailing slash, if approvals are configured.
    public_base: Option<String>,
    /// `[twilio] auth_token`: signs the voice provider's callbacks.
    twilio_auth_token: Option<Secret>,
    /// The enrolment page's requests (`unenrolled = "link"`), when the daemon serves them.
    enrolment: Option<crate::enrol_web::EnrolmentDesk>,
    /// The portal's requests (`[web] portal`).
    portal: Option<crate::portal::PortalDesk>,
}

/// The web role was asked for by a uid that may not use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("only mfad's web front may make web requests")]
pub struct NotTheWebUser;

impl WebService {
    pub fn new(
        config: &crate::config::Config,
        approvals: Arc<ApprovalStore>,
        hooks: Arc<dyn ApprovalHooks>,
        accounts: Arc<dyn Accounts>,
    ) -> Self {
        WebService {
            approvals,
            hooks,
            accounts,
            web_user: config.web.user.clone(),
            public_base: config
                .approval
                .as_ref()
                .map(|a| a.public_base().to_string()),
            twilio_auth_token: config.twilio.as_ref().map(|t| t.auth_token.clone()),
            enrolment: None,
            portal: None,
        }
    }

    /// With the portal's requests answered by `desk`.
    pub(crate) fn with_portal(mut self, desk: crate::portal::PortalDesk) -> Self {
        self.portal = Some(desk);
        self
    }

    /// With the enrolment page's requests answered by `desk`.
    pub(crate) fn with_enrolment(mut self, desk: crate::enrol_web::EnrolmentDesk) -> Self {
        self.enrolment = Some(desk);
        self
    }

    /// Whether `uid` may use the web role: root, or the uid of `[web] user`.
    async fn allowed(&self, uid: u32) -> bool {
        if uid == 0 {
            return true;
        }
        let accounts = Arc::clone(&self.accounts);
        let name = self.web_user.clone();
        match tokio::task::spawn_blocking(move || accounts.by_name(&name)).await {
            Ok(Ok(Some(account))) => account.uid == uid,
            Ok(Ok(None)) => false,
            Ok(Err(e)) => {
                warn!("cannot look up the web user: {e}");
                false
            }
            Err(e) => {
                warn!("cannot look up the web user: {e}");
                false
            }
        }
    }

    /// Serves one web request from `uid` over `conn`: one reply, or a refusal.
    pub(crate) async fn serve(&self, conn: &mut Conn, uid: u32, request: WebRequest) -> Result<()> {
        match self.reply(uid, request).await {
            Ok(reply) => conn.send(&ServerMsg::Web { reply }).await?,
            Err(refused) => conn.unavailable(refused.to_string()).await?,
        }
        Ok(())
    }

    /// mfad's reply to the web request `request` from the caller `uid`; refused (and
    /// logged) unless `uid` is root or the web user.
    pub async fn reply(
        &self,
        uid: u32,
        request: WebRequest,
    ) -> std::result::Result<WebReply, NotTheWebUser> {
        if !self.allowed(uid).await {
            warn!(
                target: "mfad::web",
                "uid {uid} asked for the web role ({}) but is not the web user {}; refused",
                request.safe_string(),
                clean(&self.web_user)
            );
            return Err(NotTheWebUser);
        }
        Ok(match request {
            WebRequest::ShowApproval { token } => self.show(&token).await,
            WebRequest::DecideApproval {
                token,
                answer,
                number,
            } => self.decide(&token, answer, number.as_deref()).await,
            WebRequest::VoiceCallback {
                step,
                token,
                path,
                params,
                signature,
            } => {
                self.voice(step, &token, &path, &params, signature.as_deref())
                    .await
            }
            WebRequest::OpenEnrolment { token } => match &self.enrolment {
                Some(desk) => desk.open(&token).await,
                None => closed_unknown(),
            },
            WebRequest::EnrolmentPassword {
                token,
                password,
                client,
            } => match &self.enrolment {
                Some(desk) => {
                    desk.password(&token, password, &client_address(client))
                        .await
                }
                None => closed_unknown(),
            },
            WebRequest::PortalSignIn {
                user,
                password,
                client,
            } => match &self.portal {
                Some(desk) => desk.sign_in(&user, password, &client_address(client)).await,
                None => closed_unknown(),
            },
            WebRequest::PortalCode {
                session,
                csrf,
                code,
                client,
            } => match &self.portal {
                Some(desk) => {
                    desk.code(&session, &csrf, &code, &client_address(client))
                        .await
                }
                None => closed_unknown(),
            },
            WebRequest::PortalView { session } => match &self.portal {
                Some(desk) => desk.view(&session).await,
                None => closed_unknown(),
            },
            WebRequest::PortalChange {
                session,
                csrf,
                change,
                client,
            } => match &self.portal {
                Some(desk) => {
                    desk.change(&session, &csrf, change, &client_address(client))
                        .await
                }
                None => closed_unknown(),
            },
            WebRequest::PortalAdmin {
                session,
                csrf,
                user,
                action,
                client,
            } => match &self.portal {
                Some(desk) => {
                    desk.admin(&session, &csrf, &user, action, &client_address(client))
                        .await
                }
                None => closed_unknown(),
            },
            WebRequest::PortalSend {
                session,
                csrf,
                via,
                client,
            } => match &self.portal {
                Some(desk) => {
                    desk.send(&session, &csrf, via, &client_address(client))
                        .await
                }
                None => closed_unknown(),
            },
            WebRequest::PortalKey {
                session,
                csrf,
                response,
                client,
            } => match &self.portal {
                Some(desk) => {
                    desk.key_answer(&session, &csrf, &response, &client_address(client))
                        .await
                }
                None => closed_unknown(),
            },
            WebRequest::PortalSignOut { session, csrf } => match &self.portal {
                Some(desk) => desk.sign_out(&session, &csrf).await,
                None => closed_unknown(),
            },
            WebRequest::BeginTotp { token } => match &self.enrolment {
                Some(desk) => desk.begin(&token).await,
                None => closed_unknown(),
            },
            WebRequest::ConfirmTotp {
                token,
                code,
                client,
            } => match &self.enrolment {
                Some(desk) => desk.confirm(&token, &code, &client_address(client)).await,
                None => closed_unknown(),
            },
        })
    }

    async fn show(&self, token: &str) -> WebReply {
        let view = if mfa_proto::web::looks_like_token(token) {
            self.approvals.peek(token).await
        } else {
            None
        };
        match view {
            Some(view) => {
                let r = &view.request;
                WebReply::Approval {
                    page: ApprovalPage {
                        user: visible(&r.user),
                        host: visible(&r.host),
                        rhost: visible(&r.rhost),
                        time: utc(r.created),
                        adding_device: r.adding_device,
                        needs_number: view.needs_number,
                    },
                }
            }
            None => WebReply::Closed {
                why: Closed::Unknown,
            },
        }
    }

    async fn decide(&self, token: &str, answer: WebAnswer, number: Option<&str>) -> WebReply {
        if !mfa_proto::web::looks_like_token(token) {
            return WebReply::Closed {
                why: Closed::Unknown,
            };
        }
        let wanted = match answer {
            WebAnswer::Approve => ApprovalDecision::Approved,
            WebAnswer::Deny => ApprovalDecision::Denied,
            WebAnswer::Report => ApprovalDecision::Reported,
        };
        match self.take_answer(token, wanted, number, "web").await {
            Ok((decision, waiting)) => WebReply::Decided {
                decision: match decision {
                    ApprovalDecision::Approved => WebDecision::Approved,
                    ApprovalDecision::Reported => WebDecision::Reported,
                    ApprovalDecision::Denied if wanted == ApprovalDecision::Approved => {
                        WebDecision::WrongNumber
                    }
                    ApprovalDecision::Denied | ApprovalDecision::TimedOut => WebDecision::Denied,
                },
                waiting,
            },
            Err(e) => WebReply::Closed {
                why: match e {
                    DecideError::Unknown => Closed::Unknown,
                    DecideError::Expired => Closed::Expired,
                    DecideError::Abandoned => Closed::Abandoned,
                    DecideError::Unavailable => Closed::Unavailable,
                },
            },
        }
    }

    /// Takes an answer and runs the hooks; the token is spent whatever happens.
    async fn take_answer(
        &self,
        token: &str,
        wanted: ApprovalDecision,
        typed_number: Option<&str>,
        via: &str,
    ) -> std::result::Result<(ApprovalDecision, bool), DecideError> {
        let answered = self.approvals.answer(token, wanted, typed_number).await?;
        let request = &answered.request;
        info!(
            target: "mfad::approval",
            "user={} host={} rhost={} method={} answer={} via={}",
            clean(&request.user),
            clean(&request.host),
            clean(&request.rhost),
            request.method.as_str(),
            answered.decision.as_str(),
            via
        );
        if answered.decision == ApprovalDecision::Reported {
            warn!(
                target: "mfad::approval",
                "user={} reported a login request they did not start (host={} rhost={})",
                clean(&request.user),
                clean(&request.host),
                clean(&request.rhost)
            );
            self.hooks.reported(request);
        }
        self.hooks.decided(request, answered.decision);
        Ok((answered.decision, answered.waiting))
    }

    /// The configured public base URL (no trailing slash), which callbacks are signed
    /// against and links are built from.
    fn public_base(&self) -> Option<&str> {
        self.public_base.as_deref()
    }

    /// Checks `X-Twilio-Signature` over the public URL + the request's path and query and the
    /// posted parameters. The URL is rebuilt from mfad's configured public URL, not from
    /// anything the web front says, because behind a reverse proxy the request no longer
    /// shows what was signed.
    fn signed_by_provider(
        &self,
        path: &str,
        params: &[(String, String)],
        signature: Option<&str>,
    ) -> bool {
        let (Some(auth_token), Some(base), Some(header)) = (
            self.twilio_auth_token.as_ref(),
            self.public_base(),
            signature,
        ) else {
            return false;
        };
        if auth_token.is_empty() || !path.starts_with('/') {
            return false;
        }
        twilio::signature_matches(
            auth_token.expose(),
            &format!("{base}{path}"),
            params,
            header,
        )
    }

    async fn voice(
        &self,
        step: VoiceStep,
        token: &str,
        path: &str,
        params: &[(String, String)],
        signature: Option<&str>,
    ) -> WebReply {
        if !self.signed_by_provider(path, params, signature) {
            warn!(target: "mfad::approval", "refused a voice callback without a valid signature");
            return WebReply::Forbidden;
        }
        let twiml = match step {
            VoiceStep::Voice => {
                let view = if mfa_proto::web::looks_like_token(token) {
                    self.approvals.peek(token).await
                } else {
                    None
                };
                match (view, self.public_base()) {
                    (Some(view), Some(base)) => {
                        twilio::voice_twiml(&view.request, &format!("{base}/twilio/gather/{token}"))
                    }
                    _ => twilio::say_twiml(
                        "This login request has expired or was already answered. Goodbye.",
                    ),
                }
            }
            VoiceStep::Gather => {
                if !mfa_proto::web::looks_like_token(token) {
                    twilio::say_twiml("This login request is unknown. Goodbye.")
                } else {
                    let digits = params
                        .iter()
                        .find(|(name, _)| name == "Digits")
                        .map(|(_, v)| v.as_str())
                        .unwrap_or("");
                    let wanted = match digits {
                        "1" => ApprovalDecision::Approved,
                        "9" => ApprovalDecision::Reported,
                        _ => ApprovalDecision::Denied,
                    };
                    let said = match self.take_answer(token, wanted, None, "phone").await {
                        Ok((ApprovalDecision::Approved, _)) => "Approved. Goodbye.",
                        Ok((ApprovalDecision::Reported, _)) => {
                            "The login was denied and reported to your administrator. Goodbye."
                        }
                        Ok(_) => "The login was denied. Goodbye.",
                        Err(_) => {
                            "This login request has expired or was already answered. Goodbye."
                        }
                    };
                    twilio::say_twiml(said)
                }
            }
        };
        WebReply::Voice { twiml }
    }
}

/// The browser's address mfa-web passed, when it is one ("-" otherwise): only an address
/// reaches the logs and PAM, never other text.
fn client_address(client: Option<String>) -> String {
    client
        .and_then(|c| c.parse::<std::net::IpAddr>().ok())
        .map_or_else(|| "-".to_string(), |ip| ip.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pam_service_must_be_a_plain_file_name_and_a_client_only_an_address() {
        let with = |service: &str| WebConfig {
            pam_service: service.to_string(),
            ..WebConfig::default()
        };
        assert_eq!(WebConfig::default().pam_service, "mfa-web");
        assert!(with("mfa-web").validate(false).is_ok());
        assert!(with("sshd-mfat1x.web_2").validate(false).is_ok());
        for bad in ["", "../shadow", ".hidden", "a b", "pam/d"] {
            let err = with(bad).validate(false).unwrap_err();
            assert!(err.contains("web.pam_service"), "{bad:?}: {err}");
        }
        assert_eq!(client_address(Some("192.0.2.1".into())), "192.0.2.1");
        assert_eq!(
            client_address(Some("::ffff:1.2.3.4".into())),
            "::ffff:1.2.3.4"
        );
        assert_eq!(client_address(Some("1.2.3.4 forged=yes".into())), "-");
        assert_eq!(client_address(None), "-");
    }
}
