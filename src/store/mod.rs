//! Shared state: the traits every capability uses for state that all nodes must agree on,
//! and the two backends behind them.
//!
//! - [`memory::MemoryStore`]: the embedded single-node backend (no Redis configured).
//! - [`redis::RedisStore`]: the cluster backend, chosen when `redis.url` is set.
//!
//! Both pass the same conformance suite (`tests/store_conformance.rs`). The shapes:
//! key/value with TTL and atomic counters, presence sets whose members expire, an ordered
//! per-name log whose appends are sequenced atomically (and optionally published in the
//! same step), and publish/subscribe across nodes.

pub mod fanout;
pub mod memory;
pub mod outbox_file;
pub mod redis;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::config::Config;

pub use fanout::{PubSubEvent, Subscription};

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached now; the operation may succeed later.
    #[error("shared state unavailable: {0}")]
    Unavailable(String),
    /// The backend answered with an error or something this node cannot read.
    #[error("shared state error: {0}")]
    Backend(String),
}

/// One entry of an ordered log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub seq: u64,
    pub payload: Bytes,
}

/// The answer of [`SharedState::rate_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    pub allowed: bool,
    /// When refused: how long until one more request would be allowed.
    pub retry_after: Duration,
}

/// How [`SharedState::log_append`] treats the log.
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

/// What an outbox record is about: its kind (`chat`, `stream`, ...) and scope (a stream id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxTag {
    pub kind: &'static str,
    pub scope: String,
}

impl OutboxTag {
    pub fn new(kind: &'static str, scope: impl Into<String>) -> Self {
        Self {
            kind,
            scope: scope.into(),
        }
    }
}

/// A record waiting in the durable outbox for the persistence writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// The backend's id for it (a Redis stream id, or the local file's record number).
    pub id: String,
    pub kind: String,
    pub scope: String,
    /// The log sequence number for records added by a log append, 0 otherwise.
    pub seq: u64,
    pub data: Bytes,
    /// Unix milliseconds when it was added.
    pub added_ms: u64,
}

/// The outbox's backlog.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// Records not yet confirmed written (including those a writer holds now).
    pub depth: u64,
    /// When the oldest of them was added (Unix ms).
    pub oldest_added_ms: Option<u64>,
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

/// State shared by every node of a deployment.
///
/// Keys and channels are plain names chosen by the capabilities (`stream:{id}:...`); a
/// backend may prefix them. Every operation is atomic on its own.
#[async_trait]
pub trait SharedState: Send + Sync + 'static {
    /// `"memory"` or `"redis"`.
    fn backend(&self) -> &'static str;
    /// Whether the backend answered its last health check.
    fn is_healthy(&self) -> bool;
    /// Checks the backend now.
    async fn ping(&self) -> StoreResult<()>;

    // --- key/value ---------------------------------------------------------------------
    async fn get(&self, key: &str) -> StoreResult<Option<Bytes>>;
    /// Sets a value, replacing any previous one and its TTL.
    async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> StoreResult<()>;
    /// Sets a value only when the key does not exist; returns whether it was set.
    async fn set_nx(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> StoreResult<bool>;
    /// Removes a key (value or counter); returns whether it existed.
    async fn delete(&self, key: &str) -> StoreResult<bool>;
    /// Adds `by` to a counter (missing counts as 0) and returns the new value. `ttl`, when
    /// given, is (re)applied to the counter on every call.
    async fn incr(&self, key: &str, by: i64, ttl: Option<Duration>) -> StoreResult<i64>;

    /// Counts one request against the limiter `key` (generic cell rate algorithm):
    /// `burst` requests at once, `per_sec` sustained. Shared by every node.
    async fn rate_limit(&self, key: &str, per_sec: f64, burst: u32) -> StoreResult<RateDecision>;

    /// Replaces `key`'s value with `new` only if it is still `expected`, publishing
    /// `publish` (channel, payload) and adding `new` to the outbox under `outbox` in the
    /// same atomic step when it does. Returns whether it swapped.
    async fn compare_and_swap(
        &self,
        key: &str,
        expected: &[u8],
        new: &[u8],
        ttl: Option<Duration>,
        publish: Option<(&str, &[u8])>,
        outbox: Option<&OutboxTag>,
    ) -> StoreResult<bool>;
    /// Raises the integer at `key` to `value` if larger; returns the resulting maximum.
    async fn set_max(&self, key: &str, value: i64, ttl: Option<Duration>) -> StoreResult<i64>;
    /// Adds `members` to the approximate distinct counter `key` (HyperLogLog in Redis).
    async fn distinct_add(
        &self,
        key: &str,
        members: &[&str],
        ttl: Option<Duration>,
    ) -> StoreResult<()>;
    /// The approximate number of distinct members added to `key`.
    async fn distinct_count(&self, key: &str) -> StoreResult<u64>;

    // --- presence ----------------------------------------------------------------------
    /// Marks `member` present in `set` until `ttl` from now; returns whether it was absent.
    async fn presence_touch(&self, set: &str, member: &str, ttl: Duration) -> StoreResult<bool>;
    /// Removes `member`; returns whether it was present.
    async fn presence_remove(&self, set: &str, member: &str) -> StoreResult<bool>;
    /// Members present now.
    async fn presence_count(&self, set: &str) -> StoreResult<u64>;
    /// Members present now, in byte order, starting after `after`, at most `limit`.
    async fn presence_list(
        &self,
        set: &str,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>>;

    // --- sorted index ----------------------------------------------------------------------
    /// Adds `member` to the byte-ordered index `key`; returns whether it was new.
    async fn index_add(&self, key: &str, member: &str) -> StoreResult<bool>;
    /// Removes `member`; returns whether it was there.
    async fn index_remove(&self, key: &str, member: &str) -> StoreResult<bool>;
    /// Members in descending byte order, starting below `before` (exclusive), at most
    /// `limit`.
    async fn index_page_desc(
        &self,
        key: &str,
        before: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>>;

    // --- ordered log ---------------------------------------------------------------------
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

    // --- durable outbox (persistence) -----------------------------------------------------
    /// Adds a record to the outbox.
    async fn outbox_add(&self, tag: &OutboxTag, data: &[u8]) -> StoreResult<()>;
    /// Takes up to `max` records for `consumer`: records another consumer took more than
    /// `reclaim_after` ago without confirming them first, then records nobody took yet.
    /// A record stays in the outbox until [`SharedState::outbox_ack`].
    async fn outbox_take(
        &self,
        consumer: &str,
        max: usize,
        reclaim_after: Duration,
    ) -> StoreResult<Vec<OutboxEntry>>;
    /// Confirms records written; they leave the outbox.
    async fn outbox_ack(&self, ids: &[String]) -> StoreResult<()>;
    async fn outbox_stats(&self) -> StoreResult<OutboxStats>;

    // --- publish / subscribe -------------------------------------------------------------
    /// Delivers `payload` to every current subscriber of `channel` on every node.
    async fn publish(&self, channel: &str, payload: Bytes) -> StoreResult<()>;
    /// Subscribes to `channel`. After this returns, every later publish is received, unless
    /// the subscription reports [`PubSubEvent::Resync`] (messages may have been missed).
    async fn subscribe(&self, channel: &str) -> StoreResult<Subscription>;

    /// Stops background tasks (health checks, the pub/sub connection).
    async fn close(&self);
}

/// Builds the backend the configuration selects: Redis when `redis.url` is set, the
/// embedded memory backend otherwise.
pub async fn from_config(config: &Config) -> StoreResult<Arc<dyn SharedState>> {
    if config.redis.url.is_empty() {
        if config.persist.enabled() {
            let outbox =
                outbox_file::FileOutbox::open(&config.persist.local_outbox_dir).map_err(|e| {
                    StoreError::Backend(format!(
                        "local outbox {}: {e}",
                        config.persist.local_outbox_dir.display()
                    ))
                })?;
            return Ok(Arc::new(memory::MemoryStore::with_outbox(
                Arc::new(outbox),
                config.persist.local_fsync_interval,
            )));
        }
        Ok(Arc::new(memory::MemoryStore::new()))
    } else {
        Ok(Arc::new(redis::RedisStore::connect(&config.redis).await?))
    }
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

/// The GCRA step, shared by the in-memory backend and the Lua script's logic: given the
/// stored theoretical arrival time (µs), returns the decision and the new TAT to store.
pub fn gcra(
    now_us: u64,
    tat_us: Option<u64>,
    per_sec: f64,
    burst: u32,
) -> (RateDecision, Option<u64>) {
    let interval = (1_000_000.0 / per_sec).max(1.0) as u64;
    let tat = tat_us.unwrap_or(now_us).max(now_us);
    let new_tat = tat + interval;
    let allow_at = new_tat.saturating_sub(interval.saturating_mul(burst.max(1) as u64));
    if allow_at > now_us {
        (
            RateDecision {
                allowed: false,
                retry_after: Duration::from_micros(allow_at - now_us),
            },
            None,
        )
    } else {
        (
            RateDecision {
                allowed: true,
                retry_after: Duration::ZERO,
            },
            Some(new_tat),
        )
    }
}

#[cfg(test)]
mod gcra_tests {
    use super::*;

    #[test]
    fn burst_then_sustained_rate() {
        // 10/s, burst 3, all at t=0: three pass, the fourth waits 100 ms.
        let mut tat = None;
        for _ in 0..3 {
            let (d, t) = gcra(0, tat, 10.0, 3);
            assert!(d.allowed);
            tat = t;
        }
        let (d, t) = gcra(0, tat, 10.0, 3);
        assert!(!d.allowed);
        assert!(t.is_none());
        assert_eq!(d.retry_after, Duration::from_millis(100));
        // 100 ms later exactly one more passes.
        let (d, t) = gcra(100_000, tat, 10.0, 3);
        assert!(d.allowed);
        let (d, _) = gcra(100_000, t, 10.0, 3);
        assert!(!d.allowed);
        // After a long pause the full burst is available again.
        let mut tat = t;
        for _ in 0..3 {
            let (d, t) = gcra(10_000_000, tat, 10.0, 3);
            assert!(d.allowed);
            tat = t;
        }
    }
}
