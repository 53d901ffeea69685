//! Push and call approvals shared by two nodes through a real PostgreSQL: a login waiting on
//! node A is answered through node B (woken by NOTIFY, or found by the poll when the
//! wake-up is lost), once only, with the verify number checked wherever it is typed, and a
//! login that stopped waiting cannot be approved afterwards from any node.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mfa_test_support::postgres::TestPostgres;
use mfad::FakeClock;
use mfad::oob::{ApprovalDecision, ApprovalMethod, ApprovalRequest, ApprovalStore, DecideError};
use mfad::sealing::StoreKey;
use mfad::store::pg_approvals::PgRelay;
use mfad::store::postgres::{self, PgOptions};
use std::sync::Arc;
use std::time::Duration;

const T0: i64 = 1_767_225_600;
const TTL: Duration = Duration::from_secs(60);

fn request(user: &str) -> ApprovalRequest {
    ApprovalRequest {
        user: user.to_string(),
        host: "login01".to_string(),
        rhost: "192.0.2.10".to_string(),
        method: ApprovalMethod::Push,
        created: T0,
        adding_device: false,
    }
}

struct Cluster {
    pg: TestPostgres,
    rt: tokio::runtime::Runtime,
}

impl Cluster {
    fn start() -> Cluster {
        let pg = TestPostgres::start();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let c = Cluster { pg, rt };
        let key = StoreKey::generate().unwrap();
        c.rt.block_on(postgres::prepare(&c.opts(), &key.check_value()))
            .unwrap();
        c
    }

    fn opts(&self) -> PgOptions {
        PgOptions {
            url: self.pg.url(),
            password_file: Some(self.pg.password_file()),
            ca_file: None,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(2),
        }
    }

    /// A node's pending approvals, shared with the chosen wake-ups.
    fn node(&self, verified: bool, listen: bool, poll: Option<Duration>) -> Arc<ApprovalStore> {
        let store = Arc::new(ApprovalStore::new(Arc::new(FakeClock::new(T0)), verified));
        let _guard = self.rt.enter();
        PgRelay::share_with(self.opts(), &store, listen, poll);
        store
    }
}

/// The listener alone (no poll) wakes node A with node B's answer.
#[test]
fn an_answer_through_node_b_reaches_the_login_waiting_on_node_a_by_notify() {
    let c = Cluster::start();
    let a = c.node(false, true, None);
    let b = c.node(false, false, None);
    c.rt.block_on(async {
        // Give A's listener its connection before the answer is sent.
        #[allow(clippy::disallowed_methods)] // the test's own pacing, in real time
        tokio::time::sleep(Duration::from_millis(500)).await;
        let pending = a.create(request("ann"), TTL).await.unwrap();
        let token = pending.token.clone();
        let view = b.peek(&token).await.expect("node B sees node A's request");
        assert_eq!(view.request.user, "ann");
        assert_eq!(view.request.host, "login01");
        let waiter = {
            let a = Arc::clone(&a);
            tokio::spawn(async move { a.wait(pending, Duration::from_secs(30)).await })
        };
        let answered = b
            .answer(&token, ApprovalDecision::Approved, None)
            .await
            .unwrap();
        assert_eq!(answered.decision, ApprovalDecision::Approved);
        assert_eq!(answered.request.user, "ann");
        // Well before the 30 s bound (at which withdrawing would find the answer anyway).
        let woken = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("the NOTIFY woke the waiting login");
        assert_eq!(woken.unwrap(), ApprovalDecision::Approved);
        // Single use, on every node.
        assert_eq!(
            b.answer(&token, ApprovalDecision::Approved, None)
                .await
                .unwrap_err(),
            DecideError::Unknown
        );
        assert_eq!(
            a.answer(&token, ApprovalDecision::Approved, None)
                .await
                .unwrap_err(),
            DecideError::Unknown
        );
        assert!(b.peek(&token).await.is_none());
    });
}

/// With no listener, the poll finds the answer: a lost wake-up delays, never loses, it.
#[test]
fn with_the_wake_up_lost_the_poll_still_delivers_the_answer() {
    let c = Cluster::start();
    let a = c.node(false, false, Some(Duration::from_millis(300)));
    let b = c.node(false, false, None);
    c.rt.block_on(async {
        let pending = a.create(request("ann"), TTL).await.unwrap();
        let token = pending.token.clone();
        let waiter = {
            let a = Arc::clone(&a);
            tokio::spawn(async move { a.wait(pending, Duration::from_secs(30)).await })
        };
        b.answer(&token, ApprovalDecision::Denied, None)
            .await
            .unwrap();
        let found = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("the poll found the answer before the 30 s bound");
        assert_eq!(found.unwrap(), ApprovalDecision::Denied);
    });
}

/// Without either wake-up, the answer still counts when the wait ends: withdrawing finds it
/// recorded before the bound.
#[test]
fn an_answer_recorded_before_the_bound_is_taken_when_the_wait_ends() {
    let c = Cluster::start();
    let a = c.node(false, false, None);
    let b = c.node(false, false, None);
    c.rt.block_on(async {
        let pending = a.create(request("ann"), TTL).await.unwrap();
        let token = pending.token.clone();
        let waiter = {
            let a = Arc::clone(&a);
            tokio::spawn(async move { a.wait(pending, Duration::from_secs(2)).await })
        };
        b.answer(&token, ApprovalDecision::Approved, None)
            .await
            .unwrap();
        // The answer was recorded before the bound: withdrawing finds it and takes it.
        assert_eq!(waiter.await.unwrap(), ApprovalDecision::Approved);
    });
}

#[test]
fn a_wrong_verify_number_typed_on_node_b_denies_the_login_on_node_a() {
    let c = Cluster::start();
    let a = c.node(true, true, Some(Duration::from_secs(2)));
    let b = c.node(true, false, None);
    c.rt.block_on(async {
        let pending = a.create(request("ann"), TTL).await.unwrap();
        let number = pending.verify_number.unwrap();
        let wrong = if number == 99 { 10 } else { number + 1 };
        let token = pending.token.clone();
        assert!(b.peek(&token).await.unwrap().needs_number);
        let waiter = {
            let a = Arc::clone(&a);
            tokio::spawn(async move { a.wait(pending, Duration::from_secs(30)).await })
        };
        let answered = b
            .answer(&token, ApprovalDecision::Approved, Some(&wrong.to_string()))
            .await
            .unwrap();
        assert_eq!(answered.decision, ApprovalDecision::Denied);
        assert_eq!(waiter.await.unwrap(), ApprovalDecision::Denied);

        // The right number, on another request, approves.
        let pending = a.create(request("ann"), TTL).await.unwrap();
        let number = pending.verify_number.unwrap();
        let token = pending.token.clone();
        let waiter = {
            let a = Arc::clone(&a);
            tokio::spawn(async move { a.wait(pending, Duration::from_secs(30)).await })
        };
        let answered = b
            .answer(
                &token,
                ApprovalDecision::Approved,
                Some(&number.to_string()),
            )
            .await
            .unwrap();
        assert_eq!(answered.decision, ApprovalDecision::Approved);
        assert_eq!(waiter.await.unwrap(), ApprovalDecision::Approved);
    });
}

#[test]
fn a_login_that_stopped_waiting_cannot_be_approved_from_another_node() {
    let c = Cluster::start();
    let a = c.node(false, true, Some(Duration::from_secs(2)));
    let b = c.node(false, false, None);
    c.rt.block_on(async {
        let pending = a.create(request("ann"), TTL).await.unwrap();
        let token = pending.token.clone();
        assert_eq!(
            a.wait(pending, Duration::from_millis(300)).await,
            ApprovalDecision::TimedOut
        );
        assert_eq!(
            b.answer(&token, ApprovalDecision::Approved, None)
                .await
                .unwrap_err(),
            DecideError::Abandoned
        );
        // A request cancelled by its login (the push could not be sent) is withdrawn too.
        let pending = a.create(request("ann"), TTL).await.unwrap();
        a.cancel(&pending).await;
        assert!(b.peek(&pending.token).await.is_none());
        assert_eq!(
            b.answer(&pending.token, ApprovalDecision::Approved, None)
                .await
                .unwrap_err(),
            DecideError::Abandoned
        );
    });
}

#[test]
fn two_answers_racing_on_two_nodes_are_taken_once() {
    let c = Cluster::start();
    let a = c.node(false, true, Some(Duration::from_secs(2)));
    let b = c.node(false, false, None);
    c.rt.block_on(async {
        for round in 0..10 {
            let pending = a.create(request("ann"), TTL).await.unwrap();
            let token = pending.token.clone();
            let waiter = {
                let a = Arc::clone(&a);
                tokio::spawn(async move { a.wait(pending, Duration::from_secs(30)).await })
            };
            let (ra, rb) = tokio::join!(
                a.answer(&token, ApprovalDecision::Approved, None),
                b.answer(&token, ApprovalDecision::Denied, None)
            );
            let taken: Vec<ApprovalDecision> = [&ra, &rb]
                .into_iter()
                .filter_map(|r| r.as_ref().ok().map(|a| a.decision))
                .collect();
            assert_eq!(taken.len(), 1, "round {round}: {ra:?} {rb:?}");
            let winner = taken[0];
            assert_eq!(waiter.await.unwrap(), winner, "round {round}");
        }
    });
}

#[test]
fn with_the_database_down_a_request_cannot_be_made_or_answered_and_says_so() {
    let c = Cluster::start();
    let a = c.node(false, true, Some(Duration::from_secs(2)));
    let b = c.node(false, false, None);
    let pending = c.rt.block_on(a.create(request("ann"), TTL)).unwrap();
    c.pg.kill();
    c.rt.block_on(async {
        assert_eq!(
            b.answer(&pending.token, ApprovalDecision::Approved, None)
                .await
                .unwrap_err(),
            DecideError::Unavailable
        );
        assert!(a.create(request("bob"), TTL).await.is_err());
    });
    c.pg.start_again();
    c.rt.block_on(async {
        // Back: the same relays reconnect by themselves.
        let mut answered = None;
        for _ in 0..20 {
            match b
                .answer(&pending.token, ApprovalDecision::Approved, None)
                .await
            {
                Ok(a) => {
                    answered = Some(a);
                    break;
                }
                #[allow(clippy::disallowed_methods)] // the test's own pacing
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
        assert_eq!(answered.unwrap().decision, ApprovalDecision::Approved);
        assert_eq!(
            a.wait(pending, Duration::from_secs(10)).await,
            ApprovalDecision::Approved
        );
    });
}
