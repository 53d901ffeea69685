//! Pending push and phone approvals: one unguessable, single-use, short-lived token per login
//! that waits for a phone. The login's task waits on a channel; the approval endpoint answers
//! it. Only a hash of each token is kept, so the map never holds a usable link.
//!
//! In a cluster, the phone's answer may reach another node's endpoint than the one whose
//! login waits: an [`ApprovalRelay`] (the PostgreSQL store's) shares the pending requests.
//! Every answer is then recorded there first, once (the first answer wins), and reaches the
//! waiting node at once (LISTEN/NOTIFY) or within a bounded poll.

use crate::clock::Clock;
use crate::random::{OsRandom, Random};
use data_encoding::BASE64URL_NOPAD;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
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
    /// The cluster's shared store cannot be reached: nothing was recorded.
    #[error("login requests cannot be answered right now; try again in a moment")]
    Unavailable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CreateError {
    #[error("too many login requests are already waiting for approval")]
    Full,
    #[error("the cluster's shared store cannot be reached")]
    Unavailable,
}

/// A relay failed to reach the shared store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RelayError(pub String);

pub type RelayFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Answers found for waiting requests: the request's key and the decision.
pub type Found = Vec<([u8; 32], ApprovalDecision)>;

/// A pending request as every node may answer it: its key, what the page shows, when it
/// expires and the number verified push asks for.
#[derive(Debug, Clone, Copy)]
pub struct Published<'a> {
    pub key: [u8; 32],
    pub request: &'a ApprovalRequest,
    pub expires: i64,
    pub verify_number: Option<u8>,
}

/// An answer to record: the request's key, the decision, the number typed (verified push)
/// and when.
#[derive(Debug, Clone, Copy)]
pub struct AnswerToRecord<'a> {
    pub key: [u8; 32],
    pub decision: ApprovalDecision,
    pub typed_number: Option<&'a str>,
    pub now: i64,
}

/// The request an answer was taken for, and the decision taken.
pub type Taken = (ApprovalRequest, ApprovalDecision);

/// Where the nodes of a cluster share their pending approvals. Keys are the SHA-256 of the
/// tokens: the shared store never holds a usable link either.
pub trait ApprovalRelay: Send + Sync {
    /// Makes a request answerable from every node until it expires.
    fn publish<'a>(&'a self, p: Published<'a>) -> RelayFuture<'a, Result<(), RelayError>>;
    /// A request still waiting (unanswered, not expired at `now`).
    fn peek(
        &self,
        key: [u8; 32],
        now: i64,
    ) -> RelayFuture<'_, Result<Option<PendingView>, RelayError>>;
    /// Records an answer, once: only the first answer to an unanswered, unexpired request is
    /// taken (the verify number checked as [`taken_decision`] does), and the waiting node is
    /// woken. Returns the request and the decision taken.
    fn answer<'a>(&'a self, a: AnswerToRecord<'a>) -> RelayFuture<'a, Result<Taken, DecideError>>;
    /// Withdraws a request nobody answered in time; when an answer was recorded first,
    /// returns it instead.
    fn withdraw(
        &self,
        key: [u8; 32],
    ) -> RelayFuture<'_, Result<Option<ApprovalDecision>, RelayError>>;
    /// The answers recorded for any of `keys` (the bounded poll behind the wake-ups).
    fn decided<'a>(&'a self, keys: &'a [[u8; 32]]) -> RelayFuture<'a, Result<Found, RelayError>>;
}

/// The decision an answer stands for: with verified push, an approval counts only when
/// `typed_number` is the number the login prompt showed; otherwise it becomes a denial, so
/// the number cannot be guessed twice.
pub fn taken_decision(
    decision: ApprovalDecision,
    verify_number: Option<u8>,
    typed_number: Option<&str>,
) -> ApprovalDecision {
    match (decision, verify_number) {
        (ApprovalDecision::Approved, Some(expected)) => {
            let typed = typed_number.and_then(|t| t.trim().parse::<u8>().ok());
            if typed == Some(expected) {
                ApprovalDecision::Approved
            } else {
                ApprovalDecision::Denied
            }
        }
        (d, _) => d,
    }
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
    /// Where tokens and verification numbers come from.
    random: Arc<dyn Random>,
    verified_push: bool,
    pending: Mutex<HashMap<[u8; 32], Entry>>,
    /// The cluster's shared pending approvals, when the store is shared.
    relay: OnceLock<Arc<dyn ApprovalRelay>>,
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
        ApprovalStore::with_random(clock, Arc::new(OsRandom), verified_push)
    }

    /// As [`ApprovalStore::new`], with tokens and numbers from `random`.
    pub fn with_random(
        clock: Arc<dyn Clock>,
        random: Arc<dyn Random>,
        verified_push: bool,
    ) -> Self {
        ApprovalStore {
            clock,
            random,
            verified_push,
            pending: Mutex::new(HashMap::new()),
            relay: OnceLock::new(),
        }
    }

    /// Shares the pending approvals through `relay` (a cluster's PostgreSQL store). Set
    /// once, before the first login.
    pub fn set_relay(&self, relay: Arc<dyn ApprovalRelay>) {
        let _ = self.relay.set(relay);
    }

    fn relay(&self) -> Option<&Arc<dyn ApprovalRelay>> {
        self.relay.get()
    }

    fn map(&self) -> MutexGuard<'_, HashMap<[u8; 32], Entry>> {
        // Every critical section is a single insert, remove or scan, so a panic elsewhere
        // cannot leave the map half-changed: a poisoned lock is safe to keep using.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a login waiting for approval; its token is valid for `ttl`. In a cluster,
    /// the request is published before this returns, so any node can answer it.
    pub async fn create(
        &self,
        request: ApprovalRequest,
        ttl: Duration,
    ) -> Result<Pending, CreateError> {
        let published = self.relay().map(|_| request.clone());
        let pending = self.create_local(request, ttl)?;
        if let (Some(relay), Some(request)) = (self.relay(), published)
            && let Err(e) = relay
                .publish(Published {
                    key: pending.key,
                    request: &request,
                    expires: pending.expires,
                    verify_number: pending.verify_number,
                })
                .await
        {
            tracing::debug!("cannot publish an approval request: {e}");
            self.map().remove(&pending.key);
            return Err(CreateError::Unavailable);
        }
        Ok(pending)
    }

    fn create_local(
        &self,
        request: ApprovalRequest,
        ttl: Duration,
    ) -> Result<Pending, CreateError> {
        let mut raw = [0u8; TOKEN_BYTES];
        self.random.fill(&mut raw);
        let token = BASE64URL_NOPAD.encode(&raw);
        let key = key_of(&token);
        let verify_number = (self.verified_push && request.method == ApprovalMethod::Push)
            .then(|| self.random.in_range(10..=99) as u8);
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

    /// The request behind a live token, for the page; decides nothing. In a cluster, a
    /// request of another node is looked up in the shared store.
    pub async fn peek(&self, token: &str) -> Option<PendingView> {
        let now = self.clock.now();
        let key = key_of(token);
        let local = self.map().get(&key).map(|entry| {
            (entry.expires > now).then(|| PendingView {
                request: entry.request.clone(),
                expires: entry.expires,
                needs_number: entry.verify_number.is_some(),
            })
        });
        match (local, self.relay()) {
            (Some(view), _) => view,
            (None, Some(relay)) => relay.peek(key, now).await.unwrap_or_else(|e| {
                tracing::debug!("cannot look up an approval request: {e}");
                None
            }),
            (None, None) => None,
        }
    }

    /// Answers a request. The token is spent whatever the outcome.
    pub async fn decide(
        &self,
        token: &str,
        decision: ApprovalDecision,
    ) -> Result<ApprovalRequest, DecideError> {
        let answered = self.answer(token, decision, None).await?;
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
    /// In a cluster, the answer is recorded in the shared store first (the first answer
    /// from any node wins), then handed to the login if it waits on this node; another
    /// node's login learns of it from the store.
    pub async fn answer(
        &self,
        token: &str,
        decision: ApprovalDecision,
        typed_number: Option<&str>,
    ) -> Result<Answered, DecideError> {
        let key = key_of(token);
        if let Some(relay) = self.relay() {
            let now = self.clock.now();
            let (request, taken) = relay
                .answer(AnswerToRecord {
                    key,
                    decision,
                    typed_number,
                    now,
                })
                .await?;
            let waiting = self.deliver(key, taken).unwrap_or(true);
            return Ok(Answered {
                request,
                decision: taken,
                waiting,
            });
        }
        let now = self.clock.now();
        let mut map = self.map();
        let entry = map.remove(&key).ok_or(DecideError::Unknown)?;
        if entry.expires <= now {
            return Err(DecideError::Expired);
        }
        let decision = taken_decision(decision, entry.verify_number, typed_number);
        // Sent under the lock, so a waiter that times out and finds the entry gone knows the
        // decision is already in its channel (see `wait`).
        let waiting = entry.tx.send(decision).is_ok();
        Ok(Answered {
            request: entry.request,
            decision,
            waiting,
        })
    }

    /// Hands an answer recorded in the shared store to the login waiting on this node.
    /// Returns whether that login still waited, or `None` when it does not wait here.
    pub fn deliver(&self, key: [u8; 32], decision: ApprovalDecision) -> Option<bool> {
        let entry = self.map().remove(&key)?;
        Some(entry.tx.send(decision).is_ok())
    }

    /// The keys of the requests waiting on this node.
    pub fn pending_keys(&self) -> Vec<[u8; 32]> {
        self.map().keys().copied().collect()
    }

    /// Waits for the answer, at most `bound`; an unanswered request is withdrawn so a late
    /// tap cannot approve a login that was already refused.
    pub async fn wait(&self, pending: Pending, bound: Duration) -> ApprovalDecision {
        let Pending { key, mut rx, .. } = pending;
        // The bound is the clock's (a test moves a fake clock on instead of waiting).
        let answered = tokio::select! {
            answer = &mut rx => Some(answer),
            _ = self.clock.sleep(bound) => None,
        };
        match answered {
            Some(Ok(decision)) => decision,
            // The sender went away: the entry expired and was purged.
            Some(Err(_)) => self.withdraw_shared(key).await,
            None => {
                let withdrawn = self.map().remove(&key).is_some();
                if withdrawn {
                    self.withdraw_shared(key).await
                } else {
                    // Answered in the instant the bound ran out; the answer is in the channel.
                    rx.try_recv().unwrap_or(ApprovalDecision::TimedOut)
                }
            }
        }
    }

    /// In a cluster: withdraws the request from the shared store, unless an answer got
    /// there first (it is taken then: it came before the bound).
    async fn withdraw_shared(&self, key: [u8; 32]) -> ApprovalDecision {
        let Some(relay) = self.relay() else {
            return ApprovalDecision::TimedOut;
        };
        match relay.withdraw(key).await {
            Ok(Some(decision)) => decision,
            Ok(None) => ApprovalDecision::TimedOut,
            Err(e) => {
                tracing::debug!("cannot withdraw an approval request: {e}");
                ApprovalDecision::TimedOut
            }
        }
    }

    /// Withdraws a request whose login went away without waiting.
    pub async fn cancel(&self, pending: &Pending) {
        self.map().remove(&pending.key);
        if let Some(relay) = self.relay()
            && let Err(e) = relay.withdraw(pending.key).await
        {
            tracing::debug!("cannot withdraw an approval request: {e}");
        }
    }

    /// In a cluster: every `period`, asks the shared store for answers to this node's
    /// waiting requests, in case a wake-up was lost (a dropped listener connection).
    pub fn spawn_relay_poller(self: &Arc<Self>, period: Duration) -> tokio::task::JoinHandle<()> {
        let store: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(store) = store.upgrade() else {
                    return;
                };
                let Some(relay) = store.relay().cloned() else {
                    return;
                };
                let keys = store.pending_keys();
                if keys.is_empty() {
                    continue;
                }
                match relay.decided(&keys).await {
                    Ok(found) => {
                        for (key, decision) in found {
                            store.deliver(key, decision);
                        }
                    }
                    Err(e) => tracing::debug!("cannot poll the approval requests: {e}"),
                }
            }
        })
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
