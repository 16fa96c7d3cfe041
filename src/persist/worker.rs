//! The writers: each takes a batch from the outbox, writes it to PostgreSQL as one
//! transaction (records that cannot be written are isolated one by one), confirms it, and
//! backs off with jitter while PostgreSQL is away; the monitor publishes the backlog.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::writer::Batch;

/// How often [`Persistence::health`] asks PostgreSQL whether it answers.
const PG_CHECK_EVERY: Duration = Duration::from_secs(5);
const PG_CHECK_TIMEOUT: Duration = Duration::from_secs(3);
use crate::store::OutboxEntry;

use super::*;

impl Persistence {
    pub(super) async fn writer(self: Arc<Self>, index: usize, stop: CancellationToken) {
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
    pub(super) async fn write_entries(
        &self,
        entries: &[OutboxEntry],
        stop: &CancellationToken,
    ) -> bool {
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

    pub(super) async fn try_write(&self, batch: &Batch) -> Result<(), WriteError> {
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
    pub(super) async fn confirm(&self, entries: &[OutboxEntry], stop: &CancellationToken) {
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
    pub(super) async fn monitor(self: Arc<Self>, stop: CancellationToken) {
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

    /// Publishes `streamedge_postgres_up`: 1 while PostgreSQL answers through the writers'
    /// pool, 0 while it does not.
    pub(super) async fn health(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(PG_CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut was_up = true;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let up = self.postgres_answers().await;
            metrics::gauge!("streamedge_postgres_up").set(if up { 1.0 } else { 0.0 });
            if up != was_up {
                if up {
                    tracing::info!("PostgreSQL answers again");
                } else {
                    tracing::warn!("PostgreSQL does not answer; records wait in the outbox");
                }
                was_up = up;
            }
        }
    }

    /// Whether PostgreSQL answers `SELECT 1` through the writers' pool within
    /// [`PG_CHECK_TIMEOUT`].
    async fn postgres_answers(&self) -> bool {
        let check = async {
            let client = self.pool.get().await.ok()?;
            client.simple_query("SELECT 1").await.ok()
        };
        matches!(
            tokio::time::timeout(PG_CHECK_TIMEOUT, check).await,
            Ok(Some(_))
        )
    }

    // --- the read side ---------------------------------------------------------------------
}

#[derive(Debug)]
pub(super) enum WriteError {
    /// The records themselves are refused.
    Data(String),
    /// PostgreSQL or the connection failed: the same batch may succeed later.
    Retry(String),
}

pub(super) async fn sleep_or_stop(d: Duration, stop: &CancellationToken) {
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
    }
}
