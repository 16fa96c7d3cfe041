//! Peer connections: the event handler that feeds a publisher's tracks into their
//! broadcast channels, building a connection on `media.udp_addr` (a leased port of
//! `media.udp_port_range` when set), and answering an offer with every ICE candidate.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use rtc::interceptor::Registry;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use tokio::sync::Notify;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState,
    RTCPeerConnectionState,
};

use super::*;

pub(super) struct Handler {
    pub(super) gathered: Arc<Notify>,
    pub(super) state: tokio::sync::watch::Sender<RTCPeerConnectionState>,
    pub(super) on_track: Option<Arc<Publication>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered.notify_one();
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.state.send(state);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let Some(publication) = self.on_track.clone() else {
            return;
        };
        // Not in the handler: finding the codec of a simulcast track waits for a layer.
        tokio::spawn(add_track(track, publication));
    }
}

/// Adds a publisher's (or a relay's) track to the publication and feeds it.
async fn add_track(track: Arc<dyn TrackRemote>, publication: Arc<Publication>) {
    let ssrcs = track.ssrcs().await;
    tracing::debug!(?ssrcs, "track");
    // With simulcast the SSRCs arrive with each layer's `OnOpen`; the codec is the same
    // for every layer.
    let mut opened = Vec::new();
    let mut codec = None;
    for s in track.ssrcs().await {
        codec = track.codec(s).await;
        if codec.is_some() {
            break;
        }
    }
    while codec.is_none() {
        let ev = tokio::select! {
            _ = publication.ended.cancelled() => return,
            ev = track.poll() => ev,
        };
        match ev {
            Some(TrackRemoteEvent::OnOpen(init)) => {
                codec = track.codec(init.ssrc).await;
                tracing::debug!(ssrc = init.ssrc, rid = ?init.rid, codec = ?codec, "track opened");
                opened.push((init.rid.unwrap_or_default(), init.ssrc));
            }
            Some(TrackRemoteEvent::OnEnded) | None => return,
            Some(e) => tracing::debug!(event = ?e, "track event before its codec"),
        }
    }
    let Some(codec) = codec else {
        return;
    };
    let kind = if codec.mime_type.to_ascii_lowercase().starts_with("audio/") {
        RtpCodecKind::Audio
    } else {
        RtpCodecKind::Video
    };
    let fwd = Arc::new(Forwarded {
        kind,
        codec: codec.clone(),
        layers: Mutex::new(Vec::new()),
    });
    // A relayed layer (one track per layer from the origin node) joins the track it
    // belongs to.
    if let Some((group, rid)) = relay::layer_of(&track.track_id().await) {
        let into = publication.relayed_into(&group, &fwd);
        tracing::info!(stream = %publication.stream, rid = %rid, "relayed layer");
        let ssrc = match opened.first() {
            Some((_, ssrc)) => *ssrc,
            None => ssrcs.first().copied().unwrap_or(0),
        };
        let layer = Layer::new(rid, ssrc, track.clone());
        into.layers.lock().unwrap().push(layer.clone());
        publication.tracks_changed.notify_waiters();
        ingest(track, into, Some(layer), publication).await;
        return;
    }
    for (rid, ssrc) in opened {
        tracing::info!(rid = %rid, ssrc, "publisher layer");
        fwd.layers
            .lock()
            .unwrap()
            .push(Layer::new(rid, ssrc, track.clone()));
    }
    publication.tracks.lock().unwrap().push(fwd.clone());
    publication.tracks_changed.notify_waiters();
    tracing::info!(stream = %publication.stream, codec = %codec.mime_type, "publisher track");
    ingest(track, fwd, None, publication).await;
}

/// How often a layer's bit rate is measured.
const RATE_WINDOW: std::time::Duration = std::time::Duration::from_millis(500);

/// Reads a publisher's track — every simulcast layer comes through it, told apart by
/// SSRC — and hands each packet to its layer's channel: one read per packet for every
/// viewer. `only`: the track carries that one layer (a relayed layer).
async fn ingest(
    track: Arc<dyn TrackRemote>,
    fwd: Arc<Forwarded>,
    only: Option<Arc<Layer>>,
    publication: Arc<Publication>,
) {
    let ended = publication.ended.clone();
    use std::sync::atomic::Ordering::Relaxed;
    let packets_in = metrics::counter!("streamedge_media_packets_in_total");
    let bytes_in = metrics::counter!("streamedge_media_bytes_in_total");
    let vp8 = layers::VideoCodec::from_mime(&fwd.codec.mime_type) == layers::VideoCodec::Vp8;
    // Per layer: bytes since the last measure.
    // Per layer: bytes since the last measure, and measures in a row without any.
    let mut counted: Vec<(Arc<Layer>, u64, u32)> = Vec::new();
    let mut window_start = Instant::now();
    let mut last: Option<Arc<Layer>> = only.clone();
    loop {
        let ev = tokio::select! {
            _ = ended.cancelled() => break,
            ev = track.poll() => ev,
        };
        match ev {
            Some(TrackRemoteEvent::OnOpen(init)) if only.is_none() => {
                let rid = init.rid.clone().unwrap_or_default();
                if fwd.layer(init.ssrc).is_none() {
                    tracing::info!(rid = %rid, ssrc = init.ssrc, "publisher layer");
                    fwd.layers
                        .lock()
                        .unwrap()
                        .push(Layer::new(rid, init.ssrc, track.clone()));
                    publication.tracks_changed.notify_waiters();
                }
            }
            Some(TrackRemoteEvent::OnRtpPacket(p)) => {
                packets_in.increment(1);
                let n = p.payload.len() as u64;
                bytes_in.increment(n);
                let ssrc = p.header.ssrc;
                let layer = match &last {
                    Some(l) if only.is_some() || l.ssrc == ssrc => l.clone(),
                    _ => match fwd.layer(ssrc) {
                        Some(l) => l,
                        None if fwd.layers.lock().unwrap().is_empty() => {
                            // No `OnOpen` came (a publish without simulcast).
                            let rid = track.rid(ssrc).await.unwrap_or_default();
                            let l = Layer::new(rid, ssrc, track.clone());
                            fwd.layers.lock().unwrap().push(l.clone());
                            l
                        }
                        // Another stream of the track (a repair stream): not forwarded.
                        None => continue,
                    },
                };
                last = Some(layer.clone());
                if vp8 {
                    if let Some((w, h)) = layers::vp8_keyframe_size(&p.payload) {
                        layer.pixels.store(u64::from(w) * u64::from(h), Relaxed);
                    }
                }
                match counted.iter_mut().find(|(l, ..)| Arc::ptr_eq(l, &layer)) {
                    Some((_, b, _)) => *b += n,
                    None => counted.push((layer.clone(), n, 0)),
                }
                let _ = layer.tx.send(Inbound {
                    at: Instant::now(),
                    packet: p,
                });
                let elapsed = window_start.elapsed();
                if elapsed >= RATE_WINDOW {
                    window_start = Instant::now();
                    for (l, b, idle) in counted.iter_mut() {
                        let measured = *b as f64 * 8.0 / elapsed.as_secs_f64();
                        *idle = if *b == 0 { *idle + 1 } else { 0 };
                        let next = layers::next_rate(l.rate(), measured, *idle);
                        l.bitrate.store(next as u64, Relaxed);
                        *b = 0;
                    }
                }
            }
            Some(TrackRemoteEvent::OnEnded) | None => break,
            Some(_) => {}
        }
    }
}

pub(super) fn now_state() -> (
    tokio::sync::watch::Sender<RTCPeerConnectionState>,
    tokio::sync::watch::Receiver<RTCPeerConnectionState>,
) {
    tokio::sync::watch::channel(RTCPeerConnectionState::New)
}

impl MediaService {
    /// A new peer connection with its handler: the publication its received tracks feed
    /// (`None` for a viewer), the notice that ICE gathering completed, and its state.
    pub(super) async fn connect(
        &self,
        on_track: Option<Arc<Publication>>,
    ) -> Result<
        (
            Arc<dyn PeerConnection>,
            Option<Arc<ports::PortLease>>,
            Arc<Notify>,
            tokio::sync::watch::Receiver<RTCPeerConnectionState>,
        ),
        MediaError,
    > {
        let gathered = Arc::new(Notify::new());
        let (state_tx, state_rx) = now_state();
        let (pc, port) = self
            .peer_connection(Handler {
                gathered: gathered.clone(),
                state: state_tx,
                on_track,
            })
            .await?;
        Ok((pc, port, gathered, state_rx))
    }

    /// A new peer connection bound to `media.udp_addr` — on a port of
    /// `media.udp_port_range` when set (the lease lives as long as the session).
    pub(super) async fn peer_connection(&self, handler: Handler) -> Result<Connection, MediaError> {
        let handler: Arc<dyn PeerConnectionEventHandler> = Arc::new(handler);
        let Some(pool) = &self.ports else {
            let pc = self
                .build_peer_connection(handler, self.cfg.udp_addr.clone())
                .await?;
            return Ok((pc, None));
        };
        let ip = self
            .cfg
            .udp_addr
            .parse::<std::net::SocketAddr>()
            .map_err(webrtc_err)?
            .ip();
        // A port another program holds fails to bind: try a few more.
        let mut last = MediaError::PortsFull;
        for _ in 0..pool.size().min(8) {
            let Some(lease) = pool.lease() else {
                break;
            };
            let addr = std::net::SocketAddr::new(ip, lease.port).to_string();
            match self.build_peer_connection(handler.clone(), addr).await {
                Ok(pc) => return Ok((pc, Some(Arc::new(lease)))),
                Err(e) => {
                    tracing::warn!(port = lease.port, error = %e, "media UDP port unusable; trying the next");
                    last = e;
                }
            }
        }
        Err(last)
    }

    pub(super) async fn build_peer_connection(
        &self,
        handler: Arc<dyn PeerConnectionEventHandler>,
        udp_addr: String,
    ) -> Result<Arc<dyn PeerConnection>, MediaError> {
        let mut media = MediaEngine::default();
        media.register_default_codecs().map_err(webrtc_err)?;
        let registry =
            register_default_interceptors(Registry::new(), &mut media).map_err(webrtc_err)?;
        // Viewers' keyframe requests (PLI/FIR) reach the forwarding task, which passes them
        // on to the publisher.
        let registry = registry.with(feedback::slot(), feedback::KeyframeRequestTap::default());
        use webrtc::peer_connection::SrtpProtectionProfile as P;
        // AEAD-GCM first: several times cheaper per packet than AES-CM + HMAC-SHA1 (the
        // crate's own benchmarks); CM stays for peers without GCM.
        let mut setting = SettingEngineBuilder::new()
            .with_include_loopback_candidate(true)
            .with_srtp_protection_profiles(vec![
                P::Srtp_Aead_Aes_128_Gcm,
                P::Srtp_Aead_Aes_256_Gcm,
                P::Srtp_Aes128_Cm_Hmac_Sha1_80,
            ]);
        if !self.cfg.public_ips.is_empty() {
            setting = setting.with_nat_1to1_ips(
                self.cfg.public_ips.clone(),
                rtc::peer_connection::transport::RTCIceCandidateType::Host,
            );
        }
        let config = RTCConfigurationBuilder::new().build();
        let pc = PeerConnectionBuilder::new()
            .with_configuration(config)
            .with_media_engine(media)
            .with_setting_engine(setting.build())
            .with_interceptor_registry(registry)
            .with_handler(handler)
            .with_udp_addrs(vec![udp_addr])
            .build()
            .await
            .map_err(webrtc_err)?;
        Ok(Arc::new(pc))
    }

    /// Answers `offer` on `pc`, waiting for ICE gathering so the answer holds every
    /// candidate (no trickle needed).
    pub(super) async fn answer(
        pc: &Arc<dyn PeerConnection>,
        offer: &str,
        gathered: &Notify,
    ) -> Result<String, MediaError> {
        let offer = RTCSessionDescription::offer(offer.to_string())
            .map_err(|e| MediaError::BadOffer(e.to_string()))?;
        pc.set_remote_description(offer)
            .await
            .map_err(|e| MediaError::BadOffer(e.to_string()))?;
        let answer = pc
            .create_answer(None)
            .await
            .map_err(|e| MediaError::BadOffer(e.to_string()))?;
        let wait = gathered.notified();
        pc.set_local_description(answer).await.map_err(webrtc_err)?;
        let _ = tokio::time::timeout(GATHER_TIMEOUT, wait).await;
        pc.local_description()
            .await
            .map(|d| d.sdp)
            .ok_or_else(|| MediaError::WebRtc("no local description".into()))
    }
}
