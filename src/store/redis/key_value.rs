//! [`KeyValue`] for the Redis backend: plain commands, and the `rate_limit.lua`, `cas.lua`
//! and `set_max.lua` scripts beside this file for the steps that read before they write.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::AsyncCommands;

use super::{ms, RedisStore};
use crate::store::{KeyValue, OutboxTag, RateDecision, StoreResult};

#[async_trait]
impl KeyValue for RedisStore {
    async fn get(&self, key: &str) -> StoreResult<Option<Bytes>> {
        let mut c = self.conn();
        let k = self.key(key);
        let v: Option<Vec<u8>> = self.run(async move { c.get(k).await }).await?;
        Ok(v.map(Bytes::from))
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> StoreResult<()> {
        let mut c = self.conn();
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(key)).arg(value);
        if let Some(t) = ttl {
            cmd.arg("PX").arg(ms(t));
        }
        self.run(async move { cmd.query_async::<()>(&mut c).await })
            .await
    }

    async fn set_nx(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> StoreResult<bool> {
        let mut c = self.conn();
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(key)).arg(value).arg("NX");
        if let Some(t) = ttl {
            cmd.arg("PX").arg(ms(t));
        }
        let r: Option<String> = self
            .run(async move { cmd.query_async(&mut c).await })
            .await?;
        Ok(r.is_some())
    }

    async fn delete(&self, key: &str) -> StoreResult<bool> {
        let mut c = self.conn();
        let k = self.key(key);
        let n: i64 = self.run(async move { c.del(k).await }).await?;
        Ok(n > 0)
    }

    async fn incr(&self, key: &str, by: i64, ttl: Option<Duration>) -> StoreResult<i64> {
        let mut c = self.conn();
        let k = self.key(key);
        match ttl {
            None => self.run(async move { c.incr(k, by).await }).await,
            Some(t) => {
                let mut p = redis::pipe();
                p.atomic().incr(&k, by).pexpire(&k, ms(t) as i64).ignore();
                let (n,): (i64,) = self.run(async move { p.query_async(&mut c).await }).await?;
                Ok(n)
            }
        }
    }

    async fn rate_limit(&self, key: &str, per_sec: f64, burst: u32) -> StoreResult<RateDecision> {
        let mut c = self.conn();
        let interval = (1_000_000.0 / per_sec).max(1.0) as u64;
        let mut inv = self.scripts.rate_limit.prepare_invoke();
        inv.key(self.key(&format!("rl:{key}")))
            .arg(interval)
            .arg(burst.max(1));
        let (allowed, retry_us): (i64, u64) = self.run(inv.invoke_async(&mut c)).await?;
        Ok(RateDecision {
            allowed: allowed == 1,
            retry_after: Duration::from_micros(retry_us),
        })
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: &[u8],
        new: &[u8],
        ttl: Option<Duration>,
        publish: Option<(&str, &[u8])>,
        outbox: Option<&OutboxTag>,
    ) -> StoreResult<bool> {
        let mut c = self.conn();
        let (channel, payload) = match publish {
            Some((ch, p)) => (self.key(ch), p),
            None => (String::new(), &b""[..]),
        };
        let key = self.key(key);
        let (kind, scope, outbox) = match outbox {
            Some(t) => (t.kind, t.scope.as_str(), self.outbox_for(&t.scope).await?),
            None => ("", "", key.clone()),
        };
        let mut inv = self.scripts.cas.prepare_invoke();
        inv.key(key)
            .key(outbox)
            .arg(expected)
            .arg(new)
            .arg(channel)
            .arg(payload)
            .arg(ttl.map_or(0, ms))
            .arg(kind)
            .arg(scope)
            .arg(self.publish_command());
        let swapped: i64 = self.run(inv.invoke_async(&mut c)).await?;
        Ok(swapped == 1)
    }

    async fn set_max(&self, key: &str, value: i64, ttl: Option<Duration>) -> StoreResult<i64> {
        let mut c = self.conn();
        let mut inv = self.scripts.set_max.prepare_invoke();
        inv.key(self.key(key)).arg(value).arg(ttl.map_or(0, ms));
        self.run(inv.invoke_async(&mut c)).await
    }
}
