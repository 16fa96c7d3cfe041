//! `GET /v1/streams/{stream_id}/messages?before_seq=&limit=`: chat history, newest first.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::http::extract::{parse_stream_id, ApiPath};
use crate::http::AppState;
use crate::http::Authenticated;
use crate::http::{ApiError, ApiQuery, ErrorKind};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// Messages with a smaller `seq` (default: the newest).
    pub before_seq: Option<u64>,
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize)]
pub struct HistoryPage {
    /// Newest first; each is the `message` frame's content.
    pub messages: Vec<serde_json::Value>,
    /// Pass as `before_seq` for the previous page; absent at the start of history.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_before_seq: Option<u64>,
}

pub const MAX_PAGE: usize = 200;

pub async fn history(
    State(app): State<AppState>,
    ApiPath(stream_id): ApiPath<String>,
    Authenticated(_who): Authenticated,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> Result<Json<HistoryPage>, ApiError> {
    let id = parse_stream_id(&stream_id)?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::new(
            ErrorKind::Invalid,
            "invalid_query",
            format!("limit must be between 1 and {MAX_PAGE}"),
        ));
    }
    app.streams.get(&id).await?;
    let before = q.before_seq.unwrap_or(u64::MAX);
    let entries = app.chat.before(&id, before, limit).await?;
    let next_before_seq = (entries.len() == limit)
        .then(|| entries.last().map(|e| e.seq))
        .flatten()
        .filter(|s| *s > 1);
    let messages = entries
        .iter()
        .filter_map(|e| crate::protocol::server::message(e.seq, &e.payload))
        .filter_map(|f| serde_json::from_str::<serde_json::Value>(&f).ok())
        .map(|mut v| {
            if let Some(o) = v.as_object_mut() {
                o.remove("type");
                o.remove("client_msg_id");
            }
            v
        })
        .collect();
    Ok(Json(HistoryPage {
        messages,
        next_before_seq,
    }))
}
