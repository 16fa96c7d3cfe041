//! Chat messages: validation of what a client sends and the stored/broadcast shapes (pure).

use serde::{Deserialize, Serialize};

/// Longest `client_msg_id`.
pub const MAX_CLIENT_MSG_ID: usize = 64;

/// Why a message is refused; `code` goes into the `error` frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Rejected {
    pub code: &'static str,
    pub message: String,
}

fn rejected(code: &'static str, message: impl Into<String>) -> Rejected {
    Rejected {
        code,
        message: message.into(),
    }
}

/// Checks a message body: the text rule of [`super::text`] (something visible, nothing
/// that hides or reorders text — line breaks included), and at most `max_chars`
/// characters after trimming.
pub fn validate_body(body: &str, max_chars: usize) -> Result<String, Rejected> {
    let t = body.trim();
    if super::text::check(t) == Err(super::text::TextError::Empty) {
        return Err(rejected(
            "empty_body",
            "message body has no visible character",
        ));
    }
    if t.chars().count() > max_chars {
        return Err(rejected(
            "body_too_long",
            format!("message body is longer than {max_chars} characters"),
        ));
    }
    if super::text::check(t).is_err() {
        return Err(rejected(
            "invalid_body",
            "message body contains line breaks, control, bidirectional or tag characters",
        ));
    }
    Ok(t.to_string())
}

/// A client's id for a message (for idempotent retries): 1–64 of `A-Z a-z 0-9 - _ . :`.
pub fn validate_client_msg_id(id: &str) -> Result<(), Rejected> {
    let ok = !id.is_empty()
        && id.len() <= MAX_CLIENT_MSG_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(rejected(
            "invalid_field",
            "client_msg_id must be 1–64 characters of A-Z a-z 0-9 - _ . :",
        ))
    }
}

/// A message as stored in the stream's log (its `seq` is the log's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    pub id: uuid::Uuid,
    pub user: String,
    pub body: String,
    /// RFC 3339.
    pub ts: String,
    pub client_msg_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies() {
        assert_eq!(validate_body("  hi  ", 500).unwrap(), "hi");
        assert_eq!(validate_body("   ", 500).unwrap_err().code, "empty_body");
        assert_eq!(
            validate_body(&"é".repeat(501), 500).unwrap_err().code,
            "body_too_long"
        );
        assert!(validate_body(&"é".repeat(500), 500).is_ok());
        assert_eq!(
            validate_body("a\u{0000}b", 500).unwrap_err().code,
            "invalid_body"
        );
        assert_eq!(validate_body("a\nb", 500).unwrap_err().code, "invalid_body");
        assert_eq!(
            validate_body("x\u{202e}y", 500).unwrap_err().code,
            "invalid_body"
        );
        assert!(validate_body("👟 50% off — today!", 500).is_ok());
    }

    #[test]
    fn client_ids() {
        assert!(validate_client_msg_id("a1-b_c.d:e").is_ok());
        assert!(validate_client_msg_id("").is_err());
        assert!(validate_client_msg_id(&"x".repeat(65)).is_err());
        assert!(validate_client_msg_id("has space").is_err());
    }
}
