//! [`Outbox`] for the memory backend: the local append-only file ([`FileOutbox`]), when
//! persistence is on.

use std::time::Duration;

use async_trait::async_trait;

use super::MemoryStore;
use crate::store::outbox_file::FileOutbox;
use crate::store::{Outbox, OutboxEntry, OutboxStats, OutboxTag, StoreError, StoreResult};

impl MemoryStore {
    pub(super) fn outbox(&self) -> StoreResult<&FileOutbox> {
        self.outbox
            .as_deref()
            .ok_or_else(|| StoreError::Backend("no outbox configured (persistence is off)".into()))
    }
}

#[async_trait]
impl Outbox for MemoryStore {
    async fn outbox_add(&self, tag: &OutboxTag, data: &[u8]) -> StoreResult<()> {
        self.outbox()?
            .append(tag, 0, data)
            .map_err(|e| StoreError::Backend(format!("outbox: {e}")))
    }

    async fn outbox_take(
        &self,
        _consumer: &str,
        max: usize,
        _reclaim_after: Duration,
    ) -> StoreResult<Vec<OutboxEntry>> {
        // One node: a record taken by a writer stays with it until written.
        Ok(self.outbox()?.take(max))
    }

    async fn outbox_ack(&self, ids: &[String]) -> StoreResult<()> {
        self.outbox()?
            .ack(ids)
            .map_err(|e| StoreError::Backend(format!("outbox: {e}")))
    }

    async fn outbox_stats(&self) -> StoreResult<OutboxStats> {
        Ok(self.outbox()?.stats())
    }
}
