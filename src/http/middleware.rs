//! The middleware every listener uses: a request id (`x-request-id`, taken from the client
//! or generated) on every request, its response and its log span, plus request metrics.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

/// Wraps a router with request ids, tracing and metrics. `listener` labels the metrics
/// (`api` or `admin`).
pub fn wrap(router: Router, listener: &'static str) -> Router {
    router
        .route_layer(axum::middleware::from_fn(note_route))
        .layer(axum::middleware::from_fn(move |req, next| {
            record_metrics(listener, req, next)
        }))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let request_id = req
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            tracing::info_span!(
                "http",
                request_id = %request_id,
                method = %req.method(),
                path = %req.uri().path(),
            )
        }))
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

/// Where the routed request leaves its matched path for [`record_metrics`], which runs
/// outside routing (so that unmatched requests are counted too).
#[derive(Clone, Default)]
struct RouteSlot(Arc<OnceLock<String>>);

async fn note_route(req: Request, next: Next) -> Response {
    if let (Some(slot), Some(path)) = (
        req.extensions().get::<RouteSlot>(),
        req.extensions().get::<MatchedPath>(),
    ) {
        let _ = slot.0.set(path.as_str().to_string());
    }
    next.run(req).await
}

async fn record_metrics(listener: &'static str, mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let slot = RouteSlot::default();
    req.extensions_mut().insert(slot.clone());
    let method = req.method().as_str().to_string();
    let resp = next.run(req).await;
    let route = slot
        .0
        .get()
        .cloned()
        .unwrap_or_else(|| "unmatched".to_string());
    let status = resp.status().as_u16().to_string();
    metrics::counter!(
        "streamedge_http_requests_total",
        "listener" => listener,
        "route" => route.clone(),
        "method" => method.clone(),
        "status" => status,
    )
    .increment(1);
    metrics::histogram!(
        "streamedge_http_request_duration_seconds",
        "listener" => listener,
        "route" => route,
        "method" => method,
    )
    .record(start.elapsed().as_secs_f64());
    resp
}
