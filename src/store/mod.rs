//! Shared state: the traits every capability uses for state that all nodes must agree on,
//! and the two backends behind them.
//!
//! - [`memory::MemoryStore`]: the embedded single-node backend (no Redis configured).
//! - [`redis::RedisStore`]: the cluster backend, chosen when `redis.url` is set.
//!
//! Both pass the same conformance suite (`tests/store_conformance.rs`). The shapes, one
//! trait per role, each in its own file beside this one: key/value with TTL and atomic
//! counters ([`KeyValue`]), approximate distinct counts ([`Distinct`]), presence sets whose
//! members expire ([`Presence`]), byte-ordered indexes ([`Indexes`]), an ordered per-name
//! log whose appends are sequenced atomically, and optionally published in the same step
//! ([`Logs`]), the durable outbox ([`Outbox`]), and publish/subscribe across nodes
//! ([`PubSub`]). [`SharedState`] is all of them together, the one callers hold as
//! `Arc<dyn SharedState>`; calling a role's method on it needs that role's trait in scope
//! (`use crate::store::prelude::*` brings them all).
//!
//! This file owns the error type, [`SharedState`] and [`from_config`].

pub mod fanout;
pub mod memory;
pub mod outbox_file;
pub mod redis;

mod distinct;
mod indexes;
mod key_value;
mod logs;
mod outbox;
mod presence;
mod pubsub;

use std::sync::Arc;

use async_trait::async_trait;

use crate::config::Config;

pub use distinct::Distinct;
pub use fanout::{PubSubEvent, Subscription};
pub use indexes::Indexes;
pub use key_value::{gcra, KeyValue, RateDecision};
pub use logs::{decode_log_publish, encode_log_publish, AppendOptions, LogEntry, Logs};
pub use outbox::{Outbox, OutboxEntry, OutboxStats, OutboxTag};
pub use presence::Presence;
pub use pubsub::PubSub;

/// Every role trait, for calling their methods on a `dyn SharedState`.
pub mod prelude {
    pub use super::{Distinct, Indexes, KeyValue, Logs, Outbox, Presence, PubSub, SharedState};
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached now; the operation may succeed later.
    #[error("shared state unavailable: {0}")]
    Unavailable(String),
    /// The backend answered with an error or something this node cannot read.
    #[error("shared state error: {0}")]
    Backend(String),
}

/// State shared by every node of a deployment: every role, plus the backend's own health.
///
/// Keys and channels are plain names chosen by the capabilities (`stream:{id}:...`); a
/// backend may prefix them. Every operation is atomic on its own.
#[async_trait]
pub trait SharedState:
    KeyValue + Distinct + Presence + Indexes + Logs + Outbox + PubSub + Send + Sync + 'static
{
    /// `"memory"` or `"redis"`.
    fn backend(&self) -> &'static str;
    /// Whether the backend answered its last health check.
    fn is_healthy(&self) -> bool;
    /// Checks the backend now.
    async fn ping(&self) -> StoreResult<()>;
    /// Whether what the backend acknowledges (the outbox above all) survives a restart of
    /// the backend.
    async fn durability(&self) -> Durability;

    /// Stops background tasks (health checks, the pub/sub connection).
    async fn close(&self);
}

/// The answer of [`SharedState::durability`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Durability {
    /// Acknowledged writes survive a restart (Redis with an append-only file synced at
    /// least every second; the local outbox file).
    Durable,
    /// They may not; the text names the setting.
    Volatile(String),
    /// The backend does not say (`CONFIG` disabled, as on some managed services).
    Unknown(String),
}

/// Builds the backend the configuration selects: Redis when `redis.url` is set, the
/// embedded memory backend otherwise.
pub async fn from_config(config: &Config) -> StoreResult<Arc<dyn SharedState>> {
    if config.redis.url.is_empty() {
        if config.persist.enabled() {
            let outbox =
                outbox_file::FileOutbox::open(&config.persist.local_outbox_dir).map_err(|e| {
                    StoreError::Backend(format!(
                        "local outbox {}: {e}",
                        config.persist.local_outbox_dir.display()
                    ))
                })?;
            return Ok(Arc::new(memory::MemoryStore::with_outbox(
                Arc::new(outbox),
                config.persist.local_fsync_interval,
            )));
        }
        Ok(Arc::new(memory::MemoryStore::new()))
    } else {
        Ok(Arc::new(redis::RedisStore::connect(&config.redis).await?))
    }
}
