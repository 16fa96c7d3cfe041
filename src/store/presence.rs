//! The presence role: sets whose members stay present only while they keep touching it.

use std::time::Duration;

use async_trait::async_trait;

use super::StoreResult;

/// Presence sets whose members expire.
#[async_trait]
pub trait Presence: Send + Sync {
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
}
