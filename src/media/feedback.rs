//! Keyframe requests and congestion feedback from viewers, let through to the
//! application.
//!
//! The crate's default interceptor chain ends inbound RTCP at its end: receiver reports,
//! NACKs and transport-wide feedback are consumed by the interceptors that act on them
//! (the NACK responder answers retransmission requests from its own send buffer). A
//! picture-loss indication or full intra request, though, is about the publisher's
//! stream, and only the application can pass it on; and a viewer's receiver estimated
//! maximum bitrate (REMB) and receiver reports (loss) choose its simulcast layer.
//! [`KeyframeRequestTap`] sits last in the chain and marks exactly those for delivery to
//! the local track, where the viewer's forwarding task reads them.

use std::collections::VecDeque;
use std::time::Instant;

use rtc::interceptor::{Attribute, Interceptor, Packet, Slot, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::sansio::Protocol;

/// After every default interceptor (the highest named slot is the jitter buffer, 13 000).
pub const SLOT: usize = 14_500;

pub fn slot() -> Slot {
    Slot::from(SLOT)
}

/// Whether an RTCP packet asks for a keyframe.
pub fn is_keyframe_request(p: &dyn rtc::rtcp::Packet) -> bool {
    let any = p.as_any();
    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
}

/// Whether an RTCP packet tells how much a viewer can receive (REMB, receiver report).
pub fn is_congestion_feedback(p: &dyn rtc::rtcp::Packet) -> bool {
    let any = p.as_any();
    any.is::<ReceiverEstimatedMaximumBitrate>() || any.is::<ReceiverReport>()
}

/// Passes RTP through untouched; of inbound RTCP keeps only keyframe requests and
/// congestion feedback, marked for the application. Everything else inbound has already been acted on by the interceptors
/// wire-ward of this one, and ends here as it would at the end of the default chain.
#[derive(Default)]
pub struct KeyframeRequestTap {
    reads: VecDeque<TaggedPacket>,
    writes: VecDeque<TaggedPacket>,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeRequestTap {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &mut msg.message.packet {
            if packets.is_empty() {
                // An attribute carrier: not ours to judge.
                self.reads.push_back(msg);
                return Ok(());
            }
            packets
                .retain(|p| is_keyframe_request(p.as_ref()) || is_congestion_feedback(p.as_ref()));
            if packets.is_empty() {
                return Ok(());
            }
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.reads.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.reads.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.writes.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.writes.pop_front()
    }
}

impl Interceptor for KeyframeRequestTap {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::interceptor::AttributedPacket;
    use rtc::shared::TransportMessage;

    fn tagged(packet: Packet) -> TaggedPacket {
        TransportMessage {
            now: Instant::now(),
            transport: Default::default(),
            message: AttributedPacket::new(packet),
        }
    }

    #[test]
    fn keyframe_requests_and_congestion_feedback_reach_the_application() {
        let mut tap = KeyframeRequestTap::default();
        let pli = PictureLossIndication {
            sender_ssrc: 1,
            media_ssrc: 2,
        };
        // A compound packet: the description is dropped, the PLI goes on, marked.
        tap.handle_read(tagged(Packet::Rtcp(vec![
            Box::new(rtc::rtcp::source_description::SourceDescription::default()),
            Box::new(pli),
        ])))
        .unwrap();
        // Only a sender report: nothing goes on.
        tap.handle_read(tagged(Packet::Rtcp(vec![Box::new(
            rtc::rtcp::sender_report::SenderReport::default(),
        )])))
        .unwrap();
        // RTP passes untouched and unmarked.
        tap.handle_read(tagged(Packet::Rtp(rtc::rtp::Packet::default())))
            .unwrap();
        let first = tap.poll_read().unwrap();
        assert!(first.message.has(&Attribute::DeliverToApplication));
        match &first.message.packet {
            Packet::Rtcp(p) => {
                assert_eq!(p.len(), 1);
                assert!(is_keyframe_request(p[0].as_ref()));
            }
            _ => panic!("expected RTCP"),
        }
        let second = tap.poll_read().unwrap();
        assert!(matches!(second.message.packet, Packet::Rtp(_)));
        assert!(!second.message.has(&Attribute::DeliverToApplication));
        assert!(tap.poll_read().is_none());
        assert!(is_keyframe_request(&FullIntraRequest::default()));
        // Congestion feedback goes on.
        tap.handle_read(tagged(Packet::Rtcp(vec![
            Box::new(ReceiverReport::default()),
            Box::new(ReceiverEstimatedMaximumBitrate::default()),
        ])))
        .unwrap();
        match &tap.poll_read().unwrap().message.packet {
            Packet::Rtcp(p) => assert_eq!(p.len(), 2),
            _ => panic!("expected RTCP"),
        }
    }
}
