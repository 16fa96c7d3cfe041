//! [`Indexes`] for the Redis backend: sorted sets with every score 0, read in byte order
//! (`ZREVRANGEBYLEX`).

use async_trait::async_trait;
use redis::AsyncCommands;

use super::RedisStore;
use crate::store::{Indexes, StoreResult};

#[async_trait]
impl Indexes for RedisStore {
    async fn index_add(&self, key: &str, member: &str) -> StoreResult<bool> {
        let mut c = self.conn();
        let k = self.key(key);
        let n: i64 = self.run(async move { c.zadd(k, member, 0).await }).await?;
        Ok(n > 0)
    }

    async fn index_remove(&self, key: &str, member: &str) -> StoreResult<bool> {
        let mut c = self.conn();
        let k = self.key(key);
        let n: i64 = self.run(async move { c.zrem(k, member).await }).await?;
        Ok(n > 0)
    }

    async fn index_page_desc(
        &self,
        key: &str,
        before: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut c = self.conn();
        let k = self.key(key);
        let max = match before {
            Some(b) => format!("({b}"),
            None => "+".to_string(),
        };
        self.run(async move {
            redis::cmd("ZREVRANGEBYLEX")
                .arg(k)
                .arg(max)
                .arg("-")
                .arg("LIMIT")
                .arg(0)
                .arg(limit)
                .query_async(&mut c)
                .await
        })
        .await
    }
}
