//! The admin listener: `GET /metrics`, `GET /healthz`, `GET /readyz`, `POST /drain`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

use crate::http::AppState;
use crate::telemetry;

#[derive(Clone)]
struct AdminState {
    app: AppState,
    metrics: PrometheusHandle,
}

pub fn router(app: AppState, metrics: PrometheusHandle) -> Router {
    let r = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/drain", post(drain))
        .fallback(crate::http::problem::not_found)
        .method_not_allowed_fallback(crate::http::problem::method_not_allowed)
        .with_state(AdminState { app, metrics });
    crate::http::middleware::wrap(r, "admin")
}

async fn metrics_text(State(s): State<AdminState>) -> impl IntoResponse {
    metrics::gauge!("streamedge_ready").set(if s.app.is_ready() { 1.0 } else { 0.0 });
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        telemetry::metrics::render(&s.metrics),
    )
}

/// Liveness: the process is up and serving its admin listener.
async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// Readiness: not draining, and the shared state (Redis, when configured) answers.
async fn readyz(State(s): State<AdminState>) -> impl IntoResponse {
    let app = &s.app;
    let draining = app.is_draining();
    let store_ok = app.store.is_healthy();
    let ready = !draining && store_ok;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "ready": ready,
            "draining": draining,
            "node": app.node_id,
            "store": { "backend": app.store.backend(), "healthy": store_ok },
            "connections": app.registry.connections(),
        })),
    )
}

/// Starts draining, as SIGTERM does; the process exits when it is done. Repeating it
/// changes nothing.
async fn drain(State(s): State<AdminState>) -> impl IntoResponse {
    let c = &s.app.config.server;
    let already = s.app.drain_requested.is_cancelled() || s.app.is_draining();
    s.app.drain_requested.cancel();
    (
        StatusCode::ACCEPTED,
        Json(json!({
            "draining": true,
            "already_draining": already,
            "drain_delay_ms": c.drain_delay.as_millis() as u64,
            "drain_spread_ms": c.drain_spread.as_millis() as u64,
            "shutdown_grace_ms": c.shutdown_grace.as_millis() as u64,
        })),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::store::memory::MemoryStore;
    use axum::body::Body;
    use axum::http::Request;
    use std::sync::Arc;
    use tower::ServiceExt;

    async fn readyz_status(app: &AppState) -> (StatusCode, serde_json::Value) {
        let router = router(app.clone(), crate::telemetry::metrics::install());
        let resp = router
            .oneshot(Request::get("/readyz").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 4096).await.unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn readiness_is_false_while_draining() {
        let app = AppState::new(
            Arc::new(Config::default()),
            Arc::new(MemoryStore::new()),
            "n1".into(),
        );
        assert_eq!(readyz_status(&app).await.0, StatusCode::OK);
        app.draining.cancel();
        let (status, body) = readyz_status(&app).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["draining"], true);
        assert_eq!(body["ready"], false);
    }
}
