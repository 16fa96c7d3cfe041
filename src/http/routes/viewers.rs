//! `GET /v1/streams/{stream_id}/viewers` (the stream's seller).

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::http::extract::{parse_stream_id, ApiPath};
use crate::http::AppState;
use crate::http::Authenticated;
use crate::http::{ApiError, ApiQuery, ErrorKind};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub limit: Option<usize>,
    /// The last user id of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ViewerPage {
    pub viewers: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

pub const MAX_PAGE: usize = 500;

pub async fn list(
    State(app): State<AppState>,
    ApiPath(stream_id): ApiPath<String>,
    Authenticated(who): Authenticated,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<ViewerPage>, ApiError> {
    let id = parse_stream_id(&stream_id)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::new(
            ErrorKind::Invalid,
            "invalid_query",
            format!("limit must be between 1 and {MAX_PAGE}"),
        ));
    }
    app.moderation
        .owned(&id, &who.user_id, "list its viewers")
        .await?;
    let viewers = app.viewers.list(&id, q.cursor.as_deref(), limit).await?;
    let next_cursor = (viewers.len() == limit)
        .then(|| viewers.last().cloned())
        .flatten();
    Ok(Json(ViewerPage {
        viewers,
        next_cursor,
    }))
}
