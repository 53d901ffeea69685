//! The out-of-band methods a login menu offers: push approval, phone call, SMS passcodes.
//!
//! Each option comes from one of the user's devices and exists only while its provider is
//! configured. Every wait is bounded by the approval's lifetime, and a provider that fails
//! leaves the user at the menu with the other methods.

use super::local::LocalFactors;
use crate::conn::Conn;
use crate::daemon::{Result, Who, decision};
use crate::factor::bypass;
use crate::oob::approvals::{ApprovalDecision, ApprovalMethod, ApprovalRequest};
use crate::oob::limits::{Channel, Refusal};
use crate::oob::notify::PushMessage;
use crate::oob::phone::mask_phone;
use crate::providers::menu;
use crate::store::{Device, DeviceKind};
use crate::text;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MenuOption {
    Push { name: String, target: String },
    Call { number: String },
    Sms { number: String },
}

impl MenuOption {
    pub(crate) fn label(&self) -> String {
        match self {
            MenuOption::Push { name, .. } => format!("Push to {name}"),
            MenuOption::Call { number } => format!("Phone call to {}", mask_phone(number)),
            MenuOption::Sms { number } => format!("SMS passcodes to {}", mask_phone(number)),
        }
    }
}

/// What an out-of-band method came to.
pub(crate) enum OobResult {
    /// The phone answered (or the wait ended) with this decision.
    Decided(ApprovalDecision),
    /// An SMS passcode is on its way; the user types it at the prompt.
    SmsSent,
    /// The provider failed; the user was told, and may pick something else.
    Failed,
}

/// The menu of mfad's own factors, from the first line to the prompt (the shape is
/// [`menu::render`]'s, shared with Duo). Without options it asks for a passcode only.
pub(crate) fn menu_text(user: &str, options: &[MenuOption]) -> (String, String) {
    let labels: Vec<String> = options.iter().map(MenuOption::label).collect();
    menu::render(
        &format!("Two-factor login for {user}"),
        &labels,
        "Enter a passcode from your authenticator app or token, or a bypass code.",
    )
}

impl LocalFactors {
    pub(crate) fn can_push(&self) -> bool {
        self.notifier.is_some() && self.core.config.approval.is_some()
    }
    pub(crate) fn can_sms(&self) -> bool {
        self.twilio.is_some()
    }
    pub(crate) fn can_call(&self) -> bool {
        self.twilio.is_some() && self.core.config.approval.is_some()
    }

    /// Counts one text, call or push for the user, or tells them (and the log) why not.
    /// Returns whether it may be sent.
    pub(crate) async fn within_limits(
        &self,
        conn: &mut Conn,
        who: &Who<'_>,
        channel: Channel,
    ) -> Result<bool> {
        match self.limits.take(channel, who.user) {
            Ok(()) => Ok(true),
            Err(refusal) => {
                self.refuse_limited(conn, who, channel.as_str(), &refusal)
                    .await?;
                Ok(false)
            }
        }
    }

    pub(crate) async fn refuse_limited(
        &self,
        conn: &mut Conn,
        who: &Who<'_>,
        method: &'static str,
        refusal: &Refusal,
    ) -> Result<()> {
        decision(who, method, "rate-limited", &refusal.log_reason());
        conn.error(refusal.user_message()).await?;
        Ok(())
    }

    /// Refuses (and says so) a number outside `twilio.allowed_country_codes`, which may
    /// have been narrowed since the number was added.
    async fn number_allowed(
        &self,
        conn: &mut Conn,
        who: &Who<'_>,
        method: &'static str,
        number: &str,
    ) -> Result<bool> {
        let Some(cfg) = &self.core.config.twilio else {
            return Ok(false);
        };
        if cfg.number_allowed(number) {
            return Ok(true);
        }
        decision(
            who,
            method,
            "deny",
            "number outside twilio.allowed_country_codes",
        );
        conn.error(format!(
            "{} is outside the countries this host sends to; choose another option or enter \
             a passcode.",
            mask_phone(number)
        ))
        .await?;
        Ok(false)
    }

    /// The menu options of `devices`, in device order, and the index of the default
    /// device's first option.
    pub(crate) fn menu_options(&self, devices: &[Device]) -> (Vec<MenuOption>, Option<usize>) {
        let mut options = Vec::new();
        let mut default = None;
        for d in devices {
            let first = options.len();
            match (d.kind, &d.address) {
                (DeviceKind::Push, Some(target)) if self.can_push() => {
                    options.push(MenuOption::Push {
                        name: d.name.clone(),
                        target: target.clone(),
                    });
                }
                (DeviceKind::Phone, Some(number)) => {
                    if self.can_call() {
                        options.push(MenuOption::Call {
                            number: number.clone(),
                        });
                    }
                    if self.can_sms() {
                        options.push(MenuOption::Sms {
                            number: number.clone(),
                        });
                    }
                }
                _ => {}
            }
            if d.is_default && options.len() > first {
                default = Some(first);
            }
        }
        (options, default)
    }

    pub(crate) async fn run_option(
        &self,
        conn: &mut Conn,
        who: &Who<'_>,
        option: &MenuOption,
    ) -> Result<OobResult> {
        match option {
            MenuOption::Sms { number } => self.send_sms_passcode(conn, who, number).await,
            MenuOption::Push { target, .. } => {
                self.approve(conn, who, ApprovalMethod::Push, target, false)
                    .await
            }
            MenuOption::Call { number } => {
                self.approve(conn, who, ApprovalMethod::Call, number, false)
                    .await
            }
        }
    }

    async fn send_sms_passcode(
        &self,
        conn: &mut Conn,
        who: &Who<'_>,
        number: &str,
    ) -> Result<OobResult> {
        let Some(twilio) = &self.twilio else {
            return Ok(OobResult::Failed);
        };
        if !self.number_allowed(conn, who, "sms", number).await?
            || !self.within_limits(conn, who, Channel::Sms).await?
        {
            return Ok(OobResult::Failed);
        }
        let (code, stored) =
            bypass::new_code(self.core.random.as_ref(), self.core.config.sms.digits);
        let now = self.core.clock.now();
        let ttl = self.core.config.sms.code_ttl as i64;
        let user = who.user.to_string();
        self.core
            .db(move |s| s.add_sms_code(&user, &stored, now, now + ttl))
            .await?;
        let body = sms_login_text(&code, &self.core.issuer, who.user, ttl);
        match twilio.send_sms(number, &body).await {
            Ok(_) => {
                decision(who, "sms", "sent", "SMS passcode sent");
                conn.info(format!(
                    "SMS passcode sent to {}. Enter it below.",
                    mask_phone(number)
                ))
                .await?;
                Ok(OobResult::SmsSent)
            }
            Err(e) => {
                decision(who, "sms", "provider-error", &e.to_string());
                conn.error(format!(
                    "Could not send an SMS: {e}. Choose another option or enter a passcode."
                ))
                .await?;
                Ok(OobResult::Failed)
            }
        }
    }

    /// Sends a push or places a call, then waits (bounded) for the phone's answer (with
    /// `wait_prompt`, in a prompt the user confirms with Enter: [`menu::wait_for_phone`]).
    pub(crate) async fn approve(
        &self,
        conn: &mut Conn,
        who: &Who<'_>,
        method: ApprovalMethod,
        target: &str,
        adding_device: bool,
    ) -> Result<OobResult> {
        let Some(approval) = &self.core.config.approval else {
            return Ok(OobResult::Failed);
        };
        let channel = match method {
            ApprovalMethod::Push => Channel::Push,
            ApprovalMethod::Call => {
                if !self.number_allowed(conn, who, "call", target).await? {
                    return Ok(OobResult::Failed);
                }
                Channel::Call
            }
        };
        if !self.within_limits(conn, who, channel).await? {
            return Ok(OobResult::Failed);
        }
        let ttl = Duration::from_secs(approval.token_ttl);
        let request = ApprovalRequest {
            user: who.user.to_string(),
            host: self.core.issuer.clone(),
            rhost: who.rhost.to_string(),
            method,
            created: self.core.clock.now(),
            adding_device,
        };
        let pending = match self.approvals.create(request, ttl).await {
            Ok(p) => p,
            Err(e) => {
                conn.error(format!("{e}; enter a passcode instead."))
                    .await?;
                return Ok(OobResult::Failed);
            }
        };
        let sent = match method {
            ApprovalMethod::Push => match &self.notifier {
                Some(n) => {
                    n.push(
                        target,
                        &PushMessage {
                            user: who.user.to_string(),
                            host: self.core.issuer.clone(),
                            rhost: who.rhost.to_string(),
                            time_text: text::utc(self.core.clock.now()),
                            approve_url: approval.approval_url(&pending.token),
                            number_required: pending.verify_number.is_some(),
                            adding_device,
                        },
                    )
                    .await
                }
                None => return Ok(OobResult::Failed),
            },
            ApprovalMethod::Call => match &self.twilio {
                Some(t) => t
                    .place_call(target, &approval.voice_url(&pending.token))
                    .await
                    .map(drop),
                None => return Ok(OobResult::Failed),
            },
        };
        if let Err(e) = sent {
            self.approvals.cancel(&pending).await;
            decision(who, method.as_str(), "provider-error", &e.to_string());
            let what = match method {
                ApprovalMethod::Push => "send the push",
                ApprovalMethod::Call => "place the call",
            };
            conn.error(format!(
                "Could not {what}: {e}. Choose another option or enter a passcode."
            ))
            .await?;
            return Ok(OobResult::Failed);
        }
        let mut waiting = match method {
            ApprovalMethod::Push => "Pushed a login request to your device...".to_string(),
            ApprovalMethod::Call => format!(
                "Calling {}... Answer it and press 1 to approve.",
                mask_phone(target)
            ),
        };
        if let Some(n) = pending.verify_number {
            waiting.push_str(&format!("\nOn the approval page, enter the number {n}."));
        }
        let press_enter = self.core.config.wait_prompt && who.can_prompt;
        let outcome = menu::wait_for_phone(
            conn,
            &waiting,
            press_enter,
            None,
            self.approvals.wait(pending, ttl),
        )
        .await?;
        Ok(OobResult::Decided(outcome))
    }
}

/// The text that carries a login code.
pub(crate) fn sms_login_text(
    code: &str,
    issuer: &str,
    user: &str,
    ttl_secs: i64,
) -> zeroize::Zeroizing<String> {
    zeroize::Zeroizing::new(format!(
        "{code} is your login code for {issuer} ({user}). It works once, for {} minutes. If you \
         did not try to log in, tell your administrator.",
        ttl_secs / 60
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_menu_has_the_seed_shape() {
        let options = vec![
            MenuOption::Push {
                name: "Pixel 8".into(),
                target: "t".into(),
            },
            MenuOption::Call {
                number: "+15555551234".into(),
            },
            MenuOption::Sms {
                number: "+15555551234".into(),
            },
        ];
        let (text, prompt) = menu_text("abc123", &options);
        assert_eq!(
            text,
            "Two-factor login for abc123\n\nEnter a passcode or select one of the following \
             options:\n\n 1. Push to Pixel 8\n 2. Phone call to XXX-XXX-1234\n 3. SMS passcodes \
             to XXX-XXX-1234\n"
        );
        assert_eq!(prompt, "Passcode or option (1-3): ");
        let (_, prompt) = menu_text("abc123", &[]);
        assert_eq!(prompt, "Passcode: ");
    }
}
