//! The outbox as Redis Streams read through the consumer group `writers`: each node's
//! writers read new records with `XREADGROUP`, confirm them with `XACK` + `XDEL`, and take
//! over records a dead node read but never confirmed with `XAUTOCLAIM` once they have been
//! idle for `persist.reclaim_after`.
//!
//! On a single Redis there is one outbox stream, `<prefix>outbox`. On a Redis Cluster a
//! record must be written by the same script as the fact it records (a chat append, a
//! stream record's swap), so it must live in that stream's slot: each stream has its own
//! outbox, `<prefix>outbox:{<stream id>}`, and the registry `<prefix>outbox:streams` (a
//! sorted set of stream ids scored by when a node last wrote there) tells writers where to
//! look. A node registers a stream before its first record and again every
//! [`super::outbox_registry::REGISTER_EVERY`]; a stream leaves the registry only when its outbox is empty and no
//! node has registered it for [`super::outbox_registry::FORGET_AFTER`], so no record is written to an outbox the
//! writers do not look at. Writers poll a quiet stream's outbox less often (up to
//! [`QUIET_MAX`] apart).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::Value;

use super::outbox_registry::forget_idle_streams;
use super::{ms, RedisStore};
use crate::config::RedisMode;
use crate::store::{Outbox, OutboxEntry, OutboxStats, OutboxTag, StoreError, StoreResult};

const GROUP: &str = "writers";
/// The longest a writer waits before looking again at a stream's outbox that was empty.
pub(super) const QUIET_MAX: Duration = Duration::from_secs(1);
const QUIET_MIN: Duration = Duration::from_millis(50);

#[derive(Default)]
pub(super) struct ReaderState {
    /// Outbox keys whose consumer group exists.
    pub(super) groups: HashSet<String>,
    /// Stream ids this node registered, and when (cluster).
    pub(super) registered: HashMap<String, Instant>,
    /// The outbox keys to read, and when they were listed.
    pub(super) keys: Vec<String>,
    pub(super) keys_at: Option<Instant>,
    /// Where the next read starts in `keys`.
    pub(super) next: usize,
    /// Keys found empty: not read again before the instant; the backoff so far.
    pub(super) quiet: HashMap<String, (Instant, Duration)>,
    pub(super) last_reclaim: Option<Instant>,
    /// Where each key's next `XAUTOCLAIM` scan starts.
    pub(super) cursors: HashMap<String, String>,
    pub(super) last_forget_scan: Option<Instant>,
}

/// An entry id as handed to writers: the outbox key and the Redis stream id.
fn entry_id(key: &str, id: &str) -> String {
    format!("{key}|{id}")
}

fn split_id(id: &str) -> StoreResult<(&str, &str)> {
    id.rsplit_once('|')
        .ok_or_else(|| StoreError::Backend(format!("not an outbox record id: {id}")))
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// Reads `[[id, [field, value, ...]], ...]`.
fn parse_entries(key: &str, v: &Value) -> StoreResult<Vec<OutboxEntry>> {
    let bad = || StoreError::Backend("unexpected outbox reply".into());
    let Value::Array(items) = v else {
        return match v {
            Value::Nil => Ok(Vec::new()),
            _ => Err(bad()),
        };
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::Array(pair) = item else {
            return Err(bad());
        };
        let id = pair.first().and_then(text).ok_or_else(bad)?;
        // A record deleted after it was read comes back with no fields: skip it.
        let Some(Value::Array(fields)) = pair.get(1) else {
            continue;
        };
        let mut e = OutboxEntry {
            added_ms: id
                .split('-')
                .next()
                .and_then(|m| m.parse().ok())
                .unwrap_or(0),
            id: entry_id(key, &id),
            kind: String::new(),
            scope: String::new(),
            seq: 0,
            data: bytes::Bytes::new(),
        };
        for kv in fields.chunks(2) {
            let (Some(k), Some(v)) = (kv.first().and_then(text), kv.get(1)) else {
                continue;
            };
            match k.as_str() {
                "k" => e.kind = text(v).unwrap_or_default(),
                "s" => e.scope = text(v).unwrap_or_default(),
                "q" => e.seq = text(v).and_then(|s| s.parse().ok()).unwrap_or(0),
                "d" => {
                    if let Value::BulkString(b) = v {
                        e.data = bytes::Bytes::copy_from_slice(b);
                    }
                }
                _ => {}
            }
        }
        out.push(e);
    }
    Ok(out)
}

async fn ensure_group(store: &RedisStore, key: &str) -> StoreResult<()> {
    if store.outbox.lock().unwrap().groups.contains(key) {
        return Ok(());
    }
    let mut c = store.conn();
    let mut cmd = redis::cmd("XGROUP");
    cmd.arg("CREATE")
        .arg(key)
        .arg(GROUP)
        .arg("0")
        .arg("MKSTREAM");
    let r: Result<Value, _> = store.run(cmd.query_async(&mut c)).await;
    match r {
        Ok(_) => {}
        Err(StoreError::Backend(m)) if m.contains("BUSYGROUP") => {}
        Err(e) => return Err(e),
    }
    store.outbox.lock().unwrap().groups.insert(key.to_string());
    Ok(())
}

fn lost_group(e: &StoreError) -> bool {
    matches!(e, StoreError::Backend(m) if m.contains("NOGROUP"))
}

async fn take(
    store: &RedisStore,
    consumer: &str,
    max: usize,
    reclaim_after: Duration,
) -> StoreResult<Vec<OutboxEntry>> {
    let keys = store.outbox_keys().await?;
    for key in &keys {
        ensure_group(store, key).await?;
    }
    let r = take_inner(store, &keys, consumer, max, reclaim_after).await;
    if let Err(e) = &r {
        if lost_group(e) {
            // Redis lost a stream (flushed or replaced): create the groups again.
            store.outbox.lock().unwrap().groups.clear();
        }
    }
    r
}

async fn take_inner(
    store: &RedisStore,
    keys: &[String],
    consumer: &str,
    max: usize,
    reclaim_after: Duration,
) -> StoreResult<Vec<OutboxEntry>> {
    let reclaim_due = {
        let st = store.outbox.lock().unwrap();
        st.last_reclaim
            .is_none_or(|t| t.elapsed() >= reclaim_after / 2)
    };
    if reclaim_due {
        let claimed = reclaim(store, keys, consumer, max, reclaim_after).await?;
        if !claimed.is_empty() {
            metrics::counter!("streamedge_persist_reclaimed_total").increment(claimed.len() as u64);
            tracing::info!(
                records = claimed.len(),
                "outbox: took over records of a writer that stopped"
            );
            return Ok(claimed);
        }
    }
    let sharded = store.mode == RedisMode::Cluster;
    let start = store.outbox.lock().unwrap().next;
    let mut out = Vec::new();
    for i in 0..keys.len() {
        let idx = (start + i) % keys.len();
        let key = &keys[idx];
        if sharded {
            let st = store.outbox.lock().unwrap();
            if st
                .quiet
                .get(key)
                .is_some_and(|(until, _)| Instant::now() < *until)
            {
                continue;
            }
        }
        let got = read_new(store, key, consumer, max - out.len()).await?;
        if sharded {
            let mut st = store.outbox.lock().unwrap();
            if got.is_empty() {
                let backoff = st
                    .quiet
                    .get(key)
                    .map_or(QUIET_MIN, |(_, b)| (*b * 2).min(QUIET_MAX));
                st.quiet
                    .insert(key.clone(), (Instant::now() + backoff, backoff));
            } else {
                st.quiet.remove(key);
            }
        }
        out.extend(got);
        if out.len() >= max {
            store.outbox.lock().unwrap().next = idx + 1;
            break;
        }
    }
    Ok(out)
}

/// Takes over records idle longer than `reclaim_after`, scanning each key from where the
/// last scan stopped; a finished pass over every key waits half the reclaim time.
async fn reclaim(
    store: &RedisStore,
    keys: &[String],
    consumer: &str,
    max: usize,
    reclaim_after: Duration,
) -> StoreResult<Vec<OutboxEntry>> {
    let mut out = Vec::new();
    for key in keys {
        loop {
            let cursor = store
                .outbox
                .lock()
                .unwrap()
                .cursors
                .get(key)
                .cloned()
                .unwrap_or_else(|| "0-0".into());
            let mut c = store.conn();
            let mut cmd = redis::cmd("XAUTOCLAIM");
            cmd.arg(key)
                .arg(GROUP)
                .arg(consumer)
                .arg(ms(reclaim_after))
                .arg(&cursor)
                .arg("COUNT")
                .arg(max - out.len());
            let reply: Value = store.run(cmd.query_async(&mut c)).await?;
            let (next, claimed) = match &reply {
                Value::Array(parts) if parts.len() >= 2 => {
                    (text(&parts[0]), parse_entries(key, &parts[1])?)
                }
                _ => return Err(StoreError::Backend("unexpected XAUTOCLAIM reply".into())),
            };
            let wrapped = next.as_deref().is_none_or(|n| n == "0-0");
            {
                let mut st = store.outbox.lock().unwrap();
                match next {
                    Some(n) if !wrapped => st.cursors.insert(key.clone(), n),
                    _ => st.cursors.remove(key),
                };
            }
            out.extend(claimed);
            if out.len() >= max {
                return Ok(out);
            }
            if wrapped {
                break;
            }
        }
    }
    store.outbox.lock().unwrap().last_reclaim = Some(Instant::now());
    Ok(out)
}

/// Reads up to `max` records of `key` nobody took yet.
async fn read_new(
    store: &RedisStore,
    key: &str,
    consumer: &str,
    max: usize,
) -> StoreResult<Vec<OutboxEntry>> {
    let mut c = store.conn();
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP")
        .arg(GROUP)
        .arg(consumer)
        .arg("COUNT")
        .arg(max)
        .arg("STREAMS")
        .arg(key)
        .arg(">");
    let reply: Value = store.run(cmd.query_async(&mut c)).await?;
    // [[stream, [entries...]]] or nil.
    match &reply {
        Value::Nil => Ok(Vec::new()),
        Value::Array(streams) => match streams.first() {
            Some(Value::Array(s)) if s.len() >= 2 => parse_entries(key, &s[1]),
            _ => Ok(Vec::new()),
        },
        Value::Map(m) => match m.first() {
            Some((_, v)) => parse_entries(key, v),
            None => Ok(Vec::new()),
        },
        _ => Err(StoreError::Backend("unexpected XREADGROUP reply".into())),
    }
}

async fn ack(store: &RedisStore, ids: &[String]) -> StoreResult<()> {
    let mut by_key: HashMap<&str, Vec<&str>> = HashMap::new();
    for id in ids {
        let (key, rid) = split_id(id)?;
        by_key.entry(key).or_default().push(rid);
    }
    for (key, rids) in by_key {
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("XACK").arg(key).arg(GROUP).arg(&rids).ignore();
        pipe.cmd("XDEL").arg(key).arg(&rids).ignore();
        let mut c = store.conn();
        let _: () = store
            .run(async move { pipe.query_async(&mut c).await })
            .await?;
    }
    Ok(())
}

/// One outbox key's depth and oldest record.
pub(super) async fn key_stats(store: &RedisStore, key: &str) -> StoreResult<(u64, Option<u64>)> {
    let mut pipe = redis::pipe();
    pipe.cmd("XLEN").arg(key);
    pipe.cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(1);
    let mut c = store.conn();
    let (depth, first): (u64, Value) = store
        .run(async move { pipe.query_async(&mut c).await })
        .await?;
    let oldest = parse_entries(key, &first)?.first().map(|e| e.added_ms);
    Ok((depth, oldest))
}

async fn stats(store: &RedisStore) -> StoreResult<OutboxStats> {
    let keys = store.outbox_keys().await?;
    let per_key =
        futures_util::future::try_join_all(keys.iter().map(|k| key_stats(store, k))).await?;
    if store.mode == RedisMode::Cluster {
        forget_idle_streams(store).await?;
    }
    Ok(OutboxStats {
        depth: per_key.iter().map(|(d, _)| d).sum(),
        oldest_added_ms: per_key.iter().filter_map(|(_, o)| *o).min(),
    })
}

#[async_trait]
impl Outbox for RedisStore {
    async fn outbox_add(&self, tag: &OutboxTag, data: &[u8]) -> StoreResult<()> {
        let key = self.outbox_for(&tag.scope).await?;
        let mut c = self.conn();
        let mut cmd = redis::cmd("XADD");
        cmd.arg(key)
            .arg("*")
            .arg("k")
            .arg(tag.kind)
            .arg("s")
            .arg(&tag.scope)
            .arg("q")
            .arg(0)
            .arg("d")
            .arg(data);
        let _: redis::Value = self.run(cmd.query_async(&mut c)).await?;
        Ok(())
    }

    async fn outbox_take(
        &self,
        consumer: &str,
        max: usize,
        reclaim_after: Duration,
    ) -> StoreResult<Vec<OutboxEntry>> {
        take(self, consumer, max, reclaim_after).await
    }

    async fn outbox_ack(&self, ids: &[String]) -> StoreResult<()> {
        ack(self, ids).await
    }

    async fn outbox_stats(&self) -> StoreResult<OutboxStats> {
        stats(self).await
    }
}
