//! Prometheus metrics in the text format, on an opt-in TCP listener (`[metrics] listen`):
//! decisions by outcome and method (every decision line counts once), users locked out now,
//! push/call approvals pending, the store's latency and errors, each provider's requests,
//! errors and latency, and connections the per-uid limits turned away. Nothing secret, no
//! user name, is ever a label.

use crate::daemon::Daemon;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::Deserialize;
use std::borrow::Cow;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::Semaphore;
use tracing::{info, warn};

/// `[metrics]` in mfad.toml.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Where to serve `GET /metrics`, e.g. "127.0.0.1:9469". Anyone who can reach it sees
    /// the counts (no names): keep it on loopback or a management network.
    pub listen: SocketAddr,
}

type Labels = Vec<(String, String)>;
/// Labels known when mfad is built: found without allocating (one decision and one or two
/// store operations per login).
type Fixed<const N: usize> = [(&'static str, &'static str); N];
/// A decision's method and outcome (`not enrolled` written `not-enrolled`).
type DecisionLabels = [(&'static str, Cow<'static, str>); 2];

struct Metrics {
    registry: Registry,
    decisions: Family<DecisionLabels, Counter>,
    locked_users: Gauge,
    pending_approvals: Gauge,
    store_seconds: Family<Fixed<1>, Histogram>,
    store_errors: Family<Fixed<2>, Counter>,
    provider_requests: Family<Labels, Counter>,
    provider_seconds: Family<Labels, Histogram>,
    connections_refused: Family<Fixed<1>, Counter>,
}

/// Latency buckets from 0.5 ms to about 33 s.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 17))
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

fn metrics() -> &'static Metrics {
    METRICS.get_or_init(|| {
        let mut registry = Registry::default();
        let decisions = Family::<DecisionLabels, Counter>::default();
        let locked_users = Gauge::default();
        let pending_approvals = Gauge::default();
        registry.register(
            "mfa_decisions",
            "Decisions mfad logged, by outcome (allow, deny, retry, ...) and method",
            decisions.clone(),
        );
        registry.register(
            "mfa_locked_users",
            "Accounts locked out now",
            locked_users.clone(),
        );
        registry.register(
            "mfa_pending_approvals",
            "Pushes and calls waiting for the phone's answer",
            pending_approvals.clone(),
        );
        let store_seconds = Family::<Fixed<1>, Histogram>::new_with_constructor(latency as fn() -> Histogram);
        let store_errors = Family::<Fixed<2>, Counter>::default();
        let provider_requests = Family::<Labels, Counter>::default();
        let provider_seconds = Family::<Labels, Histogram>::new_with_constructor(latency as fn() -> Histogram);
        let connections_refused = Family::<Fixed<1>, Counter>::default();
        registry.register(
            "mfa_store_seconds",
            "Time a conversation waited for one store operation (a connection, then the work), by backend",
            store_seconds.clone(),
        );
        registry.register(
            "mfa_store_errors",
            "Store operations that failed, by kind (outage: the store out of reach; error: anything else)",
            store_errors.clone(),
        );
        registry.register(
            "mfa_provider_requests",
            "Requests to providers (ntfy, webhook, twilio, duo), by provider, call and result (ok, error)",
            provider_requests.clone(),
        );
        registry.register(
            "mfa_provider_seconds",
            "Time a provider took to answer, by provider and call (Duo's auth_status long-polls)",
            provider_seconds.clone(),
        );
        registry.register(
            "mfa_connections_refused",
            "Connections turned away by the limits, by reason (user: one uid's limit; all_users: \
             the limit for all non-root callers; root: root's reserve)",
            connections_refused.clone(),
        );
        Metrics {
            registry,
            decisions,
            locked_users,
            pending_approvals,
            store_seconds,
            store_errors,
            provider_requests,
            provider_seconds,
            connections_refused,
        }
    })
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Records one store operation: how long it took and, when it failed, how.
pub fn store_operation(backend: &'static str, took: Duration, error: Option<bool>) {
    let m = metrics();
    m.store_seconds
        .get_or_create(&[("backend", backend)])
        .observe(took.as_secs_f64());
    if let Some(outage) = error {
        let kind = if outage { "outage" } else { "error" };
        m.store_errors
            .get_or_create(&[("backend", backend), ("kind", kind)])
            .inc();
    }
}

/// Runs one provider request (`provider`, its `call`), recording its latency and result.
pub async fn provider_request<T, E>(
    provider: &'static str,
    call: &str,
    request: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let started = tokio::time::Instant::now();
    let result = request.await;
    let m = metrics();
    m.provider_seconds
        .get_or_create(&labels(&[("provider", provider), ("call", call)]))
        .observe(started.elapsed().as_secs_f64());
    let outcome = if result.is_ok() { "ok" } else { "error" };
    m.provider_requests
        .get_or_create(&labels(&[
            ("provider", provider),
            ("call", call),
            ("result", outcome),
        ]))
        .inc();
    result
}

/// Counts a connection the limits turned away (`reason`: user, all_users, root).
pub fn connection_refused(reason: &'static str) {
    metrics()
        .connections_refused
        .get_or_create(&[("reason", reason)])
        .inc();
}

/// Everything counted so far, in the OpenMetrics text format (what `GET /metrics` serves).
pub fn render() -> Option<String> {
    let mut body = String::new();
    encode(&mut body, &metrics().registry).ok()?;
    Some(body)
}

/// The value of the sample `name{labels}` in `text` (0 when absent), for tests.
pub fn sample(text: &str, key: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Counts one decision (called for every decision line).
pub fn count_decision(method: &'static str, outcome: &'static str) {
    metrics()
        .decisions
        .get_or_create(&[
            ("method", Cow::Borrowed(method)),
            ("outcome", crate::logging::token(outcome)),
        ])
        .inc();
}

async fn scrape(State(daemon): State<Arc<Daemon>>) -> Response {
    let now = daemon.core().clock.now();
    match daemon.core().db(move |s| s.locked_users(now)).await {
        Ok(n) => {
            metrics().locked_users.set(n);
        }
        Err(e) => {
            warn!("metrics: cannot count locked users: {e}");
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
    }
    let m = metrics();
    m.pending_approvals
        .set(daemon.approvals().len().try_into().unwrap_or(i64::MAX));
    let Some(body) = render() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    (
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves: at most 16 connections,
/// each given 10 s in all (headers within 5 s).
pub async fn serve(
    daemon: Arc<Daemon>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()>,
) {
    let router = Router::new()
        .route("/metrics", get(scrape))
        .with_state(daemon);
    let limit = Arc::new(Semaphore::new(16));
    if let Ok(addr) = listener.local_addr() {
        info!("metrics on http://{addr}/metrics");
    }
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    #[allow(clippy::disallowed_methods)] // a pause after a failed accept
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
                    continue;
                };
                let service = TowerToHyperService::new(router.clone());
                tokio::spawn(async move {
                    let mut http = hyper::server::conn::http1::Builder::new();
                    http.timer(TokioTimer::new())
                        .header_read_timeout(Duration::from_secs(5));
                    let _ = tokio::time::timeout(
                        Duration::from_secs(10),
                        http.serve_connection(TokioIo::new(stream), service),
                    )
                    .await;
                    drop(permit);
                });
            }
        }
    }
}
