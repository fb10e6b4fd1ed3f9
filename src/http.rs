//! http: `/metrics` (Prometheus text), `/healthz` (alive, stages running) and `/readyz`
//! (model loaded, in the consumer group, not draining), on their own port.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use crate::health::Health;
use crate::telemetry::metrics;

pub async fn serve(listener: tokio::net::TcpListener, health: Arc<Health>) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(|| async { metrics().render() }))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(health);
    axum::serve(listener, app).await
}

async fn healthz(State(h): State<Arc<Health>>) -> (StatusCode, String) {
    match h.problem() {
        None => (StatusCode::OK, "ok\n".into()),
        Some(problem) => (StatusCode::SERVICE_UNAVAILABLE, format!("{problem}\n")),
    }
}

async fn readyz(State(h): State<Arc<Health>>) -> (StatusCode, &'static str) {
    if h.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}
