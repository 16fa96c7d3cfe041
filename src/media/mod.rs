//! The node's own WebRTC media path: the seller publishes with WHIP (RFC 9725), buyers
//! play with WHEP, and the node forwards RTP without transcoding (an SFU), using the
//! `webrtc` crate (0.21).
//!
//! One [`Publication`] per stream holds the publisher's peer connection and, per received
//! track, a broadcast channel that the track's reader task feeds once; every viewer's
//! forwarding task subscribes to it and writes the same packets (only the SSRC rewritten)
//! to its own local track. A viewer that falls behind by more than the channel holds is
//! dropped — never the publisher. A joining viewer triggers a keyframe request (PLI)
//! upstream, at most one per `media.keyframe_interval` per track.

pub mod feedback;
pub mod ports;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rtc::interceptor::Registry;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use tokio::sync::{broadcast, Notify};
use uuid::Uuid;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState,
    RTCPeerConnectionState,
};

use crate::config::MediaConfig;
use crate::rtc::service::{MediaClaims, MEDIA_AUDIENCE};
use crate::store::SharedState;

/// Packets a viewer may fall behind before it is dropped.
const VIEWER_BUFFER_PACKETS: usize = 1024;
/// How long an answer waits for ICE gathering.
const GATHER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a WHEP request waits for the publisher's tracks to appear.
const TRACKS_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("invalid SDP offer: {0}")]
    BadOffer(String),
    #[error("the offer has no audio or video")]
    NoMedia,
    #[error("the node carries media.max_publishers publications")]
    PublishersFull,
    #[error("the node carries media.max_viewers viewers")]
    ViewersFull,
    #[error("every port of media.udp_port_range is in use")]
    PortsFull,
    #[error("the stream already has a publisher")]
    AlreadyPublishing,
    #[error("nobody publishes this stream")]
    NotPublishing,
    #[error("no such media session")]
    NoSuchResource,
    #[error("WebRTC failure: {0}")]
    WebRtc(String),
}

fn webrtc_err(e: impl std::fmt::Display) -> MediaError {
    MediaError::WebRtc(e.to_string())
}

/// What a WHIP or WHEP resource is.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ResourceKind {
    Publish,
    View,
    /// This node pulling a stream from the node that ingests it (the edge pattern).
    Relay,
}

/// A WHIP or WHEP session.
#[derive(Clone)]
pub struct Resource {
    pub id: String,
    pub stream: Uuid,
    pub user: String,
    pub kind: ResourceKind,
    pc: Arc<dyn PeerConnection>,
    /// For a relay: the WHEP resource on the origin node.
    remote: Option<String>,
    /// The UDP port of `media.udp_port_range` the connection holds.
    _port: Option<Arc<ports::PortLease>>,
    /// Cancelled when the session is removed (a local close does not always surface as a
    /// connection state change).
    ended: tokio_util::sync::CancellationToken,
}

/// One forwarded track of a publication.
struct Forwarded {
    kind: RtpCodecKind,
    codec: RTCRtpCodec,
    tx: broadcast::Sender<Inbound>,
    remote: Arc<dyn TrackRemote>,
    media_ssrc: u32,
    last_pli: Mutex<Option<Instant>>,
}

/// A received packet and when it arrived (for the forwarding latency).
#[derive(Clone)]
struct Inbound {
    at: Instant,
    packet: rtp::Packet,
}

/// One packet in this many has its forwarding latency recorded.
const LATENCY_SAMPLE: u32 = 64;

/// A stream being published on this node.
pub struct Publication {
    pub stream: Uuid,
    pub resource: String,
    /// Audio and video sections the publisher offered: tracks to wait for.
    expected_tracks: AtomicUsize,
    tracks: Mutex<Vec<Arc<Forwarded>>>,
    tracks_changed: Notify,
    /// Viewers holding this publication (changed under the publications lock, so a relay
    /// is never closed as idle while a viewer is being added).
    holders: AtomicUsize,
    /// Cancelled when the publisher's connection ends.
    pub ended: tokio_util::sync::CancellationToken,
}

pub struct MediaService {
    cfg: MediaConfig,
    publications: Mutex<HashMap<Uuid, Arc<Publication>>>,
    resources: Mutex<HashMap<String, Resource>>,
    viewers: Arc<AtomicUsize>,
    store: Arc<dyn SharedState>,
    node_id: String,
    /// One relay being set up at a time.
    relaying: tokio::sync::Mutex<()>,
    http: reqwest::Client,
    /// `media.udp_port_range`, when set.
    ports: Option<Arc<ports::PortPool>>,
}

/// Where a stream is ingested, in the shared state (`media:ingest:{stream}`).
#[derive(serde::Serialize, serde::Deserialize)]
struct Ingest {
    node: String,
    url: String,
}

/// Shortest life of an ingest record without a refresh (the publish heartbeat renews it).
pub const INGEST_TTL: Duration = Duration::from_secs(15);

/// A peer connection and the UDP port it holds (with `media.udp_port_range`).
type Connection = (Arc<dyn PeerConnection>, Option<Arc<ports::PortLease>>);

/// The answer to an offer, with the resource created for it.
pub struct Answer {
    pub resource: Resource,
    pub sdp: String,
}

struct Handler {
    gathered: Arc<Notify>,
    state: tokio::sync::watch::Sender<RTCPeerConnectionState>,
    on_track: Option<Arc<Publication>>,
    keyframe_interval: Duration,
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
        let Some(media_ssrc) = track.ssrcs().await.first().copied() else {
            return;
        };
        let Some(codec) = track.codec(media_ssrc).await else {
            return;
        };
        let kind = if codec.mime_type.to_ascii_lowercase().starts_with("audio/") {
            RtpCodecKind::Audio
        } else {
            RtpCodecKind::Video
        };
        let (tx, _) = broadcast::channel(VIEWER_BUFFER_PACKETS);
        let fwd = Arc::new(Forwarded {
            kind,
            codec: codec.clone(),
            tx: tx.clone(),
            remote: track.clone(),
            media_ssrc,
            last_pli: Mutex::new(None),
        });
        publication.tracks.lock().unwrap().push(fwd.clone());
        publication.tracks_changed.notify_waiters();
        tracing::info!(stream = %publication.stream, codec = %codec.mime_type, ssrc = media_ssrc, "publisher track");
        let ended = publication.ended.clone();
        let keyframe_interval = self.keyframe_interval;
        tokio::spawn(async move {
            // One read per packet, handed to every viewer by the broadcast channel.
            let packets_in = metrics::counter!("streamedge_media_packets_in_total");
            let bytes_in = metrics::counter!("streamedge_media_bytes_in_total");
            loop {
                let ev = tokio::select! {
                    _ = ended.cancelled() => break,
                    ev = track.poll() => ev,
                };
                match ev {
                    Some(TrackRemoteEvent::OnRtpPacket(p)) => {
                        packets_in.increment(1);
                        bytes_in.increment(p.payload.len() as u64);
                        let _ = tx.send(Inbound {
                            at: Instant::now(),
                            packet: p,
                        });
                    }
                    Some(TrackRemoteEvent::OnEnded) | None => break,
                    Some(_) => {}
                }
            }
            let _ = keyframe_interval;
        });
    }
}

fn now_state() -> (
    tokio::sync::watch::Sender<RTCPeerConnectionState>,
    tokio::sync::watch::Receiver<RTCPeerConnectionState>,
) {
    tokio::sync::watch::channel(RTCPeerConnectionState::New)
}

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

    async fn withdraw(&self, stream: &Uuid) {
        let key = crate::domain::keys::media_ingest(stream);
        if let Ok(Some(raw)) = self.store.get(&key).await {
            if let Ok(rec) = serde_json::from_slice::<Ingest>(&raw) {
                if rec.node == self.node_id {
                    let _ = self.store.delete(&key).await;
                }
            }
        }
    }

    /// A media token this node presents to another node (nodes share `media.node_key`).
    fn internal_token(&self, stream: &Uuid) -> String {
        let now = crate::domain::clock::now_ms() / 1000;
        let claims = MediaClaims {
            sub: format!("node:{}", self.node_id),
            stream: stream.to_string(),
            role: "relay".into(),
            aud: MEDIA_AUDIENCE.into(),
            iat: now,
            exp: now + 300,
        };
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(self.cfg.node_key.expose().as_bytes()),
        )
        .expect("HS256 encoding")
    }

    /// The stream's publication on this node: the local publish, or a relay pulling it
    /// from the node that ingests it.
    async fn publication_or_relay(self: &Arc<Self>, stream: &Uuid) -> Result<Hold, MediaError> {
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
    fn hold(&self, stream: &Uuid) -> Option<Hold> {
        let pubs = self.publications.lock().unwrap();
        let p = pubs.get(stream)?.clone();
        p.holders.fetch_add(1, Ordering::SeqCst);
        Some(Hold(p))
    }

    /// Pulls `stream` from its ingest node over WebRTC (WHEP with an internal token) and
    /// fans it out here like a local publish.
    async fn relay(
        self: &Arc<Self>,
        stream: Uuid,
        ingest: &Ingest,
    ) -> Result<Arc<Publication>, MediaError> {
        let resource_id = format!("relay{}", Uuid::new_v4().simple());
        let publication = Arc::new(Publication {
            stream,
            resource: resource_id.clone(),
            // Set from the origin's answer (it may carry only audio or only video).
            expected_tracks: AtomicUsize::new(1),
            tracks: Mutex::new(Vec::new()),
            tracks_changed: Notify::new(),
            holders: AtomicUsize::new(0),
            ended: tokio_util::sync::CancellationToken::new(),
        });
        let gathered = Arc::new(Notify::new());
        let (state_tx, mut state_rx) = now_state();
        let (pc, port) = self
            .peer_connection(Handler {
                gathered: gathered.clone(),
                state: state_tx,
                on_track: Some(publication.clone()),
                keyframe_interval: self.cfg.keyframe_interval,
            })
            .await?;
        let result = async {
            for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
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
                .store(sending_sections(&answer).max(1), Ordering::Relaxed);
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

    pub fn config(&self) -> &MediaConfig {
        &self.cfg
    }

    pub fn publication(&self, stream: &Uuid) -> Option<Arc<Publication>> {
        self.publications.lock().unwrap().get(stream).cloned()
    }

    pub fn resource(&self, id: &str) -> Option<Resource> {
        self.resources.lock().unwrap().get(id).cloned()
    }

    pub fn viewer_count(&self) -> usize {
        self.viewers.load(Ordering::Relaxed)
    }

    /// A new peer connection bound to `media.udp_addr` — on a port of
    /// `media.udp_port_range` when set (the lease lives as long as the session).
    async fn peer_connection(&self, handler: Handler) -> Result<Connection, MediaError> {
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

    async fn build_peer_connection(
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
    async fn answer(
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
        let publication = Arc::new(Publication {
            stream,
            resource: resource_id.clone(),
            expected_tracks: AtomicUsize::new(media_sections(offer)),
            tracks: Mutex::new(Vec::new()),
            tracks_changed: Notify::new(),
            holders: AtomicUsize::new(0),
            ended: tokio_util::sync::CancellationToken::new(),
        });
        let gathered = Arc::new(Notify::new());
        let (state_tx, state_rx) = now_state();
        let (pc, port) = self
            .peer_connection(Handler {
                gathered: gathered.clone(),
                state: state_tx,
                on_track: Some(publication.clone()),
                keyframe_interval: self.cfg.keyframe_interval,
            })
            .await?;
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
        };
        self.resources
            .lock()
            .unwrap()
            .insert(resource_id, resource.clone());
        metrics::gauge!("streamedge_media_publishers")
            .set(self.publications.lock().unwrap().len() as f64);
        Ok((Answer { resource, sdp }, publication, state_rx))
    }

    /// WHEP: answers a viewer's offer with the stream's tracks.
    pub async fn view(
        self: &Arc<Self>,
        stream: Uuid,
        user: &str,
        offer: &str,
    ) -> Result<(Answer, tokio::sync::watch::Receiver<RTCPeerConnectionState>), MediaError> {
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
        let deadline = tokio::time::Instant::now() + TRACKS_TIMEOUT;
        let tracks = loop {
            let wait = publication.tracks_changed.notified();
            let t = publication.tracks.lock().unwrap().clone();
            if t.len() >= publication.expected_tracks.load(Ordering::Relaxed).max(1) {
                break t;
            }
            if tokio::time::timeout_at(deadline, wait).await.is_err() {
                break publication.tracks.lock().unwrap().clone();
            }
        };
        if tracks.is_empty() {
            return Err(MediaError::NotPublishing);
        }
        let gathered = Arc::new(Notify::new());
        let (state_tx, state_rx) = now_state();
        let (pc, port) = self
            .peer_connection(Handler {
                gathered: gathered.clone(),
                state: state_tx,
                on_track: None,
                keyframe_interval: self.cfg.keyframe_interval,
            })
            .await?;
        let mut locals = Vec::new();
        for fwd in &tracks {
            let ssrc = rand_ssrc();
            let label = format!("streamedge-{}", stream.simple());
            let local = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
                label.clone(),
                format!(
                    "{label}-{}",
                    if fwd.kind == RtpCodecKind::Audio {
                        "audio"
                    } else {
                        "video"
                    }
                ),
                label,
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
            locals.push((fwd.clone(), local, ssrc));
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
            .map(|(fwd, local, ssrc)| {
                let pt = negotiated_pt(&sdp, fwd.kind, &fwd.codec);
                (fwd, local, ssrc, pt)
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
        };
        self.resources
            .lock()
            .unwrap()
            .insert(resource_id.clone(), resource.clone());
        for (fwd, local, ssrc, pt) in locals {
            let mut rx = fwd.tx.subscribe();
            let stop = stop.clone();
            let ended = publication.ended.clone();
            let pc = pc.clone();
            let stop_on_lag = stop.clone();
            let keyframe_interval = self.cfg.keyframe_interval;
            tokio::spawn(async move {
                let packets_out = metrics::counter!("streamedge_media_packets_out_total");
                let bytes_out = metrics::counter!("streamedge_media_bytes_out_total");
                let forward_latency = metrics::histogram!("streamedge_media_forward_seconds");
                let mut sampled = 0u32;
                let mut bound = false;
                loop {
                    let got = tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = ended.cancelled() => break,
                        r = rx.recv() => r,
                    };
                    match got {
                        Ok(Inbound { at, packet: mut p }) => {
                            p.header.ssrc = ssrc;
                            if let Some(pt) = pt {
                                p.header.payload_type = pt;
                            }
                            // The publisher's header extensions (mid, ids negotiated on its
                            // own session) mean nothing to the viewer: dropped.
                            p.header.extension = false;
                            p.header.extensions.clear();
                            p.header.extensions_padding = 0;
                            let n = p.payload.len() as u64;
                            // Fails until the viewer's connection is up (the track is not
                            // bound yet): those packets are skipped.
                            if local.write_rtp(p).await.is_ok() {
                                packets_out.increment(1);
                                bytes_out.increment(n);
                                sampled = sampled.wrapping_add(1);
                                if sampled % LATENCY_SAMPLE == 1 {
                                    forward_latency.record(at.elapsed().as_secs_f64());
                                }
                                if !bound {
                                    // The viewer can decode from the next keyframe on: ask
                                    // now, and again shortly in case that one was lost.
                                    bound = true;
                                    let join = fwd.clone();
                                    tokio::spawn(async move {
                                        for wait in [0u64, 1000, 3000] {
                                            tokio::time::sleep(Duration::from_millis(wait)).await;
                                            request_keyframe(
                                                &join,
                                                keyframe_interval.min(Duration::from_millis(900)),
                                                "join",
                                            )
                                            .await;
                                        }
                                    });
                                    tokio::spawn(viewer_feedback(
                                        fwd.clone(),
                                        local.clone(),
                                        stop.clone(),
                                        keyframe_interval,
                                    ));
                                }
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(missed)) => {
                            // Fell behind: dropped, never the publisher.
                            metrics::counter!("streamedge_media_viewers_dropped_total")
                                .increment(1);
                            tracing::info!(missed, "WHEP viewer fell behind; dropping it");
                            stop_on_lag.cancel();
                            let _ = pc.close().await;
                            break;
                        }
                        Err(broadcast::error::RecvError::Closed) => break,
                    }
                }
            });
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

    /// Ends a WHIP or WHEP session.
    pub async fn remove(&self, id: &str) -> Result<Resource, MediaError> {
        let r = self
            .resources
            .lock()
            .unwrap()
            .remove(id)
            .ok_or(MediaError::NoSuchResource)?;
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
struct Hold(Arc<Publication>);

impl Drop for Hold {
    fn drop(&mut self) {
        self.0.holders.fetch_sub(1, Ordering::SeqCst);
    }
}

struct ViewerSlot(Arc<AtomicUsize>);

impl Drop for ViewerSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn rand_ssrc() -> u32 {
    let b = Uuid::new_v4().into_bytes();
    u32::from_le_bytes([b[0], b[1], b[2], b[3]]) | 1
}

/// Reads a viewer's RTCP feedback for one forwarded track (what [`feedback`] lets
/// through: keyframe requests) and passes keyframe requests on to the publisher,
/// rate-limited per track. Retransmission requests (NACK) never get here: the node's NACK
/// responder answers them from its own send buffer.
async fn viewer_feedback(
    fwd: Arc<Forwarded>,
    local: Arc<TrackLocalStaticRTP>,
    stop: tokio_util::sync::CancellationToken,
    interval: Duration,
) {
    loop {
        let ev = tokio::select! {
            _ = stop.cancelled() => return,
            ev = local.poll() => ev,
        };
        match ev {
            Some(TrackLocalEvent::OnRtcpPacket(packets)) => {
                if packets
                    .iter()
                    .any(|p| feedback::is_keyframe_request(p.as_ref()))
                {
                    request_keyframe(&fwd, interval, "viewer").await;
                }
            }
            None => return,
            Some(_) => {}
        }
    }
}

/// Asks the publisher for a keyframe (PLI), at most once per `interval` per track.
/// `why`: `join` (a viewer started) or `viewer` (a viewer asked).
async fn request_keyframe(fwd: &Forwarded, interval: Duration, why: &'static str) {
    {
        let mut last = fwd.last_pli.lock().unwrap();
        if last.is_some_and(|t| t.elapsed() < interval) {
            return;
        }
        *last = Some(Instant::now());
    }
    if fwd.kind != RtpCodecKind::Video {
        return;
    }
    metrics::counter!("streamedge_media_keyframe_requests_total", "reason" => why).increment(1);
    let _ = fwd
        .remote
        .write_rtcp(vec![Box::new(PictureLossIndication {
            sender_ssrc: 0,
            media_ssrc: fwd.media_ssrc,
        })])
        .await;
}

/// The payload type `sdp` (an answer) gives `codec` in its first section of `kind`.
pub fn negotiated_pt(sdp: &str, kind: RtpCodecKind, codec: &RTCRtpCodec) -> Option<u8> {
    let want_kind = if kind == RtpCodecKind::Audio {
        "m=audio "
    } else {
        "m=video "
    };
    let name = codec.mime_type.split('/').nth(1)?.to_ascii_lowercase();
    let mut in_section = false;
    let mut candidates: Vec<(u8, String)> = Vec::new();
    let mut fmtp: HashMap<u8, String> = HashMap::new();
    for line in sdp.lines() {
        if line.starts_with("m=") {
            if in_section {
                break;
            }
            in_section = line.starts_with(want_kind);
            continue;
        }
        if !in_section {
            continue;
        }
        if let Some(rest) = line.strip_prefix("a=rtpmap:") {
            let (pt, enc) = rest.split_once(' ')?;
            let (enc_name, clock) = enc.split_once('/').unwrap_or((enc, ""));
            let clock_ok = clock
                .split('/')
                .next()
                .and_then(|c| c.parse::<u32>().ok())
                .is_none_or(|c| c == codec.clock_rate);
            if enc_name.eq_ignore_ascii_case(&name) && clock_ok {
                if let Ok(pt) = pt.parse() {
                    candidates.push((pt, enc_name.to_string()));
                }
            }
        } else if let Some(rest) = line.strip_prefix("a=fmtp:") {
            if let Some((pt, params)) = rest.split_once(' ') {
                if let Ok(pt) = pt.parse() {
                    fmtp.insert(pt, params.to_string());
                }
            }
        }
    }
    // Same format parameters first (H.264 profiles), else the first of that name.
    candidates
        .iter()
        .find(|(pt, _)| {
            !codec.sdp_fmtp_line.is_empty()
                && fmtp.get(pt).is_some_and(|f| *f == codec.sdp_fmtp_line)
        })
        .or(candidates.first())
        .map(|(pt, _)| *pt)
}

/// Audio and video sections of an answer that send media (`sendonly` / `sendrecv`).
fn sending_sections(sdp: &str) -> usize {
    let mut n = 0;
    let mut in_media = false;
    let mut sends = false;
    for l in sdp.lines() {
        if l.starts_with("m=") {
            n += usize::from(in_media && sends);
            in_media = l.starts_with("m=audio ") || l.starts_with("m=video ");
            sends = false;
        } else if l == "a=sendonly" || l == "a=sendrecv" {
            sends = true;
        }
    }
    n + usize::from(in_media && sends)
}

/// Audio and video sections of an SDP.
fn media_sections(sdp: &str) -> usize {
    sdp.lines()
        .filter(|l| l.starts_with("m=audio ") || l.starts_with("m=video "))
        .count()
}

/// A cheap check before any WebRTC work: an SDP offer with at least one audio or video
/// section.
pub fn check_offer(sdp: &str) -> Result<(), MediaError> {
    if !sdp.starts_with("v=0") {
        return Err(MediaError::BadOffer(
            "not an SDP session description".into(),
        ));
    }
    if !sdp
        .lines()
        .any(|l| l.starts_with("m=audio ") || l.starts_with("m=video "))
    {
        return Err(MediaError::NoMedia);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_types_come_from_the_viewers_answer() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 100 102 104\r\na=rtpmap:100 VP8/90000\r\n\
                   a=rtpmap:102 H264/90000\r\na=fmtp:102 profile-level-id=42001f\r\n\
                   a=rtpmap:104 H264/90000\r\na=fmtp:104 profile-level-id=42e01f\r\n";
        let codec = |mime: &str, clock: u32, fmtp: &str| RTCRtpCodec {
            mime_type: mime.into(),
            clock_rate: clock,
            sdp_fmtp_line: fmtp.into(),
            ..Default::default()
        };
        assert_eq!(
            negotiated_pt(sdp, RtpCodecKind::Video, &codec("video/VP8", 90000, "")),
            Some(100)
        );
        assert_eq!(
            negotiated_pt(sdp, RtpCodecKind::Audio, &codec("audio/opus", 48000, "")),
            Some(111)
        );
        assert_eq!(
            negotiated_pt(
                sdp,
                RtpCodecKind::Video,
                &codec("video/H264", 90000, "profile-level-id=42e01f")
            ),
            Some(104)
        );
        assert_eq!(
            negotiated_pt(sdp, RtpCodecKind::Video, &codec("video/AV1", 90000, "")),
            None
        );
        let answer = "v=0\r\nm=audio 9 x 111\r\na=recvonly\r\nm=video 9 x 96\r\na=sendonly\r\n";
        assert_eq!(sending_sections(answer), 1);
        assert_eq!(media_sections(answer), 2);
        assert!(check_offer("v=0\r\nm=video 9 x 96\r\n").is_ok());
        assert!(matches!(check_offer("v=0\r\n"), Err(MediaError::NoMedia)));
        assert!(matches!(check_offer("hello"), Err(MediaError::BadOffer(_))));
    }
}
