//! The WebSocket upgrade (RFC 6455 §4.2), answered by the node itself rather than by
//! axum's extractor, so that the upgraded connection can be read through
//! [`crate::ws::guard::FrameGuard`] before the WebSocket codec sees it.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tungstenite::protocol::WebSocketConfig;

use crate::ws::guard::FrameGuard;

/// An upgraded connection as the connection driver reads and writes it, with the codec
/// settings to read it with.
pub struct WsSocket {
    pub io: FrameGuard<TokioIo<Upgraded>>,
    pub config: WebSocketConfig,
}

/// A valid WebSocket upgrade request.
pub struct WsUpgrade {
    key: HeaderValue,
    on_upgrade: OnUpgrade,
    protocol: Option<&'static str>,
}

/// Why a request is not a WebSocket upgrade.
#[derive(Debug)]
pub struct NotAnUpgrade(pub &'static str);

impl std::fmt::Display for NotAnUpgrade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl axum::response::IntoResponse for NotAnUpgrade {
    fn into_response(self) -> Response {
        super::ApiError::new(
            super::ErrorKind::UpgradeRequired,
            "websocket_required",
            format!("this endpoint only accepts WebSocket upgrades: {}", self.0),
        )
        .into_response()
    }
}

/// Whether a comma-separated header lists `token` (case-insensitive).
fn lists(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

impl<S: Send + Sync> FromRequestParts<S> for WsUpgrade {
    type Rejection = NotAnUpgrade;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, NotAnUpgrade> {
        if parts.method != Method::GET {
            return Err(NotAnUpgrade("the method must be GET"));
        }
        if !lists(&parts.headers, header::CONNECTION, "upgrade") {
            return Err(NotAnUpgrade("Connection must contain upgrade"));
        }
        if !lists(&parts.headers, header::UPGRADE, "websocket") {
            return Err(NotAnUpgrade("Upgrade must be websocket"));
        }
        if parts
            .headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_none_or(|v| v.as_bytes() != b"13")
        {
            return Err(NotAnUpgrade("Sec-WebSocket-Version must be 13"));
        }
        let key = parts
            .headers
            .get(header::SEC_WEBSOCKET_KEY)
            .cloned()
            .ok_or(NotAnUpgrade("Sec-WebSocket-Key is missing"))?;
        let on_upgrade = parts
            .extensions
            .remove::<OnUpgrade>()
            .ok_or(NotAnUpgrade("this connection cannot be upgraded"))?;
        let protocol = lists(
            &parts.headers,
            header::SEC_WEBSOCKET_PROTOCOL,
            crate::protocol::SUBPROTOCOL,
        )
        .then_some(crate::protocol::SUBPROTOCOL);
        Ok(Self {
            key,
            on_upgrade,
            protocol,
        })
    }
}

impl WsUpgrade {
    /// Answers `101 Switching Protocols` and, once the connection is upgraded, runs
    /// `serve` with the WebSocket (codec settings `config`, at most `max_fragments`
    /// frames per client message).
    pub fn on_upgrade<F, Fut>(
        self,
        config: WebSocketConfig,
        max_fragments: u32,
        serve: F,
    ) -> Response
    where
        F: FnOnce(WsSocket) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let accept = tungstenite::handshake::derive_accept_key(self.key.as_bytes());
        let on_upgrade = self.on_upgrade;
        // What an async block captures stays in its future for the task's whole life, even
        // after it is moved out: keep the (large) callback behind a pointer.
        let serve = Box::new(serve);
        let task = async move {
            let upgraded = match on_upgrade.await {
                Ok(u) => u,
                Err(e) => {
                    tracing::debug!(error = %e, "websocket upgrade failed");
                    return;
                }
            };
            let io = FrameGuard::new(TokioIo::new(upgraded), max_fragments);
            serve(WsSocket { io, config }).await;
        };
        tokio::spawn(task);
        let mut resp = Response::new(axum::body::Body::empty());
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = resp.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(
            header::SEC_WEBSOCKET_ACCEPT,
            HeaderValue::from_str(&accept).expect("base64 is a valid header value"),
        );
        if let Some(p) = self.protocol {
            h.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(p));
        }
        resp
    }
}
