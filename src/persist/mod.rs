//! Asynchronous persistence to Supabase (PostgreSQL).
//!
//! The hot path never talks to PostgreSQL. Every record (chat message, stream and session
//! change, session summary, moderation action) goes into the durable outbox in the shared
//! state — a Redis Stream read through a consumer group, or without Redis a local
//! append-only file — in the same atomic step as the action for chat messages and state
//! transitions. Writer tasks on every node take batches from the outbox, write each in one
//! transaction of idempotent multi-row statements, and only then confirm them; a batch that
//! fails is retried with exponential backoff and full jitter; records a dead node took are
//! taken over by another node after `persist.reclaim_after`.
//!
//! The same pool serves the read side: restoring what the shared state lost, history pages
//! older than the shared state holds, and session exports.

mod backoff;
pub mod migrate;
pub mod pg;
mod queries;
pub mod records;
mod worker;
pub mod writer;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;

use crate::config::PersistConfig;
use crate::store::{OutboxTag, SharedState, StoreError};

pub use backoff::Backoff;
pub use queries::ArchivedMessage;

/// Persistence of one node.
pub struct Persistence {
    pool: Pool,
    store: Arc<dyn SharedState>,
    cfg: PersistConfig,
    node_id: String,
    /// The outbox holds `outbox_max_records` or more: chat sends are refused.
    full: AtomicBool,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("PostgreSQL unavailable: {0}")]
    Unavailable(String),
    #[error("PostgreSQL error: {0}")]
    Db(#[from] tokio_postgres::Error),
}

impl From<deadpool_postgres::PoolError> for ReadError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        ReadError::Unavailable(e.to_string())
    }
}

/// Counts a record added to the outbox.
pub fn queued(kind: &'static str) {
    metrics::counter!("streamedge_persist_records_queued_total", "kind" => kind).increment(1);
}

impl Persistence {
    /// Prepares the pool (connections are made on first use, so the node starts while
    /// PostgreSQL is down).
    pub fn new(
        cfg: &PersistConfig,
        store: Arc<dyn SharedState>,
        node_id: &str,
    ) -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            pool: pg::pool(cfg)?,
            store,
            cfg: cfg.clone(),
            node_id: node_id.to_string(),
            full: AtomicBool::new(false),
        }))
    }

    pub fn config(&self) -> &PersistConfig {
        &self.cfg
    }

    /// Whether the outbox has room for chat messages.
    pub fn accepting(&self) -> bool {
        !self.full.load(Ordering::Relaxed)
    }

    /// Adds a record outside an atomic step of the shared state.
    pub async fn record(&self, tag: &OutboxTag, data: &[u8]) -> Result<(), StoreError> {
        self.store.outbox_add(tag, data).await?;
        queued(tag.kind);
        Ok(())
    }

    /// Applies the bundled migrations (with `persist.migrate_on_start`).
    pub async fn migrate(&self) -> anyhow::Result<Vec<String>> {
        let mut client = pg::connect(&self.cfg).await?;
        migrate::run(&mut client, false).await
    }

    /// Starts the writers, the outbox monitor and the PostgreSQL health check; they stop with `stop`.
    pub fn start(self: &Arc<Self>, stop: CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        for i in 0..self.cfg.writers {
            tasks.push(tokio::spawn(self.clone().writer(i, stop.clone())));
        }
        tasks.push(tokio::spawn(self.clone().health(stop.clone())));
        tasks.push(tokio::spawn(self.clone().monitor(stop)));
        tasks
    }
}
