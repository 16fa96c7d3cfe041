//! The node's own WebRTC media path: the seller publishes with WHIP (RFC 9725), buyers
//! play with WHEP, and the node forwards RTP without transcoding (an SFU), using the
//! `webrtc` crate (0.21).
//!
//! One [`Publication`] per stream holds the publisher's peer connection and, per received
//! track, one [`Layer`] per simulcast encoding (one without simulcast), each with a
//! broadcast channel that the track's reader task feeds once. Every viewer's forwarding
//! task subscribes to one layer at a time — chosen from the viewer's congestion feedback
//! and cap ([`select`]) — and writes its packets (SSRC, sequence numbers and timestamps
//! rewritten, [`layers`]) to its own local track. A viewer that falls behind by more than
//! the channel holds is dropped — never the publisher. A joining or switching viewer
//! triggers a keyframe request (PLI) upstream, at most one per `media.keyframe_interval`
//! per layer.

mod control;
pub mod feedback;
mod forward;
mod ingest;
pub use control::{CurrentLayer, LayerControl};
pub use ingest::ResourceHome;
pub use layers::Cap;
mod keyframes;
pub mod layers;
mod peer;
pub mod ports;
mod relay;
pub mod sdp;
pub mod select;
mod service;
mod token;
mod view;

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RtpCodecKind};
use tokio::sync::{broadcast, Notify};
use uuid::Uuid;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::PeerConnection;

use crate::config::MediaConfig;
use crate::store::SharedState;

pub use sdp::{check_offer, negotiated_pt};
use sdp::{media_sections, sending_groups, simulcast_layers};
use service::{Hold, ViewerSlot};

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
    /// A WHEP viewer's layer cap and current layer.
    pub layer: Option<Arc<control::LayerControl>>,
}

/// One forwarded track of a publication: its layers (one per simulcast encoding, or
/// just one).
struct Forwarded {
    kind: RtpCodecKind,
    codec: RTCRtpCodec,
    layers: Mutex<Vec<Arc<Layer>>>,
}

/// One encoding of a track: a simulcast layer (by its rid), or the only one.
struct Layer {
    /// The publisher's rid (`a=rid`), empty without simulcast.
    rid: String,
    ssrc: u32,
    /// Where keyframe requests for it go.
    remote: Arc<dyn TrackRemote>,
    tx: broadcast::Sender<Inbound>,
    last_pli: Mutex<Option<Instant>>,
    /// Received bit rate (payload), smoothed; 0 once the layer stops arriving.
    bitrate: std::sync::atomic::AtomicU64,
    /// Width × height its last keyframe announced (VP8), 0 when unknown.
    pixels: std::sync::atomic::AtomicU64,
}

impl Layer {
    fn new(rid: String, ssrc: u32, remote: Arc<dyn TrackRemote>) -> Arc<Layer> {
        let (tx, _) = broadcast::channel(VIEWER_BUFFER_PACKETS);
        Arc::new(Layer {
            rid,
            ssrc,
            remote,
            tx,
            last_pli: Mutex::new(None),
            bitrate: Default::default(),
            pixels: Default::default(),
        })
    }

    fn rate(&self) -> f64 {
        self.bitrate.load(std::sync::atomic::Ordering::Relaxed) as f64
    }
}

impl Forwarded {
    /// The layers ranked low to high: by picture size where keyframes announce one,
    /// else by bit rate.
    fn ranked(&self) -> Vec<Arc<Layer>> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut v = self.layers.lock().unwrap().clone();
        v.sort_by_key(|l| (l.pixels.load(Relaxed), l.bitrate.load(Relaxed)));
        v
    }

    fn layer(&self, ssrc: u32) -> Option<Arc<Layer>> {
        self.layers
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.ssrc == ssrc)
            .cloned()
    }
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
    /// Simulcast layers the publisher offered (`a=rid:… send`) for its video: layers a
    /// viewer's answer waits for (briefly).
    expected_layers: AtomicUsize,
    tracks: Mutex<Vec<Arc<Forwarded>>>,
    tracks_changed: Notify,
    /// For a relay: the track each group of relayed layers forms (by the origin's track
    /// id without its layer suffix).
    relayed: Mutex<HashMap<String, Arc<Forwarded>>>,
    /// Viewers holding this publication (changed under the publications lock, so a relay
    /// is never closed as idle while a viewer is being added).
    holders: AtomicUsize,
    /// Cancelled when the publisher's connection ends.
    pub ended: tokio_util::sync::CancellationToken,
}

impl Publication {
    fn new(stream: Uuid, resource: String, expected_tracks: usize) -> Arc<Self> {
        Arc::new(Publication {
            stream,
            resource,
            expected_tracks: AtomicUsize::new(expected_tracks),
            expected_layers: AtomicUsize::new(1),
            tracks: Mutex::new(Vec::new()),
            tracks_changed: Notify::new(),
            relayed: Mutex::new(HashMap::new()),
            holders: AtomicUsize::new(0),
            ended: tokio_util::sync::CancellationToken::new(),
        })
    }
}

impl Publication {
    /// The track a relayed layer of `group` belongs to: `fwd` for the group's first.
    fn relayed_into(&self, group: &str, fwd: &Arc<Forwarded>) -> Arc<Forwarded> {
        let mut groups = self.relayed.lock().unwrap();
        if let Some(f) = groups.get(group) {
            return f.clone();
        }
        groups.insert(group.to_string(), fwd.clone());
        self.tracks.lock().unwrap().push(fwd.clone());
        fwd.clone()
    }
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
