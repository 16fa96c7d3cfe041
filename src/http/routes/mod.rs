//! The API's handlers, one file per capability, and the route table that mounts them.

pub mod chat;
pub mod console;
pub mod dev;
pub mod export;
pub mod media;
pub mod media_layer;
pub mod moderation;
pub mod rtc;
pub mod sessions;
pub mod streams;
pub mod viewers;
pub mod ws;

use axum::routing::{get, post};
use axum::Router;

use super::AppState;

/// Largest request body the API accepts.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// The public API router.
pub fn router(app: AppState) -> Router {
    let mut rest = Router::new()
        .route("/v1/streams", get(streams::list).post(streams::create))
        .route("/v1/streams/{stream_id}", get(streams::get))
        .route("/v1/streams/{stream_id}/rtc-token", post(rtc::issue))
        .route(
            "/v1/streams/{stream_id}/session/{action}",
            post(sessions::command),
        )
        .route(
            "/v1/streams/{stream_id}/sessions/{session_id}/export",
            get(export::export),
        )
        .route(
            "/v1/streams/{stream_id}/sessions/{session_id}",
            get(sessions::summary),
        )
        .route("/v1/streams/{stream_id}/viewers", get(viewers::list))
        .route("/v1/streams/{stream_id}/messages", get(chat::history))
        .route(
            "/v1/streams/{stream_id}/messages/{seq}",
            axum::routing::delete(moderation::delete_message),
        )
        .route(
            "/v1/streams/{stream_id}/bans/{user_id}",
            axum::routing::put(moderation::ban).delete(moderation::unban),
        )
        .route(
            "/v1/streams/{stream_id}/chat-settings",
            axum::routing::put(moderation::settings),
        );
    if app.config.auth.dev_login {
        rest = rest.route("/v1/dev/login", post(dev::login));
    }
    if app.config.console.enabled {
        rest = rest.merge(console::router());
    }
    // CORS for the REST routes only: WHIP/WHEP allow any origin (their own layer), and
    // the WebSocket checks `Origin` itself.
    // (405 is set before the layer so that preflights of every method reach it.)
    let r = rest
        .method_not_allowed_fallback(super::problem::method_not_allowed)
        .layer(super::cors::layer(&app.config.server.cors_origins))
        .merge(media::router())
        .route(
            "/v1/streams/{stream_id}/ws",
            get(ws::stream_ws).layer(axum::middleware::from_fn_with_state(
                app.clone(),
                super::cors::check_ws_origin,
            )),
        )
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(
            super::middleware::buffer_chunked_body,
        ))
        .layer(axum::middleware::from_fn_with_state(
            app.config.server.max_request_head_bytes,
            super::middleware::limit_head,
        ))
        .fallback(super::problem::not_found)
        .method_not_allowed_fallback(super::problem::method_not_allowed)
        .with_state(app);
    super::middleware::wrap(r, "api")
}
