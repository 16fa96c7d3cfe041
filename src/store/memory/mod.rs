//! The embedded in-memory backend: one node, no Redis. Same semantics as the Redis
//! backend (the conformance suite holds both to it), with expiry checked on access and by
//! a periodic sweep so expired entries do not accumulate.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;

use super::fanout::Fanout;
use super::outbox_file::FileOutbox;
use super::{
    encode_log_publish, AppendOptions, LogEntry, OutboxEntry, OutboxStats, OutboxTag, SharedState,
    StoreError, StoreResult, Subscription,
};

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

/// The members of one presence set with their expiry times.
///
/// Every viewer's connection touches its set when it joins and again every `ttl / 3`, so
/// a touch must not scan the set: expired members are dropped only when a count or list
/// needs it and something can have expired since the last scan (`earliest`), which in a
/// steady state is about once per refresh period instead of once per touch.
#[derive(Default)]
struct PresenceSet {
    members: HashMap<String, Instant>,
    /// No member expires before this (exact right after a scan, a lower bound after
    /// touches and removals); `None` when the set has been empty since the last scan.
    earliest: Option<Instant>,
}

impl PresenceSet {
    /// Drops expired members, if any can have expired.
    fn sweep(&mut self, now: Instant) {
        if self.earliest.is_none_or(|e| e > now) {
            return;
        }
        self.members.retain(|_, exp| *exp > now);
        self.earliest = self.members.values().min().copied();
    }

    /// Marks `member` present until `exp`; returns whether it was absent (never there,
    /// removed, or expired).
    fn touch(&mut self, member: &str, exp: Instant, now: Instant) -> bool {
        self.earliest = Some(self.earliest.map_or(exp, |e| e.min(exp)));
        match self.members.get_mut(member) {
            Some(old) => {
                let was_live = *old > now;
                *old = exp;
                !was_live
            }
            None => {
                self.members.insert(member.to_string(), exp);
                true
            }
        }
    }

    /// Removes `member`; returns whether it was present (and not expired).
    fn remove(&mut self, member: &str, now: Instant) -> bool {
        self.members.remove(member).is_some_and(|exp| exp > now)
    }

    /// The live members (after dropping expired ones).
    fn live(&mut self, now: Instant) -> &HashMap<String, Instant> {
        self.sweep(now);
        &self.members
    }
}

enum Value {
    Bytes(Bytes),
    Counter(i64),
}

#[derive(Default)]
struct Log {
    last_seq: u64,
    entries: VecDeque<LogEntry>,
    expires: Option<Instant>,
    /// The sequence outlives the entries' expiry ([`AppendOptions::keep_seq`]).
    keep_seq: bool,
}

impl Log {
    /// Applies expiry: `false` when nothing is left to keep.
    fn expire(&mut self, now: Instant) -> bool {
        if live(self.expires, now) {
            return true;
        }
        self.entries.clear();
        self.expires = None;
        self.keep_seq
    }
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

    fn log(&mut self, name: &str, now: Instant) -> Option<&mut Log> {
        if let Some(log) = self.logs.get_mut(name) {
            if !log.expire(now) {
                self.logs.remove(name);
                return None;
            }
        }
        self.logs.get_mut(name)
    }

    fn members(&mut self, set: &str, now: Instant) -> Option<&HashMap<String, Instant>> {
        Some(self.presence.get_mut(set)?.live(now))
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

    fn outbox(&self) -> StoreResult<&FileOutbox> {
        self.outbox
            .as_deref()
            .ok_or_else(|| StoreError::Backend("no outbox configured (persistence is off)".into()))
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

    async fn get(&self, key: &str) -> StoreResult<Option<Bytes>> {
        let mut inner = self.lock();
        match inner.value(key, Instant::now()) {
            None => Ok(None),
            Some(Value::Bytes(b)) => Ok(Some(b.clone())),
            Some(Value::Counter(n)) => Ok(Some(Bytes::from(n.to_string()))),
        }
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> StoreResult<()> {
        let exp = ttl.map(|t| Instant::now() + t);
        self.lock().values.insert(
            key.to_string(),
            (Value::Bytes(Bytes::copy_from_slice(value)), exp),
        );
        Ok(())
    }

    async fn set_nx(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> StoreResult<bool> {
        let now = Instant::now();
        let mut inner = self.lock();
        if inner.value(key, now).is_some() {
            return Ok(false);
        }
        inner.values.insert(
            key.to_string(),
            (
                Value::Bytes(Bytes::copy_from_slice(value)),
                ttl.map(|t| now + t),
            ),
        );
        Ok(true)
    }

    async fn delete(&self, key: &str) -> StoreResult<bool> {
        let now = Instant::now();
        let mut inner = self.lock();
        let existed = inner.value(key, now).is_some();
        inner.values.remove(key);
        Ok(existed)
    }

    async fn incr(&self, key: &str, by: i64, ttl: Option<Duration>) -> StoreResult<i64> {
        let now = Instant::now();
        let mut inner = self.lock();
        let current = match inner.value(key, now) {
            None => 0,
            Some(Value::Counter(n)) => *n,
            Some(Value::Bytes(b)) => std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
                .ok_or_else(|| StoreError::Backend(format!("{key} is not a counter")))?,
        };
        let next = current
            .checked_add(by)
            .ok_or_else(|| StoreError::Backend(format!("{key} would overflow")))?;
        let exp = match ttl {
            Some(t) => Some(now + t),
            None => inner.values.get(key).and_then(|(_, e)| *e),
        };
        inner
            .values
            .insert(key.to_string(), (Value::Counter(next), exp));
        Ok(next)
    }

    async fn rate_limit(
        &self,
        key: &str,
        per_sec: f64,
        burst: u32,
    ) -> StoreResult<super::RateDecision> {
        let now_us = Instant::now()
            .saturating_duration_since(epoch())
            .as_micros() as u64;
        let mut inner = self.lock();
        let (decision, new_tat) =
            super::gcra(now_us, inner.limits.get(key).copied(), per_sec, burst);
        if let Some(t) = new_tat {
            inner.limits.insert(key.to_string(), t);
        }
        Ok(decision)
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
        let now = Instant::now();
        let mut inner = self.lock();
        let matches = match inner.value(key, now) {
            Some(Value::Bytes(b)) => b[..] == *expected,
            Some(Value::Counter(n)) => n.to_string().as_bytes() == expected,
            None => false,
        };
        if !matches {
            return Ok(false);
        }
        if let Some(tag) = outbox {
            self.outbox()?
                .append(tag, 0, new)
                .map_err(|e| StoreError::Backend(format!("outbox: {e}")))?;
        }
        inner.values.insert(
            key.to_string(),
            (
                Value::Bytes(Bytes::copy_from_slice(new)),
                ttl.map(|t| now + t),
            ),
        );
        if let Some((ch, payload)) = publish {
            self.fanout.deliver(
                ch,
                super::PubSubEvent::Message(Bytes::copy_from_slice(payload)),
            );
        }
        Ok(true)
    }

    async fn set_max(&self, key: &str, value: i64, ttl: Option<Duration>) -> StoreResult<i64> {
        let now = Instant::now();
        let mut inner = self.lock();
        let current = match inner.value(key, now) {
            None => None,
            Some(Value::Counter(n)) => Some(*n),
            Some(Value::Bytes(b)) => std::str::from_utf8(b).ok().and_then(|s| s.parse().ok()),
        };
        let next = current.map_or(value, |c| c.max(value));
        let exp = match ttl {
            Some(t) => Some(now + t),
            None => inner.values.get(key).and_then(|(_, e)| *e),
        };
        inner
            .values
            .insert(key.to_string(), (Value::Counter(next), exp));
        Ok(next)
    }

    async fn distinct_add(
        &self,
        key: &str,
        members: &[&str],
        ttl: Option<Duration>,
    ) -> StoreResult<()> {
        let now = Instant::now();
        let mut inner = self.lock();
        let entry = inner
            .distinct
            .entry(key.to_string())
            .or_insert_with(|| (Default::default(), None));
        if !live(entry.1, now) {
            *entry = (Default::default(), None);
        }
        entry.0.extend(members.iter().map(|m| m.to_string()));
        if let Some(t) = ttl {
            entry.1 = Some(now + t);
        }
        Ok(())
    }

    async fn distinct_count(&self, key: &str) -> StoreResult<u64> {
        let now = Instant::now();
        let inner = self.lock();
        Ok(inner
            .distinct
            .get(key)
            .filter(|(_, exp)| live(*exp, now))
            .map_or(0, |(s, _)| s.len() as u64))
    }

    async fn presence_touch(&self, set: &str, member: &str, ttl: Duration) -> StoreResult<bool> {
        let now = Instant::now();
        let mut inner = self.lock();
        let entry = match inner.presence.get_mut(set) {
            Some(existing) => existing,
            None => inner.presence.entry(set.to_string()).or_default(),
        };
        Ok(entry.touch(member, now + ttl, now))
    }

    async fn presence_remove(&self, set: &str, member: &str) -> StoreResult<bool> {
        let now = Instant::now();
        let mut inner = self.lock();
        Ok(inner
            .presence
            .get_mut(set)
            .is_some_and(|s| s.remove(member, now)))
    }

    async fn presence_count(&self, set: &str) -> StoreResult<u64> {
        let now = Instant::now();
        let mut inner = self.lock();
        Ok(inner.members(set, now).map_or(0, |m| m.len() as u64))
    }

    async fn presence_list(
        &self,
        set: &str,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        let now = Instant::now();
        let mut inner = self.lock();
        let Some(members) = inner.members(set, now) else {
            return Ok(Vec::new());
        };
        let sorted: BTreeMap<&String, ()> = members.keys().map(|k| (k, ())).collect();
        Ok(sorted
            .into_keys()
            .filter(|m| after.is_none_or(|a| m.as_str() > a))
            .take(limit)
            .cloned()
            .collect())
    }

    async fn index_add(&self, key: &str, member: &str) -> StoreResult<bool> {
        Ok(self
            .lock()
            .indexes
            .entry(key.to_string())
            .or_default()
            .insert(member.to_string()))
    }

    async fn index_remove(&self, key: &str, member: &str) -> StoreResult<bool> {
        let mut inner = self.lock();
        let Some(set) = inner.indexes.get_mut(key) else {
            return Ok(false);
        };
        let removed = set.remove(member);
        if set.is_empty() {
            inner.indexes.remove(key);
        }
        Ok(removed)
    }

    async fn index_page_desc(
        &self,
        key: &str,
        before: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        let inner = self.lock();
        let Some(set) = inner.indexes.get(key) else {
            return Ok(Vec::new());
        };
        let iter: Box<dyn Iterator<Item = &String>> = match before {
            Some(b) => Box::new(
                set.range::<str, _>((std::ops::Bound::Unbounded, std::ops::Bound::Excluded(b)))
                    .rev(),
            ),
            None => Box::new(set.iter().rev()),
        };
        Ok(iter.take(limit).cloned().collect())
    }

    async fn log_append(
        &self,
        log: &str,
        payload: &[u8],
        opts: &AppendOptions,
    ) -> StoreResult<u64> {
        let now = Instant::now();
        let payload = Bytes::copy_from_slice(payload);
        let seq = {
            let mut inner = self.lock();
            if let Some((key, _)) = &opts.once {
                match inner.value(key, now) {
                    Some(Value::Counter(n)) => return Ok(*n as u64),
                    Some(_) => return Err(StoreError::Backend(format!("{key} is not a sequence"))),
                    None => {}
                }
            }
            inner.log(log, now);
            let l = inner.logs.entry(log.to_string()).or_default();
            if let Some(tag) = &opts.outbox {
                // In the file before anything changes: a failed write appends nothing.
                self.outbox()?
                    .append(tag, l.last_seq + 1, &payload)
                    .map_err(|e| StoreError::Backend(format!("outbox: {e}")))?;
            }
            l.last_seq += 1;
            l.entries.push_back(LogEntry {
                seq: l.last_seq,
                payload: payload.clone(),
            });
            if opts.max_len > 0 {
                while l.entries.len() > opts.max_len {
                    l.entries.pop_front();
                }
            }
            if let Some(ttl) = opts.ttl {
                l.expires = Some(now + ttl);
            }
            l.keep_seq |= opts.keep_seq;
            // Published under the lock so subscribers see appends in sequence order.
            if let Some(ch) = &opts.publish {
                self.fanout.deliver(
                    ch,
                    super::PubSubEvent::Message(encode_log_publish(l.last_seq, &payload)),
                );
            }
            let seq = l.last_seq;
            if let Some((key, ttl)) = &opts.once {
                inner
                    .values
                    .insert(key.clone(), (Value::Counter(seq as i64), Some(now + *ttl)));
            }
            seq
        };
        Ok(seq)
    }

    async fn log_after(&self, log: &str, after: u64, limit: usize) -> StoreResult<Vec<LogEntry>> {
        let mut inner = self.lock();
        let Some(l) = inner.log(log, Instant::now()) else {
            return Ok(Vec::new());
        };
        let start = l.entries.partition_point(|e| e.seq <= after);
        Ok(l.entries.iter().skip(start).take(limit).cloned().collect())
    }

    async fn log_before(&self, log: &str, before: u64, limit: usize) -> StoreResult<Vec<LogEntry>> {
        let mut inner = self.lock();
        let Some(l) = inner.log(log, Instant::now()) else {
            return Ok(Vec::new());
        };
        let end = l.entries.partition_point(|e| e.seq < before);
        Ok(l.entries
            .iter()
            .take(end)
            .rev()
            .take(limit)
            .cloned()
            .collect())
    }

    async fn log_last_seq(&self, log: &str) -> StoreResult<u64> {
        let mut inner = self.lock();
        Ok(inner.log(log, Instant::now()).map_or(0, |l| l.last_seq))
    }

    async fn log_restore(
        &self,
        log: &str,
        entries: &[LogEntry],
        last_seq: u64,
        opts: &AppendOptions,
    ) -> StoreResult<()> {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.log(log, now);
        let l = inner.logs.entry(log.to_string()).or_default();
        l.last_seq = l.last_seq.max(last_seq);
        if l.entries.is_empty() {
            l.entries
                .extend(entries.iter().filter(|e| e.seq <= l.last_seq).cloned());
            if opts.max_len > 0 {
                while l.entries.len() > opts.max_len {
                    l.entries.pop_front();
                }
            }
        }
        if let Some(ttl) = opts.ttl {
            l.expires = Some(now + ttl);
        }
        l.keep_seq |= opts.keep_seq;
        Ok(())
    }

    async fn log_remove(&self, log: &str, seq: u64) -> StoreResult<bool> {
        let mut inner = self.lock();
        let Some(l) = inner.log(log, Instant::now()) else {
            return Ok(false);
        };
        match l.entries.binary_search_by_key(&seq, |e| e.seq) {
            Ok(i) => {
                l.entries.remove(i);
                Ok(true)
            }
            Err(_) => Ok(false),
        }
    }

    async fn publish(&self, channel: &str, payload: Bytes) -> StoreResult<()> {
        self.fanout
            .deliver(channel, super::PubSubEvent::Message(payload));
        Ok(())
    }

    async fn subscribe(&self, channel: &str) -> StoreResult<Subscription> {
        Ok(self.fanout.subscribe(channel).0)
    }

    async fn outbox_add(&self, tag: &OutboxTag, data: &[u8]) -> StoreResult<()> {
        self.outbox()?
            .append(tag, 0, data)
            .map_err(|e| StoreError::Backend(format!("outbox: {e}")))
    }

    async fn outbox_take(
        &self,
        _consumer: &str,
        max: usize,
        _reclaim_after: Duration,
    ) -> StoreResult<Vec<OutboxEntry>> {
        // One node: a record taken by a writer stays with it until written.
        Ok(self.outbox()?.take(max))
    }

    async fn outbox_ack(&self, ids: &[String]) -> StoreResult<()> {
        self.outbox()?
            .ack(ids)
            .map_err(|e| StoreError::Backend(format!("outbox: {e}")))
    }

    async fn outbox_stats(&self) -> StoreResult<OutboxStats> {
        Ok(self.outbox()?.stats())
    }

    async fn close(&self) {
        if let Some(h) = self.sweeper.lock().expect("sweeper lock").take() {
            h.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_set_scans_only_when_a_member_can_have_expired() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut set = PresenceSet::default();
        assert!(set.touch("a", t0 + s(10), t0));
        assert!(set.touch("b", t0 + s(20), t0));
        // A refresh: `a` now lives until 30; 10 stays the (lower) bound until a scan.
        assert!(!set.touch("a", t0 + s(30), t0 + s(1)));
        assert_eq!(set.earliest, Some(t0 + s(10)));
        // Nothing can have expired yet: no scan.
        assert_eq!(set.live(t0 + s(5)).len(), 2);
        assert_eq!(set.earliest, Some(t0 + s(10)));
        // A scan: nobody had expired, and the bound becomes exact.
        assert_eq!(set.live(t0 + s(11)).len(), 2);
        assert_eq!(set.earliest, Some(t0 + s(20)));
        // `b` expired.
        assert_eq!(set.live(t0 + s(21)).len(), 1);
        // An expired member comes back as new; removing an expired one finds nothing.
        assert!(set.touch("b", t0 + s(40), t0 + s(21)));
        assert!(!set.remove("a", t0 + s(31)));
        assert!(set.remove("b", t0 + s(31)));
        assert!(set.live(t0 + s(31)).is_empty());
        assert_eq!(set.earliest, None);
    }
}
