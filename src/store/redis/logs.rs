//! [`Logs`] for the Redis backend: a Redis Stream per log (entry id `seq-0`) and its
//! sequence counter, appended and restored by the `log_append.lua` and `log_restore.lua`
//! scripts beside this file.

use async_trait::async_trait;
use bytes::Bytes;
use redis::AsyncCommands;

use super::{ms, RedisStore};
use crate::store::{AppendOptions, LogEntry, Logs, StoreError, StoreResult};

impl RedisStore {
    /// A log and its sequence counter: `log:<name>` and `log:<name>:seq`, in the slot of the
    /// name's hash tag (a name without one is wrapped in braces whole).
    fn log_keys(&self, log: &str) -> (String, String) {
        let name = super::slot_tagged(log);
        (
            format!("{}log:{name}", self.prefix),
            format!("{}log:{name}:seq", self.prefix),
        )
    }
}

#[async_trait]
impl Logs for RedisStore {
    async fn log_append(
        &self,
        log: &str,
        payload: &[u8],
        opts: &AppendOptions,
    ) -> StoreResult<u64> {
        let mut c = self.conn();
        let (stream, seq) = self.log_keys(log);
        let channel = opts
            .publish
            .as_deref()
            .map(|ch| self.key(ch))
            .unwrap_or_default();
        // Unused key slots repeat the counter's name, so every key is in the log's slot.
        let (once_key, once_ms) = match &opts.once {
            Some((key, ttl)) => (self.key(key), ms(*ttl)),
            None => (seq.clone(), 0),
        };
        let (kind, scope, outbox) = match &opts.outbox {
            Some(t) => (t.kind, t.scope.as_str(), self.outbox_for(&t.scope).await?),
            None => ("", "", seq.clone()),
        };
        let mut inv = self.scripts.log_append.prepare_invoke();
        inv.key(stream)
            .key(seq)
            .key(once_key)
            .key(outbox)
            .arg(payload)
            .arg(opts.max_len)
            .arg(opts.ttl.map_or(0, ms))
            .arg(channel)
            .arg(once_ms)
            .arg(kind)
            .arg(scope)
            .arg(if opts.keep_seq { "1" } else { "0" })
            .arg(self.publish_command());
        self.run(inv.invoke_async(&mut c)).await
    }

    async fn log_after(&self, log: &str, after: u64, limit: usize) -> StoreResult<Vec<LogEntry>> {
        if limit == 0 || after == u64::MAX {
            return Ok(Vec::new());
        }
        let mut c = self.conn();
        let (stream, _) = self.log_keys(log);
        let start = format!("{}-0", after + 1);
        let reply: redis::streams::StreamRangeReply = self
            .run(async move { c.xrange_count(stream, start, "+", limit).await })
            .await?;
        entries(reply)
    }

    async fn log_before(&self, log: &str, before: u64, limit: usize) -> StoreResult<Vec<LogEntry>> {
        if limit == 0 || before <= 1 {
            return Ok(Vec::new());
        }
        let mut c = self.conn();
        let (stream, _) = self.log_keys(log);
        let end = format!("{}-0", before - 1);
        let reply: redis::streams::StreamRangeReply = self
            .run(async move { c.xrevrange_count(stream, end, "-", limit).await })
            .await?;
        entries(reply)
    }

    async fn log_last_seq(&self, log: &str) -> StoreResult<u64> {
        let mut c = self.conn();
        let (_, seq) = self.log_keys(log);
        let v: Option<u64> = self.run(async move { c.get(seq).await }).await?;
        Ok(v.unwrap_or(0))
    }

    async fn log_restore(
        &self,
        log: &str,
        entries: &[LogEntry],
        last_seq: u64,
        opts: &AppendOptions,
    ) -> StoreResult<()> {
        let mut c = self.conn();
        let (stream, seq) = self.log_keys(log);
        let mut inv = self.scripts.log_restore.prepare_invoke();
        inv.key(stream)
            .key(seq)
            .arg(last_seq)
            .arg(opts.max_len)
            .arg(opts.ttl.map_or(0, ms))
            .arg(if opts.keep_seq { "1" } else { "0" });
        for e in entries {
            inv.arg(e.seq).arg(&e.payload[..]);
        }
        let _: i64 = self.run(inv.invoke_async(&mut c)).await?;
        Ok(())
    }

    async fn log_remove(&self, log: &str, seq: u64) -> StoreResult<bool> {
        let mut c = self.conn();
        let (stream, _) = self.log_keys(log);
        let id = format!("{seq}-0");
        let n: i64 = self.run(async move { c.xdel(stream, &[id]).await }).await?;
        Ok(n > 0)
    }
}

fn entries(reply: redis::streams::StreamRangeReply) -> StoreResult<Vec<LogEntry>> {
    reply
        .ids
        .into_iter()
        .map(|id| {
            let seq = id
                .id
                .split('-')
                .next()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| StoreError::Backend(format!("bad log entry id {}", id.id)))?;
            let payload = match id.map.get("p") {
                Some(redis::Value::BulkString(b)) => Bytes::copy_from_slice(b),
                _ => {
                    return Err(StoreError::Backend(format!(
                        "log entry {} has no payload",
                        id.id
                    )))
                }
            };
            Ok(LogEntry { seq, payload })
        })
        .collect()
}
