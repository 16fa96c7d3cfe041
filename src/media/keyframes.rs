//! Keyframe requests: a viewer that starts or asks (PLI/FIR) makes the node send the
//! publisher a PLI, at most once per `media.keyframe_interval` per track.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};

use super::*;

/// Reads a viewer's RTCP feedback for one forwarded track (what [`feedback`] lets
/// through: keyframe requests) and passes keyframe requests on to the publisher,
/// rate-limited per track. Retransmission requests (NACK) never get here: the node's NACK
/// responder answers them from its own send buffer.
pub(super) async fn viewer_feedback(
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
pub(super) async fn request_keyframe(fwd: &Forwarded, interval: Duration, why: &'static str) {
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
