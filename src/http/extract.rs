//! Request extractors whose rejections are problem+json: path parameters, JSON bodies and
//! query strings.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::{ApiError, AppState, ErrorKind};
use crate::auth::extract::{bearer, protocol_token, query_token};
use crate::auth::{AuthError, Principal};

/// Parses a `{stream_id}` path segment.
pub fn parse_stream_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| {
        ApiError::new(
            ErrorKind::Invalid,
            "invalid_stream_id",
            "stream id must be a UUID",
        )
    })
}

/// The `{stream_id}` of a route whose only path parameter it is, refused with
/// `invalid_stream_id` when it is not a UUID.
pub struct StreamId(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for StreamId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let ApiPath(raw) = ApiPath::<String>::from_request_parts(parts, state).await?;
        parse_stream_id(&raw).map(Self)
    }
}

/// Path parameters (as strings: handlers parse them with their own codes). A segment
/// whose percent-encoding does not decode to UTF-8 is refused as the parameter it stands
/// for would be (`invalid_stream_id`, `invalid_user_id`, …), as problem+json like every
/// other refusal.
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Self(v)),
            Err(e) => Err(path_rejection(&e)),
        }
    }
}

fn path_rejection(e: &PathRejection) -> ApiError {
    use axum::extract::path::ErrorKind as Path;
    let key = match e {
        PathRejection::FailedToDeserializePathParams(e) => match e.kind() {
            Path::InvalidUtf8InPathParam { key }
            | Path::ParseErrorAtKey { key, .. }
            | Path::DeserializeError { key, .. } => key.as_str(),
            _ => "",
        },
        _ => "",
    };
    match key {
        "stream_id" => ApiError::new(
            ErrorKind::Invalid,
            "invalid_stream_id",
            "stream id must be a UUID",
        ),
        "session_id" => ApiError::new(
            ErrorKind::Invalid,
            "invalid_session_id",
            "session id must be a UUID",
        ),
        "user_id" => ApiError::new(
            ErrorKind::Invalid,
            "invalid_user_id",
            "user id must be UTF-8 text (docs/api.md, \"Text rules\")",
        ),
        "seq" => ApiError::new(
            ErrorKind::Invalid,
            "invalid_seq",
            "seq must be a positive integer",
        ),
        "resource" => ApiError::new(
            ErrorKind::NotFound,
            "media_session_not_found",
            "no such media session",
        ),
        _ => ApiError::not_found("no such endpoint"),
    }
}

/// The client's IP address: the TCP peer, or behind `server.trusted_proxies` the address
/// they forwarded (see [`super::client_ip`]).
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub std::net::IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip())
            .ok_or_else(|| ApiError::internal("the listener records no peer address"))?;
        Ok(Self(super::client_ip::client_ip(
            peer,
            &parts.headers,
            &state.trusted_proxies,
        )))
    }
}

/// The verified caller of an HTTP endpoint (`Authorization: Bearer` only).
#[derive(Debug, Clone)]
pub struct Authenticated(pub Principal);

/// The verified caller of a WebSocket upgrade (header, `access_token` query parameter or
/// subprotocol entry).
#[derive(Debug, Clone)]
pub struct WsAuthenticated(pub Principal);

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers)?.ok_or(AuthError::Missing)?;
        Ok(Self(state.auth.verify(token).await?))
    }
}

impl FromRequestParts<AppState> for WsAuthenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = match bearer(&parts.headers)? {
            Some(t) => t,
            None => query_token(parts.uri.query())
                .or_else(|| protocol_token(&parts.headers))
                .ok_or(AuthError::Missing)?,
        };
        Ok(Self(state.auth.verify(token).await?))
    }
}

/// A JSON body (`Content-Type: application/json`), refused with a stable code.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::new(
                ErrorKind::UnsupportedMediaType,
                "unsupported_media_type",
                "send the body as application/json",
            )),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::new(
                ErrorKind::PayloadTooLarge,
                "payload_too_large",
                "the request body is too large",
            )),
            Err(JsonRejection::JsonDataError(e)) => Err(ApiError::new(
                ErrorKind::Invalid,
                "invalid_body",
                truncate(&e.body_text()),
            )),
            Err(e) => Err(ApiError::new(
                ErrorKind::Invalid,
                "invalid_json",
                truncate(&e.body_text()),
            )),
        }
    }
}

/// A query string, refused with a stable code.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Self(v)),
            Err(e @ QueryRejection::FailedToDeserializeQueryString(_)) => Err(ApiError::new(
                ErrorKind::Invalid,
                "invalid_query",
                truncate(&e.body_text()),
            )),
            Err(e) => Err(ApiError::new(
                ErrorKind::Invalid,
                "invalid_query",
                truncate(&e.body_text()),
            )),
        }
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(200).collect()
}
