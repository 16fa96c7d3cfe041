//! A WHEP viewer's simulcast layer while it watches: `GET` and `POST
//! /v1/streams/{stream_id}/whep/{resource}/layer` (its cap, `max_layer`, and the layer it
//! receives). Only the session's creator; forwarded to the session's node like `DELETE`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};

use super::media::{caller, forwarded, media_enabled, parse_cap};
use crate::http::extract::parse_stream_id;
use crate::http::AppState;
use crate::http::{ApiError, ErrorKind};
use crate::media::{Cap, CurrentLayer, LayerControl, MediaError, ResourceKind};

/// A WHEP viewer's layer: its cap and what it receives.
#[derive(serde::Serialize)]
struct LayerState {
    max_layer: String,
    #[serde(flatten)]
    current: Option<CurrentLayer>,
}

/// The body of `POST …/whep/{resource}/layer`: `null` lifts the cap.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SetLayer {
    max_layer: Option<String>,
}

/// The caller's own WHEP session on this node, or the answer of the node that holds it.
enum Session {
    Here(LayerControlRef),
    Elsewhere(Response),
}

type LayerControlRef = std::sync::Arc<LayerControl>;

async fn own_view(
    app: &AppState,
    stream_id: &str,
    resource: &str,
    method: reqwest::Method,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: Option<Bytes>,
) -> Result<Session, ApiError> {
    let media = media_enabled(app)?;
    let id = parse_stream_id(stream_id)?;
    if media.resource(resource).is_none() {
        if let Some(home) = media.home_elsewhere(resource).await {
            let auth = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            let answer = media
                .forward_request(&home, method, uri.path(), auth, body)
                .await?;
            return Ok(Session::Elsewhere(forwarded(answer)));
        }
    }
    let user = caller(app, headers, &id).await?;
    let r = media
        .resource(resource)
        .filter(|r| r.stream == id && r.kind == ResourceKind::View)
        .ok_or(MediaError::NoSuchResource)?;
    if r.user != user {
        return Err(ApiError::new(
            ErrorKind::Forbidden,
            "not_owner",
            "only the session's creator can change its layer",
        ));
    }
    Ok(Session::Here(r.layer.ok_or(MediaError::NoSuchResource)?))
}

fn layer_state(c: &LayerControl) -> Response {
    axum::Json(LayerState {
        max_layer: c.cap().as_str().to_string(),
        current: c.current(),
    })
    .into_response()
}

/// `GET /v1/streams/{stream_id}/whep/{resource}/layer`: the viewer's cap and the layer it
/// receives (the session's creator).
pub async fn get_layer(
    State(app): State<AppState>,
    Path((stream_id, resource)): Path<(String, String)>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    match own_view(
        &app,
        &stream_id,
        &resource,
        reqwest::Method::GET,
        &uri,
        &headers,
        None,
    )
    .await?
    {
        Session::Elsewhere(r) => Ok(r),
        Session::Here(c) => Ok(layer_state(&c)),
    }
}

/// `POST /v1/streams/{stream_id}/whep/{resource}/layer` with `{"max_layer": "low"}`:
/// changes the viewer's cap while it watches (the session's creator); the switch happens
/// on the new layer's next keyframe.
pub async fn set_layer(
    State(app): State<AppState>,
    Path((stream_id, resource)): Path<(String, String)>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| {
            c.trim()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    if !is_json {
        return Err(ApiError::new(
            ErrorKind::UnsupportedMediaType,
            "unsupported_media_type",
            "the body must be application/json",
        ));
    }
    // The detail names no field of the body: it may hold anything.
    let set: SetLayer = serde_json::from_slice(&body).map_err(|_| {
        ApiError::new(
            ErrorKind::Invalid,
            "invalid_body",
            "expected {\"max_layer\": \"low|mid|high|<rid>\" or null} and nothing else",
        )
    })?;
    let cap = match set.max_layer.as_deref() {
        None | Some("none") => Cap::None,
        Some(v) => parse_cap(v)?,
    };
    match own_view(
        &app,
        &stream_id,
        &resource,
        reqwest::Method::POST,
        &uri,
        &headers,
        Some(body),
    )
    .await?
    {
        Session::Elsewhere(r) => Ok(r),
        Session::Here(c) => {
            c.set_cap(cap);
            Ok(layer_state(&c))
        }
    }
}
