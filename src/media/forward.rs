//! Forwarding one track to one viewer: the packet rewrite (a pure function: the viewer's
//! SSRC and payload type, the publisher's header extensions dropped), and the task that
//! reads one layer's broadcast channel at a time and writes to the viewer's local track.
//! The task picks the layer ([`select`]) from the viewer's feedback and cap, switches on a
//! keyframe of the new layer (asked for with a PLI) and keeps sequence numbers and
//! timestamps continuous ([`layers::SeqRewriter`]). A viewer that falls more than the
//! channel holds behind is dropped, never the publisher.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::peer_connection::PeerConnection;

use super::control::{CurrentLayer, LayerControl};
use super::keyframes::{request_keyframe, viewer_feedback, Feedback};
use super::layers::{layer_name, starts_keyframe, SeqRewriter, VideoCodec};
use super::select::{Estimator, Selector};
use super::{Forwarded, Inbound, Layer, LATENCY_SAMPLE};

/// What a viewer's packets get: its own SSRC and, when its answer renumbered the codec,
/// its payload type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewrite {
    pub ssrc: u32,
    pub pt: Option<u8>,
}

/// Rewrites a publisher's packet for one viewer. Sequence numbers and timestamps pass
/// unchanged here (a layer switch shifts them, [`SeqRewriter`]); the publisher's header
/// extensions (mid, rid and ids negotiated on its own session) mean nothing to the viewer
/// and are dropped.
pub fn rewrite(p: &mut rtp::Packet, r: Rewrite) {
    p.header.ssrc = r.ssrc;
    if let Some(pt) = r.pt {
        p.header.payload_type = pt;
    }
    p.header.extension = false;
    p.header.extensions.clear();
    p.header.extensions_padding = 0;
}

/// What ends a forwarding task: the viewer's session, or the publish.
pub(super) struct Stops {
    pub viewer: CancellationToken,
    pub publish: CancellationToken,
}

/// How often a viewer's layer choice is revisited (feedback and cap changes act at once).
const RESELECT_EVERY: Duration = Duration::from_millis(250);
/// A gap in forwarded video longer than this is a freeze.
const FREEZE: Duration = Duration::from_millis(500);
/// How long a switch waits for a keyframe of the new layer before it is given up.
const SWITCH_TIMEOUT: Duration = Duration::from_secs(5);

/// A layer being received.
struct Subscribed {
    layer: Arc<Layer>,
    rx: broadcast::Receiver<Inbound>,
    since: Instant,
    /// Its name when it became current (for the per-layer gauge).
    name: &'static str,
}

impl Subscribed {
    fn new(layer: Arc<Layer>) -> Self {
        Subscribed {
            rx: layer.tx.subscribe(),
            layer,
            since: Instant::now(),
            name: "single",
        }
    }
}

async fn recv(s: Option<&mut Subscribed>) -> Result<Inbound, broadcast::error::RecvError> {
    match s {
        Some(s) => s.rx.recv().await,
        None => std::future::pending().await,
    }
}

/// One viewer's forwarding of one track.
struct Viewer {
    fwd: Arc<Forwarded>,
    local: Arc<TrackLocalStaticRTP>,
    rw: Rewrite,
    codec: VideoCodec,
    video: bool,
    keyframe_interval: Duration,
    control: Option<Arc<LayerControl>>,
    pinned: Option<Arc<Layer>>,
    cur: Option<Subscribed>,
    pending: Option<Subscribed>,
    seq: SeqRewriter,
    selector: Selector,
    estimator: Estimator,
    last_out: Option<Instant>,
    sampled: u32,
    packets_out: metrics::Counter,
    bytes_out: metrics::Counter,
    forward_latency: metrics::Histogram,
}

/// How a viewer's layer is chosen.
pub(super) struct Choice {
    pub keyframe_interval: Duration,
    /// The viewer's cap and what it receives (video tracks of a WHEP viewer).
    pub control: Option<Arc<LayerControl>>,
    /// One layer, always (a relay node pulling each layer on its own track).
    pub pinned: Option<Arc<Layer>>,
}

/// Forwards `fwd` to the viewer's `local` track until a stop fires or the viewer lags.
pub(super) async fn track(
    fwd: Arc<Forwarded>,
    local: Arc<TrackLocalStaticRTP>,
    rw: Rewrite,
    stops: Stops,
    pc: Arc<dyn PeerConnection>,
    choice: Choice,
) {
    let Choice {
        keyframe_interval,
        control,
        pinned,
    } = choice;
    let video = fwd.kind == RtpCodecKind::Video;
    let mut cap_rx = control.as_ref().map(|c| c.cap.subscribe());
    let mut v = Viewer {
        codec: VideoCodec::from_mime(&fwd.codec.mime_type),
        fwd,
        local,
        rw,
        video,
        keyframe_interval,
        control,
        pinned,
        cur: None,
        pending: None,
        seq: SeqRewriter::default(),
        selector: Selector::default(),
        estimator: Estimator::default(),
        last_out: None,
        sampled: 0,
        packets_out: metrics::counter!("streamedge_media_packets_out_total"),
        bytes_out: metrics::counter!("streamedge_media_bytes_out_total"),
        forward_latency: metrics::histogram!("streamedge_media_forward_seconds"),
    };
    let (fb_tx, mut fb_rx) = mpsc::channel(64);
    let mut fb_tx = Some(fb_tx);
    let mut tick = tokio::time::interval(RESELECT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut bound = false;
    let mut estimate_sampled = Instant::now();
    v.reselect().await;
    loop {
        tokio::select! {
            _ = stops.viewer.cancelled() => break,
            _ = stops.publish.cancelled() => break,
            r = recv(v.cur.as_mut()) => match r {
                Ok(inbound) => {
                    if v.forward(inbound, false).await && !bound {
                        bound = true;
                        v.on_bound(&stops, fb_tx.take());
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    // Fell behind: dropped, never the publisher.
                    metrics::counter!("streamedge_media_viewers_dropped_total").increment(1);
                    tracing::info!(missed, "WHEP viewer fell behind; dropping it");
                    stops.viewer.cancel();
                    let _ = pc.close().await;
                    break;
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            r = recv(v.pending.as_mut()) => match r {
                Ok(inbound) => {
                    if v.forward(inbound, true).await && !bound {
                        bound = true;
                        v.on_bound(&stops, fb_tx.take());
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => v.pending = None,
            },
            Some(f) = fb_rx.recv() => v.feedback(f).await,
            _ = tick.tick() => {
                v.reselect().await;
                if let Some(e) = v.estimator.estimate() {
                    if estimate_sampled.elapsed() >= Duration::from_secs(5) {
                        estimate_sampled = Instant::now();
                        metrics::histogram!("streamedge_media_viewer_bandwidth_bps").record(e);
                    }
                }
            }
            Ok(()) = async {
                match cap_rx.as_mut() {
                    Some(rx) => rx.changed().await,
                    None => std::future::pending().await,
                }
            } => v.reselect().await,
        }
    }
    if let Some(c) = &v.cur {
        if v.counted() {
            metrics::gauge!("streamedge_media_layer_viewers", "layer" => c.name).decrement(1.0);
        }
    }
}

impl Viewer {
    /// Whether the viewer counts in the per-layer gauge: a viewer's video (a relay
    /// node's pinned layers do not).
    fn counted(&self) -> bool {
        self.video && self.pinned.is_none()
    }

    /// The viewer's connection is up (a first packet was written): it can decode from
    /// the next keyframe on, so ask now and again shortly in case that one was lost; and
    /// start reading its feedback.
    fn on_bound(&self, stops: &Stops, fb_tx: Option<mpsc::Sender<Feedback>>) {
        if let Some(c) = &self.cur {
            if self.video {
                let layer = c.layer.clone();
                let interval = self.keyframe_interval.min(Duration::from_millis(900));
                tokio::spawn(async move {
                    for wait in [0u64, 1000, 3000] {
                        tokio::time::sleep(Duration::from_millis(wait)).await;
                        request_keyframe(&layer, interval, "join").await;
                    }
                });
            }
        }
        if let Some(tx) = fb_tx {
            tokio::spawn(viewer_feedback(
                self.local.clone(),
                self.rw.ssrc,
                stops.viewer.clone(),
                tx,
            ));
        }
    }

    /// Writes a packet of the current layer, or of the pending one when it starts a
    /// keyframe (the switch). Whether a packet was written.
    async fn forward(&mut self, inbound: Inbound, from_pending: bool) -> bool {
        let Inbound { at, packet: mut p } = inbound;
        let now = Instant::now();
        let saved = from_pending.then(|| self.seq.clone());
        if from_pending {
            if !starts_keyframe(self.codec, &p.payload) {
                return false;
            }
            self.seq
                .switch(&mut p.header, now, self.fwd.codec.clock_rate);
        } else {
            self.seq.forward(&mut p.header, now);
        }
        rewrite(&mut p, self.rw);
        let n = p.payload.len() as u64;
        // Fails until the viewer's connection is up (the track is not bound yet): those
        // packets are skipped.
        if self.local.write_rtp(p).await.is_err() {
            if let Some(saved) = saved {
                // A switch counts once the keyframe reached the viewer.
                self.seq = saved;
            }
            return false;
        }
        if from_pending {
            self.switched();
        }
        self.packets_out.increment(1);
        self.bytes_out.increment(n);
        self.sampled = self.sampled.wrapping_add(1);
        if self.sampled % LATENCY_SAMPLE == 1 {
            self.forward_latency.record(at.elapsed().as_secs_f64());
        }
        if self.video {
            if self
                .last_out
                .is_some_and(|t| now.duration_since(t) > FREEZE)
            {
                metrics::counter!("streamedge_media_freezes_total").increment(1);
            }
            self.last_out = Some(now);
        }
        true
    }

    /// The pending layer became the current one.
    fn switched(&mut self) {
        let Some(mut next) = self.pending.take() else {
            return;
        };
        let ranked = self.fwd.ranked();
        let index = |l: &Arc<Layer>| ranked.iter().position(|r| Arc::ptr_eq(r, l));
        let to = index(&next.layer).unwrap_or(0);
        next.name = layer_name(to, ranked.len());
        if let Some(old) = self.cur.take() {
            let up = index(&old.layer).is_none_or(|from| to > from);
            metrics::counter!(
                "streamedge_media_layer_switches_total",
                "direction" => if up { "up" } else { "down" }
            )
            .increment(1);
            metrics::gauge!("streamedge_media_layer_viewers", "layer" => old.name).decrement(1.0);
            tracing::debug!(from = %old.layer.rid, to = %next.layer.rid, "viewer switched layer");
        }
        metrics::gauge!("streamedge_media_layer_viewers", "layer" => next.name).increment(1.0);
        self.cur = Some(next);
        self.publish_current(&ranked);
    }

    fn publish_current(&self, ranked: &[Arc<Layer>]) {
        let (Some(control), Some(cur)) = (&self.control, &self.cur) else {
            return;
        };
        let i = ranked
            .iter()
            .position(|r| Arc::ptr_eq(r, &cur.layer))
            .unwrap_or(0);
        control.set_current(CurrentLayer {
            layer: layer_name(i, ranked.len()),
            rid: cur.layer.rid.clone(),
            layers: ranked.len(),
            estimate_bps: self.estimator.estimate().map(|e| e as u64),
        });
    }

    async fn feedback(&mut self, f: Feedback) {
        match f {
            Feedback::Keyframe => {
                if let Some(c) = self.pending.as_ref().or(self.cur.as_ref()) {
                    request_keyframe(&c.layer, self.keyframe_interval, "viewer").await;
                }
            }
            Feedback::Remb(bps) => self.estimator.remb(bps),
            Feedback::Loss(fraction) => {
                let rate = self.cur.as_ref().map_or(0.0, |c| c.layer.rate());
                self.estimator.loss(fraction, rate);
            }
        }
    }

    /// Revisits the layer choice: starts a switch (subscribing to the new layer and
    /// asking its publisher for a keyframe) or gives one up.
    async fn reselect(&mut self) {
        let ranked = match &self.pinned {
            Some(l) => vec![l.clone()],
            None => self.fwd.ranked(),
        };
        if ranked.is_empty() {
            return;
        }
        if !self.video || ranked.len() == 1 || self.codec == VideoCodec::Other && self.cur.is_some()
        {
            // One layer (or audio): forwarded as it comes, from the first packet.
            if self.cur.is_none() {
                self.pending = None;
                let mut s = Subscribed::new(ranked[ranked.len() - 1].clone());
                s.name = layer_name(0, 1);
                if self.counted() {
                    metrics::gauge!("streamedge_media_layer_viewers", "layer" => s.name)
                        .increment(1.0);
                }
                self.cur = Some(s);
                self.publish_current(&ranked);
            }
            return;
        }
        let mut rates: Vec<f64> = ranked.iter().map(|l| l.rate()).collect();
        if rates.iter().all(|r| *r == 0.0) {
            // Not measured yet: every layer counts as arriving.
            rates = (1..=rates.len()).map(|i| i as f64).collect();
        }
        let rids: Vec<&str> = ranked.iter().map(|l| l.rid.as_str()).collect();
        let cap = self
            .control
            .as_ref()
            .map_or(ranked.len() - 1, |c| c.cap.borrow().max_index(&rids));
        let index = |l: &Arc<Layer>| ranked.iter().position(|r| Arc::ptr_eq(r, l));
        let now = Instant::now();
        if let Some(p) = &self.pending {
            // A switch under way completes unless its layer is no longer allowed or
            // arriving, or no keyframe came in time.
            let ok = index(&p.layer).is_some_and(|i| i <= cap && rates[i] > 0.0)
                && p.since.elapsed() < SWITCH_TIMEOUT;
            if ok {
                let why = if self.cur.is_none() { "join" } else { "switch" };
                request_keyframe(&p.layer, self.keyframe_interval, why).await;
                return;
            }
            self.pending = None;
        }
        let cur = self.cur.as_ref().and_then(|c| index(&c.layer));
        let target = self.selector.decide(
            now,
            &rates,
            cur,
            cap,
            self.estimator.estimate(),
            self.estimator.loss,
        );
        if Some(target) == cur {
            self.publish_current(&ranked);
            return;
        }
        let layer = ranked[target].clone();
        let why = if self.cur.is_none() { "join" } else { "switch" };
        self.pending = Some(Subscribed::new(layer.clone()));
        request_keyframe(&layer, self.keyframe_interval, why).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet() -> rtp::Packet {
        let mut p = rtp::Packet::default();
        p.header.ssrc = 0x1111;
        p.header.payload_type = 96;
        p.header.sequence_number = 4242;
        p.header.timestamp = 90_000;
        p.header.marker = true;
        p.header.extension = true;
        p.header.extensions_padding = 2;
        p.header.extensions = vec![rtp::header::Extension {
            id: 4,
            payload: bytes::Bytes::from_static(b"mid0"),
        }];
        p.payload = bytes::Bytes::from_static(b"frame");
        p
    }

    #[test]
    fn a_viewer_gets_its_ssrc_and_payload_type_and_nothing_else_changes() {
        let mut p = packet();
        rewrite(
            &mut p,
            Rewrite {
                ssrc: 0xabcd,
                pt: Some(102),
            },
        );
        assert_eq!(p.header.ssrc, 0xabcd);
        assert_eq!(p.header.payload_type, 102);
        assert_eq!(p.header.sequence_number, 4242);
        assert_eq!(p.header.timestamp, 90_000);
        assert!(p.header.marker);
        assert_eq!(&p.payload[..], b"frame");
    }

    #[test]
    fn the_publishers_header_extensions_are_dropped() {
        let mut p = packet();
        rewrite(&mut p, Rewrite { ssrc: 1, pt: None });
        assert!(!p.header.extension);
        assert!(p.header.extensions.is_empty());
        assert_eq!(p.header.extensions_padding, 0);
        // No payload type in the answer: the publisher's stays.
        assert_eq!(p.header.payload_type, 96);
    }
}
