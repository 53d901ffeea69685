//! Rate limits on what costs money or attention: texts, calls and pushes, per user and for
//! the whole host, over sliding windows on the injected clock; and a cap on phone numbers a
//! user has asked to add but not confirmed (toll fraud sends to many numbers, not one).
//!
//! In memory: a restart forgets the counts, which can only allow a little more, never lock
//! anyone out. Each window keeps at most its limit of timestamps, so memory stays bounded.

use crate::clock::Clock;
use serde::Deserialize;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

/// `[limits]` in mfad.toml. Counts are per sliding window; a host limit of 0 turns it off.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Seconds of the per-user window. Default 900 (15 minutes).
    pub user_window: u64,
    /// Seconds of the host-wide window. Default 3600.
    pub host_window: u64,
    pub sms_per_user: u32,
    pub sms_per_host: u32,
    pub calls_per_user: u32,
    pub calls_per_host: u32,
    pub pushes_per_user: u32,
    pub pushes_per_host: u32,
    /// Phone numbers a user may have waiting for their confirmation code at once.
    pub pending_phones: u32,
    /// Seconds an unconfirmed phone addition keeps counting. Default 86400 (a day).
    pub pending_phones_window: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            user_window: 900,
            host_window: 3600,
            sms_per_user: 5,
            sms_per_host: 100,
            calls_per_user: 5,
            calls_per_host: 100,
            pushes_per_user: 10,
            pushes_per_host: 2000,
            pending_phones: 3,
            pending_phones_window: 86_400,
        }
    }
}

/// A `[limits]` key out of range; the Display names the key, its value and the range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsConfigError {
    #[error("{key} = {value} is out of range: must be 60 to 604800 seconds")]
    Window { key: &'static str, value: u64 },
    #[error("{key} = {value} is out of range: must be 1 to 1000")]
    PerUser { key: &'static str, value: u32 },
    #[error("{key} = {value} is out of range: must be 0 (no host limit) to 1000000")]
    PerHost { key: &'static str, value: u32 },
}

impl LimitsConfigError {
    /// The key out of range (`limits.sms_per_user`).
    pub fn key(&self) -> &'static str {
        match self {
            Self::Window { key, .. } | Self::PerUser { key, .. } | Self::PerHost { key, .. } => key,
        }
    }
}

impl LimitsConfig {
    /// Names the first key out of range.
    pub fn validate(&self) -> Result<(), LimitsConfigError> {
        let windows = [
            ("limits.user_window", self.user_window),
            ("limits.host_window", self.host_window),
            ("limits.pending_phones_window", self.pending_phones_window),
        ];
        for (key, secs) in windows {
            if !(60..=7 * 86_400).contains(&secs) {
                return Err(LimitsConfigError::Window { key, value: secs });
            }
        }
        let per_user = [
            ("limits.sms_per_user", self.sms_per_user),
            ("limits.calls_per_user", self.calls_per_user),
            ("limits.pushes_per_user", self.pushes_per_user),
            ("limits.pending_phones", self.pending_phones),
        ];
        for (key, n) in per_user {
            if !(1..=1000).contains(&n) {
                return Err(LimitsConfigError::PerUser { key, value: n });
            }
        }
        let per_host = [
            ("limits.sms_per_host", self.sms_per_host),
            ("limits.calls_per_host", self.calls_per_host),
            ("limits.pushes_per_host", self.pushes_per_host),
        ];
        for (key, n) in per_host {
            if n > 1_000_000 {
                return Err(LimitsConfigError::PerHost { key, value: n });
            }
        }
        Ok(())
    }
}

/// What a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    Sms,
    Call,
    Push,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Sms => "sms",
            Channel::Call => "call",
            Channel::Push => "push",
        }
    }
    fn plural(self) -> &'static str {
        match self {
            Channel::Sms => "texts",
            Channel::Call => "calls",
            Channel::Push => "pushes",
        }
    }
    fn sentence(self) -> &'static str {
        match self {
            Channel::Sms => "Too many texts were sent",
            Channel::Call => "Too many calls were placed",
            Channel::Push => "Too many push requests were sent",
        }
    }
}

/// Why a send was refused, and when it would be allowed again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    User {
        channel: Channel,
        limit: u32,
        window: u64,
        retry_after: i64,
    },
    Host {
        channel: Channel,
        limit: u32,
        window: u64,
        retry_after: i64,
    },
    PendingPhones {
        limit: u32,
        retry_after: i64,
    },
}

fn minutes(secs: i64) -> i64 {
    ((secs.max(1)) + 59) / 60
}

fn plural_minutes(secs: i64) -> String {
    match minutes(secs) {
        1 => "1 minute".to_string(),
        n => format!("{n} minutes"),
    }
}

impl Refusal {
    /// What the user is told.
    pub fn user_message(&self) -> String {
        match self {
            Refusal::User {
                channel,
                retry_after,
                ..
            } => format!(
                "{} for this account; wait {} or use another method.",
                channel.sentence(),
                plural_minutes(*retry_after)
            ),
            Refusal::Host {
                channel,
                retry_after,
                ..
            } => format!(
                "{} from this host; wait {} or use another method.",
                channel.sentence(),
                plural_minutes(*retry_after)
            ),
            Refusal::PendingPhones { limit, retry_after } => format!(
                "You already have {limit} phone numbers waiting for their confirmation code; \
                 confirm one, or wait {} before adding another number.",
                plural_minutes(*retry_after)
            ),
        }
    }

    /// The reason written to the decision log.
    pub fn log_reason(&self) -> String {
        match self {
            Refusal::User {
                channel,
                limit,
                window,
                ..
            } => format!(
                "rate limit: {limit} {} per user in {} s",
                channel.plural(),
                window
            ),
            Refusal::Host {
                channel,
                limit,
                window,
                ..
            } => format!(
                "rate limit: {limit} {} per host in {} s",
                channel.plural(),
                window
            ),
            Refusal::PendingPhones { limit, .. } => {
                format!("rate limit: {limit} unconfirmed phone additions")
            }
        }
    }
}

#[derive(Default)]
struct State {
    per_user: HashMap<(Channel, String), VecDeque<i64>>,
    per_host: HashMap<Channel, VecDeque<i64>>,
    /// user -> (number, when its code was sent), unconfirmed.
    pending: HashMap<String, Vec<(String, i64)>>,
    /// Takes since the last sweep of idle keys.
    since_sweep: u32,
}

/// Drops timestamps older than `window`; returns whether `limit` more would be exceeded,
/// and if so the seconds until the oldest leaves the window.
fn full(q: &mut VecDeque<i64>, limit: u32, window: u64, now: i64) -> Option<i64> {
    let window = window as i64;
    while q.front().is_some_and(|&t| t <= now - window) {
        q.pop_front();
    }
    if q.len() >= limit as usize {
        q.front().map(|&t| t + window - now)
    } else {
        None
    }
}

/// The limits of one daemon, shared by every conversation.
pub struct OobLimits {
    cfg: LimitsConfig,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
}

impl OobLimits {
    pub fn new(cfg: LimitsConfig, clock: Arc<dyn Clock>) -> Self {
        OobLimits {
            cfg,
            clock,
            state: Mutex::new(State::default()),
        }
    }

    fn limits_of(&self, channel: Channel) -> (u32, u32) {
        match channel {
            Channel::Sms => (self.cfg.sms_per_user, self.cfg.sms_per_host),
            Channel::Call => (self.cfg.calls_per_user, self.cfg.calls_per_host),
            Channel::Push => (self.cfg.pushes_per_user, self.cfg.pushes_per_host),
        }
    }

    /// Counts one send on `channel` for `user`, or refuses it (and counts nothing) when the
    /// user's or the host's window is full. Checked and counted under one lock, so racing
    /// conversations cannot slip past the limit together.
    pub fn take(&self, channel: Channel, user: &str) -> Result<(), Refusal> {
        let now = self.clock.now();
        let (per_user, per_host) = self.limits_of(channel);
        // A poisoned lock only means another thread panicked mid-update; the counts are
        // still usable, and refusing every send forever would be worse.
        let mut guard = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let state = &mut *guard;
        state.since_sweep += 1;
        if state.since_sweep >= 1024 {
            state.since_sweep = 0;
            self.sweep(state, now);
        }
        let user_q = state
            .per_user
            .entry((channel, user.to_string()))
            .or_default();
        if let Some(retry_after) = full(user_q, per_user, self.cfg.user_window, now) {
            return Err(Refusal::User {
                channel,
                limit: per_user,
                window: self.cfg.user_window,
                retry_after,
            });
        }
        if per_host > 0 {
            let host_q = state.per_host.entry(channel).or_default();
            if let Some(retry_after) = full(host_q, per_host, self.cfg.host_window, now) {
                return Err(Refusal::Host {
                    channel,
                    limit: per_host,
                    window: self.cfg.host_window,
                    retry_after,
                });
            }
            host_q.push_back(now);
        }
        user_q.push_back(now);
        Ok(())
    }

    /// Records that a confirmation code is about to be sent to `number` for `user`, or
    /// refuses when the user already has `pending_phones` other numbers unconfirmed. Asking
    /// again for a number already pending is not a new addition.
    pub fn start_phone_addition(&self, user: &str, number: &str) -> Result<(), Refusal> {
        let now = self.clock.now();
        let window = self.cfg.pending_phones_window as i64;
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let pending = state.pending.entry(user.to_string()).or_default();
        pending.retain(|&(_, at)| at > now - window);
        if let Some(entry) = pending.iter_mut().find(|(n, _)| n == number) {
            entry.1 = now;
            return Ok(());
        }
        if pending.len() >= self.cfg.pending_phones as usize {
            let oldest = pending.iter().map(|&(_, at)| at).min().unwrap_or(now);
            return Err(Refusal::PendingPhones {
                limit: self.cfg.pending_phones,
                retry_after: oldest + window - now,
            });
        }
        pending.push((number.to_string(), now));
        Ok(())
    }

    /// The code sent to `number` came back: it no longer counts as pending.
    pub fn phone_confirmed(&self, user: &str, number: &str) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(pending) = state.pending.get_mut(user) {
            pending.retain(|(n, _)| n != number);
            if pending.is_empty() {
                state.pending.remove(user);
            }
        }
    }

    /// Forgets users whose windows have emptied, so the maps do not grow with every user
    /// who ever logged in.
    fn sweep(&self, state: &mut State, now: i64) {
        let user_window = self.cfg.user_window as i64;
        state
            .per_user
            .retain(|_, q| q.back().is_some_and(|&t| t > now - user_window));
        let pending_window = self.cfg.pending_phones_window as i64;
        state.pending.retain(|_, p| {
            p.retain(|&(_, at)| at > now - pending_window);
            !p.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;

    fn limits(cfg: LimitsConfig) -> (OobLimits, FakeClock) {
        let clock = FakeClock::new(1_000_000);
        (OobLimits::new(cfg, Arc::new(clock.clone())), clock)
    }

    #[test]
    fn a_user_is_cut_at_the_limit_until_the_window_slides() {
        let (l, clock) = limits(LimitsConfig::default());
        for _ in 0..5 {
            l.take(Channel::Sms, "alice").unwrap();
            clock.advance(10);
        }
        let refused = l.take(Channel::Sms, "alice").unwrap_err();
        // The first text was 50 s ago; the window is 900 s.
        assert!(
            matches!(
                refused,
                Refusal::User {
                    retry_after: 850,
                    ..
                }
            ),
            "{refused:?}"
        );
        assert_eq!(
            refused.user_message(),
            "Too many texts were sent for this account; wait 15 minutes or use another method."
        );
        // Others, and other channels, are unaffected.
        l.take(Channel::Sms, "bob").unwrap();
        l.take(Channel::Call, "alice").unwrap();
        clock.advance(850);
        l.take(Channel::Sms, "alice").unwrap();
        assert!(l.take(Channel::Sms, "alice").is_err());
    }

    #[test]
    fn the_host_limit_holds_across_users_and_zero_turns_it_off() {
        let cfg = LimitsConfig {
            sms_per_host: 3,
            ..LimitsConfig::default()
        };
        let (l, _) = limits(cfg);
        for user in ["a", "b", "c"] {
            l.take(Channel::Sms, user).unwrap();
        }
        let refused = l.take(Channel::Sms, "d").unwrap_err();
        assert!(
            refused.user_message().contains("from this host"),
            "{refused:?}"
        );
        let cfg = LimitsConfig {
            pushes_per_host: 0,
            ..LimitsConfig::default()
        };
        let (l, _) = limits(cfg);
        for i in 0..50 {
            l.take(Channel::Push, &format!("u{i}")).unwrap();
        }
    }

    #[test]
    fn pending_phone_additions_are_capped_and_confirming_frees_one() {
        let (l, clock) = limits(LimitsConfig::default());
        for n in ["+1555000001", "+1555000002", "+1555000003"] {
            l.start_phone_addition("alice", n).unwrap();
        }
        // The same number again is not a new addition.
        l.start_phone_addition("alice", "+1555000002").unwrap();
        let refused = l.start_phone_addition("alice", "+1555000004").unwrap_err();
        assert!(matches!(refused, Refusal::PendingPhones { limit: 3, .. }));
        l.start_phone_addition("bob", "+1555000004").unwrap();
        l.phone_confirmed("alice", "+1555000001");
        l.start_phone_addition("alice", "+1555000004").unwrap();
        assert!(l.start_phone_addition("alice", "+1555000005").is_err());
        clock.advance(86_400);
        l.start_phone_addition("alice", "+1555000005").unwrap();
    }

    #[test]
    fn bad_limits_are_named() {
        let bad = LimitsConfig {
            sms_per_user: 0,
            ..LimitsConfig::default()
        };
        let err = bad.validate().unwrap_err();
        assert_eq!(err.key(), "limits.sms_per_user");
        assert_eq!(
            err.to_string(),
            "limits.sms_per_user = 0 is out of range: must be 1 to 1000"
        );
        let bad = LimitsConfig {
            user_window: 5,
            ..LimitsConfig::default()
        };
        let err = bad.validate().unwrap_err();
        assert_eq!(
            err,
            LimitsConfigError::Window {
                key: "limits.user_window",
                value: 5
            }
        );
        assert_eq!(
            err.to_string(),
            "limits.user_window = 5 is out of range: must be 60 to 604800 seconds"
        );
        let bad = LimitsConfig {
            sms_per_host: 1_000_001,
            ..LimitsConfig::default()
        };
        assert_eq!(
            bad.validate().unwrap_err().to_string(),
            "limits.sms_per_host = 1000001 is out of range: must be 0 (no host limit) to 1000000"
        );
        LimitsConfig::default().validate().unwrap();
    }
}
