//! Viewer tracking: who is watching a stream (a signed-in caller other than the seller
//! with the stream's WebSocket open), how many right now across every node (two tabs of
//! one user count once), and per session the peak and the unique viewers.
//!
//! Each node keeps its local viewers in a presence set in the shared state and refreshes
//! them every `viewers.ttl / 3`; a node that dies stops refreshing and its viewers expire
//! within `viewers.ttl` without anyone cleaning up. When a user's last connection on a
//! node closes, the node removes the member and announces it on the stream's channel so
//! that other nodes still holding that user put it back at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use crate::config::ViewersConfig;
use crate::domain::keys;
use crate::domain::ViewerCounts;
use crate::protocol::channel;
use crate::store::{SharedState, StoreError};
use crate::streams::Stream;

pub struct ViewerService {
    store: Arc<dyn SharedState>,
    cfg: ViewersConfig,
    /// (stream, user) → local connections.
    local: Mutex<HashMap<(Uuid, String), usize>>,
    /// `session.summary_ttl`.
    summary_ttl: std::time::Duration,
}

impl ViewerService {
    pub fn new(
        store: Arc<dyn SharedState>,
        cfg: ViewersConfig,
        summary_ttl: std::time::Duration,
    ) -> Self {
        Self {
            store,
            cfg,
            local: Mutex::new(HashMap::new()),
            summary_ttl,
        }
    }

    /// Peak and unique counters live as long as session summaries.
    fn summary_ttl(&self) -> Option<std::time::Duration> {
        Some(self.summary_ttl)
    }

    /// A viewer's connection opened on this node.
    pub async fn join(&self, stream: &Stream, user: &str) -> Result<(), StoreError> {
        let first = {
            let mut local = self.local.lock().expect("viewers lock");
            let n = local.entry((stream.id, user.to_string())).or_insert(0);
            *n += 1;
            metrics::gauge!("streamedge_viewers").increment(1.0);
            *n == 1
        };
        if first {
            self.touch_held(&stream.id, user).await?;
            // Peaks between two count pushes are not lost.
            self.counts(stream).await?;
        }
        if stream.state != crate::streams::StreamState::Ended {
            self.join_session(stream, user).await?;
        }
        Ok(())
    }

    /// A viewer's connection closed on this node.
    pub async fn leave(&self, stream: &Uuid, user: &str) -> Result<(), StoreError> {
        let last = {
            let mut local = self.local.lock().expect("viewers lock");
            let key = (*stream, user.to_string());
            metrics::gauge!("streamedge_viewers").decrement(1.0);
            match local.get_mut(&key) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                Some(_) => {
                    local.remove(&key);
                    true
                }
                None => false,
            }
        };
        if last {
            self.gone(stream, user).await?;
        }
        Ok(())
    }

    fn holds(&self, stream: &Uuid, user: &str) -> bool {
        self.local
            .lock()
            .expect("viewers lock")
            .contains_key(&(*stream, user.to_string()))
    }

    /// `user` is no longer watching here: out of the presence set, and the other nodes are
    /// told (one still holding them marks them present again).
    async fn gone(&self, stream: &Uuid, user: &str) -> Result<(), StoreError> {
        self.store
            .presence_remove(&keys::viewers_presence(stream), user)
            .await?;
        self.store
            .publish(&keys::stream_events(stream), channel::viewer_left(user))
            .await
    }

    /// Marks `user` present. Their last connection here may close while the mark is on its
    /// way, and its removal overtake it: then the mark is taken back, so that nobody stays
    /// counted who left.
    async fn touch_held(&self, stream: &Uuid, user: &str) -> Result<(), StoreError> {
        self.store
            .presence_touch(&keys::viewers_presence(stream), user, self.cfg.ttl)
            .await?;
        if !self.holds(stream, user) {
            self.gone(stream, user).await?;
        }
        Ok(())
    }

    /// Another node lost `user`: if this node still holds them, mark them present again.
    pub async fn on_viewer_left(&self, stream: &Uuid, user: &str) -> Result<(), StoreError> {
        if self.holds(stream, user) {
            self.touch_held(stream, user).await?;
        }
        Ok(())
    }

    /// Re-marks every local viewer present (every `ttl / 3`).
    pub async fn refresh_all(&self) -> Result<usize, StoreError> {
        let keys: Vec<(Uuid, String)> = self
            .local
            .lock()
            .expect("viewers lock")
            .keys()
            .cloned()
            .collect();
        for (stream, user) in &keys {
            self.touch_held(stream, user).await?;
        }
        Ok(keys.len())
    }

    /// A session just started: everyone watching counts towards its unique viewers and
    /// its peak starts at the current count.
    pub async fn session_started(&self, stream: &Stream) -> Result<(), StoreError> {
        let Some(sess) = &stream.session else {
            return Ok(());
        };
        let mut after: Option<String> = None;
        loop {
            let page = self
                .store
                .presence_list(&keys::viewers_presence(&stream.id), after.as_deref(), 1000)
                .await?;
            let refs: Vec<&str> = page.iter().map(String::as_str).collect();
            self.store
                .distinct_add(
                    &keys::session_unique(&stream.id, &sess.id),
                    &refs,
                    self.summary_ttl(),
                )
                .await?;
            if page.len() < 1000 {
                break;
            }
            after = page.last().cloned();
        }
        self.counts(stream).await?;
        Ok(())
    }

    /// Counts `user` towards the unique viewers of the stream's current session.
    pub async fn join_session(&self, stream: &Stream, user: &str) -> Result<(), StoreError> {
        if let Some(sess) = &stream.session {
            self.store
                .distinct_add(
                    &keys::session_unique(&stream.id, &sess.id),
                    &[user],
                    self.summary_ttl(),
                )
                .await?;
        }
        Ok(())
    }

    /// Local viewers of a stream (for adding them to a session that just started).
    pub fn local_users(&self, stream: &Uuid) -> Vec<String> {
        self.local
            .lock()
            .expect("viewers lock")
            .keys()
            .filter(|(s, _)| s == stream)
            .map(|(_, u)| u.clone())
            .collect()
    }

    /// Current, peak and unique viewers; raises the session's peak to the current count.
    pub async fn counts(&self, stream: &Stream) -> Result<ViewerCounts, StoreError> {
        let current = self
            .store
            .presence_count(&keys::viewers_presence(&stream.id))
            .await?;
        let (peak, unique) = match &stream.session {
            Some(sess) => {
                let live = stream.state != crate::streams::StreamState::Ended;
                let peak = if live {
                    self.store
                        .set_max(
                            &keys::session_peak(&stream.id, &sess.id),
                            current as i64,
                            self.summary_ttl(),
                        )
                        .await? as u64
                } else {
                    self.store
                        .get(&keys::session_peak(&stream.id, &sess.id))
                        .await?
                        .and_then(|b| std::str::from_utf8(&b).ok().and_then(|s| s.parse().ok()))
                        .unwrap_or(0)
                };
                let unique = self
                    .store
                    .distinct_count(&keys::session_unique(&stream.id, &sess.id))
                    .await?;
                (peak, unique)
            }
            None => (0, 0),
        };
        Ok(ViewerCounts {
            current,
            peak,
            unique,
        })
    }

    /// A page of the stream's current viewers (user ids in byte order after `after`).
    pub async fn list(
        &self,
        stream: &Uuid,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.store
            .presence_list(&keys::viewers_presence(stream), after, limit)
            .await
    }
}

/// Refreshes local viewers every `ttl / 3` until `stop`.
pub async fn run_refresher(viewers: Arc<ViewerService>, stop: tokio_util::sync::CancellationToken) {
    let every = viewers.cfg.ttl / 3;
    let mut ticker = crate::periodic::Ticker::new(every, stop);
    while ticker.next().await {
        if let Err(e) = viewers.refresh_all().await {
            tracing::debug!(error = %e, "viewer refresh failed");
        }
    }
}
