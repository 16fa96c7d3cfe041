//! The per-user WebSocket cap, across the cluster: each stream WebSocket is a member
//! (`<node>/<connection>`) of its user's presence set in the shared state, refreshed every
//! `viewers.ttl / 3` while open and removed on close (a node that dies stops refreshing and
//! its members expire within `viewers.ttl`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Refusal;
use crate::domain::keys;
use crate::store::{SharedState, StoreError};

pub struct UserConnections {
    store: Arc<dyn SharedState>,
    max: u32,
    ttl: Duration,
    node_id: String,
    next: AtomicU64,
    /// This node's counted connections: id → user.
    local: Mutex<HashMap<u64, String>>,
}

/// Holds one of a user's WebSocket slots until dropped.
pub struct UserGuard {
    owner: Option<(Arc<UserConnections>, u64)>,
}

impl UserConnections {
    pub fn new(store: Arc<dyn SharedState>, max: u32, ttl: Duration, node_id: &str) -> Arc<Self> {
        Arc::new(Self {
            store,
            max,
            ttl,
            node_id: node_id.to_string(),
            next: AtomicU64::new(1),
            local: Mutex::new(HashMap::new()),
        })
    }

    fn member(&self, id: u64) -> String {
        format!("{}/{id}", self.node_id)
    }

    /// Admits one more stream WebSocket for `user`, unless they hold the maximum already
    /// anywhere in the cluster. When the shared state cannot answer, the connection is let
    /// in (it is refused a moment later anyway if the stream cannot be read).
    pub async fn admit(self: &Arc<Self>, user: &str) -> Result<UserGuard, Refusal> {
        if self.max == 0 {
            return Ok(UserGuard { owner: None });
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let key = keys::user_websockets(user);
        let member = self.member(id);
        let counted = async {
            self.store.presence_touch(&key, &member, self.ttl).await?;
            self.store.presence_count(&key).await
        }
        .await;
        match counted {
            Ok(n) if n > u64::from(self.max) => {
                if let Err(e) = self.store.presence_remove(&key, &member).await {
                    tracing::debug!(error = %e, "refused connection not removed from presence");
                }
                Err(Refusal::UserWebsockets)
            }
            Ok(_) => {
                self.local
                    .lock()
                    .expect("admission lock")
                    .insert(id, user.to_string());
                Ok(UserGuard {
                    owner: Some((self.clone(), id)),
                })
            }
            Err(e) => {
                tracing::debug!(error = %e, "per-user connection count unavailable; admitted");
                Ok(UserGuard { owner: None })
            }
        }
    }

    /// Marks every local connection present again.
    pub async fn refresh_all(&self) -> Result<usize, StoreError> {
        let all: Vec<(u64, String)> = self
            .local
            .lock()
            .expect("admission lock")
            .iter()
            .map(|(id, u)| (*id, u.clone()))
            .collect();
        for (id, user) in &all {
            self.store
                .presence_touch(&keys::user_websockets(user), &self.member(*id), self.ttl)
                .await?;
        }
        Ok(all.len())
    }

    fn release(self: Arc<Self>, id: u64) {
        let Some(user) = self.local.lock().expect("admission lock").remove(&id) else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            let key = keys::user_websockets(&user);
            if let Err(e) = self.store.presence_remove(&key, &self.member(id)).await {
                // It expires within the TTL instead.
                tracing::debug!(error = %e, "closed connection not removed from presence");
            }
        });
    }
}

impl Drop for UserGuard {
    fn drop(&mut self) {
        if let Some((owner, id)) = self.owner.take() {
            owner.release(id);
        }
    }
}

/// Refreshes the node's counted connections every `ttl / 3` until `stop`.
pub async fn run_refresher(users: Arc<UserConnections>, stop: CancellationToken) {
    if users.max == 0 {
        return;
    }
    let mut ticker = crate::periodic::Ticker::new(users.ttl / 3, stop);
    while ticker.next().await {
        if let Err(e) = users.refresh_all().await {
            tracing::warn!(error = %e, "per-user connection presence not refreshed");
        }
    }
}
