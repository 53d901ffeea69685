//! The pending-approval store: single-use unguessable tokens, expiry on the injected clock,
//! bounded waits, verified push numbers, and a thousand logins waiting at once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mfad::FakeClock;
use mfad::oob::approvals::MAX_PENDING;
use mfad::oob::{
    ApprovalDecision, ApprovalMethod, ApprovalRequest, ApprovalStore, CreateError, DecideError,
};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

const T0: i64 = 1_767_225_600; // 2026-01-01 00:00 UTC
const TTL: Duration = Duration::from_secs(60);

fn request(user: &str, method: ApprovalMethod) -> ApprovalRequest {
    ApprovalRequest {
        user: user.to_string(),
        host: "login1.example.org".to_string(),
        rhost: "192.0.2.10".to_string(),
        method,
        created: T0,
        adding_device: false,
    }
}

fn store(verified: bool) -> (Arc<ApprovalStore>, FakeClock) {
    let clock = FakeClock::new(T0);
    (
        Arc::new(ApprovalStore::new(Arc::new(clock.clone()), verified)),
        clock,
    )
}

#[tokio::test]
async fn an_approval_reaches_the_waiter_and_the_token_is_single_use() {
    let (store, _) = store(false);
    let pending = store
        .create(request("abc123", ApprovalMethod::Push), TTL)
        .await
        .unwrap();
    let token = pending.token.clone();
    let decided = store
        .decide(&token, ApprovalDecision::Approved)
        .await
        .unwrap();
    assert_eq!(decided.user, "abc123");
    assert_eq!(
        store.wait(pending, Duration::from_secs(5)).await,
        ApprovalDecision::Approved
    );
    assert_eq!(
        store.decide(&token, ApprovalDecision::Approved).await,
        Err(DecideError::Unknown),
        "a spent token must not decide twice"
    );
    assert!(store.is_empty());
}

#[tokio::test]
async fn deny_and_report_reach_the_waiter() {
    let (store, _) = store(false);
    for decision in [ApprovalDecision::Denied, ApprovalDecision::Reported] {
        let pending = store
            .create(request("u", ApprovalMethod::Push), TTL)
            .await
            .unwrap();
        store.decide(&pending.token, decision).await.unwrap();
        assert_eq!(store.wait(pending, Duration::from_secs(5)).await, decision);
    }
}

#[tokio::test]
async fn a_wrong_token_decides_nothing() {
    let (store, _) = store(false);
    let pending = store
        .create(request("u", ApprovalMethod::Push), TTL)
        .await
        .unwrap();
    let mut wrong = pending.token.clone();
    // Same shape, one character off.
    let last = wrong.pop().unwrap();
    wrong.push(if last == 'A' { 'B' } else { 'A' });
    for token in [wrong.as_str(), "", "nope", &pending.token[..20]] {
        assert_eq!(
            store.decide(token, ApprovalDecision::Approved).await,
            Err(DecideError::Unknown),
            "{token:?}"
        );
        assert!(store.peek(token).await.is_none());
    }
    assert_eq!(store.len(), 1);
    assert!(store.peek(&pending.token).await.is_some());
}

#[tokio::test]
async fn a_token_expires_on_the_injected_clock() {
    let (store, clock) = store(false);
    let pending = store
        .create(request("u", ApprovalMethod::Push), TTL)
        .await
        .unwrap();
    assert_eq!(pending.expires, T0 + 60);
    clock.advance(59);
    assert!(
        store.peek(&pending.token).await.is_some(),
        "still valid at 59 seconds"
    );
    clock.advance(1);
    assert!(
        store.peek(&pending.token).await.is_none(),
        "expired at 60 seconds"
    );
    assert_eq!(
        store
            .decide(&pending.token, ApprovalDecision::Approved)
            .await,
        Err(DecideError::Expired)
    );
    // The expired entry is gone, so the waiter learns at once instead of waiting out its bound.
    let started = Instant::now();
    assert_eq!(
        store.wait(pending, Duration::from_secs(30)).await,
        ApprovalDecision::TimedOut
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn purge_wakes_the_waiter_of_an_expired_request() {
    let (store, clock) = store(false);
    let pending = store
        .create(request("u", ApprovalMethod::Call), TTL)
        .await
        .unwrap();
    let waiter = {
        let store = Arc::clone(&store);
        tokio::spawn(async move { store.wait(pending, Duration::from_secs(30)).await })
    };
    clock.advance(61);
    assert_eq!(store.purge(), 1);
    let decision = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the waiter should wake when its request is purged")
        .unwrap();
    assert_eq!(decision, ApprovalDecision::TimedOut);
}

#[tokio::test]
async fn an_unanswered_request_times_out_and_is_withdrawn() {
    let (store, _) = store(false);
    let pending = store
        .create(request("u", ApprovalMethod::Push), TTL)
        .await
        .unwrap();
    let token = pending.token.clone();
    let started = Instant::now();
    assert_eq!(
        store.wait(pending, Duration::from_millis(200)).await,
        ApprovalDecision::TimedOut
    );
    assert!(started.elapsed() >= Duration::from_millis(200));
    // A late tap must not approve a login that was already refused.
    assert_eq!(
        store.decide(&token, ApprovalDecision::Approved).await,
        Err(DecideError::Unknown)
    );
}

#[tokio::test]
async fn an_answer_after_the_login_went_away_is_abandoned() {
    let (store, _) = store(false);
    let pending = store
        .create(request("u", ApprovalMethod::Push), TTL)
        .await
        .unwrap();
    let token = pending.token.clone();
    drop(pending);
    assert_eq!(
        store.decide(&token, ApprovalDecision::Approved).await,
        Err(DecideError::Abandoned)
    );
    // A report still counts (the endpoint calls the hook on it).
    let pending = store
        .create(request("v", ApprovalMethod::Push), TTL)
        .await
        .unwrap();
    let token = pending.token.clone();
    drop(pending);
    let answered = store
        .answer(&token, ApprovalDecision::Reported, None)
        .await
        .unwrap();
    assert_eq!(answered.decision, ApprovalDecision::Reported);
    assert!(!answered.waiting);
    assert_eq!(answered.request.user, "v");
}

#[tokio::test]
async fn verified_push_needs_the_number_and_a_wrong_one_denies() {
    let (store, _) = store(true);
    let call = store
        .create(request("u", ApprovalMethod::Call), TTL)
        .await
        .unwrap();
    assert_eq!(
        call.verify_number, None,
        "calls use the keypad, not a number"
    );

    let pending = store
        .create(request("u", ApprovalMethod::Push), TTL)
        .await
        .unwrap();
    let n = pending.verify_number.expect("a push gets a number");
    assert!((10..=99).contains(&n));
    assert!(store.peek(&pending.token).await.unwrap().needs_number);
    let wrong = if n == 99 { 98 } else { n + 1 };
    let answered = store
        .answer(
            &pending.token,
            ApprovalDecision::Approved,
            Some(&wrong.to_string()),
        )
        .await
        .unwrap();
    assert_eq!(answered.decision, ApprovalDecision::Denied);
    assert_eq!(
        store.wait(pending, Duration::from_secs(5)).await,
        ApprovalDecision::Denied
    );

    let pending = store
        .create(request("u", ApprovalMethod::Push), TTL)
        .await
        .unwrap();
    let n = pending.verify_number.unwrap();
    let answered = store
        .answer(
            &pending.token,
            ApprovalDecision::Approved,
            Some(&format!(" {n} ")),
        )
        .await
        .unwrap();
    assert_eq!(answered.decision, ApprovalDecision::Approved);

    let pending = store
        .create(request("u", ApprovalMethod::Push), TTL)
        .await
        .unwrap();
    let answered = store
        .answer(&pending.token, ApprovalDecision::Approved, None)
        .await
        .unwrap();
    assert_eq!(
        answered.decision,
        ApprovalDecision::Denied,
        "no number, no approval"
    );
}

#[tokio::test]
async fn without_verified_push_there_is_no_number() {
    let (store, _) = store(false);
    let pending = store
        .create(request("u", ApprovalMethod::Push), TTL)
        .await
        .unwrap();
    assert_eq!(pending.verify_number, None);
    assert!(!store.peek(&pending.token).await.unwrap().needs_number);
    assert!(!format!("{pending:?}").contains(&pending.token));
}

#[tokio::test]
async fn a_thousand_logins_wait_at_once_each_with_its_own_token() {
    let (store, clock) = store(false);
    let started = Instant::now();
    let mut pendings = Vec::new();
    for i in 0..1000 {
        pendings.push(
            store
                .create(request(&format!("user{i}"), ApprovalMethod::Push), TTL)
                .await
                .unwrap(),
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "creating 1000 took {:?}",
        started.elapsed()
    );
    assert_eq!(store.len(), 1000);
    let tokens: HashSet<&str> = pendings.iter().map(|p| p.token.as_str()).collect();
    assert_eq!(tokens.len(), 1000, "tokens must be distinct");
    for t in &tokens {
        // 32 random bytes, unpadded URL-safe base64.
        assert_eq!(t.len(), 43, "{t}");
        assert!(
            t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{t}"
        );
    }
    // Each is answered by its own token and reaches only its own waiter.
    let mut waiters = Vec::new();
    for (i, p) in pendings.into_iter().enumerate() {
        let decision = if i % 2 == 0 {
            ApprovalDecision::Approved
        } else {
            ApprovalDecision::Denied
        };
        let req = store.decide(&p.token, decision).await.unwrap();
        assert_eq!(req.user, format!("user{i}"));
        let store = Arc::clone(&store);
        waiters.push(tokio::spawn(async move {
            (i, store.wait(p, Duration::from_secs(5)).await)
        }));
    }
    for w in waiters {
        let (i, d) = w.await.unwrap();
        let expected = if i % 2 == 0 {
            ApprovalDecision::Approved
        } else {
            ApprovalDecision::Denied
        };
        assert_eq!(d, expected, "waiter {i}");
    }
    assert!(store.is_empty());

    // Expired ones are purged in one sweep.
    let mut still_waiting = Vec::with_capacity(1000);
    for i in 0..1000 {
        still_waiting.push(
            store
                .create(request(&format!("user{i}"), ApprovalMethod::Push), TTL)
                .await
                .unwrap(),
        );
    }
    clock.advance(59);
    assert_eq!(store.purge(), 0, "nothing has expired yet");
    clock.advance(1);
    assert_eq!(store.purge(), 1000);
    drop(still_waiting);
    assert!(store.is_empty());
}

#[tokio::test]
async fn the_store_refuses_past_its_cap_until_entries_expire() {
    let (store, clock) = store(false);
    let mut keep = Vec::with_capacity(MAX_PENDING);
    for _ in 0..MAX_PENDING {
        keep.push(
            store
                .create(request("u", ApprovalMethod::Push), TTL)
                .await
                .unwrap(),
        );
    }
    assert_eq!(
        store
            .create(request("u", ApprovalMethod::Push), TTL)
            .await
            .unwrap_err(),
        CreateError::Full
    );
    clock.advance(60);
    store
        .create(request("u", ApprovalMethod::Push), TTL)
        .await
        .expect("expired entries make room");
    assert_eq!(store.len(), 1);
}

#[tokio::test]
async fn the_purger_task_sweeps_and_stops_with_the_store() {
    let (store, clock) = store(false);
    let _p = store
        .create(request("u", ApprovalMethod::Push), TTL)
        .await
        .unwrap();
    let purger = store.spawn_purger(Duration::from_millis(20));
    clock.advance(60);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !store.is_empty() {
        assert!(Instant::now() < deadline, "the purger never swept");
        #[allow(clippy::disallowed_methods)] // the test's own pacing, in real time
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(store);
    tokio::time::timeout(Duration::from_secs(5), purger)
        .await
        .expect("the purger should stop once the store is gone")
        .unwrap();
}
