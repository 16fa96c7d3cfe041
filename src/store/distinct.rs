//! The distinct-counting role: approximate counts of distinct members (HyperLogLog in
//! Redis, an exact set in memory).

use std::time::Duration;

use async_trait::async_trait;

use super::StoreResult;

/// Approximate distinct counters.
#[async_trait]
pub trait Distinct: Send + Sync {
    /// Adds `members` to the approximate distinct counter `key` (HyperLogLog in Redis).
    async fn distinct_add(
        &self,
        key: &str,
        members: &[&str],
        ttl: Option<Duration>,
    ) -> StoreResult<()>;
    /// The approximate number of distinct members added to `key`.
    async fn distinct_count(&self, key: &str) -> StoreResult<u64>;
}
