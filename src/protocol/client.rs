//! What a client sends on the stream WebSocket, parsed by a pure function. Every malformed
//! frame maps to a [`FrameError`] with a stable code that the connection answers with an
//! `error` frame (the connection stays up).

use serde::Deserialize;

use super::server::ServerFrame;

/// A frame from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    Ping {
        reference: Option<String>,
    },
    /// A chat message.
    Send {
        client_msg_id: String,
        body: String,
    },
    /// Deliver every message after `since_seq`, then the live feed.
    Resume {
        since_seq: u64,
        reference: Option<String>,
    },
}

/// Why a client frame was refused; `code` is stable and documented.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct FrameError {
    pub code: &'static str,
    pub message: String,
    /// The client's `ref`, when the frame had a readable one.
    pub reference: Option<String>,
}

impl FrameError {
    fn new(code: &'static str, message: impl Into<String>, reference: Option<String>) -> Self {
        Self {
            code,
            message: message.into(),
            reference,
        }
    }

    pub fn binary() -> Self {
        Self::new(
            "binary_not_supported",
            "binary frames are not part of streamedge.v1; send JSON text frames",
            None,
        )
    }
}

/// Most characters of a client `ref` echoed back.
const MAX_REF_LEN: usize = 64;

#[derive(Deserialize)]
struct SendFields {
    client_msg_id: Option<serde_json::Value>,
    body: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct ResumeFields {
    since_seq: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: Option<serde_json::Value>,
    #[serde(rename = "ref")]
    reference: Option<serde_json::Value>,
}

/// Parses one client text frame.
pub fn parse_client(text: &str) -> Result<ClientFrame, FrameError> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| FrameError::new("invalid_json", format!("frame is not JSON: {e}"), None))?;
    if !value.is_object() {
        return Err(FrameError::new(
            "invalid_frame",
            "frame must be a JSON object",
            None,
        ));
    }
    let env: Envelope = serde_json::from_value(value.clone())
        .map_err(|e| FrameError::new("invalid_frame", e.to_string(), None))?;
    let reference = match env.reference {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) if s.chars().count() <= MAX_REF_LEN => Some(s),
        Some(_) => {
            return Err(FrameError::new(
                "invalid_field",
                format!("`ref` must be a string of at most {MAX_REF_LEN} characters"),
                None,
            ))
        }
    };
    let kind = match env.kind {
        Some(serde_json::Value::String(s)) => s,
        None | Some(serde_json::Value::Null) => {
            return Err(FrameError::new(
                "missing_field",
                "frame has no `type`",
                reference,
            ))
        }
        Some(_) => {
            return Err(FrameError::new(
                "invalid_field",
                "`type` must be a string",
                reference,
            ))
        }
    };
    match kind.as_str() {
        "ping" => Ok(ClientFrame::Ping { reference }),
        "send" => {
            let f: SendFields = serde_json::from_value(value)
                .map_err(|e| FrameError::new("invalid_frame", e.to_string(), reference.clone()))?;
            let client_msg_id = match f.client_msg_id {
                Some(serde_json::Value::String(s)) => s,
                None | Some(serde_json::Value::Null) => {
                    return Err(FrameError::new(
                        "missing_field",
                        "send needs `client_msg_id`",
                        reference,
                    ))
                }
                Some(_) => {
                    return Err(FrameError::new(
                        "invalid_field",
                        "`client_msg_id` must be a string",
                        reference,
                    ))
                }
            };
            let body = match f.body {
                Some(serde_json::Value::String(s)) => s,
                None | Some(serde_json::Value::Null) => {
                    return Err(FrameError::new(
                        "missing_field",
                        "send needs `body`",
                        Some(client_msg_id),
                    ))
                }
                Some(_) => {
                    return Err(FrameError::new(
                        "invalid_field",
                        "`body` must be a string",
                        Some(client_msg_id),
                    ))
                }
            };
            Ok(ClientFrame::Send {
                client_msg_id,
                body,
            })
        }
        "resume" => {
            let f: ResumeFields = serde_json::from_value(value)
                .map_err(|e| FrameError::new("invalid_frame", e.to_string(), reference.clone()))?;
            match f.since_seq {
                Some(serde_json::Value::Number(n)) if n.as_u64().is_some() => {
                    Ok(ClientFrame::Resume {
                        since_seq: n.as_u64().unwrap_or(0),
                        reference,
                    })
                }
                None | Some(serde_json::Value::Null) => Err(FrameError::new(
                    "missing_field",
                    "resume needs `since_seq`",
                    reference,
                )),
                Some(_) => Err(FrameError::new(
                    "invalid_field",
                    "`since_seq` must be a non-negative integer",
                    reference,
                )),
            }
        }
        other => Err(FrameError::new(
            "unknown_type",
            format!("unknown frame type `{}`", truncate(other, 32)),
            reference,
        )),
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

impl FrameError {
    pub fn to_frame(&self) -> ServerFrame<'_> {
        ServerFrame::Error {
            code: self.code,
            message: &self.message,
            reference: self.reference.as_deref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str) -> &'static str {
        parse_client(text).unwrap_err().code
    }

    #[test]
    fn parses_ping_with_and_without_ref() {
        assert_eq!(
            parse_client(r#"{"type":"ping"}"#).unwrap(),
            ClientFrame::Ping { reference: None }
        );
        assert_eq!(
            parse_client(r#"{"type":"ping","ref":"r1","extra":1}"#).unwrap(),
            ClientFrame::Ping {
                reference: Some("r1".into())
            }
        );
    }

    #[test]
    fn malformed_frames_have_stable_codes() {
        assert_eq!(code("not json"), "invalid_json");
        assert_eq!(code(""), "invalid_json");
        assert_eq!(code("[1,2]"), "invalid_frame");
        assert_eq!(code("\"ping\""), "invalid_frame");
        assert_eq!(code("{}"), "missing_field");
        assert_eq!(code(r#"{"type":7}"#), "invalid_field");
        assert_eq!(code(r#"{"type":"teleport"}"#), "unknown_type");
        assert_eq!(code(r#"{"type":"ping","ref":5}"#), "invalid_field");
        let long = format!(r#"{{"type":"ping","ref":"{}"}}"#, "x".repeat(65));
        assert_eq!(code(&long), "invalid_field");
    }

    #[test]
    fn errors_echo_the_ref() {
        let e = parse_client(r#"{"type":"nope","ref":"abc"}"#).unwrap_err();
        assert_eq!(e.reference.as_deref(), Some("abc"));
        let text = e.to_frame().encode();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["code"], "unknown_type");
        assert_eq!(v["ref"], "abc");
    }

    #[test]
    fn unknown_type_is_truncated_in_message() {
        let e = parse_client(&format!(r#"{{"type":"{}"}}"#, "é".repeat(100))).unwrap_err();
        assert!(e.message.chars().count() < 60);
    }
}
