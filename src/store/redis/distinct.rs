//! [`Distinct`] for the Redis backend: HyperLogLog (`PFADD`, `PFCOUNT`).

use std::time::Duration;

use async_trait::async_trait;

use super::{ms, RedisStore};
use crate::store::{Distinct, StoreResult};

#[async_trait]
impl Distinct for RedisStore {
    async fn distinct_add(
        &self,
        key: &str,
        members: &[&str],
        ttl: Option<Duration>,
    ) -> StoreResult<()> {
        if members.is_empty() {
            return Ok(());
        }
        let mut c = self.conn();
        let k = self.key(key);
        let mut p = redis::pipe();
        p.cmd("PFADD").arg(&k).arg(members).ignore();
        if let Some(t) = ttl {
            p.cmd("PEXPIRE").arg(&k).arg(ms(t)).ignore();
        }
        self.run(async move { p.query_async::<()>(&mut c).await })
            .await
    }

    async fn distinct_count(&self, key: &str) -> StoreResult<u64> {
        let mut c = self.conn();
        let k = self.key(key);
        self.run(async move { redis::cmd("PFCOUNT").arg(k).query_async(&mut c).await })
            .await
    }
}
