//! The registry of per-stream outboxes on a Redis Cluster (see [`super::outbox`]): which
//! outbox keys writers read, registering a stream before a node writes its first record
//! there, and forgetting streams whose outbox stayed empty.

use std::time::{Duration, Instant};

use super::outbox::key_stats;
use super::RedisStore;
use crate::config::RedisMode;
use crate::store::StoreResult;

/// How often a node writing to a stream's outbox registers it again (cluster).
pub(super) const REGISTER_EVERY: Duration = Duration::from_secs(30);
/// How long a registered stream must go without registration (and stay empty) before it
/// leaves the registry (cluster). Far above [`REGISTER_EVERY`], to absorb clock skew.
pub(super) const FORGET_AFTER: Duration = Duration::from_secs(600);
/// How often a node looks for streams to remove from the registry (cluster).
const FORGET_SCAN_EVERY: Duration = Duration::from_secs(60);
/// How long the registry read by a node's writers is reused.
const REGISTRY_REFRESH: Duration = Duration::from_secs(1);

impl RedisStore {
    /// The outbox key for records about `scope` (a stream id).
    pub(super) fn outbox_key_of(&self, scope: &str) -> String {
        match self.mode {
            RedisMode::Standalone => format!("{}outbox", self.prefix),
            RedisMode::Cluster => format!("{}outbox:{{{scope}}}", self.prefix),
        }
    }

    pub(super) fn registry_key(&self) -> String {
        format!("{}outbox:streams", self.prefix)
    }

    /// The outbox key a record about `scope` goes to, registered first on a cluster.
    pub(super) async fn outbox_for(&self, scope: &str) -> StoreResult<String> {
        if self.mode == RedisMode::Cluster {
            let due = self
                .outbox
                .lock()
                .unwrap()
                .registered
                .get(scope)
                .is_none_or(|t| t.elapsed() >= REGISTER_EVERY);
            if due {
                let mut c = self.conn();
                let mut cmd = redis::cmd("ZADD");
                cmd.arg(self.registry_key())
                    .arg(crate::domain::clock::now_ms())
                    .arg(scope);
                let _: i64 = self.run(cmd.query_async(&mut c)).await?;
                let mut st = self.outbox.lock().unwrap();
                if st.registered.len() > 100_000 {
                    st.registered.retain(|_, t| t.elapsed() < REGISTER_EVERY);
                }
                if st
                    .registered
                    .insert(scope.to_string(), Instant::now())
                    .is_none()
                {
                    // A stream new to this node: its writers list the registry again.
                    st.keys_at = None;
                }
            }
        }
        Ok(self.outbox_key_of(scope))
    }

    /// The outbox keys writers read: the one outbox, or every registered stream's.
    pub(super) async fn outbox_keys(&self) -> StoreResult<Vec<String>> {
        if self.mode == RedisMode::Standalone {
            return Ok(vec![self.outbox_key_of("")]);
        }
        {
            let st = self.outbox.lock().unwrap();
            if st.keys_at.is_some_and(|t| t.elapsed() < REGISTRY_REFRESH) {
                return Ok(st.keys.clone());
            }
        }
        let mut c = self.conn();
        let mut cmd = redis::cmd("ZRANGE");
        cmd.arg(self.registry_key()).arg(0).arg(-1);
        let scopes: Vec<String> = self.run(cmd.query_async(&mut c)).await?;
        let keys: Vec<String> = scopes.iter().map(|s| self.outbox_key_of(s)).collect();
        let mut st = self.outbox.lock().unwrap();
        st.keys = keys.clone();
        st.keys_at = Some(Instant::now());
        Ok(keys)
    }
}

/// Removes from the registry the streams with an empty outbox that no node registered for
/// [`FORGET_AFTER`], and deletes their empty outbox streams (cluster; at most once per
/// [`FORGET_SCAN_EVERY`] per node).
pub(super) async fn forget_idle_streams(store: &RedisStore) -> StoreResult<()> {
    {
        let mut st = store.outbox.lock().unwrap();
        if st
            .last_forget_scan
            .is_some_and(|t| t.elapsed() < FORGET_SCAN_EVERY)
        {
            return Ok(());
        }
        st.last_forget_scan = Some(Instant::now());
    }
    let cutoff = crate::domain::clock::now_ms().saturating_sub(FORGET_AFTER.as_millis() as u64);
    let mut c = store.conn();
    let mut cmd = redis::cmd("ZRANGEBYSCORE");
    cmd.arg(store.registry_key()).arg("-inf").arg(cutoff);
    let idle: Vec<String> = store.run(cmd.query_async(&mut c)).await?;
    for scope in idle {
        let key = store.outbox_key_of(&scope);
        let (depth, _) = key_stats(store, &key).await?;
        if depth > 0 {
            continue;
        }
        // Only if nobody registered it since the scan: a node about to write registers
        // first, so after this no record goes to the key unregistered.
        let mut inv = store.scripts.registry_forget.prepare_invoke();
        inv.key(store.registry_key()).arg(&scope).arg(cutoff);
        let forgotten: i64 = store.run(inv.invoke_async(&mut c)).await?;
        if forgotten == 1 {
            let mut inv = store.scripts.delete_if_empty.prepare_invoke();
            inv.key(&key);
            let _: i64 = store.run(inv.invoke_async(&mut c)).await?;
            let mut st = store.outbox.lock().unwrap();
            st.groups.remove(&key);
            st.quiet.remove(&key);
            st.cursors.remove(&key);
        }
    }
    Ok(())
}
