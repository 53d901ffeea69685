//! Second-factor providers: what proves a login's second factor, below the one login
//! pipeline (`login.rs`).
//!
//! A provider gets the login as the pipeline has checked it (the account, the caller, the
//! groups, the lock, trusted networks and remembered logins are behind it) and says how its
//! second factor went: [`Verdict`]. It never concludes a login itself: counting failures,
//! locking, remembering and the final answer are the pipeline's. Two providers exist:
//! mfad's own factors ([`local::LocalFactors`]: TOTP, HOTP, bypass codes, SMS, push, call)
//! and Duo ([`crate::duo::flow::DuoProvider`]). Both talk to the user through the shared
//! pieces of [`menu`]: the menu's shape, how an answer is read, the default method without
//! a terminal, and the wait for the phone.

pub mod enrol;
pub mod local;
pub mod menu;
pub mod out_of_band;

use crate::accounts::Account;
use crate::conn::Conn;
use crate::daemon::{Result, Who};
use crate::store::{Device, RememberScope, Store, StoreError};
use mfa_proto::AuthContext;
use std::sync::Arc;

/// A login as the pipeline hands it to a provider.
pub(crate) struct LoginContext<'a> {
    /// Who is logging in, for decision lines (the directory's spelling of the name).
    pub who: Who<'a>,
    /// What the client said about the login.
    pub ctx: &'a AuthContext,
    pub account: &'a Account,
    /// The client address is in `[policy] trusted_networks`.
    pub trusted: bool,
    /// The user's devices, secrets opened, from the one read of the store before the first
    /// prompt (empty when mfad's policy is off for the provider, `[duo] local_policy =
    /// false`, and the store is not read at all).
    pub devices: Arc<Vec<Device>>,
    /// Bypass codes not yet used (from the same read).
    pub bypass_left: usize,
    /// Where a success is remembered (`[policy] remember_for`), written in the same
    /// transaction that accepts it.
    pub remember: Option<Remember>,
}

/// A success to remember: the user, who vouched for the address, the address, the key.
#[derive(Debug, Clone)]
pub(crate) struct Remember {
    pub user: String,
    pub scope: RememberScope,
    pub addr: String,
    pub key: String,
    /// How long, in seconds.
    pub for_secs: u64,
}

impl Remember {
    /// Writes it, in the caller's transaction, from `now` for `for_secs`.
    pub(crate) fn write(&self, s: &mut Store, now: i64) -> std::result::Result<(), StoreError> {
        s.remember(
            &self.user,
            self.scope,
            &self.addr,
            &self.key,
            now,
            self.until(now),
        )
    }

    /// When a login remembered at `now` is forgotten.
    pub(crate) fn until(&self, now: i64) -> i64 {
        now.saturating_add(i64::try_from(self.for_secs).unwrap_or(i64::MAX))
    }
}

/// How a provider's second factor went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Proven. `accepted`: the provider already checked the lock and cleared the failure
    /// count in the transaction that proved it (a passcode; an approval through
    /// [`crate::daemon::Daemon::accept_unless_locked`]), and remembered the login;
    /// otherwise the pipeline does. `say_success`: the pipeline tells the user
    /// "Success. Logging you in..." (Duo says its own words).
    Passed {
        method: &'static str,
        accepted: bool,
        say_success: bool,
    },
    /// Not proven. `failures` failed attempts still to count toward the lockout (a
    /// provider that counts its own, inside its transactions, says 0); `reported`: the user
    /// reported the request as fraud, which locks the account.
    Refused { failures: u32, reported: bool },
    /// The provider already answered the client (let in or refused without a second
    /// factor, "unavailable" for the fail mode, in-login enrolment): nothing to conclude.
    Answered,
}

/// A second-factor provider. Static dispatch: the pipeline is generic over it.
pub(crate) trait SecondFactor {
    /// Before trusted networks and remembered logins: a user the provider cannot ask at all
    /// (nothing enrolled) is dealt with here (refused, allowed, or enrolled during the
    /// login, as `unenrolled` says). `None`: go on. Providers that enrol users elsewhere
    /// (Duo) keep the default.
    async fn unenrolled(
        &self,
        _conn: &mut Conn,
        _login: &LoginContext<'_>,
    ) -> Result<Option<Verdict>> {
        Ok(None)
    }

    /// The second factor itself: the menu (or the default method without a terminal), the
    /// answers, the wait for the phone.
    async fn authenticate(&self, conn: &mut Conn, login: &LoginContext<'_>) -> Result<Verdict>;
}
