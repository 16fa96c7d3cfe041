//! Every key and pub/sub channel the node writes in the shared state, in one place.
//!
//! Every key and channel of a stream carries the stream id as a Redis Cluster hash tag
//! (`stream:{<id>}:…`): all of a stream's state lives in one slot, so the scripts that touch
//! several of its keys at once (a chat append with its counter, idempotency key, outbox
//! and publish) run on a cluster as on a single Redis. The Redis backend adds
//! `redis.key_prefix` in front of each name; the prefix has no braces, so it does not change
//! the slot. Keys not about one stream (indexes, rate limits, media resources) are single-key
//! operations and may live anywhere.

use std::net::IpAddr;

use uuid::Uuid;

use super::stream::StreamState;

/// A stream's record (JSON of [`super::stream::Stream`]).
pub fn stream_record(stream: &Uuid) -> String {
    format!("stream:{{{stream}}}")
}

/// The pub/sub channel carrying a stream's events (already encoded as WebSocket frames)
/// to every node with subscribers.
pub fn stream_events(stream: &Uuid) -> String {
    format!("stream:{{{stream}}}:events")
}

/// Index of every stream, newest first.
pub const STREAMS_ALL: &str = "streams:all";

/// Index of the streams in one state, newest first.
pub fn streams_in_state(state: StreamState) -> String {
    format!("streams:state:{}", state.as_str())
}

/// Marks a stream id that neither the shared state nor PostgreSQL knows (a short TTL).
pub fn stream_restore_miss(stream: &Uuid) -> String {
    format!("stream:{{{stream}}}:restore-miss")
}

/// Marks a user banned from a stream (a TTL for a timeout).
pub fn ban(stream: &Uuid, user: &str) -> String {
    format!("stream:{{{stream}}}:ban:{user}")
}

/// A stream's slow-mode interval in seconds (absent: off).
pub fn slow_mode(stream: &Uuid) -> String {
    format!("stream:{{{stream}}}:slow_mode")
}

/// Set while a user must wait before their next message in slow mode.
pub fn slow_mode_user(stream: &Uuid, user: &str) -> String {
    format!("stream:{{{stream}}}:slow:{user}")
}

/// The presence set of a stream's viewers (members expire unless refreshed).
pub fn viewers_presence(stream: &Uuid) -> String {
    format!("stream:{{{stream}}}:viewers")
}

/// A finished session's stored summary.
pub fn session_summary(stream: &Uuid, session: &Uuid) -> String {
    format!("stream:{{{stream}}}:session:{session}")
}

/// The highest concurrent viewer count of a session.
pub fn session_peak(stream: &Uuid, session: &Uuid) -> String {
    format!("stream:{{{stream}}}:session:{session}:peak")
}

/// The distinct viewers of a session (HyperLogLog with Redis).
pub fn session_unique(stream: &Uuid, session: &Uuid) -> String {
    format!("stream:{{{stream}}}:session:{session}:unique")
}

/// A stream's chat log (sequenced messages with a counter).
pub fn chat_log(stream: &Uuid) -> String {
    format!("chat:{{{stream}}}")
}

/// Remembers the `seq` given to a user's `client_msg_id`, for idempotent retries.
pub fn chat_sent(stream: &Uuid, user: &str, client_msg_id: &str) -> String {
    format!("chat:{{{stream}}}:sent:{user}:{client_msg_id}")
}

/// A user's chat send rate limit in a stream.
pub fn chat_rate(stream: &Uuid, user: &str) -> String {
    format!("chat:{{{stream}}}:{user}")
}

/// Which node ingests a stream's media (its WHIP publish).
pub fn media_ingest(stream: &Uuid) -> String {
    format!("media:ingest:{{{stream}}}")
}

/// Which node holds a WHIP/WHEP resource (a session lives on one node; a `DELETE` that
/// lands on another is forwarded there).
pub fn media_resource(resource: &str) -> String {
    format!("media:resource:{resource}")
}

/// The stream WebSockets one user holds across the cluster (a presence set, one member
/// per connection).
pub fn user_websockets(user: &str) -> String {
    format!("user:{{{user}}}:ws")
}

/// An HTTP route's rate limit for one user.
pub fn route_rate_user(route: &str, user: &str) -> String {
    format!("{route}:u:{user}")
}

/// An HTTP route's rate limit for one client IP.
pub fn route_rate_ip(route: &str, ip: IpAddr) -> String {
    format!("{route}:ip:{ip}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names are part of the operations contract (dashboards, runbooks, migrations
    /// between versions): a change here must be deliberate.
    #[test]
    fn names_are_stable() {
        let s = Uuid::from_bytes([1; 16]);
        let x = Uuid::from_bytes([2; 16]);
        let id = "01010101-0101-0101-0101-010101010101";
        let sx = "02020202-0202-0202-0202-020202020202";
        assert_eq!(stream_record(&s), format!("stream:{{{id}}}"));
        assert_eq!(stream_events(&s), format!("stream:{{{id}}}:events"));
        assert_eq!(streams_in_state(StreamState::Live), "streams:state:live");
        assert_eq!(
            stream_restore_miss(&s),
            format!("stream:{{{id}}}:restore-miss")
        );
        assert_eq!(ban(&s, "u"), format!("stream:{{{id}}}:ban:u"));
        assert_eq!(slow_mode(&s), format!("stream:{{{id}}}:slow_mode"));
        assert_eq!(slow_mode_user(&s, "u"), format!("stream:{{{id}}}:slow:u"));
        assert_eq!(viewers_presence(&s), format!("stream:{{{id}}}:viewers"));
        assert_eq!(
            session_summary(&s, &x),
            format!("stream:{{{id}}}:session:{sx}")
        );
        assert_eq!(
            session_peak(&s, &x),
            format!("stream:{{{id}}}:session:{sx}:peak")
        );
        assert_eq!(
            session_unique(&s, &x),
            format!("stream:{{{id}}}:session:{sx}:unique")
        );
        assert_eq!(chat_log(&s), format!("chat:{{{id}}}"));
        assert_eq!(chat_sent(&s, "u", "m"), format!("chat:{{{id}}}:sent:u:m"));
        assert_eq!(chat_rate(&s, "u"), format!("chat:{{{id}}}:u"));
        assert_eq!(media_ingest(&s), format!("media:ingest:{{{id}}}"));
        assert_eq!(media_resource("abc"), "media:resource:abc");
        assert_eq!(user_websockets("u"), "user:{u}:ws");
        assert_eq!(route_rate_user("rtc_token", "u"), "rtc_token:u:u");
        assert_eq!(
            route_rate_ip("rtc_token", "10.0.0.1".parse().unwrap()),
            "rtc_token:ip:10.0.0.1"
        );
    }
}
