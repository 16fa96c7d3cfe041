//! Which node ingests a stream: recorded in the shared state (`media:ingest:{stream}`) by
//! the publishing node, read by a node whose viewer asks for a stream published elsewhere.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::*;

impl MediaService {
    /// Records (or refreshes) this node as the stream's ingest, for other nodes' relays.
    pub async fn announce(&self, stream: &Uuid, ttl: Duration) {
        let rec = Ingest {
            node: self.node_id.clone(),
            url: self.cfg.advertise_url.clone(),
        };
        let json = serde_json::to_vec(&rec).expect("ingest serialises");
        if let Err(e) = self
            .store
            .set(
                &crate::domain::keys::media_ingest(stream),
                &json,
                Some(ttl.max(INGEST_TTL)),
            )
            .await
        {
            tracing::warn!(%stream, error = %e, "ingest not announced");
        }
    }

    pub(super) async fn withdraw(&self, stream: &Uuid) {
        let key = crate::domain::keys::media_ingest(stream);
        if let Ok(Some(raw)) = self.store.get(&key).await {
            if let Ok(rec) = serde_json::from_slice::<Ingest>(&raw) {
                if rec.node == self.node_id {
                    let _ = self.store.delete(&key).await;
                }
            }
        }
    }

    /// The stream's publication on this node: the local publish, or a relay pulling it
    /// from the node that ingests it.
    pub(super) async fn publication_or_relay(
        self: &Arc<Self>,
        stream: &Uuid,
    ) -> Result<Hold, MediaError> {
        if let Some(h) = self.hold(stream) {
            return Ok(h);
        }
        let _one = self.relaying.lock().await;
        if let Some(h) = self.hold(stream) {
            return Ok(h);
        }
        let raw = self
            .store
            .get(&crate::domain::keys::media_ingest(stream))
            .await
            .map_err(webrtc_err)?
            .ok_or(MediaError::NotPublishing)?;
        let ingest: Ingest = serde_json::from_slice(&raw).map_err(webrtc_err)?;
        if ingest.node == self.node_id || ingest.url.is_empty() {
            return Err(MediaError::NotPublishing);
        }
        self.relay(*stream, &ingest).await?;
        self.hold(stream).ok_or(MediaError::NotPublishing)
    }

    /// The stream's local publication, held for a viewer.
    pub(super) fn hold(&self, stream: &Uuid) -> Option<Hold> {
        let pubs = self.publications.lock().unwrap();
        let p = pubs.get(stream)?.clone();
        p.holders.fetch_add(1, Ordering::SeqCst);
        Some(Hold(p))
    }
}
