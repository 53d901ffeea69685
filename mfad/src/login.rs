//! The one login pipeline: the checks before any second factor (the name's form, the
//! account, the caller, groups, the lock, trusted networks, remembered logins, a registered
//! security key used by sshd's publickey step), then the
//! provider's second factor ([`crate::providers::SecondFactor`]: mfad's own factors or
//! Duo), then the conclusion: accepted unless locked, failures counted, a report locks,
//! a success remembered, the answer given.

use crate::accounts::Account;
use crate::conn::Conn;
use crate::core::Core;
use crate::daemon::{Result, Who, decision};
use crate::duo::flow::DuoProvider;
use crate::policy::{self, GroupRule};
use crate::providers::local::LocalFactors;
use crate::providers::{LoginContext, Remember, SecondFactor, Verdict};
use crate::store::{DeviceKind, FailureEffect, LoginSnapshot, RememberScope};
use crate::text;
use mfa_proto::{AuthContext, Outcome};
use std::sync::Arc;

/// Logins: the shared core, mfad's own factors, and Duo when `[duo]` is configured.
pub(crate) struct LoginService {
    pub(crate) core: Arc<Core>,
    pub(crate) local: Arc<LocalFactors>,
    /// The Duo provider and its pooled HTTPS client.
    pub(crate) duo: Option<Arc<crate::duo::Duo>>,
}

impl LoginService {
    /// The one login pipeline, for every provider: the user name's form, the account and
    /// the caller, then (mfad's policy) the groups, the lock, trusted networks and
    /// remembered logins, then the provider's second factor, then the conclusion (see
    /// [`Daemon::conclude`]). With Duo and `[duo] local_policy = false`, Duo alone decides.
    pub(crate) async fn authenticate(
        &self,
        conn: &mut Conn,
        uid: u32,
        mut ctx: AuthContext,
    ) -> Result<()> {
        let rhost = ctx.rhost.clone().unwrap_or_else(|| "-".into());
        if let Err(e) = mfa_proto::check_user_name(&ctx.user) {
            let who = Who::new(&ctx.user, &rhost, &ctx, uid);
            decision(&who, "-", "deny", &format!("bad user name: {e}"));
            return self.core.deny(conn, format!("Login refused: {e}.")).await;
        }
        // Root (sshd's PAM stack) may ask about anyone; anyone else (the ForceCommand
        // helper, running as the user) only about itself, by the name the directory gives its
        // uid. The name asked about is then never looked up: however many names a user
        // sends, mfad asks the directory about that user's uid alone (kept for
        // `user_cache`), in places other than those sshd's logins wait for.
        let policy = &self.core.config.policy;
        let addr = policy::client_addr(ctx.rhost.as_deref(), ctx.ssh_connection.as_deref());
        let local_policy = self.duo.as_ref().is_none_or(|duo| duo.local_policy);
        let (account, early_read) = if uid == 0 {
            let remember = self.remember(&ctx.user, uid, &ctx, addr);
            self.account_and_early_read(&ctx.user, remember, local_policy)
                .await
        } else {
            let own = self.core.account_of(uid).await;
            (own.map(|own| own.filter(|a| a.name == ctx.user)), None)
        };
        let account = match account {
            Ok(a) => a,
            Err(e) => {
                let who = Who::new(&ctx.user, &rhost, &ctx, uid);
                return self.core.directory_down(conn, &who, &e).await;
            }
        };
        if uid != 0 && account.is_none() {
            let who = Who::new(&ctx.user, &rhost, &ctx, uid);
            decision(&who, "-", "deny", &format!("caller uid {uid} is not root"));
            return self
                .core
                .deny(conn, "Only root may ask mfad to authenticate another user.")
                .await;
        }
        let Some(account) = account else {
            let who = Who::new(&ctx.user, &rhost, &ctx, uid);
            decision(&who, "-", "deny", "unknown user");
            return self
                .core
                .deny(conn, "Two-factor login is not available for this account.")
                .await;
        };
        // From here on the user is the directory's spelling of the name: `ALICE` and `alice`
        // are one account with one set of devices, counters and locks.
        ctx.user = account.name.clone();
        crate::history::account(&ctx.user);
        let who = Who::new(&ctx.user, &rhost, &ctx, uid);
        let mut login = LoginContext {
            who,
            ctx: &ctx,
            account: &account,
            trusted: policy.is_trusted(addr),
            devices: Arc::new(Vec::new()),
            bypass_left: 0,
            remember: self.remember(&ctx.user, uid, &ctx, addr),
        };
        match &self.duo {
            Some(duo) => {
                let provider = DuoProvider {
                    core: &self.core,
                    duo,
                };
                // Boxed: Duo's flow is twice the size of the local one, and every login's
                // future would otherwise be sized for it.
                Box::pin(self.pipeline(conn, &provider, &mut login, uid, early_read)).await
            }
            None => {
                self.pipeline(conn, self.local.as_ref(), &mut login, uid, early_read)
                    .await
            }
        }
    }

    /// Where a success of `user`'s login from `addr` is remembered (`[policy]
    /// remember_for`), asked by the caller `uid`. sshd (root) vouches for the client
    /// address; the user's own helper only says what the user's process says. A helper's
    /// entry never opens an sshd login.
    fn remember(
        &self,
        user: &str,
        uid: u32,
        ctx: &AuthContext,
        addr: Option<std::net::IpAddr>,
    ) -> Option<Remember> {
        let policy = &self.core.config.policy;
        addr.filter(|_| policy.remember_for > 0).map(|a| Remember {
            user: user.to_string(),
            scope: if uid == 0 {
                RememberScope::Sshd
            } else {
                RememberScope::OwnHelper
            },
            addr: a.to_string(),
            key: policy::key_fingerprint(ctx.ssh_auth_info.as_deref()),
            for_secs: policy.remember_for,
        })
    }

    /// The account `name` refers to, asked by root (sshd's logins); with it, when the
    /// directory has to be asked and the login will read the store (`reads_store`: mfad's
    /// policy applies), the store's one read before the first prompt, made while the
    /// directory answers, for the name as given (`remember`: as [`LoginService::remember`]
    /// for that name). The two waits overlap instead of adding up: a lookup in the
    /// directory and a read of the store each take tens of microseconds on a quiet host,
    /// and on a cluster the read is a round trip to PostgreSQL and the lookup often one to
    /// LDAP. Both only read: nothing is decided, sent or written before the account is
    /// known. The read is given back only when the directory spells the name as given
    /// (the store keeps users under the directory's spelling); otherwise it is dropped and
    /// the login reads the store again.
    async fn account_and_early_read(
        &self,
        name: &str,
        remember: Option<Remember>,
        reads_store: bool,
    ) -> (Result<Option<Account>>, Option<Result<LoginSnapshot>>) {
        if !reads_store {
            return (self.core.account(name).await, None);
        }
        if let Some(kept) = self.core.kept_account(name) {
            return (Ok(Some(kept)), None);
        }
        // Polled in this order: the lookup goes to a blocking thread first, then the read
        // runs on this task.
        let (account, read) = tokio::join!(
            self.core.account_beside(name),
            self.snapshot_of(name.to_string(), remember)
        );
        let read = match &account {
            Ok(Some(a)) if a.name == name => Some(read),
            _ => None,
        };
        (account, read)
    }

    /// Everything after the account and the caller (`caller_uid`), for provider `provider`.
    async fn pipeline<P: SecondFactor>(
        &self,
        conn: &mut Conn,
        provider: &P,
        login: &mut LoginContext<'_>,
        caller_uid: u32,
        early_read: Option<Result<LoginSnapshot>>,
    ) -> Result<()> {
        let local_policy = self.duo.as_ref().is_none_or(|duo| duo.local_policy);
        if !local_policy {
            // Every decision is the provider's: the store is not read at all.
            let outcome = match provider.authenticate(conn, login).await? {
                Verdict::Answered => return Ok(()),
                Verdict::Passed { .. } => Outcome::Allow,
                Verdict::Refused { .. } => Outcome::Deny,
            };
            conn.done(outcome).await?;
            return Ok(());
        }
        let policy = &self.core.config.policy;
        if !policy.exempt_groups.is_empty() || !policy.require_groups.is_empty() {
            let groups = match self.core.groups(login.account, caller_uid).await {
                Ok(g) => g,
                Err(e) => return self.core.directory_down(conn, &login.who, &e).await,
            };
            let why = match policy::group_rule(policy, &groups) {
                GroupRule::Exempt(g) => format!("member of exempt group {g}"),
                GroupRule::NotRequired => "in none of require_groups".to_string(),
                GroupRule::Required => String::new(),
            };
            if !why.is_empty() {
                decision(&login.who, "-", "allow", &why);
                conn.done(Outcome::Allow).await?;
                return Ok(());
            }
        }
        // The one read of the store before the first prompt (made while the directory was
        // asked about the account, when it was: `account_and_early_read`).
        let snapshot = match early_read {
            Some(read) => read?,
            None => {
                let remember = login.remember.clone();
                self.snapshot_of(login.who.user.to_string(), remember)
                    .await?
            }
        };
        if !self
            .core
            .not_locked(conn, &login.who, &snapshot.lock)
            .await?
        {
            return Ok(());
        }
        login.devices = Arc::new(snapshot.devices);
        login.bypass_left = snapshot.bypass_left;
        if let Some(verdict) = provider.unenrolled(conn, login).await? {
            return self.conclude(conn, login, verdict).await;
        }
        if self
            .let_in_without_asking(conn, &login.who, login.trusted, snapshot.remembered)
            .await?
        {
            return Ok(());
        }
        if let Some(key) = policy::security_key_used(
            policy,
            caller_uid,
            login.ctx.ssh_auth_info.as_deref(),
            &login.devices,
        ) {
            // The lock is read again in the transaction that clears the failure count.
            let passed = self
                .core
                .accept_unless_locked(conn, &login.who, "security-key", None)
                .await?;
            if passed {
                decision(
                    &login.who,
                    "security-key",
                    "allow",
                    &format!("publickey step used security key {}", key.describe()),
                );
            }
            conn.done(if passed {
                Outcome::Allow
            } else {
                Outcome::Deny
            })
            .await?;
            return Ok(());
        }
        // mfad's own factors cannot prove anything for a user whose only devices are security
        // keys (and who has no bypass code): say how to get in instead of asking for a code.
        if self.duo.is_none()
            && login.bypass_left == 0
            && !login.devices.is_empty()
            && login
                .devices
                .iter()
                .all(|d| matches!(d.kind, DeviceKind::SecurityKey | DeviceKind::WebKey))
        {
            let web_only = login.devices.iter().all(|d| d.kind == DeviceKind::WebKey);
            decision(
                &login.who,
                "security-key",
                "deny",
                "the login did not use the user's security key, the only second factor",
            );
            let why = if web_only {
                "Your only second factor is a security key for the web pages, which ssh cannot \
                 use: add an authenticator app or a phone there, or ask your administrator."
            } else if policy.security_key && caller_uid == 0 {
                "Your second factor is a security key, and this login did not use it: log in \
                 with that key (ssh -i its key file)."
            } else {
                "Your only second factor is a security key, which this login cannot use \
                 ([policy] security_key in mfad.toml, and only through sshd): ask your \
                 administrator."
            };
            return self.core.deny(conn, why).await;
        }
        let verdict = provider.authenticate(conn, login).await?;
        self.conclude(conn, login, verdict).await
    }

    /// A login from a trusted network, or remembered from this address and key, is let in
    /// without a second factor (and answered); returns whether it was.
    async fn let_in_without_asking(
        &self,
        conn: &mut Conn,
        who: &Who<'_>,
        trusted: bool,
        remembered: bool,
    ) -> Result<bool> {
        let reason = if trusted {
            "trusted network"
        } else if remembered {
            "remembered from this address and key"
        } else {
            return Ok(false);
        };
        decision(who, "-", "allow", reason);
        conn.done(Outcome::Allow).await?;
        Ok(true)
    }

    /// The one read before `user`'s login's first prompt, asking whether it is remembered
    /// from `remember` (see [`Store::login_snapshot`]).
    async fn snapshot_of(&self, user: String, remember: Option<Remember>) -> Result<LoginSnapshot> {
        let now = self.core.clock.now();
        let asked = |r: &Remember| (r.scope, r.addr.clone(), r.key.clone());
        let (u, asking) = (user.clone(), remember.as_ref().map(asked));
        self.core
            .db_login(
                async move |s: &mut crate::store::Store| {
                    let remembered = asking
                        .as_ref()
                        .map(|(s, a, k)| (*s, a.as_str(), k.as_str()));
                    s.login_snapshot_async(&u, remembered, now).await
                },
                move |s| {
                    let remembered = remember
                        .as_ref()
                        .map(|r| (r.scope, r.addr.as_str(), r.key.as_str()));
                    s.login_snapshot(&user, remembered, now)
                },
            )
            .await
    }

    /// The end of every login the provider did not answer itself: a success is accepted
    /// unless the account is locked (and remembered, in the same transaction), a failure
    /// counted toward the lockout, a report locks; then the answer.
    async fn conclude(
        &self,
        conn: &mut Conn,
        login: &LoginContext<'_>,
        verdict: Verdict,
    ) -> Result<()> {
        let (passed, say_success) = match verdict {
            Verdict::Answered => return Ok(()),
            Verdict::Passed {
                method,
                accepted,
                say_success,
            } => {
                let passed = accepted
                    || self
                        .core
                        .accept_unless_locked(conn, &login.who, method, login.remember.as_ref())
                        .await?;
                (passed, passed && say_success)
            }
            Verdict::Refused { failures, reported } => {
                self.count_provider_failures(conn, &login.who, failures, reported)
                    .await?;
                (false, false)
            }
        };
        if say_success {
            conn.info_with_next("Success. Logging you in...");
        }
        conn.done(if passed {
            Outcome::Allow
        } else {
            Outcome::Deny
        })
        .await?;
        Ok(())
    }

    /// A provider said no after `failures` failed attempts (each counts toward the
    /// lockout), or after the user reported the request (locks at once).
    async fn count_provider_failures(
        &self,
        conn: &mut Conn,
        who: &Who<'_>,
        failures: u32,
        reported: bool,
    ) -> Result<()> {
        let now = self.core.clock.now();
        if reported {
            let until = now.saturating_add(self.core.report_lock_secs());
            let user = who.user.to_string();
            self.core.db(move |s| s.lock_until(&user, until)).await?;
            decision(who, "-", "locked", "reported as fraud; account locked");
            return Ok(());
        }
        for _ in 0..failures {
            if let FailureEffect::Locked { until } = self.core.record_failure(who.user, now).await?
            {
                decision(
                    who,
                    "-",
                    "locked",
                    "failed second factors; account now locked",
                );
                conn.error(text::locked_message(who.user, until, now))
                    .await?;
                break;
            }
        }
        Ok(())
    }
}
