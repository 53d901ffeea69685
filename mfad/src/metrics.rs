//! Prometheus metrics in the text format, on an opt-in TCP listener (`[metrics] listen`):
//! decisions by outcome and method (every decision line counts once), users locked out now,
//! and push/call approvals pending. Nothing secret, no user name, is ever a label.

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
use prometheus_client::registry::Registry;
use serde::Deserialize;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::Semaphore;
use tracing::{info, warn};

/// `[metrics]` in mfad.toml.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Where to serve `GET /metrics`, e.g. "127.0.0.1:9469". Anyone who can reach it sees
    /// the counts (no names): keep it on loopback or a management network.
    pub listen: SocketAddr,
}

type Labels = Vec<(String, String)>;

struct Metrics {
    registry: Registry,
    decisions: Family<Labels, Counter>,
    locked_users: Gauge,
    pending_approvals: Gauge,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

fn metrics() -> &'static Metrics {
    METRICS.get_or_init(|| {
        let mut registry = Registry::default();
        let decisions = Family::<Labels, Counter>::default();
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
        Metrics {
            registry,
            decisions,
            locked_users,
            pending_approvals,
        }
    })
}

/// Counts one decision (called for every decision line).
pub fn count_decision(method: &str, outcome: &str) {
    metrics()
        .decisions
        .get_or_create(&vec![
            ("method".to_string(), method.to_string()),
            ("outcome".to_string(), outcome.to_string()),
        ])
        .inc();
}

async fn scrape(State(daemon): State<Arc<Daemon>>) -> Response {
    let now = daemon.clock.now();
    match daemon.db(move |s| s.locked_users(now)).await {
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
    let mut body = String::new();
    if encode(&mut body, &m.registry).is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
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
