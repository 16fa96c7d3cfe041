//! WHEP: a viewer's offer answered with the stream's tracks, and one forwarding task per
//! track that writes the publication's packets to the viewer.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use rtc::media_stream::MediaStreamTrack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use uuid::Uuid;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::peer_connection::RTCPeerConnectionState;

use super::control::LayerControl;
use super::layers::Cap;
use super::*;

impl MediaService {
    /// WHEP: answers a viewer's offer with the stream's tracks; `cap` limits the
    /// simulcast layer it receives. A relay node (user `node:…`) gets every layer of a
    /// simulcast video on a track of its own instead.
    pub async fn view(
        self: &Arc<Self>,
        stream: Uuid,
        user: &str,
        offer: &str,
        cap: Cap,
    ) -> Result<(Answer, tokio::sync::watch::Receiver<RTCPeerConnectionState>), MediaError> {
        let relay = user.starts_with("node:");
        check_offer(offer)?;
        let hold = self.publication_or_relay(&stream).await?;
        let publication = hold.0.clone();
        if self
            .viewers
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.cfg.max_viewers).then_some(n + 1)
            })
            .is_err()
        {
            return Err(MediaError::ViewersFull);
        }
        let guard = ViewerSlot(self.viewers.clone());
        // The publisher's tracks arrive shortly after its connection is up.
        let start = tokio::time::Instant::now();
        let deadline = start + TRACKS_TIMEOUT;
        let tracks = loop {
            let wait = publication.tracks_changed.notified();
            let t = publication.tracks.lock().unwrap().clone();
            let tracks_ready =
                t.len() >= publication.expected_tracks.load(Ordering::Relaxed).max(1);
            let layers = publication.expected_layers.load(Ordering::Relaxed);
            let layers_ready = t
                .iter()
                .all(|f| f.kind != RtpCodecKind::Video || f.layers.lock().unwrap().len() >= layers);
            if tracks_ready && layers_ready {
                break t;
            }
            // An offered layer may not be sent yet (a browser's top layer waits for its
            // bandwidth estimate): waited for only briefly.
            let until = if tracks_ready {
                deadline.min(start + LAYERS_WAIT)
            } else {
                deadline
            };
            if tokio::time::timeout_at(until, wait).await.is_err() {
                break publication.tracks.lock().unwrap().clone();
            }
        };
        if tracks.is_empty() {
            return Err(MediaError::NotPublishing);
        }
        let (pc, port, gathered, state_rx) = self.connect(None).await?;
        let mut locals = Vec::new();
        let control = LayerControl::new(cap);
        let label = format!("streamedge-{}", stream.simple());
        for fwd in &tracks {
            let kind = if fwd.kind == RtpCodecKind::Audio {
                "audio"
            } else {
                "video"
            };
            // A relay gets each layer of a simulcast track on a track of its own.
            let layers = fwd.ranked();
            let per_layer: Vec<(String, Option<Arc<Layer>>)> =
                if relay && fwd.kind == RtpCodecKind::Video && layers.len() > 1 {
                    layers
                        .into_iter()
                        .take(relay::MAX_LAYERS)
                        .map(|l| {
                            (
                                relay::layer_track_id(&format!("{label}-{kind}"), &l.rid),
                                Some(l),
                            )
                        })
                        .collect()
                } else {
                    vec![(format!("{label}-{kind}"), None)]
                };
            for (track_id, pinned) in per_layer {
                let ssrc = rand_ssrc();
                let local = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
                    label.clone(),
                    track_id,
                    label.clone(),
                    fwd.kind,
                    vec![RTCRtpEncodingParameters {
                        rtp_coding_parameters: RTCRtpCodingParameters {
                            ssrc: Some(ssrc),
                            ..Default::default()
                        },
                        codec: fwd.codec.clone(),
                        ..Default::default()
                    }],
                )));
                pc.add_track(local.clone() as Arc<dyn TrackLocal>)
                    .await
                    .map_err(webrtc_err)?;
                locals.push((fwd.clone(), local, ssrc, pinned));
            }
        }
        let sdp = match Self::answer(&pc, offer, &gathered).await {
            Ok(s) => s,
            Err(e) => {
                let _ = pc.close().await;
                return Err(e);
            }
        };
        // Payload types are per session: each forwarded codec gets the viewer's number.
        let locals: Vec<_> = locals
            .into_iter()
            .map(|(fwd, local, ssrc, pinned)| {
                let pt = negotiated_pt(&sdp, fwd.kind, &fwd.codec);
                (fwd, local, ssrc, pt, pinned)
            })
            .collect();
        let resource_id = Uuid::new_v4().simple().to_string();
        let stop = tokio_util::sync::CancellationToken::new();
        let resource = Resource {
            id: resource_id.clone(),
            stream,
            user: user.to_string(),
            kind: ResourceKind::View,
            pc: pc.clone(),
            remote: None,
            _port: port,
            ended: stop.clone(),
            layer: Some(control.clone()),
        };
        self.resources
            .lock()
            .unwrap()
            .insert(resource_id.clone(), resource.clone());
        self.record_home(&resource_id).await;
        for (fwd, local, ssrc, pt, pinned) in locals {
            let video = fwd.kind == RtpCodecKind::Video;
            tokio::spawn(forward::track(
                fwd,
                local,
                forward::Rewrite { ssrc, pt },
                forward::Stops {
                    viewer: stop.clone(),
                    publish: publication.ended.clone(),
                },
                pc.clone(),
                forward::Choice {
                    keyframe_interval: self.cfg.keyframe_interval,
                    control: (video && pinned.is_none()).then(|| control.clone()),
                    pinned,
                },
            ));
        }
        // The slot and the hold are released when the viewer's session ends: its connection
        // failed or closed, it fell behind, or the publish ended.
        let me = self.clone();
        let watch_stop = stop.clone();
        let ended = publication.ended.clone();
        let mut state = state_rx.clone();
        tokio::spawn(async move {
            loop {
                let s = *state.borrow();
                if matches!(
                    s,
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed
                ) {
                    break;
                }
                tokio::select! {
                    r = state.changed() => if r.is_err() { break },
                    _ = ended.cancelled() => break,
                    _ = watch_stop.cancelled() => break,
                }
            }
            watch_stop.cancel();
            let _ = me.remove(&resource_id).await;
            drop(guard);
            drop(hold);
            metrics::gauge!("streamedge_media_viewers")
                .set(me.viewers.load(Ordering::SeqCst) as f64);
        });
        metrics::gauge!("streamedge_media_viewers").set(self.viewers.load(Ordering::SeqCst) as f64);
        Ok((Answer { resource, sdp }, state_rx))
    }
}

/// How long a WHEP answer waits for simulcast layers the publisher offered but does not
/// send yet.
const LAYERS_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

pub(super) fn rand_ssrc() -> u32 {
    let b = Uuid::new_v4().into_bytes();
    u32::from_le_bytes([b[0], b[1], b[2], b[3]]) | 1
}
