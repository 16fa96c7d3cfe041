//! `POST /v1/streams/{stream_id}/rtc-token`.

use axum::extract::State;
use axum::Json;

use crate::http::extract::{parse_stream_id, ApiPath};
use crate::http::rate_limit::{self, Route};
use crate::http::AppState;
use crate::http::{ApiError, ErrorKind};
use crate::http::{Authenticated, ClientIp};
use crate::moderation::require_not_ended;
use crate::rtc::service::{random_salt, IssuedToken};

pub async fn issue(
    State(app): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiPath(stream_id): ApiPath<String>,
    Authenticated(who): Authenticated,
) -> Result<Json<IssuedToken>, ApiError> {
    let id = parse_stream_id(&stream_id)?;
    rate_limit::check(&app, Route::RtcToken, Some(&who.user_id), ip).await?;
    let Some(issuer) = app.rtc.as_ref() else {
        return Err(ApiError::new(
            ErrorKind::Unavailable,
            "rtc_not_configured",
            "this node has no Agora credentials configured",
        ));
    };
    let stream = app.streams.get(&id).await?;
    require_not_ended(&stream)?;
    app.moderation
        .check_not_banned(&stream, &who.user_id)
        .await?;
    let now = jsonwebtoken::get_current_timestamp() as u32;
    let issued = issuer
        .issue(&stream, &who.user_id, now, random_salt())
        .map_err(ApiError::internal)?;
    metrics::counter!("streamedge_rtc_tokens_issued_total", "role" => issued.role).increment(1);
    Ok(Json(issued))
}
