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
//!
//! With `redis.mode = "cluster"` the same code runs on a Redis Cluster: commands go through
//! a cluster connection that follows the slot map, every multi-key script touches keys of
//! one stream only (they share the stream id as hash tag, see `domain::keys`), pub/sub is
//! sharded (`SPUBLISH`/`SSUBSCRIBE`), and the outbox is one Redis Stream per stream with a
//! registry of them ([`outbox`]).

mod distinct;
mod indexes;
mod key_value;
mod logs;
mod outbox;
mod outbox_registry;
mod presence;
mod pubsub;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, Script, Value};
use tokio_util::sync::CancellationToken;

use super::fanout::Fanout;
use super::{SharedState, StoreError, StoreResult};
use crate::config::{redact_url_password, RedisConfig, RedisMode};

struct Scripts {
    log_append: Script,
    presence_touch: Script,
    presence_remove: Script,
    presence_read: Script,
    rate_limit: Script,
    cas: Script,
    set_max: Script,
    log_restore: Script,
    registry_forget: Script,
    delete_if_empty: Script,
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
            registry_forget: Script::new(include_str!("registry_forget.lua")),
            delete_if_empty: Script::new(include_str!("delete_if_empty.lua")),
        }
    }
}

/// A connection to a single Redis or to a Redis Cluster; both reconnect by themselves.
#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// `name` as is when it carries a Redis Cluster hash tag (`…{tag}…`), otherwise wrapped in
/// braces whole, so the keys derived from it share one slot.
pub(super) fn slot_tagged(name: &str) -> std::borrow::Cow<'_, str> {
    if let Some(open) = name.find('{') {
        if let Some(close) = name[open + 1..].find('}') {
            if close > 0 {
                return std::borrow::Cow::Borrowed(name);
            }
        }
    }
    std::borrow::Cow::Owned(format!("{{{name}}}"))
}

/// The Redis [`SharedState`].
pub struct RedisStore {
    conn: Conn,
    mode: RedisMode,
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

fn invalid_url(e: RedisError) -> StoreError {
    StoreError::Backend(format!("invalid redis.url: {e}"))
}

/// `redis.tls_ca_file`'s roots, when set.
fn tls_roots(cfg: &RedisConfig) -> StoreResult<Option<redis::TlsCertificates>> {
    if cfg.tls_ca_file.is_empty() {
        return Ok(None);
    }
    let root = std::fs::read(&cfg.tls_ca_file)
        .map_err(|e| StoreError::Backend(format!("redis.tls_ca_file: {e}")))?;
    Ok(Some(redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(root),
    }))
}

/// The Redis client `redis.url` describes, with `redis.tls_ca_file`'s roots for TLS.
fn client(cfg: &RedisConfig) -> StoreResult<redis::Client> {
    match tls_roots(cfg)? {
        None => redis::Client::open(cfg.url.as_str()).map_err(invalid_url),
        Some(certs) => redis::Client::build_with_tls(cfg.url.as_str(), certs).map_err(invalid_url),
    }
}

/// A Redis Cluster client seeded with `redis.url` and `redis.cluster_nodes`; `resp3` for
/// the pub/sub connection (pushes arrive on `push`).
fn cluster_client(
    cfg: &RedisConfig,
    push: Option<tokio::sync::mpsc::UnboundedSender<redis::PushInfo>>,
) -> StoreResult<ClusterClient> {
    let seeds: Vec<&str> = std::iter::once(cfg.url.as_str())
        .chain(cfg.cluster_nodes.iter().map(String::as_str))
        .collect();
    let mut b = ClusterClientBuilder::new(seeds)
        .connection_timeout(cfg.connect_timeout)
        .response_timeout(cfg.command_timeout)
        .retries(2)
        .min_retry_wait(50)
        .max_retry_wait(500);
    if let Some(certs) = tls_roots(cfg)? {
        b = b.certs(certs);
    }
    if let Some(tx) = push {
        b = b
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(tx);
    }
    b.build().map_err(invalid_url)
}

/// The cluster's connection: connects in the background, so a node may start while the
/// cluster is unreachable.
fn cluster_conn(client: &ClusterClient, cfg: &RedisConfig) -> ClusterConnection {
    client.get_pending_async_connection_with_config(
        ClusterConfig::new()
            .set_connection_timeout(cfg.connect_timeout)
            .set_response_timeout(cfg.command_timeout),
    )
}

impl RedisStore {
    /// Prepares the store and starts its health and pub/sub tasks. It does not wait for
    /// Redis to be reachable: a node may start while Redis is down and becomes ready when
    /// Redis answers.
    pub async fn connect(cfg: &RedisConfig) -> StoreResult<Self> {
        let stop = CancellationToken::new();
        let (conn, (pubsub, fanout)) = match cfg.mode {
            RedisMode::Standalone => {
                let client = client(cfg)?;
                let mgr_cfg = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(cfg.connect_timeout))
                    .set_response_timeout(Some(cfg.command_timeout))
                    .set_number_of_retries(2)
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(Duration::from_millis(500));
                let conn = ConnectionManager::new_lazy_with_config(client.clone(), mgr_cfg)
                    .map_err(map_err)?;
                let ps = pubsub::start(client, cfg.connect_timeout, stop.clone());
                (Conn::Single(conn), ps)
            }
            RedisMode::Cluster => {
                let conn = cluster_conn(&cluster_client(cfg, None)?, cfg);
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                let ps_conn = cluster_conn(&cluster_client(cfg, Some(tx))?, cfg);
                let ps = pubsub::start_cluster(ps_conn, rx, stop.clone());
                (Conn::Cluster(conn), ps)
            }
        };
        let healthy = Arc::new(AtomicBool::new(false));
        let store = Self {
            conn,
            mode: cfg.mode,
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
        if first.is_ok() && cfg.mode == RedisMode::Standalone && store.cluster_enabled().await {
            return Err(StoreError::Backend(
                "redis.url points at a Redis Cluster node: set redis.mode = \"cluster\"".into(),
            ));
        }
        tracing::info!(
            url = %redact_url_password(&cfg.url),
            mode = ?cfg.mode,
            up = first.is_ok(),
            "redis backend"
        );
        Ok(store)
    }

    /// `CONFIG GET param` on the server, or on every master of a cluster: (node, value)
    /// pairs sorted by node.
    async fn config_get(&self, param: &str) -> StoreResult<Vec<(String, String)>> {
        use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo};
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("GET").arg(param);
        let value = |reply: Value| -> StoreResult<String> {
            let pair: Vec<String> = redis::from_redis_value(reply)
                .map_err(|e| StoreError::Backend(format!("CONFIG GET {param}: {e}")))?;
            pair.get(1)
                .cloned()
                .ok_or_else(|| StoreError::Backend(format!("CONFIG GET {param}: no value")))
        };
        match self.conn() {
            Conn::Single(mut c) => {
                let reply: Value = self
                    .run(async move { cmd.query_async(&mut c).await })
                    .await?;
                Ok(vec![("redis".into(), value(reply)?)])
            }
            Conn::Cluster(mut c) => {
                let route = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
                let reply = self
                    .run(async move { c.route_command(cmd, route).await })
                    .await?;
                let Value::Map(per_node) = reply else {
                    return Err(StoreError::Backend(format!(
                        "CONFIG GET {param}: unexpected cluster reply"
                    )));
                };
                let mut out = Vec::new();
                for (node, reply) in per_node {
                    let node: String = redis::from_redis_value(node)
                        .map_err(|e| StoreError::Backend(e.to_string()))?;
                    if let Value::ServerError(e) = &reply {
                        return Err(StoreError::Backend(format!("{node}: {e:?}")));
                    }
                    out.push((node, value(reply)?));
                }
                out.sort();
                Ok(out)
            }
        }
    }

    /// Whether the server says it is a Redis Cluster node (`INFO cluster`).
    async fn cluster_enabled(&self) -> bool {
        let mut c = self.conn();
        let info: StoreResult<String> = self
            .run(async move { redis::cmd("INFO").arg("cluster").query_async(&mut c).await })
            .await;
        info.is_ok_and(|i| i.lines().any(|l| l.trim() == "cluster_enabled:1"))
    }

    /// The publish command: `SPUBLISH` (sharded pub/sub) on a cluster, `PUBLISH` otherwise.
    fn publish_command(&self) -> &'static str {
        match self.mode {
            RedisMode::Standalone => "PUBLISH",
            RedisMode::Cluster => "SPUBLISH",
        }
    }

    fn key(&self, k: &str) -> String {
        format!("{}{}", self.prefix, k)
    }

    fn set_health(&self, up: bool) {
        set_health(&self.healthy, up);
    }

    fn conn(&self) -> Conn {
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
    conn: Conn,
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
        let (aof, fsync) = match (
            self.config_get("appendonly").await,
            self.config_get("appendfsync").await,
        ) {
            (Ok(a), Ok(f)) => (a, f),
            (Err(e), _) | (_, Err(e)) => {
                return Durability::Unknown(format!("CONFIG GET failed: {e}"))
            }
        };
        if aof.is_empty() || aof.len() != fsync.len() {
            return Durability::Unknown("CONFIG GET answered nothing".into());
        }
        // Every server (each master of a cluster) must keep what it acknowledged.
        for ((node, a), (_, f)) in aof.iter().zip(&fsync) {
            if let Durability::Volatile(why) = durability_of(a, f) {
                return Durability::Volatile(match self.mode {
                    RedisMode::Standalone => why,
                    RedisMode::Cluster => format!("{node}: {why}"),
                });
            }
        }
        Durability::Durable
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
