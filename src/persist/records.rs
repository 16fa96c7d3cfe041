//! What goes through the outbox: one record per fact, tagged with its kind and the stream
//! it belongs to. Chat messages and stream records are added by the same atomic step that
//! makes them (the log append, the compare-and-swap); the rest right after their action.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::chat::StoredMessage;
use crate::domain::SessionSummary;
use crate::store::OutboxTag;

/// A chat message: data is the stored message, `seq` its sequence number.
pub const CHAT: &str = "chat";
/// A stream record (with its current session) after creation or a transition.
pub const STREAM: &str = "stream";
/// A finished session's summary ([`SummaryRecord`]).
pub const SESSION_SUMMARY: &str = "session_summary";
/// A moderation action ([`ModerationRecord`]).
pub const MODERATION: &str = "moderation";

pub fn tag(kind: &'static str, stream: &Uuid) -> OutboxTag {
    OutboxTag::new(kind, stream.to_string())
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SummaryRecord {
    pub owner_id: String,
    pub summary: SessionSummary,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModerationRecord {
    pub id: Uuid,
    pub stream_id: Uuid,
    pub owner_id: String,
    pub actor_id: String,
    /// `delete_message`, `ban`, `unban` or `slow_mode`.
    pub action: String,
    #[serde(default)]
    pub target_user_id: Option<String>,
    #[serde(default)]
    pub target_seq: Option<u64>,
    /// When a timeout ends (Unix ms); absent for a ban until lifted.
    #[serde(default)]
    pub expires_at_ms: Option<u64>,
    #[serde(default)]
    pub detail: serde_json::Value,
    pub created_at_ms: u64,
    /// For `delete_message`: the message, so the deletion lands even when the message's
    /// own record is written later (records may arrive in any order).
    #[serde(default)]
    pub message: Option<StoredMessage>,
}

impl ModerationRecord {
    pub fn new(stream_id: Uuid, owner_id: &str, actor_id: &str, action: &str) -> Self {
        Self {
            id: Uuid::new_v4(),
            stream_id,
            owner_id: owner_id.to_string(),
            actor_id: actor_id.to_string(),
            action: action.to_string(),
            target_user_id: None,
            target_seq: None,
            expires_at_ms: None,
            detail: serde_json::Value::Object(Default::default()),
            created_at_ms: crate::domain::clock::now_ms(),
            message: None,
        }
    }
}
