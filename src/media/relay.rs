//! Relays: this node pulls a stream from the node that ingests it (WHEP with an internal
//! token) and fans it out to its own viewers like a local publish; an idle relay closes
//! after `media.relay_idle_timeout`. A simulcast publish is relayed whole: the origin
//! sends each layer on a track of its own (track id `…~<rid>`, up to [`MAX_LAYERS`]), and
//! this node puts them back together as one layered track, so its viewers adapt as the
//! origin's do.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use uuid::Uuid;
use webrtc::peer_connection::RTCPeerConnectionState;

use super::*;

impl MediaService {
    /// Pulls `stream` from its ingest node over WebRTC (WHEP with an internal token) and
    /// fans it out here like a local publish.
    pub(super) async fn relay(
        self: &Arc<Self>,
        stream: Uuid,
        ingest: &Ingest,
    ) -> Result<Arc<Publication>, MediaError> {
        let resource_id = format!("relay{}", Uuid::new_v4().simple());
        // Expected tracks are set from the origin's answer (it may carry only audio or only
        // video).
        let publication = Publication::new(stream, resource_id.clone(), 1);
        let (pc, port, gathered, mut state_rx) = self.connect(Some(publication.clone())).await?;
        let result = async {
            // One video section per layer the origin may send.
            let mut kinds = vec![RtpCodecKind::Audio];
            kinds.extend([RtpCodecKind::Video; MAX_LAYERS]);
            for kind in kinds {
                pc.add_transceiver_from_kind(
                    kind,
                    Some(rtc::rtp_transceiver::RTCRtpTransceiverInit {
                        direction: rtc::rtp_transceiver::RTCRtpTransceiverDirection::Recvonly,
                        ..Default::default()
                    }),
                )
                .await
                .map_err(webrtc_err)?;
            }
            let offer = pc.create_offer(None).await.map_err(webrtc_err)?;
            let wait = gathered.notified();
            pc.set_local_description(offer).await.map_err(webrtc_err)?;
            let _ = tokio::time::timeout(GATHER_TIMEOUT, wait).await;
            let sdp = pc
                .local_description()
                .await
                .ok_or_else(|| MediaError::WebRtc("no local description".into()))?
                .sdp;
            let origin = ingest.url.trim_end_matches('/');
            let r = self
                .http
                .post(format!("{origin}/v1/streams/{stream}/whep"))
                .bearer_auth(self.internal_token(&stream))
                .header("content-type", "application/sdp")
                .body(sdp)
                .send()
                .await
                .map_err(webrtc_err)?;
            if r.status().as_u16() == 404 {
                return Err(MediaError::NotPublishing);
            }
            if r.status().as_u16() != 201 {
                return Err(MediaError::WebRtc(format!(
                    "origin answered {}",
                    r.status()
                )));
            }
            let location = r
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .map(|l| format!("{origin}{l}"));
            let answer = r.text().await.map_err(webrtc_err)?;
            publication
                .expected_tracks
                .store(sending_groups(&answer).max(1), Ordering::Relaxed);
            pc.set_remote_description(RTCSessionDescription::answer(answer).map_err(webrtc_err)?)
                .await
                .map_err(webrtc_err)?;
            Ok(location)
        }
        .await;
        let remote = match result {
            Ok(l) => l,
            Err(e) => {
                let _ = pc.close().await;
                return Err(e);
            }
        };
        self.publications
            .lock()
            .unwrap()
            .insert(stream, publication.clone());
        self.resources.lock().unwrap().insert(
            resource_id.clone(),
            Resource {
                id: resource_id.clone(),
                stream,
                user: format!("node:{}", self.node_id),
                kind: ResourceKind::Relay,
                pc,
                remote,
                _port: port,
                ended: tokio_util::sync::CancellationToken::new(),
                layer: None,
            },
        );
        metrics::counter!("streamedge_media_relays_total").increment(1);
        tracing::info!(%stream, origin = %ingest.node, "relaying a stream from its ingest node");
        // The relay ends with its connection (the origin's publish ended, or it failed), or
        // when no viewer has held it for media.relay_idle_timeout.
        let me = self.clone();
        let idle_timeout = self.cfg.relay_idle_timeout;
        let held = publication.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1).min(idle_timeout));
            let mut idle_since = Instant::now();
            loop {
                let s = *state_rx.borrow();
                if matches!(
                    s,
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed
                ) {
                    break;
                }
                tokio::select! {
                    r = state_rx.changed() => if r.is_err() { break },
                    _ = tick.tick() => {
                        if held.holders.load(Ordering::SeqCst) > 0 {
                            idle_since = Instant::now();
                        } else if idle_since.elapsed() >= idle_timeout {
                            // Withdrawn under the lock only if still unheld.
                            let mut pubs = me.publications.lock().unwrap();
                            if held.holders.load(Ordering::SeqCst) == 0 {
                                if let Some(p) = pubs.get(&held.stream) {
                                    if Arc::ptr_eq(p, &held) {
                                        pubs.remove(&held.stream);
                                    }
                                }
                                drop(pubs);
                                tracing::info!(stream = %held.stream, "closing an idle relay");
                                break;
                            }
                        }
                    }
                }
            }
            let _ = me.remove(&resource_id).await;
        });
        Ok(publication)
    }
}

/// Layers of one simulcast track an origin relays.
pub(super) const MAX_LAYERS: usize = 3;

/// The track id of one relayed layer.
pub(super) fn layer_track_id(track: &str, rid: &str) -> String {
    format!("{track}~{rid}")
}

/// The track and rid a relayed layer's track id names.
pub(super) fn layer_of(track_id: &str) -> Option<(String, String)> {
    let (track, rid) = track_id.rsplit_once('~')?;
    (!track.is_empty() && !rid.is_empty()).then(|| (track.to_string(), rid.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relayed_layer_names_its_track_and_rid() {
        let id = layer_track_id("streamedge-abc-video", "f");
        assert_eq!(
            layer_of(&id),
            Some(("streamedge-abc-video".into(), "f".into()))
        );
        assert_eq!(layer_of("streamedge-abc-video"), None);
        assert_eq!(layer_of("x~"), None);
    }
}
