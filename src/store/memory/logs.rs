//! [`Logs`] for the memory backend: the logs in `Inner::logs`, with their expiry.

use std::collections::VecDeque;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;

use super::{live, Inner, MemoryStore, Value};
use crate::store::{
    encode_log_publish, AppendOptions, LogEntry, Logs, PubSubEvent, StoreError, StoreResult,
};

#[derive(Default)]
pub(super) struct Log {
    last_seq: u64,
    entries: VecDeque<LogEntry>,
    expires: Option<Instant>,
    /// The sequence outlives the entries' expiry ([`AppendOptions::keep_seq`]).
    keep_seq: bool,
}

impl Log {
    /// After an append or a restore: trims to `max_len`, extends the expiry, notes
    /// `keep_seq`.
    fn apply(&mut self, opts: &AppendOptions, now: Instant) {
        if opts.max_len > 0 {
            while self.entries.len() > opts.max_len {
                self.entries.pop_front();
            }
        }
        if let Some(ttl) = opts.ttl {
            self.expires = Some(now + ttl);
        }
        self.keep_seq |= opts.keep_seq;
    }

    /// Applies expiry: `false` when nothing is left to keep.
    pub(super) fn expire(&mut self, now: Instant) -> bool {
        if live(self.expires, now) {
            return true;
        }
        self.entries.clear();
        self.expires = None;
        self.keep_seq
    }
}

impl Inner {
    fn log(&mut self, name: &str, now: Instant) -> Option<&mut Log> {
        if let Some(log) = self.logs.get_mut(name) {
            if !log.expire(now) {
                self.logs.remove(name);
                return None;
            }
        }
        self.logs.get_mut(name)
    }
}

#[async_trait]
impl Logs for MemoryStore {
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
            l.apply(opts, now);
            // Published under the lock so subscribers see appends in sequence order.
            if let Some(ch) = &opts.publish {
                self.fanout.deliver(
                    ch,
                    PubSubEvent::Message(encode_log_publish(l.last_seq, &payload)),
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
        }
        l.apply(opts, now);
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
}
