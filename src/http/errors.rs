//! How each service's errors answer an HTTP client: the category (status) and the stable
//! `code` of the problem+json body. Services know nothing of HTTP; this is the one place
//! their failures meet it.

use serde_json::json;

use super::{ApiError, ErrorKind};
use crate::auth::AuthError;
use crate::moderation::ModerationError;
use crate::sessions::SessionError;
use crate::store::StoreError;
use crate::streams::StreamError;

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        metrics::counter!("streamedge_auth_failures_total", "code" => e.code()).increment(1);
        match e {
            AuthError::KeysUnavailable => {
                ApiError::new(ErrorKind::Unavailable, e.code(), e.to_string()).with_retry_after(5)
            }
            _ => ApiError::new(ErrorKind::Unauthorized, e.code(), e.to_string()),
        }
    }
}

impl From<StreamError> for ApiError {
    fn from(e: StreamError) -> Self {
        match e {
            StreamError::NotFound => {
                ApiError::new(ErrorKind::NotFound, "stream_not_found", e.to_string())
            }
            StreamError::InvalidTitle(t) => {
                ApiError::new(ErrorKind::Invalid, "invalid_title", t.to_string())
            }
            StreamError::IdTaken => {
                ApiError::new(ErrorKind::Conflict, "stream_id_taken", e.to_string())
            }
            StreamError::InvalidCursor => {
                ApiError::new(ErrorKind::Invalid, "invalid_cursor", e.to_string())
            }
            StreamError::Store(s) => s.into(),
            StreamError::Corrupt(_) => ApiError::internal(e),
        }
    }
}

impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::Stream(s) => s.into(),
            SessionError::NotOwner => {
                ApiError::new(ErrorKind::Forbidden, "not_owner", e.to_string())
            }
            SessionError::NotAllowed(n) => {
                ApiError::new(ErrorKind::Conflict, "invalid_transition", n.to_string())
                    .with_extra("state", json!(n.state))
            }
            SessionError::Contended => {
                ApiError::new(ErrorKind::Unavailable, "contended", e.to_string())
                    .with_retry_after(1)
            }
            SessionError::SessionNotFound => {
                ApiError::new(ErrorKind::NotFound, "session_not_found", e.to_string())
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => ApiError::unavailable(e),
            StoreError::Backend(_) => ApiError::internal(e),
        }
    }
}

impl From<ModerationError> for ApiError {
    fn from(e: ModerationError) -> Self {
        match e {
            ModerationError::Stream(s) => s.into(),
            ModerationError::NotOwner(_) => {
                ApiError::new(ErrorKind::Forbidden, "not_owner", e.to_string())
            }
            ModerationError::Banned => ApiError::new(ErrorKind::Forbidden, "banned", e.to_string()),
            ModerationError::InvalidUserId(_) => {
                ApiError::new(ErrorKind::Invalid, "invalid_user_id", e.to_string())
            }
            ModerationError::InvalidSetting(_) => {
                ApiError::new(ErrorKind::Invalid, "invalid_body", e.to_string())
            }
            ModerationError::MessageNotFound => {
                ApiError::new(ErrorKind::NotFound, "message_not_found", e.to_string())
            }
            ModerationError::BanNotFound => {
                ApiError::new(ErrorKind::NotFound, "ban_not_found", e.to_string())
            }
            ModerationError::Ended => {
                ApiError::new(ErrorKind::Conflict, "stream_ended", e.to_string())
            }
        }
    }
}
