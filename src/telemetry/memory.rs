//! Giving memory back after a burst of connections has ended.
//!
//! A flood of connections (thousands of unfinished request heads, a reconnect storm)
//! makes each worker thread's allocator heap grow; when the connections close, the
//! allocator keeps the freed pages for reuse, so the node stays at its high-water mark.
//! This module counts open client connections (HTTP and WebSocket) and, when the count
//! has fallen well below the peak since the last release, raises a *release epoch*. The
//! binary's runtime asks every worker thread, when it next parks (has nothing to do), to
//! return its allocator's free pages if the epoch moved (`src/main.rs`); the library
//! only says when.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

static OPEN: AtomicUsize = AtomicUsize::new(0);
/// The most connections open at once since the last release (or start).
static PEAK: AtomicUsize = AtomicUsize::new(0);
static EPOCH: AtomicU64 = AtomicU64::new(0);

/// How often the watcher looks at the connection count.
const CHECK_EVERY: Duration = Duration::from_secs(2);
/// A release is asked for when at least this many connections closed since the peak...
const MIN_DROP: usize = 64;
/// ...and they were at least this fraction (1/n) of the peak.
const MIN_DROP_FRACTION: usize = 4;

/// One open client connection, counted until dropped.
pub struct ConnectionSlot(());

impl ConnectionSlot {
    pub fn open() -> Self {
        let n = OPEN.fetch_add(1, Ordering::Relaxed) + 1;
        PEAK.fetch_max(n, Ordering::Relaxed);
        Self(())
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Open client connections counted by [`ConnectionSlot`]s.
pub fn open_connections() -> usize {
    OPEN.load(Ordering::Relaxed)
}

/// Moves each time the node wants worker threads to return free memory.
pub fn release_epoch() -> u64 {
    EPOCH.load(Ordering::Relaxed)
}

/// Whether `now` open connections, against a `peak` since the last release, is a drop
/// worth releasing memory for.
fn worth_releasing(peak: usize, now: usize) -> bool {
    let dropped = peak.saturating_sub(now);
    dropped >= MIN_DROP && dropped >= peak / MIN_DROP_FRACTION
}

/// Watches the connection count until `stop` and raises the release epoch after a large
/// drop (see the module documentation).
pub async fn watch(stop: CancellationToken) {
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = open_connections();
        let peak = PEAK.load(Ordering::Relaxed);
        if worth_releasing(peak, now) {
            EPOCH.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                peak,
                now,
                "connections dropped: asking workers to release memory"
            );
            metrics::counter!("streamedge_memory_releases_total").increment(1);
            PEAK.store(now, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_only_after_a_large_drop() {
        assert!(!worth_releasing(0, 0));
        assert!(!worth_releasing(50, 0), "50 closed is below the minimum");
        assert!(worth_releasing(265, 0), "a head flood's peak at the node");
        assert!(worth_releasing(4000, 0));
        assert!(worth_releasing(1000, 700));
        assert!(
            !worth_releasing(20_000, 19_000),
            "1,000 of 20,000 is churn, not a burst ending"
        );
    }
}
