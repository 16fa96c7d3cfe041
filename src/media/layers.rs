//! Simulcast layers, read from the packets themselves (pure functions): where a keyframe
//! starts (VP8, VP9, H.264), the picture size a VP8 keyframe announces, the names a viewer
//! uses to cap its layer (`low`, `mid`, `high` or a publisher's rid), and the rewrite that
//! keeps a viewer's sequence numbers and timestamps continuous across layer switches.

use std::time::Instant;

use rtc::rtp;

/// The codecs whose keyframes the node can find in a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    Vp8,
    Vp9,
    H264,
    /// Anything else: every packet counts as a switching point.
    Other,
}

impl VideoCodec {
    pub fn from_mime(mime: &str) -> Self {
        match mime.to_ascii_lowercase().as_str() {
            "video/vp8" => VideoCodec::Vp8,
            "video/vp9" => VideoCodec::Vp9,
            "video/h264" => VideoCodec::H264,
            _ => VideoCodec::Other,
        }
    }
}

/// Where a VP8 packet's payload (after the RTP payload descriptor) starts, and whether
/// the packet starts partition 0 of a frame.
fn vp8_payload(p: &[u8]) -> Option<(usize, bool)> {
    let b0 = *p.first()?;
    let start = b0 & 0x10 != 0 && b0 & 0x07 == 0;
    let mut i = 1;
    if b0 & 0x80 != 0 {
        let x = *p.get(i)?;
        i += 1;
        if x & 0x80 != 0 {
            // Picture id: 7 or 15 bits.
            i += if *p.get(i)? & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            i += 1; // TID / KEYIDX
        }
    }
    (i < p.len()).then_some((i, start))
}

/// Whether an RTP payload starts a keyframe.
pub fn starts_keyframe(codec: VideoCodec, p: &[u8]) -> bool {
    match codec {
        VideoCodec::Vp8 => match vp8_payload(p) {
            Some((i, true)) => p[i] & 0x01 == 0,
            _ => false,
        },
        VideoCodec::Vp9 => {
            // I P L F B E V Z: beginning of a frame (B) that is not inter-predicted (P).
            p.first().is_some_and(|b| b & 0x08 != 0 && b & 0x40 == 0)
        }
        VideoCodec::H264 => h264_keyframe(p),
        VideoCodec::Other => true,
    }
}

fn h264_keyframe(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else {
        return false;
    };
    let is_key = |t: u8| t == 5 || t == 7;
    match b0 & 0x1f {
        // STAP-A: 16-bit sizes, each followed by a NAL unit.
        24 => {
            let mut i = 1;
            while i + 2 < p.len() {
                let size = u16::from_be_bytes([p[i], p[i + 1]]) as usize;
                if is_key(p[i + 2] & 0x1f) {
                    return true;
                }
                i += 2 + size;
            }
            false
        }
        // FU-A: the first fragment of a keyframe NAL unit.
        28 => p.get(1).is_some_and(|h| h & 0x80 != 0 && is_key(h & 0x1f)),
        t => is_key(t),
    }
}

/// The picture size (width × height) a VP8 keyframe's first packet announces.
pub fn vp8_keyframe_size(p: &[u8]) -> Option<(u16, u16)> {
    let (i, start) = vp8_payload(p)?;
    let f = &p[i..];
    if !start || f.len() < 10 || f[0] & 0x01 != 0 || f[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let w = u16::from_le_bytes([f[6], f[7]]) & 0x3fff;
    let h = u16::from_le_bytes([f[8], f[9]]) & 0x3fff;
    Some((w, h))
}

/// A layer's smoothed bit rate after a measure of `measured` bit/s: an average weighted
/// 60/40 toward the past, the first measure as is, and 0 once `idle` measures in a row
/// (a second) saw nothing — a layer the publisher stopped sending (a browser drops its
/// top layers when its uplink shrinks) is left at once.
pub fn next_rate(old: f64, measured: f64, idle: u32) -> f64 {
    if idle >= 2 {
        0.0
    } else if old == 0.0 {
        measured
    } else {
        0.6 * old + 0.4 * measured
    }
}

/// The name of layer `index` of `count` (ranked low to high) in the API and metrics:
/// `low`, `mid`, `high` (`single` without simulcast).
pub fn layer_name(index: usize, count: usize) -> &'static str {
    match (index, count) {
        (_, 0 | 1) => "single",
        (0, _) => "low",
        (i, n) if i + 1 >= n => "high",
        _ => "mid",
    }
}

/// A viewer's cap on its layer (`max_layer`): a rank or the publisher's rid.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Cap {
    #[default]
    None,
    Low,
    Mid,
    High,
    Rid(String),
}

impl Cap {
    /// `low`, `mid`, `high` (case-insensitive) or a rid (1–16 letters, digits, `-`, `_`).
    pub fn parse(s: &str) -> Option<Cap> {
        let s = s.trim();
        match s.to_ascii_lowercase().as_str() {
            "" => None,
            "low" => Some(Cap::Low),
            "mid" | "medium" => Some(Cap::Mid),
            "high" => Some(Cap::High),
            _ if s.len() <= 16
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
            {
                Some(Cap::Rid(s.to_string()))
            }
            _ => None,
        }
    }

    /// The highest index allowed among `rids` (ranked low to high).
    pub fn max_index(&self, rids: &[&str]) -> usize {
        let top = rids.len().saturating_sub(1);
        match self {
            Cap::None | Cap::High => top,
            Cap::Low => 0,
            Cap::Mid => top.min(1),
            // An unknown rid (a layer not sent yet) caps nothing.
            Cap::Rid(r) => rids.iter().position(|x| x == r).unwrap_or(top),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Cap::None => "none",
            Cap::Low => "low",
            Cap::Mid => "mid",
            Cap::High => "high",
            Cap::Rid(r) => r,
        }
    }
}

/// One viewer's sequence number and timestamp rewrite: packets of the layer it watches
/// are shifted by fixed offsets; a switch to another layer (on a keyframe) recomputes
/// them so the viewer's decoder sees one continuous stream. Without a switch the offsets
/// stay zero and packets pass unchanged.
#[derive(Debug, Default, Clone)]
pub struct SeqRewriter {
    seq_offset: u16,
    ts_offset: u32,
    last: Option<(u16, u32, Instant)>,
}

impl SeqRewriter {
    /// Rewrites a packet of the current layer.
    pub fn forward(&mut self, h: &mut rtp::header::Header, now: Instant) {
        h.sequence_number = h.sequence_number.wrapping_add(self.seq_offset);
        h.timestamp = h.timestamp.wrapping_add(self.ts_offset);
        let newer = match self.last {
            None => true,
            Some((seq, _, _)) => {
                let d = h.sequence_number.wrapping_sub(seq);
                d != 0 && d < 0x8000
            }
        };
        if newer {
            self.last = Some((h.sequence_number, h.timestamp, now));
        }
    }

    /// Makes `h` (the first packet of a keyframe of the new layer) follow the last packet
    /// sent: the next sequence number, and a timestamp advanced by the wall time since
    /// (at `clock_rate`, at least one tick), then rewrites it.
    pub fn switch(&mut self, h: &mut rtp::header::Header, now: Instant, clock_rate: u32) {
        if let Some((seq, ts, at)) = self.last {
            let elapsed = now.saturating_duration_since(at).as_secs_f64();
            let ticks = ((elapsed * f64::from(clock_rate)) as u32).max(1);
            self.seq_offset = seq.wrapping_add(1).wrapping_sub(h.sequence_number);
            self.ts_offset = ts.wrapping_add(ticks).wrapping_sub(h.timestamp);
        }
        self.forward(h, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A VP8 keyframe's first packet: descriptor with a 15-bit picture id, then the frame
    /// tag, start code and size.
    fn vp8_key(w: u16, h: u16) -> Vec<u8> {
        let mut p = vec![0x90, 0x80, 0x80, 0x01];
        p.extend_from_slice(&[0x00, 0x00, 0x00, 0x9d, 0x01, 0x2a]);
        p.extend_from_slice(&w.to_le_bytes());
        p.extend_from_slice(&h.to_le_bytes());
        p
    }

    #[test]
    fn vp8_keyframes_and_their_size_are_found() {
        let key = vp8_key(1280, 720);
        assert!(starts_keyframe(VideoCodec::Vp8, &key));
        assert_eq!(vp8_keyframe_size(&key), Some((1280, 720)));
        // An inter frame (P bit set).
        let mut inter = key.clone();
        inter[4] = 0x01;
        assert!(!starts_keyframe(VideoCodec::Vp8, &inter));
        assert_eq!(vp8_keyframe_size(&inter), None);
        // A continuation packet of a keyframe (S not set).
        let mut cont = key.clone();
        cont[0] = 0x80;
        assert!(!starts_keyframe(VideoCodec::Vp8, &cont));
        // The simplest descriptor (no extension byte).
        assert!(starts_keyframe(VideoCodec::Vp8, &[0x10, 0x00, 0, 0]));
        assert!(!starts_keyframe(VideoCodec::Vp8, &[]));
    }

    #[test]
    fn h264_and_vp9_keyframes_are_found() {
        // IDR alone, SPS alone, a non-IDR slice.
        assert!(starts_keyframe(VideoCodec::H264, &[0x65, 0x88]));
        assert!(starts_keyframe(VideoCodec::H264, &[0x67, 0x42]));
        assert!(!starts_keyframe(VideoCodec::H264, &[0x41, 0x9a]));
        // STAP-A with SPS + PPS.
        assert!(starts_keyframe(
            VideoCodec::H264,
            &[0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xce]
        ));
        // FU-A: start of an IDR, middle of an IDR.
        assert!(starts_keyframe(VideoCodec::H264, &[0x7c, 0x85, 0x00]));
        assert!(!starts_keyframe(VideoCodec::H264, &[0x7c, 0x05, 0x00]));
        // VP9: B set, P clear / P set.
        assert!(starts_keyframe(VideoCodec::Vp9, &[0x08]));
        assert!(!starts_keyframe(VideoCodec::Vp9, &[0x48]));
        assert_eq!(VideoCodec::from_mime("video/VP8"), VideoCodec::Vp8);
    }

    #[test]
    fn a_stopped_layer_drops_to_zero_after_a_second() {
        assert_eq!(next_rate(0.0, 1e6, 0), 1e6);
        assert_eq!(next_rate(1e6, 2e6, 0), 1.4e6);
        // One empty measure (500 ms): smoothed down, still arriving.
        assert_eq!(next_rate(1e6, 0.0, 1), 6e5);
        assert_eq!(next_rate(6e5, 0.0, 2), 0.0);
    }

    #[test]
    fn caps_name_a_rank_or_a_rid() {
        let rids = ["q", "h", "f"];
        assert_eq!(Cap::parse("LOW").unwrap().max_index(&rids), 0);
        assert_eq!(Cap::parse("mid").unwrap().max_index(&rids), 1);
        assert_eq!(Cap::parse("high").unwrap().max_index(&rids), 2);
        assert_eq!(Cap::parse("h").unwrap().max_index(&rids), 1);
        assert_eq!(Cap::parse("zz").unwrap().max_index(&rids), 2);
        assert_eq!(Cap::None.max_index(&rids), 2);
        assert_eq!(Cap::Mid.max_index(&["a", "b"]), 1);
        assert_eq!(Cap::High.max_index(&[]), 0);
        assert!(Cap::parse("").is_none());
        assert!(Cap::parse("no spaces").is_none());
        assert_eq!(layer_name(0, 3), "low");
        assert_eq!(layer_name(1, 3), "mid");
        assert_eq!(layer_name(2, 3), "high");
        assert_eq!(layer_name(1, 2), "high");
        assert_eq!(layer_name(0, 1), "single");
    }

    fn header(seq: u16, ts: u32) -> rtp::header::Header {
        rtp::header::Header {
            sequence_number: seq,
            timestamp: ts,
            ..Default::default()
        }
    }

    #[test]
    fn a_switch_keeps_sequence_numbers_and_timestamps_continuous() {
        let t0 = Instant::now();
        let mut rw = SeqRewriter::default();
        // The first layer passes unchanged.
        for (i, seq) in [65_534u16, 65_535, 0].into_iter().enumerate() {
            let mut h = header(seq, 1000 + i as u32 * 3000);
            rw.forward(&mut h, t0);
            assert_eq!(h.sequence_number, seq);
        }
        // A late, reordered packet does not move the reference.
        let mut late = header(65_533, 0);
        rw.forward(&mut late, t0);
        // 100 ms later, a keyframe of another layer with unrelated numbers.
        let mut h = header(5000, 777_777);
        rw.switch(&mut h, t0 + Duration::from_millis(100), 90_000);
        assert_eq!(h.sequence_number, 1);
        assert_eq!(h.timestamp, 7000 + 9000);
        let mut next = header(5001, 777_777 + 3000);
        rw.forward(&mut next, t0 + Duration::from_millis(133));
        assert_eq!(next.sequence_number, 2);
        assert_eq!(next.timestamp, 19_000);
        // A switch without a gap still moves the timestamp on.
        let mut h = header(9, 5);
        rw.switch(&mut h, t0 + Duration::from_millis(133), 90_000);
        assert_eq!(h.sequence_number, 3);
        assert_eq!(h.timestamp, 19_001);
    }
}
