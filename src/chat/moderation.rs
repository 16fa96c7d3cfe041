//! Moderation by the stream's seller: deleting a message (gone from history and resumed
//! feeds, a `deleted` event everywhere), banning or timing out a user (checked on every
//! send, on every node), and slow mode (a minimum interval between one user's messages).

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::service::log_name;
use crate::app::AppState;
use crate::auth::Authenticated;
use crate::http::{ApiError, ApiJson, ErrorKind};
use crate::persist::records::{self, ModerationRecord};
use crate::rtc::routes::ban_key;
use crate::streams::routes::parse_stream_id;
use crate::streams::service::events_channel;

/// Longest timeout; longer means a permanent ban.
pub const MAX_TIMEOUT_SECS: u64 = 30 * 24 * 3600;
/// Longest slow-mode interval.
pub const MAX_SLOW_MODE_SECS: u64 = 3600;

pub fn slow_mode_key(stream: &Uuid) -> String {
    format!("stream:{stream}:slow_mode")
}

pub fn slow_mode_user_key(stream: &Uuid, user: &str) -> String {
    format!("stream:{stream}:slow:{user}")
}

/// Adds a moderation action to the outbox (persistence on).
async fn record(app: &AppState, rec: &ModerationRecord) -> Result<(), ApiError> {
    if let Some(p) = &app.persist {
        p.record(
            &records::tag(records::MODERATION, &rec.stream_id),
            &serde_json::to_vec(rec).expect("record serialises"),
        )
        .await?;
    }
    Ok(())
}

async fn owned(app: &AppState, raw: &str, user: &str) -> Result<Uuid, ApiError> {
    let id = parse_stream_id(raw)?;
    let stream = app.streams.get(&id).await?;
    if stream.owner_id != user {
        return Err(ApiError::new(
            ErrorKind::Forbidden,
            "not_owner",
            "only the stream's seller can moderate its chat",
        ));
    }
    Ok(id)
}

fn valid_user_id(user: &str) -> Result<(), ApiError> {
    if user.is_empty() || user.len() > 128 || user.chars().any(char::is_control) {
        return Err(ApiError::new(
            ErrorKind::Invalid,
            "invalid_user_id",
            "user id must be 1–128 characters without control characters",
        ));
    }
    Ok(())
}

/// `DELETE /v1/streams/{stream_id}/messages/{seq}`
pub async fn delete_message(
    State(app): State<AppState>,
    Path((stream_id, seq)): Path<(String, String)>,
    Authenticated(who): Authenticated,
) -> Result<StatusCode, ApiError> {
    let id = owned(&app, &stream_id, &who.user_id).await?;
    let seq: u64 = seq.parse().map_err(|_| {
        ApiError::new(
            ErrorKind::Invalid,
            "invalid_seq",
            "seq must be a positive integer",
        )
    })?;
    let log = log_name(&id);
    let message = app
        .store
        .log_after(&log, seq.saturating_sub(1), 1)
        .await?
        .into_iter()
        .find(|e| e.seq == seq)
        .and_then(|e| serde_json::from_slice(&e.payload).ok());
    let removed = app.store.log_remove(&log, seq).await?;
    // Older than the shared history: it may still be in the archive.
    let archived = match (&app.persist, removed) {
        (Some(p), false) => p
            .chat_range(&id, seq.saturating_sub(1), seq, 1)
            .await
            .map_err(|e| ApiError::from(crate::store::StoreError::Unavailable(e.to_string())))?
            .iter()
            .any(|m| !m.deleted),
        _ => false,
    };
    if !removed && !archived {
        return Err(ApiError::new(
            ErrorKind::NotFound,
            "message_not_found",
            "no such message in the stream's history",
        ));
    }
    let mut rec = ModerationRecord::new(id, &who.user_id, &who.user_id, "delete_message");
    rec.target_seq = Some(seq);
    rec.target_user_id = message
        .as_ref()
        .map(|m: &crate::chat::model::StoredMessage| m.user.clone());
    rec.message = message;
    record(&app, &rec).await?;
    let frame = json!({"type": "deleted", "stream": id, "seq": seq}).to_string();
    app.store
        .publish(&events_channel(&id), bytes::Bytes::from(frame))
        .await?;
    metrics::counter!("streamedge_chat_moderation_total", "action" => "delete").increment(1);
    tracing::info!(stream = %id, seq, by = %who.user_id, "message deleted");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BanBody {
    /// A timeout of this many seconds; absent for a ban until lifted.
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
    Path((stream_id, user)): Path<(String, String)>,
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
    let id = owned(&app, &stream_id, &who.user_id).await?;
    valid_user_id(&user)?;
    if user == who.user_id {
        return Err(ApiError::new(
            ErrorKind::Invalid,
            "invalid_user_id",
            "sellers cannot ban themselves",
        ));
    }
    let duration = body.duration_secs;
    if let Some(d) = duration {
        if !(1..=MAX_TIMEOUT_SECS).contains(&d) {
            return Err(ApiError::new(
                ErrorKind::Invalid,
                "invalid_body",
                format!("duration_secs must be between 1 and {MAX_TIMEOUT_SECS}"),
            ));
        }
    }
    app.store
        .set(
            &ban_key(&id, &user),
            b"1",
            duration.map(Duration::from_secs),
        )
        .await?;
    let mut rec = ModerationRecord::new(id, &who.user_id, &who.user_id, "ban");
    rec.target_user_id = Some(user.clone());
    rec.expires_at_ms = duration.map(|d| rec.created_at_ms + d * 1000);
    record(&app, &rec).await?;
    metrics::counter!("streamedge_chat_moderation_total", "action" => "ban").increment(1);
    tracing::info!(stream = %id, user, ?duration, by = %who.user_id, "user banned");
    Ok(Json(BanView {
        user_id: user,
        expires_in_secs: duration,
    }))
}

/// `DELETE /v1/streams/{stream_id}/bans/{user_id}`
pub async fn unban(
    State(app): State<AppState>,
    Path((stream_id, user)): Path<(String, String)>,
    Authenticated(who): Authenticated,
) -> Result<StatusCode, ApiError> {
    let id = owned(&app, &stream_id, &who.user_id).await?;
    valid_user_id(&user)?;
    if !app.store.delete(&ban_key(&id, &user)).await? {
        return Err(ApiError::new(
            ErrorKind::NotFound,
            "ban_not_found",
            "the user is not banned",
        ));
    }
    let mut rec = ModerationRecord::new(id, &who.user_id, &who.user_id, "unban");
    rec.target_user_id = Some(user.clone());
    record(&app, &rec).await?;
    metrics::counter!("streamedge_chat_moderation_total", "action" => "unban").increment(1);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChatSettings {
    /// Minimum seconds between two messages of one user (0 = off).
    pub slow_mode_secs: u64,
}

/// `PUT /v1/streams/{stream_id}/chat-settings`
pub async fn settings(
    State(app): State<AppState>,
    Path(stream_id): Path<String>,
    Authenticated(who): Authenticated,
    ApiJson(body): ApiJson<ChatSettings>,
) -> Result<Json<ChatSettings>, ApiError> {
    let id = owned(&app, &stream_id, &who.user_id).await?;
    if body.slow_mode_secs > MAX_SLOW_MODE_SECS {
        return Err(ApiError::new(
            ErrorKind::Invalid,
            "invalid_body",
            format!("slow_mode_secs must be at most {MAX_SLOW_MODE_SECS}"),
        ));
    }
    let mut rec = ModerationRecord::new(id, &who.user_id, &who.user_id, "slow_mode");
    rec.detail = serde_json::json!({"slow_mode_secs": body.slow_mode_secs});
    record(&app, &rec).await?;
    if body.slow_mode_secs == 0 {
        app.store.delete(&slow_mode_key(&id)).await?;
    } else {
        app.store
            .set(
                &slow_mode_key(&id),
                body.slow_mode_secs.to_string().as_bytes(),
                None,
            )
            .await?;
    }
    Ok(Json(body))
}
