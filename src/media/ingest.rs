//! Where media lives, in the shared state: which node ingests a stream
//! (`media:ingest:{stream}`, read by a node whose viewer asks for a stream published
//! elsewhere), and which node holds each WHIP/WHEP resource (`media:resource:{id}`, read
//! by a node that receives a `DELETE` for a session it does not hold).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::*;

/// Where a WHIP/WHEP resource lives.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ResourceHome {
    pub node: String,
    /// The node's `media.advertise_url`.
    pub url: String,
}

/// How long a resource's home is remembered: longer than any live session.
const RESOURCE_HOME_TTL: Duration = Duration::from_secs(24 * 3600);

impl MediaService {
    /// Records this node as the home of resource `id`.
    pub(super) async fn record_home(&self, id: &str) {
        let home = ResourceHome {
            node: self.node_id.clone(),
            url: self.cfg.advertise_url.clone(),
        };
        let json = serde_json::to_vec(&home).expect("home serialises");
        let key = crate::domain::keys::media_resource(id);
        if let Err(e) = self.store.set(&key, &json, Some(RESOURCE_HOME_TTL)).await {
            tracing::warn!(resource = id, error = %e, "resource home not recorded; a DELETE on another node will not find it");
        }
    }

    pub(super) async fn forget_home(&self, id: &str) {
        let _ = self
            .store
            .delete(&crate::domain::keys::media_resource(id))
            .await;
    }

    /// The other node that holds resource `id`, if one does.
    pub async fn home_elsewhere(&self, id: &str) -> Option<ResourceHome> {
        let raw = self
            .store
            .get(&crate::domain::keys::media_resource(id))
            .await
            .ok()??;
        let home: ResourceHome = serde_json::from_slice(&raw).ok()?;
        (home.node != self.node_id && !home.url.is_empty()).then_some(home)
    }

    /// Sends a client's `DELETE` (its path and `Authorization`) to the node that holds
    /// the resource, and returns that node's answer.
    pub async fn forward_delete(
        &self,
        home: &ResourceHome,
        path: &str,
        authorization: Option<&str>,
    ) -> Result<(u16, Option<String>, bytes::Bytes), MediaError> {
        self.forward_request(home, reqwest::Method::DELETE, path, authorization, None)
            .await
    }

    /// Sends a client's request on a session (method, path, `Authorization`, JSON body)
    /// to the node that holds the session, and returns that node's answer.
    pub async fn forward_request(
        &self,
        home: &ResourceHome,
        method: reqwest::Method,
        path: &str,
        authorization: Option<&str>,
        json: Option<bytes::Bytes>,
    ) -> Result<(u16, Option<String>, bytes::Bytes), MediaError> {
        let url = format!("{}{path}", home.url.trim_end_matches('/'));
        let mut req = self.http.request(method, &url);
        if let Some(a) = authorization {
            req = req.header("authorization", a);
        }
        if let Some(body) = json {
            req = req.header("content-type", "application/json").body(body);
        }
        let r = req.send().await.map_err(webrtc_err)?;
        let status = r.status().as_u16();
        let content_type = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = r.bytes().await.map_err(webrtc_err)?;
        metrics::counter!("streamedge_media_deletes_forwarded_total").increment(1);
        Ok((status, content_type, body))
    }
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
