//! `POST /v1/streams/{stream_id}/session/{start|pause|resume|end|heartbeat}` (the seller)
//! and `GET /v1/streams/{stream_id}/sessions/{session_id}`.

use axum::extract::State;
use axum::Json;
use serde::Serialize;

use super::streams::StreamView;
use crate::domain::session::{Command, Transition};
use crate::domain::SessionSummary;
use crate::http::extract::{parse_stream_id, ApiPath};
use crate::http::AppState;
use crate::http::Authenticated;
use crate::http::{ApiError, ErrorKind};

#[derive(Serialize)]
pub struct CommandResult {
    pub stream: StreamView,
    /// The transition this call made; absent when it changed nothing (an idempotent
    /// repeat, or a heartbeat).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transition: Option<Transition>,
}

pub async fn command(
    State(app): State<AppState>,
    ApiPath((stream_id, action)): ApiPath<(String, String)>,
    Authenticated(who): Authenticated,
) -> Result<Json<CommandResult>, ApiError> {
    let id = parse_stream_id(&stream_id)?;
    let cmd = Command::parse(&action).ok_or_else(|| {
        ApiError::new(
            ErrorKind::NotFound,
            "not_found",
            "session actions are start, pause, resume, end and heartbeat",
        )
    })?;
    let (stream, transition) = app.sessions.command(&id, &who.user_id, cmd).await?;
    Ok(Json(CommandResult {
        stream: StreamView::from(&stream),
        transition,
    }))
}

pub async fn summary(
    State(app): State<AppState>,
    ApiPath((stream_id, session_id)): ApiPath<(String, String)>,
    Authenticated(_who): Authenticated,
) -> Result<Json<SessionSummary>, ApiError> {
    let id = parse_stream_id(&stream_id)?;
    let sid = uuid::Uuid::parse_str(&session_id).map_err(|_| {
        ApiError::new(
            ErrorKind::Invalid,
            "invalid_session_id",
            "session id must be a UUID",
        )
    })?;
    Ok(Json(app.sessions.summary(&id, &sid).await?))
}
