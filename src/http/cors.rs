//! Which browser pages may use the API: CORS for the REST routes and the `Origin` check
//! of the stream WebSocket, both from `server.cors_origins`. (The WHIP/WHEP routes allow
//! any origin: the access token, not the page, authorises media; see `routes::media`.)

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::{ApiError, AppState, ErrorKind};

/// Headers a browser page may read from the API's answers.
const EXPOSED: [&str; 3] = ["retry-after", "x-request-id", "location"];

/// The CORS layer of the REST routes: preflights answered without authentication,
/// credentials (cookies) never used — the API takes bearer tokens.
pub fn layer(origins: &[String]) -> CorsLayer {
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect::<Vec<_>>(),
        )
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::HeaderName::from_static("x-request-id"),
        ])
        .expose_headers(EXPOSED.map(header::HeaderName::from_static))
        .max_age(Duration::from_secs(600))
}

/// Whether a page at `origin` may open the stream WebSocket of a node reached as `host`
/// (the `Host` header): a listed origin, any with `"*"`, or the node's own pages (the
/// origin's host and port equal `Host`; when a proxy passes `Host` without a port, the
/// host alone).
pub fn origin_allowed(origins: &[String], origin: &str, host: Option<&str>) -> bool {
    if origins
        .iter()
        .any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let Some(host) = host else {
        return false;
    };
    let authority = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .unwrap_or("");
    if authority.is_empty() {
        return false;
    }
    if authority.eq_ignore_ascii_case(host) {
        return true;
    }
    let (host_name, host_port) = split_port(host);
    let (origin_host, _) = split_port(authority);
    host_port.is_none() && origin_host.eq_ignore_ascii_case(host_name)
}

/// `host[:port]` (IPv6 in brackets) → (host, port).
fn split_port(authority: &str) -> (&str, Option<&str>) {
    let after_host = if authority.starts_with('[') {
        authority.find(']').map_or(authority.len(), |i| i + 1)
    } else {
        authority.rfind(':').unwrap_or(authority.len())
    };
    match authority[after_host..].strip_prefix(':') {
        Some(port) => (&authority[..after_host], Some(port)),
        None => (authority, None),
    }
}

/// The stream WebSocket's origin check, in front of the route (before authentication):
/// a browser page on an origin `server.cors_origins` does not allow gets
/// `403 origin_not_allowed`. Clients that send no `Origin` (apps, servers) pass.
pub async fn check_ws_origin(
    State(app): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok());
        if !origin_allowed(&app.config.server.cors_origins, origin, host) {
            return Err(ApiError::new(
                ErrorKind::Forbidden,
                "origin_not_allowed",
                "pages on this origin may not open the stream WebSocket (server.cors_origins)",
            ));
        }
    }
    Ok(next.run(req).await)
}

#[cfg(test)]
mod tests {
    use super::origin_allowed;

    #[test]
    fn origins() {
        let listed = vec!["https://shop.example.com".to_string()];
        assert!(origin_allowed(
            &listed,
            "https://shop.example.com",
            Some("edge.example.com")
        ));
        assert!(!origin_allowed(
            &listed,
            "https://evil.example",
            Some("edge.example.com")
        ));
        assert!(!origin_allowed(&[], "https://evil.example", None));
        assert!(origin_allowed(&["*".into()], "https://evil.example", None));
        // The node's own pages: same authority, or the same host behind a proxy that
        // drops the port from Host.
        assert!(origin_allowed(
            &[],
            "http://127.0.0.1:8080",
            Some("127.0.0.1:8080")
        ));
        assert!(!origin_allowed(
            &[],
            "http://127.0.0.1:9999",
            Some("127.0.0.1:8080")
        ));
        assert!(origin_allowed(
            &[],
            "https://edge.example.com:8443",
            Some("edge.example.com")
        ));
        assert!(origin_allowed(&[], "http://[::1]:8080", Some("[::1]:8080")));
        assert!(!origin_allowed(&[], "null", Some("edge.example.com")));
    }
}
