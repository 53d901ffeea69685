//! The login history behind the portal's "my recent logins": one row per login conversation
//! of a known account (time, node, service, client address, method, outcome), kept for
//! `login_history` days.
//!
//! Off the login's path: the conversation only hands its row to a bounded queue
//! ([`History::record`] never waits), and one writer task gathers rows for [`GATHER`]
//! after the first one and stores them in one transaction, so a stream of logins costs
//! one commit per interval, not one each. On SQLite the history is a database of its own
//! beside the store, on its own connection: a batch never holds the connection logins
//! use, nor adds to their WAL ([`crate::store::sqlite`]). The price: a crash may lose the
//! rows of the last moment (a clean stop writes them: [`History::flush`]), and a full
//! queue (the store far behind) drops rows, counted and logged, rather than slowing
//! logins down. The spent codes, failure counts and locks that protect the account are
//! written on the login's path as before; this table only tells the user what happened.

use crate::clock::Clock;
use crate::store::LoginRecord;
use crate::store::pool::StorePool;
use std::cell::RefCell;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

/// Rows waiting for the writer at most; more are dropped. Room for a batch being written
/// and the next one gathering.
const QUEUE: usize = 2 * BATCH;
/// Rows the writer stores in one transaction at most. Once the table is large, a batch's
/// rows land on about one page of the `(user, at)` index per user, whatever its size, so
/// fewer, larger batches write fewer pages. Measured (`mfa-bench --compare-mfad`, 2026-12-03,
/// the history in its own file): 4,096 against 512, policy decisions 1.17-1.28x and TOTP
/// accepts 1.09-1.19x at 1 to 200 clients. (While the history shared the logins'
/// connection, a batch of 4,096 held it for its inserts, and TOTP accepts lost a tenth.)
const BATCH: usize = 4096;
/// How long the writer gathers rows after the first before it writes them.
const GATHER: Duration = Duration::from_millis(250);
/// How long a clean stop waits for the last rows to be written.
const FLUSH_WAIT: Duration = Duration::from_secs(5);
/// Rows the portal shows.
pub const SHOWN: u32 = 20;

/// The history's queue and its writer.
pub struct History {
    tx: mpsc::Sender<Queued>,
    /// The writer's end, until the first row starts the writer (in the runtime).
    rx: Mutex<Option<mpsc::Receiver<Queued>>>,
    store: Arc<StorePool>,
    clock: Arc<dyn Clock>,
    /// Seconds rows are kept; 0: no history is kept.
    keep_secs: AtomicI64,
    /// Rows dropped since the writer last said so.
    dropped: Arc<AtomicU64>,
    /// This node's name, on every row it writes.
    host: String,
    /// Ends the writer's gathering early: a flush asked for, or half a batch queued.
    /// Rows alone do not wake it (see [`write_rows`]).
    wake: Arc<tokio::sync::Notify>,
    /// Whether the writer runs (`rx` taken).
    started: std::sync::atomic::AtomicBool,
}

impl History {
    pub fn new(store: Arc<StorePool>, clock: Arc<dyn Clock>, keep_days: u32) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "-".to_string());
        History {
            tx,
            rx: Mutex::new(Some(rx)),
            store,
            clock,
            keep_secs: AtomicI64::new(i64::from(keep_days) * 86_400),
            dropped: Arc::new(AtomicU64::new(0)),
            host,
            wake: Arc::new(tokio::sync::Notify::new()),
            started: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// `login_history` after a reload.
    pub fn keep_days(&self, days: u32) {
        self.keep_secs
            .store(i64::from(days) * 86_400, Ordering::Relaxed);
    }

    pub fn enabled(&self) -> bool {
        self.keep_secs.load(Ordering::Relaxed) > 0
    }

    /// Queues the row of one login (never waits).
    pub fn record(
        &self,
        trace: &LoginTrace,
        verdict: Option<&'static str>,
        user: &str,
        service: &str,
        rhost: &str,
    ) {
        if !self.enabled() {
            return;
        }
        self.start();
        let row = LoginRecord {
            id: 0,
            user: user.to_string(),
            at: self.clock.now(),
            host: self.host.clone(),
            service: short(service),
            rhost: short(rhost),
            method: trace.method.unwrap_or("-").to_string(),
            outcome: trace.outcome(verdict).to_string(),
            detail: short(
                trace
                    .reason
                    .as_deref()
                    .unwrap_or("the client left without a verdict"),
            ),
        };
        if self.tx.try_send(Queued::Row(row)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        } else if self.tx.max_capacity() - self.tx.capacity() >= BATCH / 2 {
            // Half a batch waits in the queue besides what the writer has gathered: write
            // now, so that the queue never fills while the writer sleeps.
            self.wake.notify_one();
        }
    }

    /// Writes the rows queued so far now, and waits (at most [`FLUSH_WAIT`]) until they
    /// are stored: a clean stop loses no row.
    pub async fn flush(&self) {
        if !self.started.load(Ordering::Acquire) {
            return; // no row was ever queued
        }
        let (done, written) = oneshot::channel();
        let flushed = tokio::time::timeout(FLUSH_WAIT, async {
            if self.tx.send(Queued::Flush(done)).await.is_ok() {
                self.wake.notify_one();
                let _ = written.await;
            }
        })
        .await;
        if flushed.is_err() {
            warn!(
                target: "mfad::history",
                "the last login history rows were not written within {} s",
                FLUSH_WAIT.as_secs()
            );
        }
    }

    /// Starts the writer on the current runtime, the first time a row comes.
    fn start(&self) {
        if self.started.load(Ordering::Acquire) {
            return;
        }
        let Ok(mut rx) = self.rx.lock() else {
            return;
        };
        if rx.is_none() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if let Some(rx) = rx.take() {
            self.started.store(true, Ordering::Release);
            runtime.spawn(write_rows(
                rx,
                Arc::clone(&self.wake),
                Arc::clone(&self.store),
                Arc::clone(&self.clock),
                self.keep_secs.load(Ordering::Relaxed),
                Arc::clone(&self.dropped),
            ));
        }
    }
}

/// What the writer is handed.
enum Queued {
    Row(LoginRecord),
    /// Write what came before now; say so when it is stored.
    Flush(oneshot::Sender<()>),
}

/// The writer: from the first row, what queues within [`GATHER`] (at most [`BATCH`]
/// rows, or up to a flush) in one transaction, until every sender is gone. While it
/// gathers it sleeps until the time is up or `wake` is raised (a flush, half a batch
/// queued), and then takes what has queued: woken at each row instead, it was polled about
/// as often as logins came, each time looking through every row gathered for a flush
/// (`perf`, 2026-12-03: 3.5 % of mfad's samples under policy decisions at 50 clients).
async fn write_rows(
    mut rx: mpsc::Receiver<Queued>,
    wake: Arc<tokio::sync::Notify>,
    store: Arc<StorePool>,
    clock: Arc<dyn Clock>,
    keep_secs: i64,
    dropped: Arc<AtomicU64>,
) {
    let mut queued = Vec::with_capacity(BATCH);
    let flush = |q: &[Queued]| q.iter().any(|q| matches!(q, Queued::Flush(_)));
    while rx.recv_many(&mut queued, BATCH).await > 0 {
        if queued.len() < BATCH && !flush(&queued) {
            let until = tokio::time::Instant::now() + GATHER;
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                _ = wake.notified() => {}
            }
            // What queued meanwhile, up to a batch or to a flush (a flush's rows, those
            // before it, are then all in).
            while queued.len() < BATCH {
                match rx.try_recv() {
                    Ok(q) => {
                        let was_flush = matches!(q, Queued::Flush(_));
                        queued.push(q);
                        if was_flush {
                            break;
                        }
                    }
                    Err(_) => break, // nothing more yet, or every sender is gone
                }
            }
        }
        let mut rows = Vec::with_capacity(queued.len());
        let mut waiting = Vec::new();
        for q in queued.drain(..) {
            match q {
                Queued::Row(row) => rows.push(row),
                Queued::Flush(done) => waiting.push(done),
            }
        }
        if !rows.is_empty() {
            write_batch(rows, &store, clock.now(), keep_secs, &dropped).await;
        }
        for done in waiting {
            let _ = done.send(());
        }
    }
}

/// Stores `rows` in one transaction (and forgets rows older than `keep_secs`).
async fn write_batch(
    rows: Vec<LoginRecord>,
    store: &StorePool,
    now: i64,
    keep_secs: i64,
    dropped: &AtomicU64,
) {
    let lost = dropped.swap(0, Ordering::Relaxed);
    if lost > 0 {
        warn!(
            target: "mfad::history",
            "{lost} login history rows were dropped: the store is not keeping up"
        );
    }
    let before = now.saturating_sub(keep_secs.max(86_400));
    let n = rows.len();
    let written = match store.get().await {
        Ok(mut s) => tokio::task::spawn_blocking(move || s.record_logins(&rows, before))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string())),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = written {
        warn!(target: "mfad::history", "cannot write {n} login history rows: {e}");
    }
}

/// At most 200 characters of a field, without control characters.
fn short(text: &str) -> String {
    crate::text::clean(text).chars().take(200).collect()
}

/// What the decisions of one login said, gathered while it runs (see [`traced`]).
#[derive(Debug, Default, Clone)]
pub struct LoginTrace {
    /// The account, as the directory spells it, once it was found.
    pub user: Option<String>,
    /// The last method other than `-` a decision named.
    pub method: Option<&'static str>,
    /// The last decision's reason.
    pub reason: Option<String>,
    /// A decision locked the account (failures, or a report).
    pub locked: Option<&'static str>,
}

impl LoginTrace {
    /// The row's outcome: the verdict the client got (`allowed`, `refused`, `unavailable`,
    /// or none: `abandoned`), `locked` or `reported` when a decision locked the account.
    pub fn outcome(&self, verdict: Option<&'static str>) -> &'static str {
        match (verdict, self.locked) {
            (Some("allowed"), _) => "allowed",
            (_, Some(lock)) => lock,
            (Some(verdict), None) => verdict,
            (None, None) => "abandoned",
        }
    }
}

tokio::task_local! {
    static TRACE: RefCell<LoginTrace>;
}

/// Runs `login` with its decisions gathered, and returns them with its result.
/// (A plain function returning the scope's future: an `async fn` wrapping it would hold
/// `login` twice, once as its argument and once inside the scope.)
pub fn traced<T>(login: impl Future<Output = T>) -> impl Future<Output = (T, LoginTrace)> {
    TRACE.scope(RefCell::new(LoginTrace::default()), async move {
        let result = login.await;
        let trace = TRACE.with(|t| std::mem::take(&mut *t.borrow_mut()));
        (result, trace)
    })
}

/// Notes one decision in the running login's trace, if any (called by every decision).
pub fn note(method: &'static str, outcome: &str, reason: &str) {
    let _ = TRACE.try_with(|t| {
        let mut t = t.borrow_mut();
        if method != "-" {
            t.method = Some(method);
        }
        t.reason = Some(reason.to_string());
        if outcome == "locked" {
            t.locked = Some(if reason.contains("reported") {
                "reported"
            } else {
                "locked"
            });
        }
    });
}

/// Names the running login's account (found in the directory).
pub fn account(name: &str) {
    let _ = TRACE.try_with(|t| t.borrow_mut().user = Some(name.to_string()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn history() -> (History, Arc<StorePool>) {
        let store = Arc::new(StorePool::single(Store::open_in_memory().unwrap()).unwrap());
        let clock: Arc<dyn Clock> = Arc::new(crate::clock::FakeClock::new(1_700_000_000));
        (History::new(Arc::clone(&store), clock, 30), store)
    }

    async fn stored(store: &StorePool, user: &str) -> usize {
        let mut s = store.get().await.unwrap();
        s.recent_logins(user, u32::MAX).unwrap().len()
    }

    /// The time (the runtime's, paused: it moves only while every task waits for it) until
    /// `n` rows of `user` are stored.
    async fn until_stored(store: &StorePool, user: &str, n: usize) -> Duration {
        let started = tokio::time::Instant::now();
        while stored(store, user).await < n {
            #[allow(clippy::disallowed_methods)] // the writer gathers on tokio's timer
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        started.elapsed()
    }

    /// Lets the writer take what is queued and start its gathering (time does not move).
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn rows_are_written_a_gathering_after_the_first_at_once_when_a_batch_has_queued() {
        let (h, store) = history();
        let trace = LoginTrace::default();
        let row = |user| h.record(&trace, Some("allowed"), user, "sshd", "192.0.2.1");

        // A lone row waits for the others of its gathering.
        row("alice");
        let took = until_stored(&store, "alice", 1).await;
        assert!(took >= GATHER && took < 2 * GATHER, "{took:?}");

        // A batch's worth is written without waiting for the gathering's end: the first
        // row starts a gathering, the others come while it runs.
        row("bob");
        settle().await;
        for _ in 1..BATCH {
            row("bob");
        }
        let took = until_stored(&store, "bob", BATCH).await;
        assert!(took < GATHER, "{took:?}");

        // A flush is not held back by a gathering either (a writer of its own: this one
        // may have been told to write early meanwhile).
        let (h, store) = history();
        h.record(&trace, Some("allowed"), "carol", "sshd", "192.0.2.1");
        settle().await;
        let started = tokio::time::Instant::now();
        h.flush().await;
        assert!(started.elapsed() < GATHER, "{:?}", started.elapsed());
        assert_eq!(stored(&store, "carol").await, 1);
    }
}
