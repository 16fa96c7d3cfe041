//! The outbox as a Redis Stream (`<prefix>outbox`) read through the consumer group
//! `writers`: each node's writers read new records with `XREADGROUP`, confirm them with
//! `XACK` + `XDEL`, and take over records a dead node read but never confirmed with
//! `XAUTOCLAIM` once they have been idle for `persist.reclaim_after`.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::Value;

use super::{ms, RedisStore};
use crate::store::{Outbox, OutboxEntry, OutboxStats, OutboxTag, StoreError, StoreResult};

const GROUP: &str = "writers";

#[derive(Default)]
pub(super) struct ReaderState {
    group_ready: bool,
    last_reclaim: Option<Instant>,
    /// Where the next `XAUTOCLAIM` scan starts.
    cursor: Option<String>,
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// Reads `[[id, [field, value, ...]], ...]`.
fn parse_entries(v: &Value) -> StoreResult<Vec<OutboxEntry>> {
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
            id,
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

async fn ensure_group(store: &RedisStore) -> StoreResult<()> {
    if store.outbox.lock().unwrap().group_ready {
        return Ok(());
    }
    let mut c = store.conn();
    let mut cmd = redis::cmd("XGROUP");
    cmd.arg("CREATE")
        .arg(store.outbox_key())
        .arg(GROUP)
        .arg("0")
        .arg("MKSTREAM");
    let r: Result<Value, _> = store.run(cmd.query_async(&mut c)).await;
    match r {
        Ok(_) => {}
        Err(StoreError::Backend(m)) if m.contains("BUSYGROUP") => {}
        Err(e) => return Err(e),
    }
    store.outbox.lock().unwrap().group_ready = true;
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
    ensure_group(store).await?;
    let r = take_inner(store, consumer, max, reclaim_after).await;
    if let Err(e) = &r {
        if lost_group(e) {
            // Redis lost the stream (flushed or replaced): create the group again.
            store.outbox.lock().unwrap().group_ready = false;
        }
    }
    r
}

async fn take_inner(
    store: &RedisStore,
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
        let cursor = store
            .outbox
            .lock()
            .unwrap()
            .cursor
            .clone()
            .unwrap_or_else(|| "0-0".into());
        let mut c = store.conn();
        let mut cmd = redis::cmd("XAUTOCLAIM");
        cmd.arg(store.outbox_key())
            .arg(GROUP)
            .arg(consumer)
            .arg(ms(reclaim_after))
            .arg(&cursor)
            .arg("COUNT")
            .arg(max);
        let reply: Value = store.run(cmd.query_async(&mut c)).await?;
        let (next, claimed) = match &reply {
            Value::Array(parts) if parts.len() >= 2 => (text(&parts[0]), parse_entries(&parts[1])?),
            _ => return Err(StoreError::Backend("unexpected XAUTOCLAIM reply".into())),
        };
        {
            let mut st = store.outbox.lock().unwrap();
            let wrapped = next.as_deref().is_none_or(|n| n == "0-0");
            st.cursor = if wrapped { None } else { next };
            // Finished a scan: wait before the next one; otherwise keep scanning.
            if wrapped {
                st.last_reclaim = Some(Instant::now());
            }
        }
        if !claimed.is_empty() {
            metrics::counter!("streamedge_persist_reclaimed_total").increment(claimed.len() as u64);
            tracing::info!(
                records = claimed.len(),
                "outbox: took over records of a writer that stopped"
            );
            return Ok(claimed);
        }
    }
    let mut c = store.conn();
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP")
        .arg(GROUP)
        .arg(consumer)
        .arg("COUNT")
        .arg(max)
        .arg("STREAMS")
        .arg(store.outbox_key())
        .arg(">");
    let reply: Value = store.run(cmd.query_async(&mut c)).await?;
    // [[stream, [entries...]]] or nil.
    match &reply {
        Value::Nil => Ok(Vec::new()),
        Value::Array(streams) => match streams.first() {
            Some(Value::Array(s)) if s.len() >= 2 => parse_entries(&s[1]),
            _ => Ok(Vec::new()),
        },
        Value::Map(m) => match m.first() {
            Some((_, v)) => parse_entries(v),
            None => Ok(Vec::new()),
        },
        _ => Err(StoreError::Backend("unexpected XREADGROUP reply".into())),
    }
}

async fn ack(store: &RedisStore, ids: &[String]) -> StoreResult<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let key = store.outbox_key();
    let mut pipe = redis::pipe();
    pipe.atomic();
    pipe.cmd("XACK").arg(&key).arg(GROUP).arg(ids).ignore();
    pipe.cmd("XDEL").arg(&key).arg(ids).ignore();
    let mut c = store.conn();
    let _: () = store
        .run(async move { pipe.query_async(&mut c).await })
        .await?;
    Ok(())
}

async fn stats(store: &RedisStore) -> StoreResult<OutboxStats> {
    let key = store.outbox_key();
    let mut pipe = redis::pipe();
    pipe.cmd("XLEN").arg(&key);
    pipe.cmd("XRANGE")
        .arg(&key)
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(1);
    let mut c = store.conn();
    let (depth, first): (u64, Value) = store
        .run(async move { pipe.query_async(&mut c).await })
        .await?;
    let oldest = parse_entries(&first)?.first().map(|e| e.added_ms);
    Ok(OutboxStats {
        depth,
        oldest_added_ms: oldest,
    })
}

#[async_trait]
impl Outbox for RedisStore {
    async fn outbox_add(&self, tag: &OutboxTag, data: &[u8]) -> StoreResult<()> {
        let mut c = self.conn();
        let mut cmd = redis::cmd("XADD");
        cmd.arg(self.outbox_key())
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
