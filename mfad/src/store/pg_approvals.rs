//! Push and call approvals shared by the nodes of a cluster, in the PostgreSQL store.
//!
//! A login waiting on node A publishes its request (the SHA-256 of the token, never the
//! token); the phone's answer may reach the approval endpoint of node B, which records it
//! with a conditional UPDATE (the first answer wins, a withdrawn request takes none) and
//! sends `NOTIFY mfa_approvals`. Node A LISTENs on its own connection and hands the answer
//! to the waiting login at once; a poll every two seconds catches an answer whose wake-up
//! was lost (the listener's connection dropped and came back).

use super::StoreError;
use super::postgres::{PgOptions, connect_client};
use crate::oob::approvals::{
    AnswerToRecord, ApprovalDecision, ApprovalMethod, ApprovalRelay, ApprovalRequest,
    ApprovalStore, DecideError, Found, PendingView, Published, RelayError, RelayFuture, Taken,
    taken_decision,
};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::RwLock;
use tokio_postgres::Client;
use tracing::{debug, info, warn};

/// The channel answers are announced on.
const CHANNEL: &str = "mfa_approvals";
/// How often a node asks for answers to its waiting requests, whatever the wake-ups.
const POLL: Duration = Duration::from_secs(2);
/// Answered or expired requests are kept this long (seconds) after they expire, then swept.
const KEEP: i64 = 600;

/// The relay of one node.
pub struct PgRelay {
    opts: PgOptions,
    client: RwLock<Option<Arc<Client>>>,
}

fn decision_str(d: ApprovalDecision) -> &'static str {
    d.as_str()
}

fn parse_decision(s: &str) -> Option<ApprovalDecision> {
    match s {
        "approved" => Some(ApprovalDecision::Approved),
        "denied" => Some(ApprovalDecision::Denied),
        "reported" => Some(ApprovalDecision::Reported),
        "timed-out" => Some(ApprovalDecision::TimedOut),
        _ => None,
    }
}

fn relay_error(e: StoreError) -> RelayError {
    RelayError(e.to_string())
}

impl PgRelay {
    /// Shares `approvals` through the store `opts` names: sets the relay, and starts the
    /// listener and the poll. Both stop when `approvals` is dropped.
    pub fn share(opts: PgOptions, approvals: &Arc<ApprovalStore>) -> Arc<PgRelay> {
        PgRelay::share_with(opts, approvals, true, Some(POLL))
    }

    /// [`PgRelay::share`] with the wake-ups chosen: the listener (`listen_for_answers`) and
    /// the poll (`poll`, its period). Tests use it to prove each path alone.
    pub fn share_with(
        opts: PgOptions,
        approvals: &Arc<ApprovalStore>,
        listen_for_answers: bool,
        poll: Option<Duration>,
    ) -> Arc<PgRelay> {
        let relay = Arc::new(PgRelay {
            opts,
            client: RwLock::new(None),
        });
        approvals.set_relay(Arc::clone(&relay) as Arc<dyn ApprovalRelay>);
        if listen_for_answers {
            tokio::spawn(listen(relay.opts.clone(), Arc::downgrade(approvals)));
        }
        if let Some(period) = poll {
            approvals.spawn_relay_poller(period);
        }
        relay
    }

    /// The shared connection for requests and answers, opened again when it was lost.
    async fn client(&self) -> Result<Arc<Client>, StoreError> {
        if let Some(c) = self.client.read().await.as_ref()
            && !c.is_closed()
        {
            return Ok(Arc::clone(c));
        }
        let mut slot = self.client.write().await;
        if let Some(c) = slot.as_ref()
            && !c.is_closed()
        {
            return Ok(Arc::clone(c));
        }
        let c = Arc::new(connect_client(&self.opts, None).await?);
        *slot = Some(Arc::clone(&c));
        Ok(c)
    }

    /// Runs `f` on the connection within the statement timeout (and a little more).
    async fn run<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(Arc<Client>) -> Fut,
        Fut: std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    {
        let client = self.client().await?;
        let bound = self.opts.statement_timeout + Duration::from_millis(500);
        match tokio::time::timeout(bound, f(client)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => {
                // The connection may be stuck mid-statement: open a fresh one next time.
                *self.client.write().await = None;
                Err(StoreError::Timeout {
                    what: "approval request",
                    after: bound,
                })
            }
        }
    }
}

fn view_of(row: &tokio_postgres::Row) -> Result<PendingView, tokio_postgres::Error> {
    let method: String = row.try_get("method")?;
    Ok(PendingView {
        request: ApprovalRequest {
            user: row.try_get("owner")?,
            host: row.try_get("host")?,
            rhost: row.try_get("rhost")?,
            method: if method == "phone" {
                ApprovalMethod::Call
            } else {
                ApprovalMethod::Push
            },
            created: row.try_get("created")?,
            adding_device: row.try_get("adding_device")?,
        },
        expires: row.try_get("expires")?,
        needs_number: row.try_get::<_, Option<i16>>("verify_number")?.is_some(),
    })
}

impl ApprovalRelay for PgRelay {
    fn publish<'a>(&'a self, p: Published<'a>) -> RelayFuture<'a, Result<(), RelayError>> {
        let (key, request, expires, verify_number) = (p.key, p.request, p.expires, p.verify_number);
        Box::pin(async move {
            self.run(|c| async move {
                c.execute(
                    "DELETE FROM approvals WHERE expires < $1",
                    &[&(request.created - KEEP)],
                )
                .await?;
                c.execute(
                    "INSERT INTO approvals(key, owner, host, rhost, method, created,
                                           adding_device, expires, verify_number)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    &[
                        &&key[..],
                        &request.user,
                        &request.host,
                        &request.rhost,
                        &request.method.as_str(),
                        &request.created,
                        &request.adding_device,
                        &expires,
                        &verify_number.map(i16::from),
                    ],
                )
                .await
            })
            .await
            .map(drop)
            .map_err(relay_error)
        })
    }

    fn peek(
        &self,
        key: [u8; 32],
        now: i64,
    ) -> RelayFuture<'_, Result<Option<PendingView>, RelayError>> {
        Box::pin(async move {
            let row = self
                .run(|c| async move {
                    c.query_opt(
                        "SELECT owner, host, rhost, method, created, adding_device, expires,
                                verify_number
                         FROM approvals WHERE key = $1 AND decision IS NULL AND expires > $2",
                        &[&&key[..], &now],
                    )
                    .await
                })
                .await
                .map_err(relay_error)?;
            row.map(|r| view_of(&r))
                .transpose()
                .map_err(|e| RelayError(e.to_string()))
        })
    }

    fn answer<'a>(&'a self, a: AnswerToRecord<'a>) -> RelayFuture<'a, Result<Taken, DecideError>> {
        let (key, decision, typed_number, now) = (a.key, a.decision, a.typed_number, a.now);
        Box::pin(async move {
            let outcome = self
                .run(|c| async move {
                    let Some(row) = c
                        .query_opt(
                            "SELECT owner, host, rhost, method, created, adding_device,
                                    expires, verify_number, decision
                             FROM approvals WHERE key = $1",
                            &[&&key[..]],
                        )
                        .await?
                    else {
                        return Ok(Err(DecideError::Unknown));
                    };
                    let decided: Option<String> = row.try_get("decision")?;
                    match decided.as_deref() {
                        Some("timed-out") => return Ok(Err(DecideError::Abandoned)),
                        Some(_) => return Ok(Err(DecideError::Unknown)),
                        None => {}
                    }
                    let view = view_of(&row)?;
                    if view.expires <= now {
                        return Ok(Err(DecideError::Expired));
                    }
                    let number = row
                        .try_get::<_, Option<i16>>("verify_number")?
                        .and_then(|n| u8::try_from(n).ok());
                    let taken = taken_decision(decision, number, typed_number);
                    // The row count decides: only the first answer to a waiting request.
                    let n = c
                        .execute(
                            "UPDATE approvals SET decision = $2
                             WHERE key = $1 AND decision IS NULL AND expires > $3",
                            &[&&key[..], &decision_str(taken), &now],
                        )
                        .await?;
                    if n != 1 {
                        return Ok(Err(DecideError::Unknown));
                    }
                    let payload = format!("{}:{}", hex(&key), decision_str(taken));
                    c.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
                        .await?;
                    Ok(Ok((view.request, taken)))
                })
                .await;
            match outcome {
                Ok(r) => r,
                Err(e) => {
                    warn!("cannot record an answer to a login request: {e}");
                    Err(DecideError::Unavailable)
                }
            }
        })
    }

    fn withdraw(
        &self,
        key: [u8; 32],
    ) -> RelayFuture<'_, Result<Option<ApprovalDecision>, RelayError>> {
        Box::pin(async move {
            self.run(|c| async move {
                let n = c
                    .execute(
                        "UPDATE approvals SET decision = 'timed-out'
                         WHERE key = $1 AND decision IS NULL",
                        &[&&key[..]],
                    )
                    .await?;
                if n == 1 {
                    return Ok(None);
                }
                let row = c
                    .query_opt(
                        "SELECT decision FROM approvals WHERE key = $1",
                        &[&&key[..]],
                    )
                    .await?;
                let decided: Option<String> = match row {
                    Some(r) => r.try_get(0)?,
                    None => None,
                };
                Ok(decided
                    .as_deref()
                    .and_then(parse_decision)
                    .filter(|d| *d != ApprovalDecision::TimedOut))
            })
            .await
            .map_err(relay_error)
        })
    }

    fn decided<'a>(&'a self, keys: &'a [[u8; 32]]) -> RelayFuture<'a, Result<Found, RelayError>> {
        Box::pin(async move {
            let keys: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
            let rows = self
                .run(|c| async move {
                    c.query(
                        "SELECT key, decision FROM approvals
                         WHERE key = ANY($1) AND decision IS NOT NULL AND decision <> 'timed-out'",
                        &[&keys],
                    )
                    .await
                })
                .await
                .map_err(relay_error)?;
            let mut found = Vec::with_capacity(rows.len());
            for row in rows {
                let key: Vec<u8> = row.try_get(0).map_err(|e| RelayError(e.to_string()))?;
                let decision: String = row.try_get(1).map_err(|e| RelayError(e.to_string()))?;
                if let (Ok(key), Some(d)) = (<[u8; 32]>::try_from(key), parse_decision(&decision)) {
                    found.push((key, d));
                }
            }
            Ok(found)
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(bytes)
}

/// `<hex key>:<decision>` as sent by [`PgRelay::answer`].
fn parse_payload(payload: &str) -> Option<([u8; 32], ApprovalDecision)> {
    let (key, decision) = payload.split_once(':')?;
    let key = data_encoding::HEXLOWER.decode(key.as_bytes()).ok()?;
    Some((key.try_into().ok()?, parse_decision(decision)?))
}

/// LISTENs for answers and hands them to the logins waiting on this node; connects again
/// (every two seconds while it cannot) until `approvals` is dropped.
async fn listen(opts: PgOptions, approvals: Weak<ApprovalStore>) {
    let mut lost = false;
    loop {
        if approvals.strong_count() == 0 {
            return;
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let client = match connect_client(&opts, Some(tx)).await {
            Ok(c) => c,
            Err(e) => {
                if !lost {
                    warn!(
                        "approval listener: cannot connect: {e}; answers reach waiting logins by the poll until it can"
                    );
                    lost = true;
                }
                #[allow(clippy::disallowed_methods)] // the listener's reconnect pause
                tokio::time::sleep(POLL).await;
                continue;
            }
        };
        // Every statement of the listener is bounded too: a stuck server must not hold it
        // forever (the poll would still deliver, but wake-ups would stop for good).
        let bound = opts.statement_timeout + Duration::from_millis(500);
        let listening =
            tokio::time::timeout(bound, client.batch_execute(&format!("LISTEN {CHANNEL}"))).await;
        if !matches!(listening, Ok(Ok(()))) {
            debug!("approval listener: LISTEN failed or timed out");
            #[allow(clippy::disallowed_methods)] // the listener's reconnect pause
            tokio::time::sleep(POLL).await;
            continue;
        }
        if lost {
            info!("approval listener: connected again");
            lost = false;
        }
        loop {
            let next = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await;
            let Some(store) = approvals.upgrade() else {
                return;
            };
            match next {
                Ok(Some(n)) => {
                    if let Some((key, decision)) = parse_payload(n.payload()) {
                        store.deliver(key, decision);
                    }
                }
                // The connection ended: connect again.
                Ok(None) => break,
                // Quiet for a while: check the connection is alive.
                Err(_) => {
                    let alive = tokio::time::timeout(bound, client.simple_query("SELECT 1")).await;
                    if client.is_closed() || !matches!(alive, Ok(Ok(_))) {
                        break;
                    }
                }
            }
        }
        if !lost {
            warn!("approval listener: connection lost; connecting again");
            lost = true;
        }
    }
}
