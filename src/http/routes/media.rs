//! WHIP (`POST /v1/streams/{stream_id}/whip`) and WHEP (`POST /v1/streams/{stream_id}/whep`,
//! `?max_layer=` caps a viewer's simulcast layer) with their session resources (`DELETE`,
//! `PATCH` → 405: the answer carries every candidate, so no trickle is needed) and CORS
//! preflight; a WHEP viewer's layer (`…/whep/{resource}/layer`) is in `media_layer`.
//!
//! Both accept the node's media token (from the rtc-token endpoint, audience
//! `streamedge-media`, bound to the stream) or a Supabase access token as `Bearer`.
//! Publishing starts the session (or resumes it) and heartbeats it while the publisher's
//! connection is up; a dropped publish stops the heartbeats, so the sweeper pauses and then
//! ends the session as for any silent seller; `DELETE` pauses it at once.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use uuid::Uuid;
use webrtc::peer_connection::RTCPeerConnectionState;

use crate::auth::extract::bearer;
use crate::auth::AuthError;
use crate::domain::session::Command;
use crate::http::extract::{parse_stream_id, ApiPath};
use crate::http::AppState;
use crate::http::{ApiError, ErrorKind};
use crate::media::{Cap, MediaError, MediaService, ResourceKind};
use crate::moderation::{require_not_ended, require_owner};
use crate::rtc::service::{MediaClaims, MEDIA_AUDIENCE};
use crate::streams::StreamState;

/// The WHIP and WHEP routes: offers (with their body limit), session resources, and CORS
/// with `Accept-Post` on every response.
pub fn router() -> axum::Router<AppState> {
    use axum::routing::{delete as delete_route, post};
    let mut r = axum::Router::new();
    r = r.route(
        "/v1/streams/{stream_id}/whep/{resource}/layer",
        axum::routing::get(super::media_layer::get_layer)
            .post(super::media_layer::set_layer)
            .options(options)
            .layer(axum::extract::DefaultBodyLimit::max(4096)),
    );
    for (kind, offer) in [("whip", post(whip)), ("whep", post(whep))] {
        r = r
            .route(
                &format!("/v1/streams/{{stream_id}}/{kind}"),
                offer
                    .options(options)
                    .layer(axum::extract::DefaultBodyLimit::max(MAX_SDP_BYTES)),
            )
            .route(
                &format!("/v1/streams/{{stream_id}}/{kind}/{{resource}}"),
                delete_route(delete).patch(patch).options(options),
            );
    }
    r.layer(
        tower::ServiceBuilder::new()
            .layer(axum::middleware::from_fn(options_no_content))
            .layer(axum::middleware::map_response(accept_post))
            .layer(cors()),
    )
}

/// `OPTIONS` on the WHIP/WHEP endpoints answers `204 No Content`, as docs/api.md says and
/// WHIP clients expect; the CORS layer, which answers every `OPTIONS` itself (preflight or
/// not, before the route), says `200` with an empty body.
async fn options_no_content(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let options = req.method() == axum::http::Method::OPTIONS;
    let mut r = next.run(req).await;
    if options && r.status() == StatusCode::OK {
        *r.status_mut() = StatusCode::NO_CONTENT;
        r.headers_mut().remove(header::CONTENT_LENGTH);
    }
    r
}

/// Largest SDP offer accepted.
pub const MAX_SDP_BYTES: usize = 64 * 1024;

impl From<MediaError> for ApiError {
    fn from(e: MediaError) -> Self {
        let msg = e.to_string();
        match e {
            MediaError::BadOffer(_) => ApiError::new(ErrorKind::Invalid, "invalid_sdp", msg),
            MediaError::NoMedia => ApiError::new(ErrorKind::Invalid, "sdp_without_media", msg),
            MediaError::PublishersFull | MediaError::ViewersFull | MediaError::PortsFull => {
                ApiError::new(ErrorKind::Unavailable, "media_full", msg).with_retry_after(5)
            }
            MediaError::AlreadyPublishing => {
                ApiError::new(ErrorKind::Conflict, "already_publishing", msg)
            }
            MediaError::NotPublishing => ApiError::new(ErrorKind::NotFound, "not_publishing", msg),
            MediaError::NoSuchResource => {
                ApiError::new(ErrorKind::NotFound, "media_session_not_found", msg)
            }
            MediaError::WebRtc(_) => ApiError::internal(msg),
        }
    }
}

pub(super) fn media_enabled(app: &AppState) -> Result<&std::sync::Arc<MediaService>, ApiError> {
    app.media.as_ref().ok_or_else(|| {
        ApiError::new(
            ErrorKind::NotFound,
            "media_disabled",
            "this node does not carry media (media.enabled = false)",
        )
    })
}

/// The caller: a media token for this stream, or a Supabase access token.
pub(super) async fn caller(
    app: &AppState,
    headers: &HeaderMap,
    stream: &Uuid,
) -> Result<String, ApiError> {
    let token = bearer(headers)?.ok_or(AuthError::Missing)?;
    let key = app.config.media.node_key.expose();
    if !key.is_empty() {
        let mut v = Validation::new(Algorithm::HS256);
        v.set_audience(&[MEDIA_AUDIENCE]);
        v.leeway = app.config.auth.leeway.as_secs();
        if let Ok(t) = decode::<MediaClaims>(token, &DecodingKey::from_secret(key.as_bytes()), &v) {
            if t.claims.stream != stream.to_string() {
                return Err(ApiError::new(
                    ErrorKind::Forbidden,
                    "wrong_stream",
                    "the media token is for another stream",
                ));
            }
            return Ok(t.claims.sub);
        }
    }
    Ok(app.auth.verify(token).await?.user_id)
}

fn sdp_body(headers: &HeaderMap, body: &Bytes) -> Result<String, ApiError> {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ctype.trim().eq_ignore_ascii_case("application/sdp") {
        return Err(ApiError::new(
            ErrorKind::UnsupportedMediaType,
            "unsupported_media_type",
            "the offer must be application/sdp",
        ));
    }
    if body.len() > MAX_SDP_BYTES {
        return Err(ApiError::new(
            ErrorKind::PayloadTooLarge,
            "payload_too_large",
            format!("the offer is over {MAX_SDP_BYTES} bytes"),
        ));
    }
    String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::new(ErrorKind::Invalid, "invalid_sdp", "the offer is not UTF-8"))
}

fn created(app: &AppState, path: String, sdp: String) -> Response {
    let mut r = (StatusCode::CREATED, sdp).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/sdp"),
    );
    if let Ok(v) = HeaderValue::from_str(&path) {
        h.insert(header::LOCATION, v);
    }
    for url in &app.config.media.ice_servers {
        if let Ok(v) = HeaderValue::from_str(&format!("<{url}>; rel=\"ice-server\"")) {
            h.append(header::LINK, v);
        }
    }
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Location, Link"),
    );
    r
}

/// What WHIP and WHEP requests share: the node's media service, the stream, the caller and
/// the offer.
pub struct OfferRequest {
    media: std::sync::Arc<MediaService>,
    id: Uuid,
    user: String,
    offer: String,
    stream: crate::domain::stream::Stream,
}

impl axum::extract::FromRequest<AppState> for OfferRequest {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, app: &AppState) -> Result<Self, ApiError> {
        use axum::extract::FromRequestParts;
        let (mut parts, body) = req.into_parts();
        let ApiPath(stream_id) = ApiPath::<String>::from_request_parts(&mut parts, app).await?;
        let headers = parts.headers.clone();
        let req = axum::extract::Request::from_parts(parts, body);
        let body = Bytes::from_request(req, app).await.map_err(|e| {
            ApiError::new(
                ErrorKind::PayloadTooLarge,
                "payload_too_large",
                e.body_text(),
            )
        })?;
        let media = media_enabled(app)?.clone();
        let id = parse_stream_id(&stream_id)?;
        let user = caller(app, &headers, &id).await?;
        let offer = sdp_body(&headers, &body)?;
        let stream = app.streams.get(&id).await?;
        Ok(OfferRequest {
            media,
            id,
            user,
            offer,
            stream,
        })
    }
}

/// `POST /v1/streams/{stream_id}/whip` (the stream's seller).
pub async fn whip(State(app): State<AppState>, req: OfferRequest) -> Result<Response, ApiError> {
    require_owner(&req.stream, &req.user, "publish")?;
    require_not_ended(&req.stream)?;
    let OfferRequest {
        media,
        id,
        user,
        offer,
        stream,
        ..
    } = req;
    let (answer, publication, mut state) = media.publish(id, &user, &offer).await?;
    let every = (app.config.session.heartbeat_timeout / 3).max(Duration::from_millis(100));
    media.announce(&id, every * 3).await;
    // Publishing makes the session live.
    let cmd = match stream.state {
        StreamState::Idle => Some(Command::Start),
        StreamState::Paused => Some(Command::Resume),
        _ => None,
    };
    if let Some(cmd) = cmd {
        if let Err(e) = app.sessions.command(&id, &user, cmd).await {
            let _ = media.remove(&answer.resource.id).await;
            return Err(e.into());
        }
    }
    // Heartbeat while the publisher's connection is up; a failed connection ends the
    // publish (its viewers with it) and the heartbeats, so the sweeper pauses the session.
    let owner = user.clone();
    let ended = publication.ended.clone();
    let resource = answer.resource.id.clone();
    let app2 = app.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = ended.cancelled() => break,
                _ = tick.tick() => {
                    let s = *state.borrow();
                    match s {
                        RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => break,
                        RTCPeerConnectionState::Disconnected => {}
                        _ => {
                            let _ = app2.sessions.command(&id, &owner, Command::Heartbeat).await;
                            if let Some(m) = &app2.media {
                                m.announce(&id, every * 3).await;
                            }
                        }
                    }
                }
                r = state.changed() => if r.is_err() { break },
            }
        }
        if let Some(m) = &app2.media {
            if m.remove(&resource).await.is_ok() {
                tracing::info!(stream = %id, resource = %resource, "WHIP publish ended (connection lost)");
            }
        }
    });
    metrics::counter!("streamedge_media_sessions_total", "kind" => "whip").increment(1);
    tracing::info!(stream = %id, resource = %answer.resource.id, "WHIP publish started");
    Ok(created(
        &app,
        format!("/v1/streams/{id}/whip/{}", answer.resource.id),
        answer.sdp,
    ))
}

/// A `max_layer` value: `low`, `mid`, `high` or a publisher's rid.
pub(super) fn parse_cap(value: &str) -> Result<Cap, ApiError> {
    Cap::parse(value).ok_or_else(|| {
        ApiError::new(
            ErrorKind::Invalid,
            "invalid_max_layer",
            "max_layer must be low, mid, high or a simulcast rid (letters, digits, - and _)",
        )
    })
}

/// `POST /v1/streams/{stream_id}/whep[?max_layer=low|mid|high|<rid>]` (any signed-in
/// viewer).
pub async fn whep(
    State(app): State<AppState>,
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>,
    req: OfferRequest,
) -> Result<Response, ApiError> {
    let cap = match query.get("max_layer") {
        Some(v) => parse_cap(v)?,
        None => Cap::None,
    };
    app.moderation
        .check_not_banned(&req.stream, &req.user)
        .await?;
    let (answer, _state) = req.media.view(req.id, &req.user, &req.offer, cap).await?;
    let id = req.id;
    metrics::counter!("streamedge_media_sessions_total", "kind" => "whep").increment(1);
    Ok(created(
        &app,
        format!("/v1/streams/{id}/whep/{}", answer.resource.id),
        answer.sdp,
    ))
}

/// `DELETE /v1/streams/{stream_id}/whip/{resource}` and `.../whep/{resource}`: only the
/// user who created the session.
///
/// A session lives on the node that created it; behind a load balancer the `DELETE` may
/// land on another node, which forwards it (path and `Authorization`) to the session's
/// node — recorded in the shared state — and answers with that node's answer.
pub async fn delete(
    State(app): State<AppState>,
    ApiPath((stream_id, resource)): ApiPath<(String, String)>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let media = media_enabled(&app)?;
    let id = parse_stream_id(&stream_id)?;
    if media.resource(&resource).is_none() {
        if let Some(home) = media.home_elsewhere(&resource).await {
            let auth = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            let answer = media.forward_delete(&home, uri.path(), auth).await?;
            return Ok(forwarded(answer));
        }
    }
    let user = caller(&app, &headers, &id).await?;
    let r = media
        .resource(&resource)
        .filter(|r| r.stream == id)
        .ok_or(MediaError::NoSuchResource)?;
    if r.user != user {
        return Err(ApiError::new(
            ErrorKind::Forbidden,
            "not_owner",
            "only the session's creator can end it",
        ));
    }
    let r = media.remove(&resource).await?;
    if let ResourceKind::Publish = r.kind {
        // The seller stopped publishing: the session pauses at once.
        let _ = app.sessions.command(&id, &user, Command::Pause).await;
    }
    Ok(StatusCode::OK.into_response())
}

/// `PATCH` on a session: trickle ICE and ICE restarts are not supported (the answer holds
/// every candidate), which RFC 9725 answers with 405.
pub async fn patch() -> Response {
    let mut r = ApiError::new(
        ErrorKind::MethodNotAllowed,
        "method_not_allowed",
        "trickle ICE and ICE restarts are not supported: the answer carries every candidate",
    )
    .into_response();
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("DELETE"));
    r
}

/// CORS for the WHIP/WHEP endpoints: browsers on any origin publish and play (the
/// access token, not the origin, is what authorises).
pub fn cors() -> tower_http::cors::CorsLayer {
    use axum::http::Method;
    tower_http::cors::CorsLayer::new()
        .allow_origin(tower_http::cors::Any)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::DELETE,
            Method::PATCH,
            Method::OPTIONS,
        ])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .expose_headers([header::LOCATION, header::LINK])
        .max_age(Duration::from_secs(600))
}

/// Every response of the WHIP/WHEP endpoints (CORS preflights included) says what they
/// accept.
pub async fn accept_post(mut r: Response) -> Response {
    r.headers_mut()
        .insert("accept-post", HeaderValue::from_static("application/sdp"));
    r
}

/// `OPTIONS` on the WHIP/WHEP endpoints: `Accept-Post` and CORS for any origin. (The CORS
/// layer in front answers `OPTIONS` first; this is what the route itself would say.)
pub async fn options() -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    let h = r.headers_mut();
    for (name, value) in [
        (
            header::HeaderName::from_static("accept-post"),
            "application/sdp",
        ),
        (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        (
            header::ACCESS_CONTROL_ALLOW_METHODS,
            "POST, DELETE, PATCH, OPTIONS",
        ),
        (
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            "Authorization, Content-Type",
        ),
        (header::ACCESS_CONTROL_EXPOSE_HEADERS, "Location, Link"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    r
}

/// The answer of the node that holds a media session, passed on as it came: its status,
/// content type and body.
pub(super) fn forwarded(
    (status, content_type, body): (u16, Option<String>, bytes::Bytes),
) -> Response {
    let mut r = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
        body,
    )
        .into_response();
    if let Some(ct) = content_type.and_then(|c| HeaderValue::from_str(&c).ok()) {
        r.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    r
}
