//! Forwarding one track to one viewer: the packet rewrite (a pure function: the viewer's
//! SSRC and payload type, the publisher's header extensions dropped) and the task that
//! reads the publication's broadcast channel and writes to the viewer's local track. A
//! viewer that falls more than the channel holds behind is dropped, never the publisher.

use std::sync::Arc;
use std::time::Duration;

use rtc::rtp;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::peer_connection::PeerConnection;

use super::keyframes::{request_keyframe, viewer_feedback};
use super::{Forwarded, Inbound, LATENCY_SAMPLE};

/// What a viewer's packets get: its own SSRC and, when its answer renumbered the codec,
/// its payload type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewrite {
    pub ssrc: u32,
    pub pt: Option<u8>,
}

/// Rewrites a publisher's packet for one viewer. Sequence numbers and timestamps pass
/// unchanged (one publisher, one continuous stream); the publisher's header extensions
/// (mid and ids negotiated on its own session) mean nothing to the viewer and are dropped.
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

/// Forwards `fwd` to the viewer's `local` track until a stop fires or the viewer lags.
pub(super) async fn track(
    fwd: Arc<Forwarded>,
    local: Arc<TrackLocalStaticRTP>,
    rw: Rewrite,
    stops: Stops,
    pc: Arc<dyn PeerConnection>,
    keyframe_interval: Duration,
) {
    let mut rx = fwd.tx.subscribe();
    let packets_out = metrics::counter!("streamedge_media_packets_out_total");
    let bytes_out = metrics::counter!("streamedge_media_bytes_out_total");
    let forward_latency = metrics::histogram!("streamedge_media_forward_seconds");
    let mut sampled = 0u32;
    let mut bound = false;
    loop {
        let got = tokio::select! {
            _ = stops.viewer.cancelled() => break,
            _ = stops.publish.cancelled() => break,
            r = rx.recv() => r,
        };
        match got {
            Ok(Inbound { at, packet: mut p }) => {
                rewrite(&mut p, rw);
                let n = p.payload.len() as u64;
                // Fails until the viewer's connection is up (the track is not bound yet):
                // those packets are skipped.
                if local.write_rtp(p).await.is_ok() {
                    packets_out.increment(1);
                    bytes_out.increment(n);
                    sampled = sampled.wrapping_add(1);
                    if sampled % LATENCY_SAMPLE == 1 {
                        forward_latency.record(at.elapsed().as_secs_f64());
                    }
                    if !bound {
                        // The viewer can decode from the next keyframe on: ask now, and
                        // again shortly in case that one was lost.
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
                            stops.viewer.clone(),
                            keyframe_interval,
                        ));
                    }
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
        }
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
