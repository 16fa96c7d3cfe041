//! The ordered-log role: per-name logs whose appends are sequenced atomically (and
//! optionally published, deduplicated and added to the outbox in the same step), the
//! append options, and the frame a published append travels in.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::{OutboxTag, StoreResult};

/// One entry of an ordered log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub seq: u64,
    pub payload: Bytes,
}

/// How [`Logs::log_append`] treats the log.
#[derive(Debug, Clone, Default)]
pub struct AppendOptions {
    /// Keep at most this many entries (oldest trimmed first); 0 keeps everything.
    pub max_len: usize,
    /// Expire the whole log (and its sequence) this long after the last append.
    pub ttl: Option<Duration>,
    /// Publish the new entry on this channel, in the same atomic step, framed by
    /// [`encode_log_publish`].
    pub publish: Option<String>,
    /// Idempotency: when this key exists (set by an earlier append), nothing is appended
    /// and the earlier sequence number is returned; otherwise the key is set to the new
    /// sequence number for the given time. Checked and set in the same atomic step.
    pub once: Option<(String, Duration)>,
    /// Also add the new entry (payload and sequence number) to the durable outbox, in the
    /// same atomic step.
    pub outbox: Option<OutboxTag>,
    /// The sequence counter does not expire with the entries (`ttl`): after the log expires
    /// the next append continues the numbering instead of starting at 1 again.
    pub keep_seq: bool,
}

/// The frame published for a log append: the decimal sequence number, `\n`, the payload.
pub fn encode_log_publish(seq: u64, payload: &[u8]) -> Bytes {
    let mut v = Vec::with_capacity(payload.len() + 21);
    v.extend_from_slice(seq.to_string().as_bytes());
    v.push(b'\n');
    v.extend_from_slice(payload);
    Bytes::from(v)
}

/// Reads a frame made by [`encode_log_publish`].
pub fn decode_log_publish(frame: &Bytes) -> Option<LogEntry> {
    let nl = frame.iter().position(|b| *b == b'\n')?;
    let seq = std::str::from_utf8(&frame[..nl]).ok()?.parse().ok()?;
    Some(LogEntry {
        seq,
        payload: frame.slice(nl + 1..),
    })
}

/// Ordered, sequenced logs.
#[async_trait]
pub trait Logs: Send + Sync {
    /// Appends an entry with the next sequence number (1, 2, ...) and returns it.
    async fn log_append(&self, log: &str, payload: &[u8], opts: &AppendOptions)
        -> StoreResult<u64>;
    /// Entries with `seq > after`, oldest first, at most `limit`.
    async fn log_after(&self, log: &str, after: u64, limit: usize) -> StoreResult<Vec<LogEntry>>;
    /// Entries with `seq < before`, newest first, at most `limit`.
    async fn log_before(&self, log: &str, before: u64, limit: usize) -> StoreResult<Vec<LogEntry>>;
    /// The last sequence number handed out (0 when none).
    async fn log_last_seq(&self, log: &str) -> StoreResult<u64>;
    /// Rebuilds a log the backend lost: raises its sequence to at least `last_seq` and, if
    /// the log holds no entries, fills it with `entries` (ascending, each `seq <= last_seq`),
    /// applying `opts.max_len`, `opts.ttl` and `opts.keep_seq`. Safe to repeat or race.
    async fn log_restore(
        &self,
        log: &str,
        entries: &[LogEntry],
        last_seq: u64,
        opts: &AppendOptions,
    ) -> StoreResult<()>;
    /// Removes one entry; returns whether it was there. The sequence is not reused.
    async fn log_remove(&self, log: &str, seq: u64) -> StoreResult<bool>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_publish_round_trip() {
        let f = encode_log_publish(42, b"he\nllo");
        let e = decode_log_publish(&f).unwrap();
        assert_eq!(e.seq, 42);
        assert_eq!(&e.payload[..], b"he\nllo");
        assert!(decode_log_publish(&Bytes::from_static(b"x\nabc")).is_none());
        assert!(decode_log_publish(&Bytes::from_static(b"12")).is_none());
    }
}
