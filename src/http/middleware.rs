//! The middleware every listener uses: a request id (`x-request-id`, taken from the client
//! when it is at most 128 visible ASCII characters, generated otherwise) on every request,
//! its response and its log span, plus request metrics.
//!
//! Request metrics are on every request's path, so they are kept cheap: the matched route
//! rides back on the response (no shared slot to allocate), and the counter and histogram
//! handles for each (route, method, status) are registered once and reused, instead of
//! building and hashing a labelled key in the recorder on every request.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use metrics::{Counter, Histogram};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

/// Wraps a router with request ids, tracing and metrics. `listener` labels the metrics
/// (`api` or `admin`).
pub fn wrap(router: Router, listener: &'static str) -> Router {
    let metrics = Arc::new(RequestMetrics::new(listener));
    router
        .route_layer(axum::middleware::from_fn(note_route))
        .layer(axum::middleware::from_fn(move |req, next| {
            record_metrics(metrics.clone(), req, next)
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
        .layer(axum::middleware::map_request(drop_unfit_request_id))
}

/// Refuses a request whose head (request line and header fields) is larger than
/// `server.max_request_head_bytes` with `431`. The server's read buffer already keeps heads
/// near that size (it may read up to about twice it); this makes the limit exact.
pub async fn limit_head(
    axum::extract::State(max): axum::extract::State<usize>,
    req: Request,
    next: Next,
) -> Response {
    // No allocation: this runs on every API request.
    let uri = req.uri();
    let head = uri.path().len()
        + uri.query().map_or(0, |q| q.len() + 1)
        + req
            .headers()
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>();
    if head > max {
        use axum::response::IntoResponse;
        return super::ApiError::new(
            super::ErrorKind::HeadersTooLarge,
            "headers_too_large",
            format!("the request line and headers exceed {max} bytes"),
        )
        .into_response();
    }
    next.run(req).await
}

/// The largest chunked request body read in full (the largest route limit, WHIP/WHEP
/// offers); routes apply their own, smaller limits to what was read.
pub const MAX_CHUNKED_BODY: usize = 64 * 1024;
/// How much more of a chunked body over [`MAX_CHUNKED_BODY`] is read (and dropped) so that
/// its `413` reaches the client; a client sending more loses the connection instead.
const DRAIN_LIMIT: usize = 1024 * 1024;

/// Reads a chunked request body (no `Content-Length`) in full before the route sees it.
///
/// A route that refuses a body early (`413`) leaves the rest of it unread, and hyper — which
/// here flushes answers in batches for pipelined requests — then closes the connection
/// without sending that answer. Reading the body first (at most [`MAX_CHUNKED_BODY`];
/// beyond it, `413` after reading what follows up to [`DRAIN_LIMIT`]) lets every answer
/// out. Bodies with a `Content-Length` are limited before they are read and need none of
/// this.
pub async fn buffer_chunked_body(req: Request, next: Next) -> Response {
    use http_body_util::BodyExt;
    let chunked = !req
        .headers()
        .contains_key(axum::http::header::CONTENT_LENGTH)
        && req
            .headers()
            .get(axum::http::header::TRANSFER_ENCODING)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"));
    if !chunked {
        return next.run(req).await;
    }
    let (parts, mut body) = req.into_parts();
    let mut buf = bytes::BytesMut::new();
    let mut over = false;
    let mut drained = 0usize;
    let read = async {
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame?.into_data() else {
                continue;
            };
            if !over && buf.len() + data.len() <= MAX_CHUNKED_BODY {
                buf.extend_from_slice(&data);
            } else {
                over = true;
                drained += data.len();
                if drained > DRAIN_LIMIT {
                    break;
                }
            }
        }
        Ok::<(), axum::Error>(())
    };
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), read).await;
    use axum::response::IntoResponse;
    match read {
        Ok(Ok(())) if !over => {
            next.run(Request::from_parts(
                parts,
                axum::body::Body::from(buf.freeze()),
            ))
            .await
        }
        Ok(Ok(())) => super::ApiError::new(
            super::ErrorKind::PayloadTooLarge,
            "payload_too_large",
            "the request body is too large",
        )
        .into_response(),
        // Broken framing (answered by the listener) or a client that stopped sending.
        Ok(Err(_)) | Err(_) => super::ApiError::new(
            super::ErrorKind::Invalid,
            "invalid_body",
            "the request body could not be read",
        )
        .into_response(),
    }
}

/// Longest client-chosen request id kept.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// A client's `x-request-id` is echoed and logged: one over [`MAX_REQUEST_ID_LEN`] bytes
/// or with anything but visible ASCII is dropped, and a fresh one is generated instead.
async fn drop_unfit_request_id(mut req: Request) -> Request {
    let unfit = req.headers().get("x-request-id").is_some_and(|v| {
        v.len() > MAX_REQUEST_ID_LEN || !v.as_bytes().iter().all(|b| b.is_ascii_graphic())
    });
    if unfit {
        req.headers_mut().remove("x-request-id");
    }
    req
}

/// The matched route of a request, left on its response by [`note_route`] (which runs
/// inside routing) for [`record_metrics`] (which runs outside it, so that unmatched
/// requests are counted too).
#[derive(Clone)]
struct RouteLabel(MatchedPath);

async fn note_route(req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().cloned();
    let mut resp = next.run(req).await;
    if let Some(route) = route {
        resp.extensions_mut().insert(RouteLabel(route));
    }
    resp
}

async fn record_metrics(metrics: Arc<RequestMetrics>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let mut resp = next.run(req).await;
    let route = resp.extensions_mut().remove::<RouteLabel>();
    let route = route.as_ref().map_or("unmatched", |r| r.0.as_str());
    metrics.record(route, &method, resp.status(), start.elapsed().as_secs_f64());
    resp
}

/// `streamedge_http_requests_total` and `streamedge_http_request_duration_seconds` of one
/// listener, with their handles cached by route, method and status.
struct RequestMetrics {
    listener: &'static str,
    by_route: RwLock<HashMap<Box<str>, Vec<Handles>>>,
}

/// The registered handles of one (route, method, status).
struct Handles {
    method: Method,
    status: StatusCode,
    requests: Counter,
    duration: Histogram,
}

impl RequestMetrics {
    fn new(listener: &'static str) -> Self {
        Self {
            listener,
            by_route: RwLock::new(HashMap::new()),
        }
    }

    fn record(&self, route: &str, method: &Method, status: StatusCode, seconds: f64) {
        let hit = |h: &&Handles| h.status == status && h.method == method;
        {
            let by_route = self.by_route.read().unwrap_or_else(|e| e.into_inner());
            if let Some(h) = by_route.get(route).and_then(|v| v.iter().find(hit)) {
                h.requests.increment(1);
                h.duration.record(seconds);
                return;
            }
        }
        // First request of this kind: register with the recorder (which returns the same
        // series for the same labels, so a race between two requests here is harmless).
        let h = Handles {
            method: method.clone(),
            status,
            requests: metrics::counter!(
                "streamedge_http_requests_total",
                "listener" => self.listener,
                "route" => route.to_string(),
                "method" => method.as_str().to_string(),
                "status" => status.as_str().to_string(),
            ),
            duration: metrics::histogram!(
                "streamedge_http_request_duration_seconds",
                "listener" => self.listener,
                "route" => route.to_string(),
                "method" => method.as_str().to_string(),
            ),
        };
        h.requests.increment(1);
        h.duration.record(seconds);
        let mut by_route = self.by_route.write().unwrap_or_else(|e| e.into_inner());
        let entry = by_route.entry(route.into()).or_default();
        if !entry
            .iter()
            .any(|e| e.status == status && e.method == method)
        {
            entry.push(h);
        }
    }
}
