//! `[persist]`: asynchronous persistence to Supabase (PostgreSQL) through a durable outbox.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Secret;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PersistConfig {
    /// `postgres://user:password@host:port/db?sslmode=require`; empty disables persistence.
    pub database_url: Secret,
    /// PEM file with extra CA certificates trusted for TLS to PostgreSQL (Supabase's CA).
    pub ca_file: String,
    /// Connections in the pool (writers, restores, exports and history pages share it).
    pub pool_size: usize,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Writer tasks per node, each taking its own batches from the outbox.
    pub writers: usize,
    /// Most records written in one batch (one transaction).
    pub batch_max_records: usize,
    /// How long an idle writer waits before looking at the outbox again.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Records taken by a writer that has not acknowledged them for this long (its node
    /// died) are taken over by another node's writer.
    #[serde(with = "humantime_serde")]
    pub reclaim_after: Duration,
    /// Backoff while PostgreSQL fails: first delay and cap (with jitter).
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// Records the outbox may hold before chat sends are refused (`persistence_backlog`).
    pub outbox_max_records: u64,
    /// Without Redis: the directory of the local append-only outbox.
    pub local_outbox_dir: PathBuf,
    /// Without Redis: how often the local outbox is flushed to disk (fsync). Records are
    /// written to the file before they are acknowledged, so a process crash loses nothing;
    /// this bounds what an operating-system crash can lose.
    #[serde(with = "humantime_serde")]
    pub local_fsync_interval: Duration,
    /// Rebuild streams, recent chat and bans from PostgreSQL when the shared state has lost
    /// them (Redis flushed or replaced).
    pub restore: bool,
    /// Apply the bundled migrations when the node starts.
    pub migrate_on_start: bool,
    /// Start even when Redis may lose acknowledged outbox records on a restart
    /// (`appendonly no`, or `appendfsync no`). Off: the node refuses to start against such a
    /// Redis.
    pub allow_volatile_redis: bool,
}

impl Default for PersistConfig {
    fn default() -> Self {
        Self {
            database_url: Secret::default(),
            ca_file: String::new(),
            pool_size: 8,
            connect_timeout: Duration::from_secs(5),
            writers: 4,
            batch_max_records: 5000,
            poll_interval: Duration::from_millis(50),
            reclaim_after: Duration::from_secs(30),
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(10),
            outbox_max_records: 1_000_000,
            local_outbox_dir: PathBuf::from("data/outbox"),
            local_fsync_interval: Duration::from_millis(100),
            restore: true,
            allow_volatile_redis: false,
            migrate_on_start: false,
        }
    }
}

impl PersistConfig {
    pub fn enabled(&self) -> bool {
        !self.database_url.is_empty()
    }
}
