//! [`Distinct`] for the memory backend: exact sets in `Inner::distinct`.

use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{live, MemoryStore};
use crate::store::{Distinct, StoreResult};

#[async_trait]
impl Distinct for MemoryStore {
    async fn distinct_add(
        &self,
        key: &str,
        members: &[&str],
        ttl: Option<Duration>,
    ) -> StoreResult<()> {
        let now = Instant::now();
        let mut inner = self.lock();
        let entry = inner
            .distinct
            .entry(key.to_string())
            .or_insert_with(|| (Default::default(), None));
        if !live(entry.1, now) {
            *entry = (Default::default(), None);
        }
        entry.0.extend(members.iter().map(|m| m.to_string()));
        if let Some(t) = ttl {
            entry.1 = Some(now + t);
        }
        Ok(())
    }

    async fn distinct_count(&self, key: &str) -> StoreResult<u64> {
        let now = Instant::now();
        let inner = self.lock();
        Ok(inner
            .distinct
            .get(key)
            .filter(|(_, exp)| live(*exp, now))
            .map_or(0, |(s, _)| s.len() as u64))
    }
}
