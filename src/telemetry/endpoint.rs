//! The operations listener (`--metrics-listen`): `GET /metrics` for
//! Prometheus, `GET /healthz` and `GET /readyz` for load balancers and
//! Kubernetes probes that do not speak gRPC health.
//!
//! It is a port of its own, without tokens, so that it can be opened to the
//! monitoring network alone. A scrape reads the job store's counts and the
//! pool's state at that moment; the Prometheus text format is the default
//! and OpenMetrics is served to scrapers that ask for it in `Accept`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::{prometheus_text, text};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::metrics::Metrics;
use crate::backend::Backend;
use crate::jobs::{Jobs, LocalJobs};

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the listener reads from.
#[derive(Clone)]
pub struct Endpoint {
    pub metrics: Metrics,
    pub jobs: Jobs,
    pub local: Arc<LocalJobs>,
    pub backend: Arc<dyn Backend>,
}

/// Serves until `stop` is cancelled.
pub async fn serve(listener: TcpListener, endpoint: Endpoint, stop: CancellationToken) {
    let router = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(endpoint);
    if let Err(e) = axum::serve(listener, router)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
    {
        warn!(error = %e, "the metrics listener failed");
    }
}

async fn metrics(State(endpoint): State<Endpoint>, headers: HeaderMap) -> Response {
    match endpoint.jobs.count_by_state().await {
        Ok(counts) => endpoint.metrics.set_jobs(&counts),
        // The last counts stay; the scrape still answers.
        Err(e) => warn!(error = %e, "metrics: reading the job counts failed"),
    }
    let pool = endpoint.backend.pool_state();
    endpoint.metrics.set_pool(pool.idle, pool.busy);
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let mut body = String::new();
    let registry = endpoint.metrics.registry();
    let (encoded, content_type) = if openmetrics {
        (text::encode(&mut body, registry), OPENMETRICS)
    } else {
        (
            prometheus_text::encode(&mut body, registry),
            prometheus_text::CONTENT_TYPE,
        )
    };
    match encoded {
        Ok(()) => ([(header::CONTENT_TYPE, content_type)], body).into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding the metrics failed\n",
        )
            .into_response(),
    }
}

async fn readyz(State(endpoint): State<Endpoint>) -> Response {
    match endpoint.local.readiness() {
        Ok(()) => "ready\n".into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}
