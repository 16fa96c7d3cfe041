//! `POST /v1/streams`, `GET /v1/streams/{stream_id}`, `GET /v1/streams`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::clock::rfc3339;
use crate::domain::{Stream, StreamState};
use crate::http::extract::{parse_stream_id, ApiPath};
use crate::http::rate_limit::{self, Route};
use crate::http::AppState;
use crate::http::{ApiError, ApiJson, ApiQuery, ErrorKind};
use crate::http::{Authenticated, ClientIp};

/// A stream as the API shows it.
#[derive(Debug, Serialize)]
pub struct StreamView {
    pub id: Uuid,
    pub owner_id: String,
    pub title: String,
    pub state: StreamState,
    pub created_at: String,
    pub updated_at: String,
    /// Transitions so far.
    pub version: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionView>,
    /// Present on `GET /v1/streams/{id}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub viewers: Option<crate::domain::ViewerCounts>,
}

/// The current (or last) session of a stream.
#[derive(Debug, Serialize)]
pub struct SessionView {
    pub id: Uuid,
    pub started_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pause_reason: Option<crate::domain::session::Cause>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<crate::domain::session::Cause>,
    pub live_ms: u64,
    pub paused_ms: u64,
}

impl From<&Stream> for StreamView {
    fn from(s: &Stream) -> Self {
        let now = crate::domain::clock::now_ms();
        Self {
            id: s.id,
            owner_id: s.owner_id.clone(),
            title: s.title.clone(),
            state: s.state,
            created_at: rfc3339(s.created_at_ms),
            updated_at: rfc3339(s.updated_at_ms),
            version: s.version,
            session: s.session.as_ref().map(|x| {
                let (live_ms, paused_ms) = x.times(now);
                SessionView {
                    id: x.id,
                    started_at: rfc3339(x.started_at_ms),
                    paused_at: x.paused_at_ms.map(rfc3339),
                    pause_reason: x.pause_reason,
                    ended_at: x.ended_at_ms.map(rfc3339),
                    end_reason: x.end_reason,
                    live_ms,
                    paused_ms,
                }
            }),
            viewers: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateStream {
    pub title: String,
    /// Client-chosen id: repeating the request with it returns the same stream.
    pub id: Option<Uuid>,
}

pub async fn create(
    State(app): State<AppState>,
    ClientIp(ip): ClientIp,
    Authenticated(who): Authenticated,
    ApiJson(body): ApiJson<CreateStream>,
) -> Result<Response, ApiError> {
    if !who.is_seller() {
        return Err(ApiError::new(
            ErrorKind::Forbidden,
            "seller_required",
            "only sellers can create streams",
        ));
    }
    rate_limit::check(&app, Route::StreamsWrite, Some(&who.user_id), ip).await?;
    let (stream, created) = app
        .streams
        .create(&who.user_id, &body.title, body.id)
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let location = format!("/v1/streams/{}", stream.id);
    Ok((
        status,
        [(axum::http::header::LOCATION, location)],
        Json(StreamView::from(&stream)),
    )
        .into_response())
}

pub async fn get(
    State(app): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiPath(stream_id): ApiPath<String>,
    Authenticated(who): Authenticated,
) -> Result<Json<StreamView>, ApiError> {
    let id = parse_stream_id(&stream_id)?;
    rate_limit::check(&app, Route::StreamsRead, Some(&who.user_id), ip).await?;
    let stream = app.streams.get(&id).await?;
    let mut view = StreamView::from(&stream);
    view.viewers = Some(app.viewers.counts(&stream).await?);
    Ok(Json(view))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub state: Option<String>,
    pub limit: Option<usize>,
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ListPage {
    pub streams: Vec<StreamView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

pub async fn list(
    State(app): State<AppState>,
    ClientIp(ip): ClientIp,
    Authenticated(who): Authenticated,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<ListPage>, ApiError> {
    let state = match q.state.as_deref() {
        None | Some("") => None,
        Some(s) => Some(StreamState::parse(s).ok_or_else(|| {
            ApiError::new(
                ErrorKind::Invalid,
                "invalid_query",
                "state must be one of idle, live, paused, ended",
            )
        })?),
    };
    let limit = q.limit.unwrap_or(20);
    if !(1..=crate::streams::service::MAX_PAGE).contains(&limit) {
        return Err(ApiError::new(
            ErrorKind::Invalid,
            "invalid_query",
            format!(
                "limit must be between 1 and {}",
                crate::streams::service::MAX_PAGE
            ),
        ));
    }
    rate_limit::check(&app, Route::StreamsRead, Some(&who.user_id), ip).await?;
    let (streams, next_cursor) = app.streams.list(state, limit, q.cursor.as_deref()).await?;
    Ok(Json(ListPage {
        streams: streams.iter().map(StreamView::from).collect(),
        next_cursor,
    }))
}
