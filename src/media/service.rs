//! The media service's lifecycle: construction, lookups, WHIP publish, removing a session
//! and closing everything on shutdown.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use uuid::Uuid;
use webrtc::peer_connection::RTCPeerConnectionState;

use crate::config::MediaConfig;
use crate::store::SharedState;

use super::*;

impl MediaService {
    pub fn new(cfg: MediaConfig, store: Arc<dyn SharedState>, node_id: String) -> Self {
        Self {
            publications: Mutex::new(HashMap::new()),
            resources: Mutex::new(HashMap::new()),
            viewers: Arc::new(AtomicUsize::new(0)),
            store,
            node_id,
            relaying: tokio::sync::Mutex::new(()),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("HTTP client"),
            ports: ports::parse_range(&cfg.udp_port_range)
                .ok()
                .flatten()
                .map(|(lo, hi)| ports::PortPool::new(lo, hi)),
            cfg,
        }
    }

    pub fn config(&self) -> &MediaConfig {
        &self.cfg
    }

    pub fn publication(&self, stream: &Uuid) -> Option<Arc<Publication>> {
        self.publications.lock().unwrap().get(stream).cloned()
    }

    pub fn resource(&self, id: &str) -> Option<Resource> {
        self.resources.lock().unwrap().get(id).cloned()
    }

    /// WHIP publishes this node ingests (relays not counted).
    pub fn ingesting(&self) -> usize {
        self.resources
            .lock()
            .unwrap()
            .values()
            .filter(|r| r.kind == ResourceKind::Publish)
            .count()
    }

    pub fn viewer_count(&self) -> usize {
        self.viewers.load(Ordering::Relaxed)
    }

    /// WHIP: accepts a publisher's offer for `stream`.
    pub async fn publish(
        &self,
        stream: Uuid,
        user: &str,
        offer: &str,
    ) -> Result<
        (
            Answer,
            Arc<Publication>,
            tokio::sync::watch::Receiver<RTCPeerConnectionState>,
        ),
        MediaError,
    > {
        check_offer(offer)?;
        {
            let pubs = self.publications.lock().unwrap();
            if pubs.contains_key(&stream) {
                return Err(MediaError::AlreadyPublishing);
            }
            if pubs.len() >= self.cfg.max_publishers {
                return Err(MediaError::PublishersFull);
            }
        }
        let resource_id = Uuid::new_v4().simple().to_string();
        let publication = Publication::new(stream, resource_id.clone(), media_sections(offer));
        publication
            .expected_layers
            .store(simulcast_layers(offer).max(1), Ordering::Relaxed);
        let (pc, port, gathered, state_rx) = self.connect(Some(publication.clone())).await?;
        let sdp = match Self::answer(&pc, offer, &gathered).await {
            Ok(s) => s,
            Err(e) => {
                let _ = pc.close().await;
                return Err(e);
            }
        };
        {
            let mut pubs = self.publications.lock().unwrap();
            if pubs.contains_key(&stream) {
                drop(pubs);
                let pc = pc.clone();
                tokio::spawn(async move { pc.close().await });
                return Err(MediaError::AlreadyPublishing);
            }
            pubs.insert(stream, publication.clone());
        }
        let resource = Resource {
            id: resource_id.clone(),
            stream,
            user: user.to_string(),
            kind: ResourceKind::Publish,
            pc,
            remote: None,
            _port: port,
            ended: tokio_util::sync::CancellationToken::new(),
            layer: None,
        };
        self.resources
            .lock()
            .unwrap()
            .insert(resource_id.clone(), resource.clone());
        self.record_home(&resource_id).await;
        metrics::gauge!("streamedge_media_publishers")
            .set(self.publications.lock().unwrap().len() as f64);
        Ok((Answer { resource, sdp }, publication, state_rx))
    }

    /// Ends a WHIP or WHEP session.
    pub async fn remove(&self, id: &str) -> Result<Resource, MediaError> {
        let r = self
            .resources
            .lock()
            .unwrap()
            .remove(id)
            .ok_or(MediaError::NoSuchResource)?;
        if r.kind != ResourceKind::Relay {
            self.forget_home(id).await;
        }
        if matches!(r.kind, ResourceKind::Publish | ResourceKind::Relay) {
            let p = {
                let mut pubs = self.publications.lock().unwrap();
                match pubs.get(&r.stream) {
                    Some(p) if p.resource == r.id => pubs.remove(&r.stream),
                    _ => None,
                }
            };
            if let Some(p) = p {
                p.ended.cancel();
            }
            if r.kind == ResourceKind::Publish {
                self.withdraw(&r.stream).await;
            }
            if let Some(url) = &r.remote {
                // Best effort: the origin also ends it when the connection closes.
                let _ = self
                    .http
                    .delete(url)
                    .bearer_auth(self.internal_token(&r.stream))
                    .send()
                    .await;
            }
            metrics::gauge!("streamedge_media_publishers")
                .set(self.publications.lock().unwrap().len() as f64);
        }
        r.ended.cancel();
        let _ = r.pc.close().await;
        Ok(r)
    }

    /// Ends every session (shutdown).
    pub async fn close_all(&self) {
        let ids: Vec<String> = self.resources.lock().unwrap().keys().cloned().collect();
        for id in ids {
            let _ = self.remove(&id).await;
        }
    }
}

/// A viewer's hold on a publication (see `Publication::holders`).
pub(super) struct Hold(pub(super) Arc<Publication>);

impl Drop for Hold {
    fn drop(&mut self) {
        self.0.holders.fetch_sub(1, Ordering::SeqCst);
    }
}

pub(super) struct ViewerSlot(pub(super) Arc<AtomicUsize>);

impl Drop for ViewerSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
