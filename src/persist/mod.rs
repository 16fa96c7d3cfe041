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

pub mod migrate;
pub mod pg;
pub mod records;
pub mod writer;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::PersistConfig;
use crate::store::{LogEntry, OutboxEntry, OutboxTag, SharedState, StoreError};
use writer::Batch;

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

/// A message row of the archive.
#[derive(Debug, Clone)]
pub struct ArchivedMessage {
    pub seq: u64,
    pub id: Uuid,
    pub user: String,
    pub body: String,
    pub client_msg_id: String,
    pub sent_at_ms: u64,
    pub deleted: bool,
}

impl ArchivedMessage {
    /// The payload the shared state's log holds for this message.
    pub fn log_entry(&self) -> LogEntry {
        let m = crate::domain::chat::StoredMessage {
            id: self.id,
            user: self.user.clone(),
            body: self.body.clone(),
            ts: crate::domain::clock::rfc3339(self.sent_at_ms),
            client_msg_id: self.client_msg_id.clone(),
        };
        LogEntry {
            seq: self.seq,
            payload: serde_json::to_vec(&m).expect("message serialises").into(),
        }
    }
}

const MESSAGE_COLUMNS: &str = "seq, id::text, user_id, body, client_msg_id,
     (extract(epoch from sent_at) * 1000)::int8, deleted_at is not null";

fn message_row(r: &tokio_postgres::Row) -> ArchivedMessage {
    ArchivedMessage {
        seq: r.get::<_, i64>(0) as u64,
        id: Uuid::parse_str(r.get::<_, &str>(1)).unwrap_or_default(),
        user: r.get(2),
        body: r.get(3),
        client_msg_id: r.get(4),
        sent_at_ms: r.get::<_, i64>(5).max(0) as u64,
        deleted: r.get(6),
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

    /// Starts the writers and the outbox monitor; they stop with `stop`.
    pub fn start(self: &Arc<Self>, stop: CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        for i in 0..self.cfg.writers {
            tasks.push(tokio::spawn(self.clone().writer(i, stop.clone())));
        }
        tasks.push(tokio::spawn(self.clone().monitor(stop)));
        tasks
    }

    async fn writer(self: Arc<Self>, index: usize, stop: CancellationToken) {
        let consumer = format!("{}-{index}", self.node_id);
        let mut backoff = Backoff::new(self.cfg.retry_initial, self.cfg.retry_max);
        while !stop.is_cancelled() {
            let entries = match self
                .store
                .outbox_take(
                    &consumer,
                    self.cfg.batch_max_records,
                    self.cfg.reclaim_after,
                )
                .await
            {
                Ok(e) => {
                    backoff.reset();
                    e
                }
                Err(e) => {
                    tracing::debug!(error = %e, "outbox not readable");
                    sleep_or_stop(backoff.next_delay(), &stop).await;
                    continue;
                }
            };
            if entries.is_empty() {
                sleep_or_stop(self.cfg.poll_interval, &stop).await;
                continue;
            }
            if self.write_entries(&entries, &stop).await {
                self.confirm(&entries, &stop).await;
            }
        }
    }

    /// Writes records until they are in PostgreSQL (true) or the node stops (false: they
    /// stay in the outbox for the next writer).
    async fn write_entries(&self, entries: &[OutboxEntry], stop: &CancellationToken) -> bool {
        let (batch, bad) = Batch::decode(entries);
        for b in &bad {
            metrics::counter!("streamedge_persist_records_failed_total", "kind" => "unknown")
                .increment(1);
            tracing::error!(id = %b.id, kind = %b.kind, reason = %b.reason, "outbox record cannot be read; dropped");
        }
        if batch.is_empty() {
            return true;
        }
        let mut backoff = Backoff::new(self.cfg.retry_initial, self.cfg.retry_max);
        let mut attempts = 0u32;
        loop {
            let started = std::time::Instant::now();
            match self.try_write(&batch).await {
                Ok(()) => {
                    let took = started.elapsed().as_secs_f64();
                    metrics::histogram!("streamedge_persist_batch_seconds").record(took);
                    metrics::histogram!("streamedge_persist_batch_records")
                        .record(entries.len() as f64);
                    for (kind, n) in &batch.counts {
                        metrics::counter!("streamedge_persist_records_written_total", "kind" => *kind)
                            .increment(*n);
                    }
                    // One sample per batch, its oldest record: the exporter keeps every
                    // sample until a scrape, and 50,000 a second would pile up.
                    let now = crate::domain::clock::now_ms();
                    if let Some(oldest) = entries.iter().map(|e| e.added_ms).min() {
                        metrics::histogram!("streamedge_persist_lag_seconds")
                            .record(now.saturating_sub(oldest) as f64 / 1000.0);
                    }
                    if attempts > 0 {
                        tracing::info!(
                            attempts,
                            records = entries.len(),
                            "PostgreSQL write succeeded after retries"
                        );
                    }
                    return true;
                }
                Err(WriteError::Data(e)) if entries.len() > 1 => {
                    // One bad record must not hold the others back: write them one by one.
                    tracing::warn!(error = %e, records = entries.len(), "batch refused; writing its records one by one");
                    for e in entries {
                        if !Box::pin(self.write_entries(std::slice::from_ref(e), stop)).await {
                            return false;
                        }
                    }
                    return true;
                }
                Err(WriteError::Data(e)) => {
                    let kind = entries.first().map_or("unknown", |e| e.kind.as_str());
                    metrics::counter!("streamedge_persist_records_failed_total", "kind" => kind.to_string())
                        .increment(1);
                    tracing::error!(error = %e, kind, id = %entries[0].id, "PostgreSQL refused a record; dropped");
                    return true;
                }
                Err(WriteError::Retry(e)) => {
                    attempts += 1;
                    metrics::counter!("streamedge_persist_retries_total").increment(1);
                    if attempts == 1 || attempts.is_power_of_two() {
                        tracing::warn!(error = %e, attempts, records = entries.len(), "PostgreSQL write failed; retrying");
                    }
                    if stop.is_cancelled() {
                        return false;
                    }
                    sleep_or_stop(backoff.next_delay(), stop).await;
                    if stop.is_cancelled() {
                        return false;
                    }
                }
            }
        }
    }

    async fn try_write(&self, batch: &Batch) -> Result<(), WriteError> {
        let mut client = self
            .pool
            .get()
            .await
            .map_err(|e| WriteError::Retry(e.to_string()))?;
        batch.write(&mut client).await.map_err(|e| {
            if writer::is_data_error(&e) {
                WriteError::Data(e.to_string())
            } else {
                WriteError::Retry(e.to_string())
            }
        })
    }

    /// Confirms written records, retrying briefly (an unconfirmed record is written again
    /// later, which changes nothing).
    async fn confirm(&self, entries: &[OutboxEntry], stop: &CancellationToken) {
        let ids: Vec<String> = entries.iter().map(|e| e.id.clone()).collect();
        let mut backoff = Backoff::new(self.cfg.retry_initial, self.cfg.retry_max);
        for _ in 0..10 {
            match self.store.outbox_ack(&ids).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "outbox confirmation failed; retrying");
                    sleep_or_stop(backoff.next_delay(), stop).await;
                }
            }
        }
    }

    /// Publishes the outbox's depth and age, and raises or clears the full flag.
    async fn monitor(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let Ok(stats) = self.store.outbox_stats().await else {
                continue;
            };
            let now = crate::domain::clock::now_ms();
            let age = stats
                .oldest_added_ms
                .map_or(0.0, |t| now.saturating_sub(t) as f64 / 1000.0);
            metrics::gauge!("streamedge_persist_outbox_depth").set(stats.depth as f64);
            metrics::gauge!("streamedge_persist_oldest_age_seconds").set(age);
            let full = stats.depth >= self.cfg.outbox_max_records;
            let was = self.full.swap(full, Ordering::Relaxed);
            metrics::gauge!("streamedge_persist_outbox_full").set(if full { 1.0 } else { 0.0 });
            if full && !was {
                tracing::error!(
                    depth = stats.depth,
                    max = self.cfg.outbox_max_records,
                    oldest_age_s = age,
                    "persistence outbox is full: chat sends are refused until PostgreSQL catches up"
                );
            } else if !full && was {
                tracing::warn!(depth = stats.depth, "persistence outbox has room again");
            }
        }
    }

    // --- the read side ---------------------------------------------------------------------

    async fn client(&self) -> Result<deadpool_postgres::Object, ReadError> {
        Ok(self.pool.get().await?)
    }

    /// The stream's record as last persisted.
    pub async fn stream_record(&self, id: &Uuid) -> Result<Option<String>, ReadError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "select record::text from public.streams where id = $1::text::uuid",
                &[&id.to_string()],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// The highest persisted sequence number of the stream's chat (0 when none).
    pub async fn chat_max_seq(&self, id: &Uuid) -> Result<u64, ReadError> {
        let c = self.client().await?;
        let row = c
            .query_one(
                "select coalesce(max(seq), 0) from public.chat_messages
                 where stream_id = $1::text::uuid",
                &[&id.to_string()],
            )
            .await?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    /// Messages with `seq < before`, newest first, at most `limit` (deleted ones left out).
    pub async fn chat_before(
        &self,
        id: &Uuid,
        before: u64,
        limit: usize,
    ) -> Result<Vec<ArchivedMessage>, ReadError> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!(
                    "select {MESSAGE_COLUMNS} from public.chat_messages
                     where stream_id = $1::text::uuid and seq < $2 and deleted_at is null
                     order by seq desc limit $3"
                ),
                &[
                    &id.to_string(),
                    &(before.min(i64::MAX as u64) as i64),
                    &(limit as i64),
                ],
            )
            .await?;
        Ok(rows.iter().map(message_row).collect())
    }

    /// Messages with `after < seq <= upto`, oldest first, at most `limit`, deleted ones
    /// included (marked).
    pub async fn chat_range(
        &self,
        id: &Uuid,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<ArchivedMessage>, ReadError> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!(
                    "select {MESSAGE_COLUMNS} from public.chat_messages
                     where stream_id = $1::text::uuid and seq > $2 and seq <= $3
                     order by seq limit $4"
                ),
                &[
                    &id.to_string(),
                    &(after.min(i64::MAX as u64) as i64),
                    &(upto.min(i64::MAX as u64) as i64),
                    &(limit as i64),
                ],
            )
            .await?;
        Ok(rows.iter().map(message_row).collect())
    }

    /// Users banned from the stream's chat now, with the time left of a timeout.
    pub async fn active_bans(
        &self,
        id: &Uuid,
    ) -> Result<Vec<(String, Option<Duration>)>, ReadError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "select target_user_id,
                        (extract(epoch from (expires_at - now())) * 1000)::int8
                 from (
                   select distinct on (target_user_id) target_user_id, action, expires_at
                   from public.moderation_actions
                   where stream_id = $1::text::uuid and action in ('ban', 'unban')
                     and target_user_id is not null
                   order by target_user_id, created_at desc
                 ) latest
                 where action = 'ban' and (expires_at is null or expires_at > now())",
                &[&id.to_string()],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let left: Option<i64> = r.get(1);
                (
                    r.get::<_, String>(0),
                    left.map(|ms| Duration::from_millis(ms.max(1) as u64)),
                )
            })
            .collect())
    }

    /// For exporting an archived session of `stream`: its summary (`null` when it has
    /// none yet) and chat range `(start, end]`.
    pub async fn session_export_info(
        &self,
        stream: &Uuid,
        session: &Uuid,
    ) -> Result<Option<(serde_json::Value, (u64, u64))>, ReadError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "select summary::text, chat_seq_start, coalesce(chat_seq_end, chat_seq_start)
                 from public.stream_sessions
                 where id = $1::text::uuid and stream_id = $2::text::uuid",
                &[&session.to_string(), &stream.to_string()],
            )
            .await?;
        Ok(row.map(|r| {
            let summary = r
                .get::<_, Option<&str>>(0)
                .and_then(|s| serde_json::from_str(s).ok())
                .unwrap_or(serde_json::Value::Null);
            let start = r.get::<_, i64>(1).max(0) as u64;
            let end = r.get::<_, i64>(2).max(0) as u64;
            (summary, (start, end))
        }))
    }

    /// The persisted summary of a session, if any.
    pub async fn session_summary(
        &self,
        session: &Uuid,
    ) -> Result<Option<serde_json::Value>, ReadError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "select summary::text from public.stream_sessions
                 where id = $1::text::uuid and summary is not null",
                &[&session.to_string()],
            )
            .await?;
        Ok(row.and_then(|r| serde_json::from_str(r.get::<_, &str>(0)).ok()))
    }
}

#[derive(Debug)]
enum WriteError {
    /// The records themselves are refused.
    Data(String),
    /// PostgreSQL or the connection failed: the same batch may succeed later.
    Retry(String),
}

async fn sleep_or_stop(d: Duration, stop: &CancellationToken) {
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
    }
}

/// Exponential backoff with jitter.
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            attempt: 0,
        }
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn next_delay(&mut self) -> Duration {
        let cap = self
            .initial
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        // Equal jitter: uniform in [cap/2, cap], so retries spread out but never spin.
        let nanos = cap.as_nanos() as u64;
        let r = (uuid::Uuid::new_v4().as_u128() as u64) % (nanos / 2 + 1);
        Duration::from_nanos(nanos / 2 + r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let d: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        assert!(d[0] >= Duration::from_millis(50) && d[0] <= Duration::from_millis(100));
        assert!(d[3] >= Duration::from_millis(400) && d[3] <= Duration::from_millis(800));
        for x in &d[5..] {
            assert!(*x >= Duration::from_secs(1) && *x <= Duration::from_secs(2));
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
