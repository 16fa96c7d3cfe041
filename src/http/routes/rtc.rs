//! `POST /v1/streams/{stream_id}/rtc-token`.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::HeaderMap;
use axum::Json;

use crate::http::extract::parse_stream_id;
use crate::http::rate_limit::{self, Route};
use crate::http::AppState;
use crate::http::Authenticated;
use crate::http::{ApiError, ErrorKind};
use crate::rtc::service::{random_salt, IssuedToken};
use crate::streams::StreamState;

pub async fn issue(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(stream_id): Path<String>,
    Authenticated(who): Authenticated,
) -> Result<Json<IssuedToken>, ApiError> {
    let id = parse_stream_id(&stream_id)?;
    rate_limit::check(&app, Route::RtcToken, Some(&who.user_id), peer, &headers).await?;
    let Some(issuer) = app.rtc.as_ref() else {
        return Err(ApiError::new(
            ErrorKind::Unavailable,
            "rtc_not_configured",
            "this node has no Agora credentials configured",
        ));
    };
    let stream = app.streams.get(&id).await?;
    if stream.state == StreamState::Ended {
        return Err(ApiError::new(
            ErrorKind::Conflict,
            "stream_ended",
            "the stream has ended",
        ));
    }
    if stream.owner_id != who.user_id
        && app
            .store
            .get(&crate::domain::keys::ban(&id, &who.user_id))
            .await?
            .is_some()
    {
        return Err(ApiError::new(
            ErrorKind::Forbidden,
            "banned",
            "you are banned from this stream",
        ));
    }
    let now = jsonwebtoken::get_current_timestamp() as u32;
    let issued = issuer
        .issue(&stream, &who.user_id, now, random_salt())
        .map_err(ApiError::internal)?;
    metrics::counter!("streamedge_rtc_tokens_issued_total", "role" => issued.role).increment(1);
    Ok(Json(issued))
}
