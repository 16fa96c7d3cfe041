//! The Redis backend: shared state for a cluster of nodes.
//!
//! Commands go through a [`ConnectionManager`] (one multiplexed connection that reconnects
//! by itself); multi-key operations are the Lua scripts beside this file; pub/sub uses one
//! dedicated connection per node ([`pubsub`]). A health task pings Redis every
//! `redis.health_interval` and drives readiness and the `streamedge_redis_up` gauge.

mod outbox;
mod pubsub;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, RedisError, Script};
use tokio_util::sync::CancellationToken;

use super::fanout::Fanout;
use super::{
    AppendOptions, LogEntry, OutboxEntry, OutboxStats, OutboxTag, SharedState, StoreError,
    StoreResult, Subscription,
};
use crate::config::{redact_url_password, RedisConfig};

struct Scripts {
    log_append: Script,
    presence_touch: Script,
    presence_remove: Script,
    presence_read: Script,
    rate_limit: Script,
    cas: Script,
    set_max: Script,
    log_restore: Script,
}

impl Scripts {
    fn load() -> Self {
        Self {
            log_append: Script::new(include_str!("log_append.lua")),
            presence_touch: Script::new(include_str!("presence_touch.lua")),
            presence_remove: Script::new(include_str!("presence_remove.lua")),
            presence_read: Script::new(include_str!("presence_read.lua")),
            rate_limit: Script::new(include_str!("rate_limit.lua")),
            cas: Script::new(include_str!("cas.lua")),
            set_max: Script::new(include_str!("set_max.lua")),
            log_restore: Script::new(include_str!("log_restore.lua")),
        }
    }
}

/// The Redis [`SharedState`].
pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
    scripts: Scripts,
    healthy: Arc<AtomicBool>,
    pubsub: pubsub::PubSubHandle,
    fanout: Arc<Fanout>,
    stop: CancellationToken,
    command_timeout: Duration,
    outbox: std::sync::Mutex<outbox::ReaderState>,
}

fn map_err(e: RedisError) -> StoreError {
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Backend(e.to_string())
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis().clamp(1, u64::MAX as u128) as u64
}

impl RedisStore {
    /// Prepares the store and starts its health and pub/sub tasks. It does not wait for
    /// Redis to be reachable: a node may start while Redis is down and becomes ready when
    /// Redis answers.
    pub async fn connect(cfg: &RedisConfig) -> StoreResult<Self> {
        let client = redis::Client::open(cfg.url.as_str())
            .map_err(|e| StoreError::Backend(format!("invalid redis.url: {e}")))?;
        let mgr_cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(cfg.connect_timeout))
            .set_response_timeout(Some(cfg.command_timeout))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let conn =
            ConnectionManager::new_lazy_with_config(client.clone(), mgr_cfg).map_err(map_err)?;
        let healthy = Arc::new(AtomicBool::new(false));
        let stop = CancellationToken::new();
        let (pubsub, fanout) = pubsub::start(client, cfg.connect_timeout, stop.clone());
        let store = Self {
            conn,
            prefix: cfg.key_prefix.clone(),
            scripts: Scripts::load(),
            healthy: healthy.clone(),
            pubsub,
            fanout,
            stop: stop.clone(),
            command_timeout: cfg.command_timeout,
            outbox: Default::default(),
        };
        metrics::gauge!("streamedge_redis_up").set(0.0);
        // First check inline, so a node that starts with Redis up is ready at once.
        let first = store.ping().await;
        store.set_health(first.is_ok());
        tokio::spawn(health_loop(
            store.conn.clone(),
            healthy,
            cfg.health_interval,
            cfg.command_timeout,
            stop,
        ));
        tracing::info!(url = %redact_url_password(&cfg.url), up = first.is_ok(), "redis backend");
        Ok(store)
    }

    fn outbox_key(&self) -> String {
        format!("{}outbox", self.prefix)
    }

    fn key(&self, k: &str) -> String {
        format!("{}{}", self.prefix, k)
    }

    fn log_keys(&self, log: &str) -> (String, String) {
        // One hash tag for both keys keeps them in one slot.
        (
            format!("{}log:{{{}}}", self.prefix, log),
            format!("{}log:{{{}}}:seq", self.prefix, log),
        )
    }

    fn set_health(&self, up: bool) {
        set_health(&self.healthy, up);
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Runs a command future, marking the backend unhealthy on connection errors.
    async fn run<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, RedisError>>,
    ) -> StoreResult<T> {
        let r = match tokio::time::timeout(self.command_timeout + Duration::from_millis(500), fut)
            .await
        {
            Ok(r) => r.map_err(map_err),
            Err(_) => Err(StoreError::Unavailable("redis command timed out".into())),
        };
        if let Err(StoreError::Unavailable(_)) = &r {
            self.set_health(false);
        }
        r
    }
}

fn set_health(flag: &AtomicBool, up: bool) {
    let was = flag.swap(up, Ordering::SeqCst);
    if was != up {
        metrics::gauge!("streamedge_redis_up").set(if up { 1.0 } else { 0.0 });
        if up {
            tracing::info!("redis reachable");
        } else {
            metrics::counter!("streamedge_redis_disconnects_total").increment(1);
            tracing::warn!("redis unreachable");
        }
    }
}

async fn health_loop(
    conn: ConnectionManager,
    healthy: Arc<AtomicBool>,
    every: Duration,
    timeout: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let mut c = conn.clone();
        let ok = matches!(
            tokio::time::timeout(timeout, redis::cmd("PING").query_async::<String>(&mut c)).await,
            Ok(Ok(_))
        );
        set_health(&healthy, ok);
    }
}

#[async_trait]
impl SharedState for RedisStore {
    fn backend(&self) -> &'static str {
        "redis"
    }

    fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::SeqCst)
    }

    async fn ping(&self) -> StoreResult<()> {
        let mut c = self.conn();
        let r = self
            .run(async move { redis::cmd("PING").query_async::<String>(&mut c).await })
            .await
            .map(|_| ());
        if r.is_ok() {
            self.set_health(true);
        }
        r
    }

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

    async fn rate_limit(
        &self,
        key: &str,
        per_sec: f64,
        burst: u32,
    ) -> StoreResult<super::RateDecision> {
        let mut c = self.conn();
        let interval = (1_000_000.0 / per_sec).max(1.0) as u64;
        let mut inv = self.scripts.rate_limit.prepare_invoke();
        inv.key(self.key(&format!("rl:{key}")))
            .arg(interval)
            .arg(burst.max(1));
        let (allowed, retry_us): (i64, u64) = self.run(inv.invoke_async(&mut c)).await?;
        Ok(super::RateDecision {
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
        let (kind, scope) = match outbox {
            Some(t) => (t.kind, t.scope.as_str()),
            None => ("", ""),
        };
        let mut inv = self.scripts.cas.prepare_invoke();
        inv.key(self.key(key))
            .key(self.outbox_key())
            .arg(expected)
            .arg(new)
            .arg(channel)
            .arg(payload)
            .arg(ttl.map_or(0, ms))
            .arg(kind)
            .arg(scope);
        let swapped: i64 = self.run(inv.invoke_async(&mut c)).await?;
        Ok(swapped == 1)
    }

    async fn set_max(&self, key: &str, value: i64, ttl: Option<Duration>) -> StoreResult<i64> {
        let mut c = self.conn();
        let mut inv = self.scripts.set_max.prepare_invoke();
        inv.key(self.key(key)).arg(value).arg(ttl.map_or(0, ms));
        self.run(inv.invoke_async(&mut c)).await
    }

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

    async fn log_append(
        &self,
        log: &str,
        payload: &[u8],
        opts: &AppendOptions,
    ) -> StoreResult<u64> {
        let mut c = self.conn();
        let (stream, seq) = self.log_keys(log);
        let channel = opts
            .publish
            .as_deref()
            .map(|ch| self.key(ch))
            .unwrap_or_default();
        let (once_key, once_ms) = match &opts.once {
            Some((key, ttl)) => (self.key(key), ms(*ttl)),
            None => (self.key("once:unused"), 0),
        };
        let (kind, scope) = match &opts.outbox {
            Some(t) => (t.kind, t.scope.as_str()),
            None => ("", ""),
        };
        let mut inv = self.scripts.log_append.prepare_invoke();
        inv.key(stream)
            .key(seq)
            .key(once_key)
            .key(self.outbox_key())
            .arg(payload)
            .arg(opts.max_len)
            .arg(opts.ttl.map_or(0, ms))
            .arg(channel)
            .arg(once_ms)
            .arg(kind)
            .arg(scope)
            .arg(if opts.keep_seq { "1" } else { "0" });
        self.run(inv.invoke_async(&mut c)).await
    }

    async fn log_after(&self, log: &str, after: u64, limit: usize) -> StoreResult<Vec<LogEntry>> {
        if limit == 0 || after == u64::MAX {
            return Ok(Vec::new());
        }
        let mut c = self.conn();
        let (stream, _) = self.log_keys(log);
        let start = format!("{}-0", after + 1);
        let reply: redis::streams::StreamRangeReply = self
            .run(async move { c.xrange_count(stream, start, "+", limit).await })
            .await?;
        entries(reply)
    }

    async fn log_before(&self, log: &str, before: u64, limit: usize) -> StoreResult<Vec<LogEntry>> {
        if limit == 0 || before <= 1 {
            return Ok(Vec::new());
        }
        let mut c = self.conn();
        let (stream, _) = self.log_keys(log);
        let end = format!("{}-0", before - 1);
        let reply: redis::streams::StreamRangeReply = self
            .run(async move { c.xrevrange_count(stream, end, "-", limit).await })
            .await?;
        entries(reply)
    }

    async fn log_last_seq(&self, log: &str) -> StoreResult<u64> {
        let mut c = self.conn();
        let (_, seq) = self.log_keys(log);
        let v: Option<u64> = self.run(async move { c.get(seq).await }).await?;
        Ok(v.unwrap_or(0))
    }

    async fn log_restore(
        &self,
        log: &str,
        entries: &[LogEntry],
        last_seq: u64,
        opts: &AppendOptions,
    ) -> StoreResult<()> {
        let mut c = self.conn();
        let (stream, seq) = self.log_keys(log);
        let mut inv = self.scripts.log_restore.prepare_invoke();
        inv.key(stream)
            .key(seq)
            .arg(last_seq)
            .arg(opts.max_len)
            .arg(opts.ttl.map_or(0, ms))
            .arg(if opts.keep_seq { "1" } else { "0" });
        for e in entries {
            inv.arg(e.seq).arg(&e.payload[..]);
        }
        let _: i64 = self.run(inv.invoke_async(&mut c)).await?;
        Ok(())
    }

    async fn log_remove(&self, log: &str, seq: u64) -> StoreResult<bool> {
        let mut c = self.conn();
        let (stream, _) = self.log_keys(log);
        let id = format!("{seq}-0");
        let n: i64 = self.run(async move { c.xdel(stream, &[id]).await }).await?;
        Ok(n > 0)
    }

    async fn publish(&self, channel: &str, payload: Bytes) -> StoreResult<()> {
        let mut c = self.conn();
        let ch = self.key(channel);
        self.run(async move { c.publish::<_, _, i64>(ch, &payload[..]).await })
            .await
            .map(|_| ())
    }

    async fn subscribe(&self, channel: &str) -> StoreResult<Subscription> {
        let (sub, first) = self.fanout.subscribe(&self.key(channel));
        if first {
            self.pubsub.subscribe(self.key(channel)).await;
        }
        Ok(sub)
    }

    async fn outbox_add(&self, tag: &OutboxTag, data: &[u8]) -> StoreResult<()> {
        let mut c = self.conn();
        let mut cmd = redis::cmd("XADD");
        cmd.arg(self.outbox_key())
            .arg("*")
            .arg("k")
            .arg(tag.kind)
            .arg("s")
            .arg(&tag.scope)
            .arg("q")
            .arg(0)
            .arg("d")
            .arg(data);
        let _: redis::Value = self.run(cmd.query_async(&mut c)).await?;
        Ok(())
    }

    async fn outbox_take(
        &self,
        consumer: &str,
        max: usize,
        reclaim_after: Duration,
    ) -> StoreResult<Vec<OutboxEntry>> {
        outbox::take(self, consumer, max, reclaim_after).await
    }

    async fn outbox_ack(&self, ids: &[String]) -> StoreResult<()> {
        outbox::ack(self, ids).await
    }

    async fn outbox_stats(&self) -> StoreResult<OutboxStats> {
        outbox::stats(self).await
    }

    async fn close(&self) {
        self.stop.cancel();
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn entries(reply: redis::streams::StreamRangeReply) -> StoreResult<Vec<LogEntry>> {
    reply
        .ids
        .into_iter()
        .map(|id| {
            let seq = id
                .id
                .split('-')
                .next()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| StoreError::Backend(format!("bad log entry id {}", id.id)))?;
            let payload = match id.map.get("p") {
                Some(redis::Value::BulkString(b)) => Bytes::copy_from_slice(b),
                _ => {
                    return Err(StoreError::Backend(format!(
                        "log entry {} has no payload",
                        id.id
                    )))
                }
            };
            Ok(LogEntry { seq, payload })
        })
        .collect()
}
