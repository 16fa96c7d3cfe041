//! The seller's moderation endpoints: `DELETE /v1/streams/{stream_id}/messages/{seq}`,
//! `PUT|DELETE /v1/streams/{stream_id}/bans/{user_id}`,
//! `PUT /v1/streams/{stream_id}/chat-settings`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::http::extract::{parse_stream_id, ApiPath};
use crate::http::integer;
use crate::http::{ApiError, ApiJson, AppState, Authenticated, ErrorKind};

/// `DELETE /v1/streams/{stream_id}/messages/{seq}`
pub async fn delete_message(
    State(app): State<AppState>,
    ApiPath((stream_id, seq)): ApiPath<(String, String)>,
    Authenticated(who): Authenticated,
) -> Result<StatusCode, ApiError> {
    let id = parse_stream_id(&stream_id)?;
    let seq: u64 = seq.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
        ApiError::new(
            ErrorKind::Invalid,
            "invalid_seq",
            "seq must be a positive integer",
        )
    })?;
    app.moderation
        .delete_message(&id, &who.user_id, seq)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BanBody {
    /// A timeout of this many seconds; absent (or `null`) for a ban until lifted.
    #[serde(default, deserialize_with = "integer::option_u64")]
    pub duration_secs: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct BanView {
    pub user_id: String,
    /// Absent for a ban until lifted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in_secs: Option<u64>,
}

/// `PUT /v1/streams/{stream_id}/bans/{user_id}` with an optional `{"duration_secs": N}`.
pub async fn ban(
    State(app): State<AppState>,
    ApiPath((stream_id, user)): ApiPath<(String, String)>,
    Authenticated(who): Authenticated,
    body: axum::body::Bytes,
) -> Result<Json<BanView>, ApiError> {
    let body: BanBody = if body.iter().all(u8::is_ascii_whitespace) {
        BanBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            let code = if e.is_data() {
                "invalid_body"
            } else {
                "invalid_json"
            };
            ApiError::new(ErrorKind::Invalid, code, e.to_string())
        })?
    };
    let id = parse_stream_id(&stream_id)?;
    app.moderation
        .ban(&id, &who.user_id, &user, body.duration_secs)
        .await?;
    Ok(Json(BanView {
        user_id: user,
        expires_in_secs: body.duration_secs,
    }))
}

/// `DELETE /v1/streams/{stream_id}/bans/{user_id}`
pub async fn unban(
    State(app): State<AppState>,
    ApiPath((stream_id, user)): ApiPath<(String, String)>,
    Authenticated(who): Authenticated,
) -> Result<StatusCode, ApiError> {
    let id = parse_stream_id(&stream_id)?;
    app.moderation.unban(&id, &who.user_id, &user).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChatSettings {
    /// Minimum seconds between two messages of one user (0 = off).
    #[serde(deserialize_with = "integer::u64")]
    pub slow_mode_secs: u64,
}

/// `PUT /v1/streams/{stream_id}/chat-settings`
pub async fn settings(
    State(app): State<AppState>,
    ApiPath(stream_id): ApiPath<String>,
    Authenticated(who): Authenticated,
    ApiJson(body): ApiJson<ChatSettings>,
) -> Result<Json<ChatSettings>, ApiError> {
    let id = parse_stream_id(&stream_id)?;
    app.moderation
        .set_slow_mode(&id, &who.user_id, body.slow_mode_secs)
        .await?;
    Ok(Json(body))
}
