//! What the node sends on the stream WebSocket. Every frame is built here, serialised once
//! and handed as the same bytes to every connection that gets it.

use serde::Serialize;
use uuid::Uuid;

use crate::domain::session::{Cause, Transition};
use crate::domain::{StreamState, ViewerCounts};

/// A frame from the node.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame<'a> {
    Welcome {
        stream: Uuid,
        node: &'a str,
        conn_id: u64,
        protocol: &'a str,
        /// The stream's lifecycle state.
        state: &'a str,
        session_id: Option<Uuid>,
        /// The stream's transition counter (`state` events continue from it).
        version: u64,
        /// The last chat sequence number: live `message` frames continue after it.
        last_seq: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        viewers: Option<ViewerCounts>,
    },
    /// The stream's lifecycle state changed (`kind` names the transition), or — after the
    /// node may have missed events — the current state (`kind: "sync"`, without `from`,
    /// `cause` and `at`).
    State {
        stream: Uuid,
        session_id: Option<Uuid>,
        state: StreamState,
        #[serde(skip_serializing_if = "Option::is_none")]
        from: Option<StreamState>,
        kind: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        cause: Option<Cause>,
        #[serde(skip_serializing_if = "Option::is_none")]
        at: Option<String>,
        version: u64,
    },
    /// The stream's viewer counts changed.
    Viewers {
        stream: Uuid,
        #[serde(flatten)]
        counts: ViewerCounts,
    },
    /// The seller deleted message `seq`.
    Deleted { stream: Uuid, seq: u64 },
    Pong {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
    },
    /// A message was sequenced (or had been: a repeated `client_msg_id`).
    Ack { client_msg_id: &'a str, seq: u64 },
    /// A `resume` was served: messages after `since_seq` follow (from `from_seq` on when
    /// `recovered` is false because history no longer reaches back that far).
    Resumed {
        since_seq: u64,
        recovered: bool,
        last_seq: u64,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
    },
    Error {
        code: &'a str,
        message: &'a str,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
    },
}

impl ServerFrame<'_> {
    /// Serialises the frame once; the bytes can be handed to many connections.
    pub fn encode(&self) -> tungstenite::Utf8Bytes {
        serde_json::to_string(self)
            .expect("server frames always serialise")
            .into()
    }
}

impl<'a> ServerFrame<'a> {
    /// The `state` frame of a transition.
    pub fn transition(t: &'a Transition) -> Self {
        ServerFrame::State {
            stream: t.stream,
            session_id: Some(t.session_id),
            state: t.to,
            from: Some(t.from),
            kind: &t.kind,
            cause: Some(t.cause),
            at: Some(crate::domain::clock::rfc3339(t.at_ms)),
            version: t.version,
        }
    }
}

/// The `message` frame for a stored chat message: `{"type":"message","seq":N,` followed by
/// the stored JSON object's members (spliced, not re-serialised: built once per node for
/// every connection). `None` when the stored payload is not a JSON object.
pub fn message(seq: u64, stored: &[u8]) -> Option<String> {
    let body = std::str::from_utf8(stored).ok()?;
    let inner = body.strip_prefix('{')?;
    Some(format!(r#"{{"type":"message","seq":{seq},{inner}"#))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_frames() {
        let f = ServerFrame::Pong { reference: None }.encode();
        assert_eq!(f.as_str(), r#"{"type":"pong"}"#);
        let s = Uuid::nil();
        let v: serde_json::Value = serde_json::from_str(
            &ServerFrame::Viewers {
                stream: s,
                counts: ViewerCounts {
                    current: 3,
                    peak: 5,
                    unique: 9,
                },
            }
            .encode(),
        )
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type": "viewers", "stream": s, "current": 3, "peak": 5, "unique": 9})
        );
        let v: serde_json::Value =
            serde_json::from_str(&ServerFrame::Deleted { stream: s, seq: 7 }.encode()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type": "deleted", "stream": s, "seq": 7})
        );
    }

    #[test]
    fn state_frames_for_transitions_and_syncs() {
        let t = Transition {
            stream: Uuid::nil(),
            session_id: Uuid::from_bytes([1; 16]),
            from: StreamState::Live,
            to: StreamState::Paused,
            kind: "pause".into(),
            cause: Cause::Seller,
            at_ms: 1_795_313_645_123,
            version: 4,
        };
        let v: serde_json::Value =
            serde_json::from_str(&ServerFrame::transition(&t).encode()).unwrap();
        assert_eq!(v["type"], "state");
        assert_eq!(v["state"], "paused");
        assert_eq!(v["from"], "live");
        assert_eq!(v["kind"], "pause");
        assert_eq!(v["at"], "2026-11-22T02:14:05.123Z");
        assert_eq!(v["version"], 4);
        assert_eq!(v["session_id"], t.session_id.to_string());
        let sync = ServerFrame::State {
            stream: Uuid::nil(),
            session_id: None,
            state: StreamState::Idle,
            from: None,
            kind: "sync",
            cause: None,
            at: None,
            version: 0,
        }
        .encode();
        let v: serde_json::Value = serde_json::from_str(&sync).unwrap();
        assert!(v.get("from").is_none() && v.get("cause").is_none() && v.get("at").is_none());
        assert!(v["session_id"].is_null());
    }

    #[test]
    fn message_frames_splice_the_sequence_in() {
        let stored =
            br#"{"id":"x","user":"u","body":"hi \"there\"","ts":"t","client_msg_id":"c1"}"#;
        let f = message(42, stored).unwrap();
        let v: serde_json::Value = serde_json::from_str(&f).unwrap();
        assert_eq!(v["type"], "message");
        assert_eq!(v["seq"], 42);
        assert_eq!(v["body"], "hi \"there\"");
        assert!(message(1, b"[1]").is_none());
    }
}
