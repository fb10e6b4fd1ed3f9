//! http: `/metrics` (Prometheus text), `/healthz` (alive, stages running), `/readyz` (model
//! loaded, in the consumer group, not draining; its body names the live model and a failed
//! reload) and `POST /admin/reload` (`reload`), on their own port.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};

use crate::health::Health;
use crate::reload;
use crate::telemetry::metrics;

#[derive(Clone)]
struct Management {
    health: Arc<Health>,
    /// Set once the model is loaded (the worker's reload task).
    reload: Arc<std::sync::OnceLock<reload::Handle>>,
}

/// Serves the management port. `reload` is filled in once the worker can reload; until then
/// `POST /admin/reload` answers 503.
pub async fn serve(
    listener: tokio::net::TcpListener,
    health: Arc<Health>,
    reload: Arc<std::sync::OnceLock<reload::Handle>>,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(|| async { metrics().render() }))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/admin/reload", post(admin_reload))
        .with_state(Management { health, reload });
    axum::serve(listener, app).await
}

/// Reloads the model directory, reply templates and escalation thresholds now and answers with
/// what happened to each (`reload::Report`): 200 when nothing failed, 500 when a part failed
/// (it stays on its previous version), 503 before startup is done or while shutting down.
async fn admin_reload(State(m): State<Management>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let Some(handle) = m.reload.get() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "not started\n").into_response();
    };
    match handle.reload(reload::Trigger::Admin).await {
        Some(report) => {
            let status = if report.failed() {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::OK
            };
            (
                status,
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                serde_json::to_string(&report).expect("a report serializes: bug"),
            )
                .into_response()
        }
        None => (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response(),
    }
}

async fn healthz(State(Management { health: h, .. }): State<Management>) -> (StatusCode, String) {
    match h.problem() {
        None => (StatusCode::OK, "ok\n".into()),
        Some(problem) => (StatusCode::SERVICE_UNAVAILABLE, format!("{problem}\n")),
    }
}

async fn readyz(State(Management { health: h, .. }): State<Management>) -> (StatusCode, String) {
    let detail = h.model_detail();
    if h.is_ready() {
        (StatusCode::OK, format!("ready\n{detail}"))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready\n{detail}"),
        )
    }
}
