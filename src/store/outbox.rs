//! The durable-outbox role: records waiting for the persistence writer, taken by one
//! writer at a time and kept until confirmed; and the record types.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::StoreResult;

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

/// The durable outbox (persistence).
#[async_trait]
pub trait Outbox: Send + Sync {
    /// Adds a record to the outbox.
    async fn outbox_add(&self, tag: &OutboxTag, data: &[u8]) -> StoreResult<()>;
    /// Takes up to `max` records for `consumer`: records another consumer took more than
    /// `reclaim_after` ago without confirming them first, then records nobody took yet.
    /// A record stays in the outbox until [`Outbox::outbox_ack`].
    async fn outbox_take(
        &self,
        consumer: &str,
        max: usize,
        reclaim_after: Duration,
    ) -> StoreResult<Vec<OutboxEntry>>;
    /// Confirms records written; they leave the outbox.
    async fn outbox_ack(&self, ids: &[String]) -> StoreResult<()>;
    async fn outbox_stats(&self) -> StoreResult<OutboxStats>;
}
