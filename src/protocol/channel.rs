//! What travels on a stream's pub/sub channel between nodes, and how a node tells the kinds
//! apart. Three kinds share the channel:
//!
//! - a chat append, published by the shared state in the same atomic step as the append:
//!   the decimal sequence number, `\n`, the stored message (`store::encode_log_publish`);
//! - a node's notice that a viewer's last connection on it closed (internal, never sent to
//!   a client): `{"type":"_viewer_left","user":…}`;
//! - a server frame, already encoded, to hand to every local connection as it is.
//!
//! A chat append starts with a digit and every JSON frame with `{`, so one byte decides;
//! the hub only ever sees the typed [`ChannelEvent`].

use bytes::Bytes;

/// Prefix of the internal viewer-left notice.
const VIEWER_LEFT_PREFIX: &[u8] = br#"{"type":"_viewer_left","user":"#;

/// Prefix of an encoded `state` frame (the type is always the first field).
const STATE_PREFIX: &[u8] = br#"{"type":"state","#;

/// One message of a stream's channel, by kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelEvent {
    /// A chat append (decode it with `store::decode_log_publish`).
    Chat(Bytes),
    /// Another node lost this user's last connection to the stream.
    ViewerLeft(String),
    /// A server frame for every local connection.
    Frame(Bytes),
    /// Something this node cannot read (logged and dropped).
    Unreadable,
}

/// Classifies one channel message.
pub fn decode(bytes: Bytes) -> ChannelEvent {
    match bytes.first() {
        Some(b) if b.is_ascii_digit() => ChannelEvent::Chat(bytes),
        Some(b'{') if bytes.starts_with(VIEWER_LEFT_PREFIX) => {
            #[derive(serde::Deserialize)]
            struct Notice {
                user: String,
            }
            match serde_json::from_slice::<Notice>(&bytes) {
                Ok(n) => ChannelEvent::ViewerLeft(n.user),
                Err(_) => ChannelEvent::Unreadable,
            }
        }
        Some(b'{') => ChannelEvent::Frame(bytes),
        _ => ChannelEvent::Unreadable,
    }
}

/// The `version` of an encoded `state` frame; `None` for any other frame.
pub fn state_version(frame: &[u8]) -> Option<u64> {
    if !frame.starts_with(STATE_PREFIX) {
        return None;
    }
    #[derive(serde::Deserialize)]
    struct Versioned {
        version: u64,
    }
    serde_json::from_slice::<Versioned>(frame)
        .ok()
        .map(|v| v.version)
}

/// Whether a channel message is a chat append (cheap; for batching without decoding).
pub fn is_chat(bytes: &[u8]) -> bool {
    bytes.first().is_some_and(u8::is_ascii_digit)
}

/// The viewer-left notice for `user`.
pub fn viewer_left(user: &str) -> Bytes {
    let mut v = VIEWER_LEFT_PREFIX.to_vec();
    v.extend_from_slice(serde_json::Value::from(user).to_string().as_bytes());
    v.push(b'}');
    Bytes::from(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_told_apart() {
        assert_eq!(
            decode(Bytes::from_static(b"12\n{\"id\":1}")),
            ChannelEvent::Chat(Bytes::from_static(b"12\n{\"id\":1}"))
        );
        assert_eq!(
            decode(viewer_left("u \"1\"")),
            ChannelEvent::ViewerLeft("u \"1\"".into())
        );
        let frame = Bytes::from_static(br#"{"type":"deleted","seq":3}"#);
        assert_eq!(decode(frame.clone()), ChannelEvent::Frame(frame));
        assert_eq!(decode(Bytes::new()), ChannelEvent::Unreadable);
        assert_eq!(
            decode(Bytes::from_static(b"\xff")),
            ChannelEvent::Unreadable
        );
        assert_eq!(
            decode(Bytes::from_static(br#"{"type":"_viewer_left","user":5}"#)),
            ChannelEvent::Unreadable
        );
        assert!(is_chat(b"1\n{}") && !is_chat(b"{}"));
    }

    #[test]
    fn state_frames_tell_their_version() {
        let sync = crate::protocol::server::ServerFrame::State {
            stream: uuid::Uuid::nil(),
            session_id: None,
            state: crate::domain::StreamState::Live,
            from: None,
            kind: "sync",
            cause: None,
            at: None,
            version: 7,
        }
        .encode();
        assert_eq!(state_version(sync.as_bytes()), Some(7));
        assert_eq!(state_version(br#"{"type":"deleted","seq":3}"#), None);
        assert_eq!(state_version(br#"{"type":"state","version":"x"}"#), None);
    }
}
