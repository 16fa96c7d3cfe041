//! The Redis backend: shared state for a cluster of nodes.
//!
//! Commands go through a [`ConnectionManager`] (one multiplexed connection that reconnects
//! by itself); multi-key operations are the Lua scripts beside this file; pub/sub uses one
//! dedicated connection per node ([`pubsub`]). A health task pings Redis every
//! `redis.health_interval` and drives readiness and the `streamedge_redis_up` gauge.
//!
//! This file owns the store itself and what every role shares: the connection, key
//! naming, the scripts, running a command with its timeout and health bookkeeping, and the
//! [`SharedState`] core (health, close). Each role's trait is implemented in its own file
//! beside this one, next to the scripts it runs.

mod distinct;
mod indexes;
mod key_value;
mod logs;
mod outbox;
mod presence;
mod pubsub;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Script};
use tokio_util::sync::CancellationToken;

use super::fanout::Fanout;
use super::{SharedState, StoreError, StoreResult};
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

/// The Redis client `redis.url` describes, with `redis.tls_ca_file`'s roots for TLS.
fn client(cfg: &RedisConfig) -> StoreResult<redis::Client> {
    let invalid = |e: RedisError| StoreError::Backend(format!("invalid redis.url: {e}"));
    if cfg.tls_ca_file.is_empty() {
        return redis::Client::open(cfg.url.as_str()).map_err(invalid);
    }
    let root = std::fs::read(&cfg.tls_ca_file)
        .map_err(|e| StoreError::Backend(format!("redis.tls_ca_file: {e}")))?;
    let certs = redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(root),
    };
    redis::Client::build_with_tls(cfg.url.as_str(), certs).map_err(invalid)
}

impl RedisStore {
    /// Prepares the store and starts its health and pub/sub tasks. It does not wait for
    /// Redis to be reachable: a node may start while Redis is down and becomes ready when
    /// Redis answers.
    pub async fn connect(cfg: &RedisConfig) -> StoreResult<Self> {
        let client = client(cfg)?;
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
    let mut ticker = crate::periodic::Ticker::new(every, stop);
    while ticker.next().await {
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

    async fn durability(&self) -> crate::store::Durability {
        use crate::store::Durability;
        let mut c = self.conn();
        let r = self
            .run(async move {
                let aof: Vec<String> = redis::cmd("CONFIG")
                    .arg("GET")
                    .arg("appendonly")
                    .query_async(&mut c)
                    .await?;
                let fsync: Vec<String> = redis::cmd("CONFIG")
                    .arg("GET")
                    .arg("appendfsync")
                    .query_async(&mut c)
                    .await?;
                Ok((aof.get(1).cloned(), fsync.get(1).cloned()))
            })
            .await;
        match r {
            Ok((Some(aof), Some(fsync))) => durability_of(&aof, &fsync),
            Ok(_) => Durability::Unknown("CONFIG GET answered nothing".into()),
            Err(e) => Durability::Unknown(format!("CONFIG GET failed: {e}")),
        }
    }

    async fn close(&self) {
        self.stop.cancel();
    }
}

/// What Redis's `appendonly` and `appendfsync` settings mean for acknowledged writes.
fn durability_of(appendonly: &str, appendfsync: &str) -> crate::store::Durability {
    use crate::store::Durability;
    if !appendonly.eq_ignore_ascii_case("yes") {
        return Durability::Volatile(format!(
            "appendonly is {appendonly}: a Redis restart loses what was written since the last \
             snapshot, outbox records not yet in PostgreSQL included"
        ));
    }
    if appendfsync.eq_ignore_ascii_case("no") {
        return Durability::Volatile(
            "appendfsync is no: the operating system decides when the append-only file \
             reaches the disk"
                .into(),
        );
    }
    Durability::Durable
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::durability_of;
    use crate::store::Durability;

    #[test]
    fn only_an_append_only_file_synced_by_redis_is_durable() {
        assert_eq!(durability_of("yes", "everysec"), Durability::Durable);
        assert_eq!(durability_of("yes", "always"), Durability::Durable);
        assert!(matches!(
            durability_of("no", "everysec"),
            Durability::Volatile(_)
        ));
        assert!(matches!(
            durability_of("yes", "no"),
            Durability::Volatile(_)
        ));
    }
}
