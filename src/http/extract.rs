//! Request extractors whose rejections are problem+json: JSON bodies and query strings.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::{ApiError, ErrorKind};

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
