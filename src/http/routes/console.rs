//! The web console (`console.enabled`): `GET /` and its files under `/console/`, embedded
//! in the binary (console/ and the client library clients/js/src/streamedge.js in the
//! repository). Nothing is fetched from elsewhere: the content security policy allows
//! this origin only.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::http::AppState;

const INDEX: &str = include_str!("../../../console/index.html");
const APP_JS: &str = include_str!("../../../console/app.js");
const APP_CSS: &str = include_str!("../../../console/app.css");
const LIBRARY: &str = include_str!("../../../clients/js/src/streamedge.js");

/// Scripts, styles, fetches and WebSockets from this origin only; camera and WebRTC
/// streams as media; no frames, plugins or foreign forms.
const CSP: &str =
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
media-src 'self' blob: mediastream:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
form-action 'self'; frame-ancestors 'none'";

fn file(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
        ],
        body,
    )
        .into_response()
}

/// The console's routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/",
            get(|| async { file(INDEX, "text/html; charset=utf-8") }),
        )
        .route(
            "/console/app.js",
            get(|| async { file(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/console/app.css",
            get(|| async { file(APP_CSS, "text/css; charset=utf-8") }),
        )
        .route(
            "/console/streamedge.js",
            get(|| async { file(LIBRARY, "text/javascript; charset=utf-8") }),
        )
}
