//! A viewer's RTCP feedback and keyframe requests: a viewer that starts, switches layer
//! or asks (PLI/FIR) makes the node send the publisher a PLI for the layer concerned, at
//! most once per `media.keyframe_interval` per layer; its REMB and receiver reports feed
//! its layer choice.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::receiver_report::ReceiverReport;
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};

use super::*;

/// What a viewer's RTCP tells its forwarding task.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Feedback {
    /// A PLI or FIR.
    Keyframe,
    /// A REMB, bit/s.
    Remb(f64),
    /// A receiver report's fraction lost (/256) for the viewer's track.
    Loss(u8),
}

/// Reads a viewer's RTCP for one forwarded track (what [`feedback`] lets through) and
/// hands it to the forwarding task; a full queue drops feedback, never blocks. NACKs
/// never get here: the node's NACK responder answers them from its own send buffer.
pub(super) async fn viewer_feedback(
    local: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    stop: tokio_util::sync::CancellationToken,
    tx: mpsc::Sender<Feedback>,
) {
    loop {
        let ev = tokio::select! {
            _ = stop.cancelled() => return,
            ev = local.poll() => ev,
        };
        match ev {
            Some(TrackLocalEvent::OnRtcpPacket(packets)) => {
                for p in &packets {
                    let any = p.as_any();
                    let f = if feedback::is_keyframe_request(p.as_ref()) {
                        Some(Feedback::Keyframe)
                    } else if let Some(r) = any.downcast_ref::<ReceiverEstimatedMaximumBitrate>() {
                        Some(Feedback::Remb(f64::from(r.bitrate)))
                    } else {
                        any.downcast_ref::<ReceiverReport>().and_then(|rr| {
                            rr.reports
                                .iter()
                                .find(|r| r.ssrc == ssrc)
                                .map(|r| Feedback::Loss(r.fraction_lost))
                        })
                    };
                    if let Some(f) = f {
                        let _ = tx.try_send(f);
                    }
                }
            }
            None => return,
            Some(_) => {}
        }
    }
}

/// Asks the publisher for a keyframe of `layer` (PLI), at most once per `interval`.
/// `why`: `join` (a viewer started), `viewer` (a viewer asked) or `switch` (a viewer
/// changes layer).
pub(super) async fn request_keyframe(layer: &Layer, interval: Duration, why: &'static str) {
    {
        let mut last = layer.last_pli.lock().unwrap();
        if last.is_some_and(|t| t.elapsed() < interval) {
            return;
        }
        *last = Some(Instant::now());
    }
    metrics::counter!("streamedge_media_keyframe_requests_total", "reason" => why).increment(1);
    let _ = layer
        .remote
        .write_rtcp(vec![Box::new(PictureLossIndication {
            sender_ssrc: 0,
            media_ssrc: layer.ssrc,
        })])
        .await;
}
