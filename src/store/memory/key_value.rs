//! [`KeyValue`] for the memory backend: values and counters in `Inner::values`, limiter
//! TATs in `Inner::limits`.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;

use super::{epoch, Inner, MemoryStore, Value};
use crate::store::{gcra, KeyValue, OutboxTag, PubSubEvent, RateDecision, StoreError, StoreResult};

#[async_trait]
impl KeyValue for MemoryStore {
    async fn get(&self, key: &str) -> StoreResult<Option<Bytes>> {
        let mut inner = self.lock();
        match inner.value(key, Instant::now()) {
            None => Ok(None),
            Some(Value::Bytes(b)) => Ok(Some(b.clone())),
            Some(Value::Counter(n)) => Ok(Some(Bytes::from(n.to_string()))),
        }
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> StoreResult<()> {
        let exp = ttl.map(|t| Instant::now() + t);
        self.lock().values.insert(
            key.to_string(),
            (Value::Bytes(Bytes::copy_from_slice(value)), exp),
        );
        Ok(())
    }

    async fn set_nx(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> StoreResult<bool> {
        let now = Instant::now();
        let mut inner = self.lock();
        if inner.value(key, now).is_some() {
            return Ok(false);
        }
        inner.values.insert(
            key.to_string(),
            (
                Value::Bytes(Bytes::copy_from_slice(value)),
                ttl.map(|t| now + t),
            ),
        );
        Ok(true)
    }

    async fn delete(&self, key: &str) -> StoreResult<bool> {
        let now = Instant::now();
        let mut inner = self.lock();
        let existed = inner.value(key, now).is_some();
        inner.values.remove(key);
        Ok(existed)
    }

    async fn incr(&self, key: &str, by: i64, ttl: Option<Duration>) -> StoreResult<i64> {
        let now = Instant::now();
        let mut inner = self.lock();
        let current = match inner.value(key, now) {
            None => 0,
            Some(Value::Counter(n)) => *n,
            Some(Value::Bytes(b)) => std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
                .ok_or_else(|| StoreError::Backend(format!("{key} is not a counter")))?,
        };
        let next = current
            .checked_add(by)
            .ok_or_else(|| StoreError::Backend(format!("{key} would overflow")))?;
        inner.put_counter(key, next, ttl, now);
        Ok(next)
    }

    async fn rate_limit(&self, key: &str, per_sec: f64, burst: u32) -> StoreResult<RateDecision> {
        let now_us = Instant::now()
            .saturating_duration_since(epoch())
            .as_micros() as u64;
        let mut inner = self.lock();
        let (decision, new_tat) = gcra(now_us, inner.limits.get(key).copied(), per_sec, burst);
        if let Some(t) = new_tat {
            inner.limits.insert(key.to_string(), t);
        }
        Ok(decision)
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
        let now = Instant::now();
        let mut inner = self.lock();
        let matches = match inner.value(key, now) {
            Some(Value::Bytes(b)) => b[..] == *expected,
            Some(Value::Counter(n)) => n.to_string().as_bytes() == expected,
            None => false,
        };
        if !matches {
            return Ok(false);
        }
        if let Some(tag) = outbox {
            self.outbox()?
                .append(tag, 0, new)
                .map_err(|e| StoreError::Backend(format!("outbox: {e}")))?;
        }
        inner.values.insert(
            key.to_string(),
            (
                Value::Bytes(Bytes::copy_from_slice(new)),
                ttl.map(|t| now + t),
            ),
        );
        if let Some((ch, payload)) = publish {
            self.fanout
                .deliver(ch, PubSubEvent::Message(Bytes::copy_from_slice(payload)));
        }
        Ok(true)
    }

    async fn set_max(&self, key: &str, value: i64, ttl: Option<Duration>) -> StoreResult<i64> {
        let now = Instant::now();
        let mut inner = self.lock();
        let current = match inner.value(key, now) {
            None => None,
            Some(Value::Counter(n)) => Some(*n),
            Some(Value::Bytes(b)) => std::str::from_utf8(b).ok().and_then(|s| s.parse().ok()),
        };
        let next = current.map_or(value, |c| c.max(value));
        inner.put_counter(key, next, ttl, now);
        Ok(next)
    }
}

impl Inner {
    /// Stores a counter; without `ttl` it keeps the key's expiry.
    fn put_counter(&mut self, key: &str, n: i64, ttl: Option<Duration>, now: Instant) {
        let exp = match ttl {
            Some(t) => Some(now + t),
            None => self.values.get(key).and_then(|(_, e)| *e),
        };
        self.values
            .insert(key.to_string(), (Value::Counter(n), exp));
    }
}
