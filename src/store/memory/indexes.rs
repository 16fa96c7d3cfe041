//! [`Indexes`] for the memory backend: `BTreeSet`s in `Inner::indexes`.

use async_trait::async_trait;

use super::MemoryStore;
use crate::store::{Indexes, StoreResult};

#[async_trait]
impl Indexes for MemoryStore {
    async fn index_add(&self, key: &str, member: &str) -> StoreResult<bool> {
        Ok(self
            .lock()
            .indexes
            .entry(key.to_string())
            .or_default()
            .insert(member.to_string()))
    }

    async fn index_remove(&self, key: &str, member: &str) -> StoreResult<bool> {
        let mut inner = self.lock();
        let Some(set) = inner.indexes.get_mut(key) else {
            return Ok(false);
        };
        let removed = set.remove(member);
        if set.is_empty() {
            inner.indexes.remove(key);
        }
        Ok(removed)
    }

    async fn index_page_desc(
        &self,
        key: &str,
        before: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        let inner = self.lock();
        let Some(set) = inner.indexes.get(key) else {
            return Ok(Vec::new());
        };
        let iter: Box<dyn Iterator<Item = &String>> = match before {
            Some(b) => Box::new(
                set.range::<str, _>((std::ops::Bound::Unbounded, std::ops::Bound::Excluded(b)))
                    .rev(),
            ),
            None => Box::new(set.iter().rev()),
        };
        Ok(iter.take(limit).cloned().collect())
    }
}
