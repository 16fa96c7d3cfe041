//! The key/value role: values and counters with a TTL, the shared rate limiter,
//! compare-and-swap and set-max, plus the GCRA step both backends' rate limiters share.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::{OutboxTag, StoreResult};

/// The answer of [`KeyValue::rate_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    pub allowed: bool,
    /// When refused: how long until one more request would be allowed.
    pub retry_after: Duration,
}

/// Keys holding values or counters, each with an optional TTL.
#[async_trait]
pub trait KeyValue: Send + Sync {
    async fn get(&self, key: &str) -> StoreResult<Option<Bytes>>;
    /// Sets a value, replacing any previous one and its TTL.
    async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> StoreResult<()>;
    /// Sets a value only when the key does not exist; returns whether it was set.
    async fn set_nx(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> StoreResult<bool>;
    /// Removes a key (value or counter); returns whether it existed.
    async fn delete(&self, key: &str) -> StoreResult<bool>;
    /// Adds `by` to a counter (missing counts as 0) and returns the new value. `ttl`, when
    /// given, is (re)applied to the counter on every call.
    async fn incr(&self, key: &str, by: i64, ttl: Option<Duration>) -> StoreResult<i64>;

    /// Counts one request against the limiter `key` (generic cell rate algorithm):
    /// `burst` requests at once, `per_sec` sustained. Shared by every node.
    async fn rate_limit(&self, key: &str, per_sec: f64, burst: u32) -> StoreResult<RateDecision>;

    /// Replaces `key`'s value with `new` only if it is still `expected`, publishing
    /// `publish` (channel, payload) and adding `new` to the outbox under `outbox` in the
    /// same atomic step when it does. Returns whether it swapped.
    async fn compare_and_swap(
        &self,
        key: &str,
        expected: &[u8],
        new: &[u8],
        ttl: Option<Duration>,
        publish: Option<(&str, &[u8])>,
        outbox: Option<&OutboxTag>,
    ) -> StoreResult<bool>;
    /// Raises the integer at `key` to `value` if larger; returns the resulting maximum.
    async fn set_max(&self, key: &str, value: i64, ttl: Option<Duration>) -> StoreResult<i64>;
}

/// The GCRA step, shared by the in-memory backend and the Lua script's logic: given the
/// stored theoretical arrival time (µs), returns the decision and the new TAT to store.
pub fn gcra(
    now_us: u64,
    tat_us: Option<u64>,
    per_sec: f64,
    burst: u32,
) -> (RateDecision, Option<u64>) {
    let interval = (1_000_000.0 / per_sec).max(1.0) as u64;
    let tat = tat_us.unwrap_or(now_us).max(now_us);
    let new_tat = tat + interval;
    let allow_at = new_tat.saturating_sub(interval.saturating_mul(burst.max(1) as u64));
    if allow_at > now_us {
        (
            RateDecision {
                allowed: false,
                retry_after: Duration::from_micros(allow_at - now_us),
            },
            None,
        )
    } else {
        (
            RateDecision {
                allowed: true,
                retry_after: Duration::ZERO,
            },
            Some(new_tat),
        )
    }
}

#[cfg(test)]
mod gcra_tests {
    use super::*;

    #[test]
    fn burst_then_sustained_rate() {
        // 10/s, burst 3, all at t=0: three pass, the fourth waits 100 ms.
        let mut tat = None;
        for _ in 0..3 {
            let (d, t) = gcra(0, tat, 10.0, 3);
            assert!(d.allowed);
            tat = t;
        }
        let (d, t) = gcra(0, tat, 10.0, 3);
        assert!(!d.allowed);
        assert!(t.is_none());
        assert_eq!(d.retry_after, Duration::from_millis(100));
        // 100 ms later exactly one more passes.
        let (d, t) = gcra(100_000, tat, 10.0, 3);
        assert!(d.allowed);
        let (d, _) = gcra(100_000, t, 10.0, 3);
        assert!(!d.allowed);
        // After a long pause the full burst is available again.
        let mut tat = t;
        for _ in 0..3 {
            let (d, t) = gcra(10_000_000, tat, 10.0, 3);
            assert!(d.allowed);
            tat = t;
        }
    }
}
