//! Pending push and phone approvals: one unguessable, single-use, short-lived token per login
//! that waits for a phone. The login's task waits on a channel; the approval endpoint answers
//! it. Only a hash of each token is kept, so the map never holds a usable link.

use crate::clock::Clock;
use data_encoding::BASE64URL_NOPAD;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;
use tokio::sync::oneshot;

/// Random bytes in a token: 256 bits, far beyond guessing even with many pending at once.
const TOKEN_BYTES: usize = 32;

/// Pending approvals held at once. Each costs a few hundred bytes; the cap only stops a flood
/// of login attempts from growing memory without bound.
pub const MAX_PENDING: usize = 10_000;

/// How the user is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalMethod {
    /// A push notification linking to the approval page.
    Push,
    /// A phone call answered with the keypad.
    Call,
}

impl ApprovalMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalMethod::Push => "push",
            ApprovalMethod::Call => "phone",
        }
    }
}

/// The login waiting for approval, as shown on the page and given to the report hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRequest {
    pub user: String,
    /// The host being logged in to.
    pub host: String,
    /// The client's address, as sshd reported it.
    pub rhost: String,
    pub method: ApprovalMethod,
    /// Unix time the login asked.
    pub created: i64,
    /// Not a login: the user is adding this phone as a device (the page and push say so).
    pub adding_device: bool,
}

/// What became of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalDecision {
    Approved,
    Denied,
    /// Denied, and the user says they did not start this login.
    Reported,
    /// Nobody answered within the bound (or the link expired).
    TimedOut,
}

impl ApprovalDecision {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalDecision::Approved => "approved",
            ApprovalDecision::Denied => "denied",
            ApprovalDecision::Reported => "reported",
            ApprovalDecision::TimedOut => "timed-out",
        }
    }
}

/// Why an answer was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecideError {
    /// Never issued, or already answered: tokens are single use, and an answered one is gone.
    #[error("this login request is unknown or was already answered")]
    Unknown,
    #[error("this login request has expired")]
    Expired,
    /// The login gave up waiting (its connection closed) before the answer came.
    #[error("the login that made this request is no longer waiting")]
    Abandoned,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CreateError {
    #[error("too many login requests are already waiting for approval")]
    Full,
}

/// A request the caller waits on. Hand `token` to the phone (inside a link or a callback
/// URL) and `verify_number` to the login prompt, then call [`ApprovalStore::wait`].
pub struct Pending {
    /// URL-safe, 43 characters, single use.
    pub token: String,
    /// With verified push: the two digits (10 to 99) the user must type on the page.
    pub verify_number: Option<u8>,
    /// Unix time after which the token is refused.
    pub expires: i64,
    key: [u8; 32],
    rx: oneshot::Receiver<ApprovalDecision>,
}

impl fmt::Debug for Pending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The token is a bearer credential for the login; keep it out of any log line.
        f.debug_struct("Pending")
            .field("token", &"(hidden)")
            .field("verify_number", &self.verify_number)
            .field("expires", &self.expires)
            .finish()
    }
}

/// What the approval page may show about a pending request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingView {
    pub request: ApprovalRequest,
    pub expires: i64,
    /// Verified push is on for this request: the page must ask for the number.
    pub needs_number: bool,
}

/// An answer that was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answered {
    pub request: ApprovalRequest,
    /// The decision actually taken (a wrong verify number turns an approval into a denial).
    pub decision: ApprovalDecision,
    /// The login was still waiting for it. A report counts even when it was not.
    pub waiting: bool,
}

struct Entry {
    request: ApprovalRequest,
    expires: i64,
    verify_number: Option<u8>,
    tx: oneshot::Sender<ApprovalDecision>,
}

pub struct ApprovalStore {
    clock: Arc<dyn Clock>,
    verified_push: bool,
    pending: Mutex<HashMap<[u8; 32], Entry>>,
}

/// Looking a token up by its SHA-256 makes the lookup constant-time in the token: the map
/// compares digests, and an attacker who cannot invert SHA-256 learns nothing about a real
/// token from how long a wrong one took.
fn key_of(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl ApprovalStore {
    /// `verified_push`: push requests (not calls, which use the keypad) get a number to type.
    pub fn new(clock: Arc<dyn Clock>, verified_push: bool) -> Self {
        ApprovalStore {
            clock,
            verified_push,
            pending: Mutex::new(HashMap::new()),
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<[u8; 32], Entry>> {
        // Every critical section is a single insert, remove or scan, so a panic elsewhere
        // cannot leave the map half-changed: a poisoned lock is safe to keep using.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a login waiting for approval; its token is valid for `ttl`.
    pub fn create(&self, request: ApprovalRequest, ttl: Duration) -> Result<Pending, CreateError> {
        let mut raw = [0u8; TOKEN_BYTES];
        crate::random::fill(&mut raw);
        let token = BASE64URL_NOPAD.encode(&raw);
        let key = key_of(&token);
        let verify_number = (self.verified_push && request.method == ApprovalMethod::Push)
            .then(|| crate::random::in_range(10..=99) as u8);
        let expires = self
            .clock
            .now()
            .saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
        let (tx, rx) = oneshot::channel();
        let mut map = self.map();
        if map.len() >= MAX_PENDING {
            let now = self.clock.now();
            map.retain(|_, e| e.expires > now && !e.tx.is_closed());
            if map.len() >= MAX_PENDING {
                return Err(CreateError::Full);
            }
        }
        map.insert(
            key,
            Entry {
                request,
                expires,
                verify_number,
                tx,
            },
        );
        Ok(Pending {
            token,
            verify_number,
            expires,
            key,
            rx,
        })
    }

    /// The request behind a live token, for the page; decides nothing.
    pub fn peek(&self, token: &str) -> Option<PendingView> {
        let now = self.clock.now();
        let map = self.map();
        let entry = map.get(&key_of(token))?;
        (entry.expires > now).then(|| PendingView {
            request: entry.request.clone(),
            expires: entry.expires,
            needs_number: entry.verify_number.is_some(),
        })
    }

    /// Answers a request. The token is spent whatever the outcome.
    pub fn decide(
        &self,
        token: &str,
        decision: ApprovalDecision,
    ) -> Result<ApprovalRequest, DecideError> {
        let answered = self.answer(token, decision, None)?;
        if answered.waiting {
            Ok(answered.request)
        } else {
            Err(DecideError::Abandoned)
        }
    }

    /// Answers a request from the approval page or the phone. With verified push, an
    /// approval counts only when `typed_number` is the number the login prompt showed;
    /// otherwise it becomes a denial, so the number cannot be guessed twice. The token is
    /// spent whatever the outcome.
    pub fn answer(
        &self,
        token: &str,
        decision: ApprovalDecision,
        typed_number: Option<&str>,
    ) -> Result<Answered, DecideError> {
        let now = self.clock.now();
        let mut map = self.map();
        let entry = map.remove(&key_of(token)).ok_or(DecideError::Unknown)?;
        if entry.expires <= now {
            return Err(DecideError::Expired);
        }
        let decision = match (decision, entry.verify_number) {
            (ApprovalDecision::Approved, Some(expected)) => {
                let typed = typed_number.and_then(|t| t.trim().parse::<u8>().ok());
                if typed == Some(expected) {
                    ApprovalDecision::Approved
                } else {
                    ApprovalDecision::Denied
                }
            }
            (d, _) => d,
        };
        // Sent under the lock, so a waiter that times out and finds the entry gone knows the
        // decision is already in its channel (see `wait`).
        let waiting = entry.tx.send(decision).is_ok();
        Ok(Answered {
            request: entry.request,
            decision,
            waiting,
        })
    }

    /// Waits for the answer, at most `bound`; an unanswered request is withdrawn so a late
    /// tap cannot approve a login that was already refused.
    pub async fn wait(&self, pending: Pending, bound: Duration) -> ApprovalDecision {
        let Pending { key, mut rx, .. } = pending;
        match tokio::time::timeout(bound, &mut rx).await {
            Ok(Ok(decision)) => decision,
            // The sender went away: the entry expired and was purged.
            Ok(Err(_)) => ApprovalDecision::TimedOut,
            Err(_) => {
                let withdrawn = self.map().remove(&key).is_some();
                if withdrawn {
                    ApprovalDecision::TimedOut
                } else {
                    // Answered in the instant the bound ran out; the answer is in the channel.
                    rx.try_recv().unwrap_or(ApprovalDecision::TimedOut)
                }
            }
        }
    }

    /// Withdraws a request whose login went away without waiting.
    pub fn cancel(&self, pending: &Pending) {
        self.map().remove(&pending.key);
    }

    /// Requests waiting now (expired ones count until purged).
    pub fn len(&self) -> usize {
        self.map().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops expired requests and those whose login stopped waiting; returns how many.
    /// Dropping an entry closes its channel, so a waiter still bound sees `TimedOut`.
    pub fn purge(&self) -> usize {
        let now = self.clock.now();
        let mut map = self.map();
        let before = map.len();
        map.retain(|_, e| e.expires > now && !e.tx.is_closed());
        before - map.len()
    }

    /// Purges every `period` until the store is dropped.
    pub fn spawn_purger(self: &Arc<Self>, period: Duration) -> tokio::task::JoinHandle<()> {
        let store: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match store.upgrade() {
                    Some(store) => {
                        store.purge();
                    }
                    None => return,
                }
            }
        })
    }
}
