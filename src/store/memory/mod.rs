//! The embedded in-memory backend: one node, no Redis. Same semantics as the Redis
//! backend (the conformance suite holds both to it), with expiry checked on access and by
//! a periodic sweep so expired entries do not accumulate.
//!
//! This file owns the store itself and what every role shares: the state behind one lock
//! (`Inner`), its expiry sweep, and the [`SharedState`] core (health, close). Each role's
//! trait is implemented in its own file beside this one.

mod distinct;
mod indexes;
mod key_value;
mod logs;
mod outbox;
mod presence;
mod pubsub;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;

use self::logs::Log;
use self::presence::PresenceSet;
use super::fanout::Fanout;
use super::outbox_file::FileOutbox;
use super::{SharedState, StoreResult};

const SWEEP_INTERVAL: Duration = Duration::from_secs(5);
const PUBSUB_CAPACITY: usize = 4096;

#[derive(Default)]
struct Inner {
    values: HashMap<String, (Value, Option<Instant>)>,
    presence: HashMap<String, PresenceSet>,
    logs: HashMap<String, Log>,
    /// Rate limiter TATs, in µs since `epoch`.
    limits: HashMap<String, u64>,
    indexes: HashMap<String, BTreeSet<String>>,
    distinct: HashMap<String, (std::collections::HashSet<String>, Option<Instant>)>,
}

enum Value {
    Bytes(Bytes),
    Counter(i64),
}

/// The zero point of rate limiter clocks.
fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn live(exp: Option<Instant>, now: Instant) -> bool {
    exp.is_none_or(|e| e > now)
}

impl Inner {
    fn sweep(&mut self, now: Instant) {
        self.values.retain(|_, (_, exp)| live(*exp, now));
        self.presence.retain(|_, set| {
            set.sweep(now);
            !set.members.is_empty()
        });
        self.logs.retain(|_, log| log.expire(now));
        let now_us = now.saturating_duration_since(epoch()).as_micros() as u64;
        self.limits.retain(|_, tat| *tat > now_us);
        self.distinct.retain(|_, (_, exp)| live(*exp, now));
    }

    fn value(&mut self, key: &str, now: Instant) -> Option<&mut Value> {
        if let Some((_, exp)) = self.values.get(key) {
            if !live(*exp, now) {
                self.values.remove(key);
                return None;
            }
        }
        self.values.get_mut(key).map(|(v, _)| v)
    }
}

/// The in-memory [`SharedState`].
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
    fanout: Arc<Fanout>,
    sweeper: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The local durable outbox, when persistence is on.
    outbox: Option<Arc<FileOutbox>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// Creates the store; when called inside a Tokio runtime it also starts the sweeper.
    pub fn new() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let sweeper = tokio::runtime::Handle::try_current()
            .ok()
            .map(|rt| rt.spawn(sweep_loop(Arc::downgrade(&inner))));
        Self {
            inner,
            fanout: Fanout::new(PUBSUB_CAPACITY, None),
            sweeper: Mutex::new(sweeper),
            outbox: None,
        }
    }

    /// A store whose outbox records go to the local append-only `outbox`, flushed to disk
    /// every `fsync_interval`.
    pub fn with_outbox(outbox: Arc<FileOutbox>, fsync_interval: Duration) -> Self {
        let mut store = Self::new();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(&outbox);
            rt.spawn(async move {
                let mut tick = tokio::time::interval(fsync_interval);
                loop {
                    tick.tick().await;
                    let Some(o) = weak.upgrade() else { return };
                    let o2 = o.clone();
                    let r = tokio::task::spawn_blocking(move || o2.sync()).await;
                    if let Ok(Err(e)) = r {
                        tracing::error!(error = %e, "local outbox fsync failed");
                    }
                }
            });
        }
        store.outbox = Some(outbox);
        store
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("memory store lock")
    }
}

async fn sweep_loop(inner: Weak<Mutex<Inner>>) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        inner
            .lock()
            .expect("memory store lock")
            .sweep(Instant::now());
    }
}

impl Drop for MemoryStore {
    fn drop(&mut self) {
        if let Some(h) = self.sweeper.lock().expect("sweeper lock").take() {
            h.abort();
        }
    }
}

#[async_trait]
impl SharedState for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    fn is_healthy(&self) -> bool {
        true
    }

    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }

    /// The memory itself dies with the process; the outbox (the only part that must not)
    /// is the local append-only file, written before a record is acknowledged.
    async fn durability(&self) -> crate::store::Durability {
        crate::store::Durability::Durable
    }

    async fn close(&self) {
        if let Some(h) = self.sweeper.lock().expect("sweeper lock").take() {
            h.abort();
        }
    }
}
