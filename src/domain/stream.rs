//! Streams and their owners: the record, its states, its current session's record (the
//! rules that move it are in [`super::session`]), and the pure rules for titles and list
//! cursors.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Longest title, in characters.
pub const MAX_TITLE_CHARS: usize = 120;

/// Where a stream is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamState {
    Idle,
    Live,
    Paused,
    Ended,
}

impl StreamState {
    pub const ALL: [StreamState; 4] = [
        StreamState::Idle,
        StreamState::Live,
        StreamState::Paused,
        StreamState::Ended,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StreamState::Idle => "idle",
            StreamState::Live => "live",
            StreamState::Paused => "paused",
            StreamState::Ended => "ended",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// A stream as stored in the shared state and returned by the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stream {
    pub id: Uuid,
    pub owner_id: String,
    pub title: String,
    pub state: StreamState,
    /// Unix milliseconds.
    pub created_at_ms: u64,
    /// Unix milliseconds of the last change.
    pub updated_at_ms: u64,
    /// The current (or last) session; `None` before the first start.
    #[serde(default)]
    pub session: Option<Session>,
    /// Transitions so far: 1, 2, 3, … (events carry it, so gaps and repeats show).
    #[serde(default)]
    pub version: u64,
}

/// Why a transition happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// The seller asked.
    Seller,
    /// No heartbeat for `session.heartbeat_timeout`.
    SellerDisconnected,
    /// A heartbeat arrived while auto-paused.
    SellerReconnected,
    /// Paused for longer than `session.pause_timeout`.
    PauseTimeout,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Seller => "seller",
            Cause::SellerDisconnected => "seller_disconnected",
            Cause::SellerReconnected => "seller_reconnected",
            Cause::PauseTimeout => "pause_timeout",
        }
    }
}

/// One broadcast of a stream (start to end).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub id: Uuid,
    pub started_at_ms: u64,
    /// When the current live stretch began (while live).
    pub live_since_ms: Option<u64>,
    /// When the current pause began (while paused).
    pub paused_at_ms: Option<u64>,
    pub pause_reason: Option<Cause>,
    pub last_heartbeat_ms: u64,
    /// Time live in finished stretches.
    pub live_ms: u64,
    /// Time paused in finished stretches.
    pub paused_ms: u64,
    pub ended_at_ms: Option<u64>,
    pub end_reason: Option<Cause>,
    /// The stream's last chat sequence number when the session started and ended: the
    /// difference is the session's chat message count.
    #[serde(default)]
    pub chat_seq_start: u64,
    #[serde(default)]
    pub chat_seq_end: Option<u64>,
}

impl Session {
    /// Live and paused time up to `now` (or the end).
    pub fn times(&self, now_ms: u64) -> (u64, u64) {
        let until = self.ended_at_ms.unwrap_or(now_ms);
        let live = self.live_ms + self.live_since_ms.map_or(0, |t| until.saturating_sub(t));
        let paused = self.paused_ms + self.paused_at_ms.map_or(0, |t| until.saturating_sub(t));
        (live, paused)
    }
}

/// Why a title is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TitleError {
    #[error("title must not be empty")]
    Empty,
    #[error("title must be at most {MAX_TITLE_CHARS} characters")]
    TooLong,
    #[error("title must not contain line breaks, control, bidirectional or tag characters")]
    ControlCharacter,
}

/// Trims and checks a title.
pub fn validate_title(raw: &str) -> Result<String, TitleError> {
    use super::text::{check, TextError};
    let t = raw.trim();
    if check(t) == Err(TextError::Empty) {
        return Err(TitleError::Empty);
    }
    if t.chars().count() > MAX_TITLE_CHARS {
        return Err(TitleError::TooLong);
    }
    if check(t).is_err() {
        return Err(TitleError::ControlCharacter);
    }
    Ok(t.to_string())
}

/// The sort key of a stream in the listing indexes: newest first when read in reverse
/// byte order. Zero-padded creation time, then the id to break ties.
pub fn index_member(s: &Stream) -> String {
    format!("{:016}:{}", s.created_at_ms, s.id)
}

/// Reads a stream id back from an index member.
pub fn id_from_member(member: &str) -> Option<Uuid> {
    member
        .split_once(':')
        .and_then(|(_, id)| Uuid::parse_str(id).ok())
}

/// Opaque list cursors are index members, base64url-encoded.
pub fn encode_cursor(member: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(member)
}

pub fn decode_cursor(cursor: &str) -> Option<String> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    id_from_member(&s)?;
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles() {
        assert_eq!(validate_title("  Sneaker drop  ").unwrap(), "Sneaker drop");
        assert_eq!(validate_title("   "), Err(TitleError::Empty));
        assert_eq!(
            validate_title("a\u{0007}b"),
            Err(TitleError::ControlCharacter)
        );
        assert_eq!(
            validate_title("line\nbreak"),
            Err(TitleError::ControlCharacter)
        );
        assert_eq!(
            validate_title("rtl\u{202e}x"),
            Err(TitleError::ControlCharacter)
        );
        assert!(validate_title(&"é".repeat(120)).is_ok());
        assert_eq!(validate_title(&"é".repeat(121)), Err(TitleError::TooLong));
        assert!(validate_title("👟 Drop #3 — 50% off").is_ok());
    }

    #[test]
    fn index_members_sort_by_time_and_round_trip() {
        let mk = |ms, id: &str| Stream {
            id: Uuid::parse_str(id).unwrap(),
            owner_id: "o".into(),
            title: "t".into(),
            state: StreamState::Idle,
            created_at_ms: ms,
            updated_at_ms: ms,
            session: None,
            version: 0,
        };
        let a = index_member(&mk(999, "00000000-0000-4000-8000-000000000001"));
        let b = index_member(&mk(1000, "00000000-0000-4000-8000-000000000000"));
        assert!(a < b);
        assert_eq!(decode_cursor(&encode_cursor(&a)).unwrap(), a);
        assert_eq!(
            id_from_member(&a).unwrap().to_string(),
            "00000000-0000-4000-8000-000000000001"
        );
        assert!(decode_cursor("!!").is_none());
        assert!(decode_cursor(&encode_cursor("no-colon")).is_none());
    }

    #[test]
    fn states_round_trip() {
        for s in StreamState::ALL {
            assert_eq!(StreamState::parse(s.as_str()), Some(s));
        }
        assert_eq!(StreamState::parse("LIVE"), None);
    }
}
