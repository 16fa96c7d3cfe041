//! The sorted-index role: byte-ordered sets of names, paged newest (highest) first.

use async_trait::async_trait;

use super::StoreResult;

/// Byte-ordered indexes.
#[async_trait]
pub trait Indexes: Send + Sync {
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
}
