//! [`Presence`] for the Redis backend: a sorted set per presence set, scored by expiry,
//! through the `presence_*.lua` scripts beside this file.

use std::time::Duration;

use async_trait::async_trait;

use super::{ms, RedisStore};
use crate::store::{Presence, StoreResult};

#[async_trait]
impl Presence for RedisStore {
    async fn presence_touch(&self, set: &str, member: &str, ttl: Duration) -> StoreResult<bool> {
        let mut c = self.conn();
        let mut inv = self.scripts.presence_touch.prepare_invoke();
        inv.key(self.key(set)).arg(member).arg(ms(ttl));
        let added: i64 = self.run(inv.invoke_async(&mut c)).await?;
        Ok(added == 1)
    }

    async fn presence_remove(&self, set: &str, member: &str) -> StoreResult<bool> {
        let mut c = self.conn();
        let mut inv = self.scripts.presence_remove.prepare_invoke();
        inv.key(self.key(set)).arg(member);
        let removed: i64 = self.run(inv.invoke_async(&mut c)).await?;
        Ok(removed == 1)
    }

    async fn presence_count(&self, set: &str) -> StoreResult<u64> {
        let mut c = self.conn();
        let mut inv = self.scripts.presence_read.prepare_invoke();
        inv.key(self.key(set)).arg("count");
        self.run(inv.invoke_async(&mut c)).await
    }

    async fn presence_list(
        &self,
        set: &str,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        let mut c = self.conn();
        let mut inv = self.scripts.presence_read.prepare_invoke();
        inv.key(self.key(set)).arg("list");
        let mut members: Vec<String> = self.run(inv.invoke_async(&mut c)).await?;
        members.sort_unstable();
        let start = match after {
            Some(a) => members.partition_point(|m| m.as_str() <= a),
            None => 0,
        };
        Ok(members.into_iter().skip(start).take(limit).collect())
    }
}
