//! What the node reads from SDP itself (the `webrtc` crate does the rest): a cheap check
//! of an offer, counting media sections, and the payload type a viewer's answer gives a
//! codec.

use std::collections::HashMap;

use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RtpCodecKind};

use super::*;

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

/// Simulcast layers an offer sends in its first video section (`a=rid:<id> send`); 0
/// without simulcast.
pub(super) fn simulcast_layers(sdp: &str) -> usize {
    let mut in_video = false;
    let mut n = 0;
    for l in sdp.lines() {
        if l.starts_with("m=") {
            if in_video {
                break;
            }
            in_video = l.starts_with("m=video ");
        } else if in_video {
            if let Some(rest) = l.strip_prefix("a=rid:") {
                if rest.split_whitespace().nth(1) == Some("send") {
                    n += 1;
                }
            }
        }
    }
    n
}

/// Tracks an answer sends: its sending audio and video sections, the sections of one
/// relayed simulcast track's layers (`a=msid` track ids `…~<rid>`) counted once.
pub(super) fn sending_groups(sdp: &str) -> usize {
    let mut groups = std::collections::HashSet::new();
    let mut anonymous = 0;
    let mut section: Option<(bool, Option<String>)> = None;
    let mut close = |s: Option<(bool, Option<String>)>| match s {
        Some((true, Some(track))) => {
            let group = super::relay::layer_of(&track).map_or(track, |(g, _)| g);
            groups.insert(group);
        }
        Some((true, None)) => anonymous += 1,
        _ => {}
    };
    for l in sdp.lines() {
        if l.starts_with("m=") {
            close(section.take());
            if l.starts_with("m=audio ") || l.starts_with("m=video ") {
                section = Some((false, None));
            }
        } else if let Some((sends, track)) = section.as_mut() {
            if l == "a=sendonly" || l == "a=sendrecv" {
                *sends = true;
            } else if let Some(rest) = l.strip_prefix("a=msid:") {
                *track = rest.split_whitespace().nth(1).map(str::to_string);
            }
        }
    }
    close(section.take());
    groups.len() + anonymous
}

/// Audio and video sections of an SDP.
pub(super) fn media_sections(sdp: &str) -> usize {
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
    pub(super) fn payload_types_come_from_the_viewers_answer() {
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
        assert_eq!(media_sections(answer), 2);
        assert!(check_offer("v=0\r\nm=video 9 x 96\r\n").is_ok());
        let simulcast = "v=0\r\nm=audio 9 x 111\r\na=sendonly\r\nm=video 9 x 96\r\n\
                         a=rid:q send\r\na=rid:h send\r\na=rid:f send\r\n\
                         a=simulcast:send q;h;f\r\n";
        assert_eq!(simulcast_layers(simulcast), 3);
        assert_eq!(simulcast_layers(answer), 0);
        let relayed = "v=0\r\nm=audio 9 x 111\r\na=msid:s s-audio\r\na=sendonly\r\n\
                       m=video 9 x 96\r\na=msid:s s-video~q\r\na=sendonly\r\n\
                       m=video 9 x 96\r\na=msid:s s-video~f\r\na=sendonly\r\n\
                       m=video 9 x 96\r\na=inactive\r\n";
        assert_eq!(sending_groups(relayed), 2);
        assert_eq!(sending_groups(answer), 1);
        assert!(matches!(check_offer("v=0\r\n"), Err(MediaError::NoMedia)));
        assert!(matches!(check_offer("hello"), Err(MediaError::BadOffer(_))));
    }
}
