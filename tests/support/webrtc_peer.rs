//! A `webrtc`-crate peer for the media tests (tests/media.rs, tests/simulcast.rs,
//! tests/browser.rs): the peer builder, a WHEP viewer that records every video packet it
//! receives (and the picture size of VP8 keyframes) and can report a REMB, and the SDP
//! helpers.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rtc::interceptor::Registry;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use tokio::sync::Notify;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState,
};

/// One received video packet: when, its header fields, and the layer its payload names.
#[derive(Clone, Copy, Debug)]
pub struct Got {
    pub at: Instant,
    pub seq: u16,
    pub ts: u32,
    /// The last payload byte (the synthetic publisher's layer index).
    pub layer: u8,
    /// The picture size, on a VP8 keyframe's first packet.
    pub size: Option<(u16, u16)>,
}

#[derive(Default)]
pub struct Received {
    pub packets: Mutex<Vec<Got>>,
    /// The viewer's video track, for sending REMB.
    pub track: Mutex<Option<Arc<dyn TrackRemote>>>,
}

impl Received {
    pub fn since(&self, t: Instant) -> Vec<Got> {
        self.packets
            .lock()
            .unwrap()
            .iter()
            .filter(|g| g.at >= t)
            .copied()
            .collect()
    }

    /// The layer of the last packet received.
    pub fn layer(&self) -> Option<u8> {
        self.packets.lock().unwrap().last().map(|g| g.layer)
    }
}

pub struct Client {
    gathered: Arc<Notify>,
    received: Option<Arc<Received>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Client {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered.notify_one();
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let Some(rx) = self.received.clone() else {
            return;
        };
        *rx.track.lock().unwrap() = Some(track.clone());
        tokio::spawn(async move {
            while let Some(ev) = track.poll().await {
                match ev {
                    TrackRemoteEvent::OnRtpPacket(p) => {
                        let layer = p.payload.last().copied().unwrap_or(255);
                        rx.packets.lock().unwrap().push(Got {
                            at: Instant::now(),
                            seq: p.header.sequence_number,
                            ts: p.header.timestamp,
                            layer,
                            size: streamedge::media::layers::vp8_keyframe_size(&p.payload),
                        });
                    }
                    TrackRemoteEvent::OnEnded => break,
                    _ => {}
                }
            }
        });
    }
}

pub async fn peer(received: Option<Arc<Received>>) -> (Arc<dyn PeerConnection>, Arc<Notify>) {
    let gathered = Arc::new(Notify::new());
    let handler = Arc::new(Client {
        gathered: gathered.clone(),
        received,
    });
    (build(handler).await, gathered)
}

/// A peer on loopback UDP with the default codecs and interceptors, plus the keyframe
/// request tap the node uses (so a local track sees the PLIs it receives), whose events go
/// to `handler`.
pub async fn build(handler: Arc<dyn PeerConnectionEventHandler>) -> Arc<dyn PeerConnection> {
    let mut media = MediaEngine::default();
    media.register_default_codecs().unwrap();
    let registry = register_default_interceptors(Registry::new(), &mut media)
        .unwrap()
        .with(
            streamedge::media::feedback::slot(),
            streamedge::media::feedback::KeyframeRequestTap::default(),
        );
    let pc = PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(media)
        .with_setting_engine(
            SettingEngineBuilder::new()
                .with_include_loopback_candidate(true)
                .build(),
        )
        .with_interceptor_registry(registry)
        .with_handler(handler)
        .with_udp_addrs(vec!["127.0.0.1:0".to_string()])
        .build()
        .await
        .unwrap();
    Arc::new(pc)
}

/// Creates the offer and waits for gathering, so it holds the candidates.
pub async fn offer(pc: &Arc<dyn PeerConnection>, gathered: &Notify) -> String {
    let o = pc.create_offer(None).await.unwrap();
    let wait = gathered.notified();
    pc.set_local_description(o).await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(5), wait).await;
    pc.local_description().await.unwrap().sdp
}

/// POSTs an SDP offer; returns status, Location and body.
pub async fn post_sdp(url: &str, token: &str, sdp: &str) -> (u16, Option<String>, String) {
    let r = reqwest::Client::new()
        .post(url)
        .bearer_auth(token)
        .header("content-type", "application/sdp")
        .body(sdp.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let loc = r
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string());
    (status, loc, r.text().await.unwrap())
}

/// Starts a WHEP viewer of the video (`query` appended to the WHEP URL).
pub async fn start_viewer(
    api: &str,
    stream: &uuid::Uuid,
    token: &str,
    query: &str,
) -> (Arc<dyn PeerConnection>, Arc<Received>, String) {
    let received = Arc::new(Received::default());
    let (pc, gathered) = peer(Some(received.clone())).await;
    pc.add_transceiver_from_kind(
        RtpCodecKind::Video,
        Some(RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Recvonly,
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    let sdp = offer(&pc, &gathered).await;
    let (st, loc, answer) = post_sdp(
        &format!("{api}/v1/streams/{stream}/whep{query}"),
        token,
        &sdp,
    )
    .await;
    assert_eq!(st, 201, "{answer}");
    pc.set_remote_description(RTCSessionDescription::answer(answer).unwrap())
        .await
        .unwrap();
    (pc, received, loc.unwrap())
}

/// Sends REMB reports of `bps` (read each time) from a viewer, every 200 ms.
pub fn send_remb(rx: Arc<Received>, bps: Arc<AtomicU32>, stop: Arc<AtomicBool>) {
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            let track = rx.track.lock().unwrap().clone();
            if let Some(track) = track {
                let ssrcs = track.ssrcs().await;
                let _ = track
                    .write_rtcp(vec![Box::new(ReceiverEstimatedMaximumBitrate {
                        sender_ssrc: 1,
                        bitrate: bps.load(Ordering::Relaxed) as f32,
                        ssrcs,
                    })])
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}

impl Received {
    /// The picture size of the last keyframe received.
    pub fn keyframe_size(&self) -> Option<(u16, u16)> {
        self.packets
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find_map(|g| g.size)
    }
}
