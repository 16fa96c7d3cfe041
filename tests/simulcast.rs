//! Simulcast through the node with the `webrtc` crate as the real peer on every side: a
//! publisher sends three VP8 layers (rids `q`, `h`, `f`; synthetic frames whose keyframes
//! announce 320×180, 640×360 and 1280×720, every payload byte naming its layer); an
//! unconstrained viewer receives the top layer, a viewer reporting a low REMB the bottom
//! one and moves up when its REMB rises, without a gap longer than a keyframe interval
//! and with continuous sequence numbers; a viewer capped at `mid` never gets `high`, and
//! changing its cap while watching moves it; when the publisher stops its top layer, its
//! viewers move to the next one. Across two nodes, a relay carries every layer.

use streamedge_testkit as common;

#[path = "support/webrtc_peer.rs"]
mod webrtc_peer;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::TestNode;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use streamedge::config::Secret;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::peer_connection::PeerConnection;
use webrtc_peer::{offer, peer, post_sdp, send_remb, start_viewer, Got, Received};

const T: Duration = Duration::from_secs(30);
/// The publisher's layers: rid, SSRC, picture size, packets per frame.
const LAYERS: [(&str, u32, (u16, u16), usize); 3] = [
    ("q", 1001, (320, 180), 1),
    ("h", 1002, (640, 360), 3),
    ("f", 1003, (1280, 720), 8),
];
/// The publisher sends a keyframe at least this often (and on a PLI).
const KEYFRAME_EVERY: Duration = Duration::from_secs(2);

fn media_config() -> streamedge::config::Config {
    let mut c = common::test_config();
    c.media.enabled = true;
    c.media.node_key = Secret::new("test-media-node-key-0123456789abcdef");
    c.media.udp_addr = "127.0.0.1:0".into();
    // Keyframe requests for a switch are not held back longer than the test's keyframes.
    c.media.keyframe_interval = Duration::from_millis(500);
    c
}

/// One VP8 packet of layer `l`: the payload descriptor (15-bit picture id, S on a frame's
/// first packet), on a keyframe's first packet the frame tag, start code and size; the
/// rest filled with the layer's index.
fn vp8_packet(l: usize, picture: u16, first: bool, key: bool) -> Bytes {
    let mut p = vec![
        if first { 0x90 } else { 0x80 },
        0x80,
        0x80 | (picture >> 8) as u8 & 0x7f,
        picture as u8,
    ];
    if first {
        let (w, h) = LAYERS[l].2;
        p.extend_from_slice(&[if key { 0x00 } else { 0x01 }, 0, 0, 0x9d, 0x01, 0x2a]);
        p.extend_from_slice(&w.to_le_bytes());
        p.extend_from_slice(&h.to_le_bytes());
    }
    p.resize(600, l as u8);
    Bytes::from(p)
}

/// Which layers the publisher sends (all, at first), and whether it sends at all.
#[derive(Default)]
struct Sending {
    stopped: AtomicBool,
    /// Per layer: held back (a browser drops its top layers when its uplink shrinks).
    paused: [AtomicBool; 3],
}

/// Publishes three simulcast layers; returns the peer, the WHIP resource and the switches
/// of the sender.
async fn start_publisher(
    api: &str,
    stream: &uuid::Uuid,
    seller: &str,
) -> (Arc<dyn PeerConnection>, String, Arc<Sending>) {
    let (pc, gathered) = peer(None).await;
    let codec = RTCRtpCodec {
        mime_type: "video/VP8".into(),
        clock_rate: 90000,
        ..Default::default()
    };
    let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "pub".into(),
        "pub-video".into(),
        "pub".into(),
        RtpCodecKind::Video,
        LAYERS
            .iter()
            .map(|(rid, ssrc, ..)| RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    rid: rid.to_string(),
                    ssrc: Some(*ssrc),
                    ..Default::default()
                },
                codec: codec.clone(),
                ..Default::default()
            })
            .collect(),
    )));
    pc.add_track(track.clone() as Arc<dyn TrackLocal>)
        .await
        .unwrap();
    let sdp = offer(&pc, &gathered).await;
    assert!(sdp.contains("a=simulcast:send"), "{sdp}");
    let (st, loc, answer) =
        post_sdp(&format!("{api}/v1/streams/{stream}/whip"), seller, &sdp).await;
    assert_eq!(st, 201, "{answer}");
    assert!(answer.contains("a=simulcast:recv"), "{answer}");
    // A simulcast sender marks each packet with its mid and rid (what browsers do; the
    // crate leaves it to the application).
    let ext_id = |uri: &str| -> u8 {
        answer
            .lines()
            .find_map(|l| {
                let (id, rest) = l.strip_prefix("a=extmap:")?.split_once(' ')?;
                (rest.trim() == uri).then(|| id.parse().ok())?
            })
            .unwrap_or_else(|| panic!("no {uri} in the answer"))
    };
    let mid_id = ext_id("urn:ietf:params:rtp-hdrext:sdes:mid");
    let rid_id = ext_id("urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id");
    let mid = answer
        .lines()
        .find_map(|l| l.strip_prefix("a=mid:"))
        .unwrap()
        .to_string();
    pc.set_remote_description(RTCSessionDescription::answer(answer).unwrap())
        .await
        .unwrap();

    // Keyframes asked for, by layer.
    let wanted: Arc<[AtomicBool; 3]> = Arc::new(Default::default());
    let plis = track.clone();
    let w = wanted.clone();
    tokio::spawn(async move {
        while let Some(ev) = plis.poll().await {
            if let TrackLocalEvent::OnRtcpPacket(packets) = ev {
                for p in packets {
                    for ssrc in p.destination_ssrc() {
                        if let Some(i) = LAYERS.iter().position(|l| l.1 == ssrc) {
                            w[i].store(true, Ordering::Relaxed);
                        }
                    }
                }
            }
        }
    });
    let sending = Arc::new(Sending::default());
    let flag = sending.clone();
    tokio::spawn(async move {
        let mut frame: u32 = 0;
        let mut seq = [0u16; 3];
        let mut last_key = [Instant::now() - KEYFRAME_EVERY; 3];
        while !flag.stopped.load(Ordering::Relaxed) {
            for (l, (rid, ssrc, _, packets)) in LAYERS.iter().enumerate() {
                if flag.paused[l].load(Ordering::Relaxed) {
                    continue;
                }
                let key = wanted[l].swap(false, Ordering::Relaxed)
                    || last_key[l].elapsed() >= KEYFRAME_EVERY;
                if key {
                    last_key[l] = Instant::now();
                }
                for i in 0..*packets {
                    let mut p = rtp::Packet {
                        header: rtp::Header {
                            version: 2,
                            payload_type: 96,
                            sequence_number: seq[l],
                            // Each layer's own random-looking timestamp base.
                            timestamp: frame.wrapping_mul(3000).wrapping_add(*ssrc * 7919),
                            ssrc: *ssrc,
                            marker: i + 1 == *packets,
                            ..Default::default()
                        },
                        payload: vp8_packet(l, frame as u16, i == 0, key),
                    };
                    p.header
                        .set_extension(mid_id, Bytes::from(mid.clone()))
                        .unwrap();
                    p.header
                        .set_extension(rid_id, Bytes::from_static(rid.as_bytes()))
                        .unwrap();
                    seq[l] = seq[l].wrapping_add(1);
                    let _ = track.write_rtp(p).await;
                }
            }
            frame += 1;
            tokio::time::sleep(Duration::from_millis(33)).await;
        }
    });
    (pc, loc.unwrap(), sending)
}

/// Waits until the viewer's last packets come from `layer`.
async fn wait_for_layer(rx: &Received, layer: u8, within: Duration, who: &str) {
    let deadline = Instant::now() + within;
    loop {
        if rx.layer() == Some(layer) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{who}: expected layer {layer}, receiving {:?}",
            rx.layer()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The longest gap between packets, and whether sequence numbers ran on by one and
/// timestamps never went back.
fn continuity(got: &[Got]) -> (Duration, bool) {
    let mut gap = Duration::ZERO;
    let mut ok = true;
    for w in got.windows(2) {
        gap = gap.max(w[1].at - w[0].at);
        let dseq = w[1].seq.wrapping_sub(w[0].seq);
        let dts = w[1].ts.wrapping_sub(w[0].ts);
        ok &= (1..=3).contains(&dseq) && dts < 1 << 31;
    }
    (gap, ok)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_get_the_layer_their_link_and_cap_allow() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("streamedge=debug,webrtc=error,rtc=error")
        .with_test_writer()
        .try_init();
    let node = TestNode::start(media_config()).await;
    let api = node.api_url("");
    let seller = common::seller("seller-simulcast");
    let stream = common::create_stream(&format!("{api}/v1/streams"), &seller).await;
    let (pub_pc, _whip, sending) = start_publisher(&api, &stream, &seller).await;

    // An unconstrained viewer and one whose downlink carries 100 kbit/s (its REMB).
    let (fast_pc, fast, _) = start_viewer(&api, &stream, &common::buyer("fast"), "").await;
    let slow_buyer = common::buyer("slow");
    let (slow_pc, slow, _) = start_viewer(&api, &stream, &slow_buyer, "").await;
    let remb = Arc::new(AtomicU32::new(100_000));
    let stop = Arc::new(AtomicBool::new(false));
    send_remb(slow.clone(), remb.clone(), stop.clone());
    // And one capped at the middle layer.
    let capped_buyer = common::buyer("capped");
    let (capped_pc, capped, capped_loc) =
        start_viewer(&api, &stream, &capped_buyer, "?max_layer=mid").await;

    wait_for_layer(&fast, 2, T, "the unconstrained viewer").await;
    wait_for_layer(&slow, 0, T, "the constrained viewer").await;
    wait_for_layer(&capped, 1, T, "the capped viewer").await;
    // Each stays there, receiving continuously.
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (who, rx, layer) in [
        ("fast", &fast, 2u8),
        ("slow", &slow, 0),
        ("capped", &capped, 1),
    ] {
        let got = rx.since(t);
        assert!(
            got.len() > 30,
            "{who} received {} packets in 3 s",
            got.len()
        );
        let layers: HashSet<u8> = got.iter().map(|g| g.layer).collect();
        assert_eq!(layers, HashSet::from([layer]), "{who}");
        let (gap, ok) = continuity(&got);
        // No freeze (a stalled test machine can hold packets back for a moment).
        assert!(gap < KEYFRAME_EVERY, "{who}: a {gap:?} gap");
        assert!(ok, "{who}: sequence numbers or timestamps jumped");
    }
    // The capped viewer never received the top layer.
    assert!(capped.since(t - T).iter().all(|g| g.layer <= 1));

    // The limit is lifted: the constrained viewer moves up to the top, without a gap
    // longer than a keyframe interval and with one continuous sequence.
    let lifted = Instant::now();
    remb.store(20_000_000, Ordering::Relaxed);
    // Four seconds of room, then the top layer's next keyframe.
    wait_for_layer(&slow, 2, Duration::from_secs(10), "the viewer with room").await;
    let took = lifted.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = slow.since(lifted);
    let (gap, ok) = continuity(&got);
    assert!(gap < KEYFRAME_EVERY, "a {gap:?} freeze while moving up");
    assert!(
        ok,
        "sequence numbers or timestamps jumped across the switch"
    );
    let layers: Vec<u8> = got.iter().map(|g| g.layer).collect();
    assert!(layers.windows(2).all(|w| w[1] >= w[0]), "it went back down");
    eprintln!("moved up to the top layer in {took:?}");

    // The capped viewer lowers its cap while watching: it moves to the bottom layer.
    let layer_url = format!("{api}{capped_loc}/layer");
    let (st, body) = common::call(
        reqwest::Method::POST,
        &layer_url,
        &capped_buyer,
        Some(serde_json::json!({"max_layer": "low"})),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["max_layer"], "low");
    wait_for_layer(&capped, 0, Duration::from_secs(10), "the re-capped viewer").await;
    let (st, body) = common::get(&layer_url, &capped_buyer).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(
        (
            body["layer"].as_str(),
            body["rid"].as_str(),
            body["layers"].as_u64()
        ),
        (Some("low"), Some("q"), Some(3)),
        "{body}"
    );
    // Only the session's creator changes it; a bad value is refused.
    let (st, body) = common::call(
        reqwest::Method::POST,
        &layer_url,
        &slow_buyer,
        Some(serde_json::json!({"max_layer": "high"})),
    )
    .await;
    assert_eq!((st, body["code"].as_str()), (403, Some("not_owner")));
    let (st, body) = common::call(
        reqwest::Method::POST,
        &layer_url,
        &capped_buyer,
        Some(serde_json::json!({"max_layer": "best please"})),
    )
    .await;
    assert_eq!(
        (st, body["code"].as_str()),
        (400, Some("invalid_max_layer"))
    );
    let (st, _, body) = post_sdp(
        &format!("{api}/v1/streams/{stream}/whep?max_layer=%20%20!"),
        &capped_buyer,
        "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n",
    )
    .await;
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("invalid_max_layer"), "{body}");

    // The publisher stops sending its top layer: the viewers on it move to the middle one
    // within a few seconds, with no gap longer than a keyframe interval.
    let dropped = Instant::now();
    sending.paused[2].store(true, Ordering::Relaxed);
    wait_for_layer(
        &fast,
        1,
        Duration::from_secs(6),
        "a viewer of a dropped layer",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (gap, ok) = continuity(&fast.since(dropped));
    assert!(
        gap < KEYFRAME_EVERY,
        "a {gap:?} freeze when the top layer stopped"
    );
    assert!(ok, "sequence numbers or timestamps jumped");
    eprintln!("left the dropped layer in {:?}", dropped.elapsed());

    // The other viewer on the dropped layer moves on its own schedule: wait for the gauges.
    let want = [
        "streamedge_media_layer_viewers{layer=\"mid\"} 2",
        "streamedge_media_layer_viewers{layer=\"low\"} 1",
    ];
    let settled = common::eventually(Duration::from_secs(8), || async {
        let m = node.metrics().await;
        want.iter().all(|l| m.contains(l))
    })
    .await;
    let m = node.metrics().await;
    assert!(settled, "missing {want:?} in\n{m}");
    assert!(
        !m.contains("streamedge_media_layer_switches_total{direction=\"up\"} 0"),
        "{m}"
    );
    assert!(
        !m.contains("streamedge_media_layer_switches_total{direction=\"down\"} 0"),
        "{m}"
    );
    stop.store(true, Ordering::Relaxed);
    sending.stopped.store(true, Ordering::Relaxed);
    for pc in [fast_pc, slow_pc, capped_pc, pub_pc] {
        let _ = pc.close().await;
    }
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_carries_every_layer_to_another_node() {
    let mut cfg = media_config();
    cfg.redis.url = common::redis_url();
    let (a, b) = TestNode::start_pair(cfg).await;
    let (api_a, api_b) = (a.api_url(""), b.api_url(""));
    let seller = common::seller("seller-simulcast-relay");
    let stream = common::create_stream(&format!("{api_a}/v1/streams"), &seller).await;
    let (pub_pc, _whip, sending) = start_publisher(&api_a, &stream, &seller).await;
    // Give the publisher's layers time to arrive at A.
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Viewers on B: unconstrained, capped low, and constrained by REMB.
    let (fast_pc, fast, _) = start_viewer(&api_b, &stream, &common::buyer("edge-fast"), "").await;
    let (low_pc, low, _) = start_viewer(
        &api_b,
        &stream,
        &common::buyer("edge-low"),
        "?max_layer=low",
    )
    .await;
    let (slow_pc, slow, _) = start_viewer(&api_b, &stream, &common::buyer("edge-slow"), "").await;
    let remb = Arc::new(AtomicU32::new(100_000));
    let stop = Arc::new(AtomicBool::new(false));
    send_remb(slow.clone(), remb.clone(), stop.clone());
    wait_for_layer(&fast, 2, T, "the unconstrained edge viewer").await;
    wait_for_layer(&low, 0, T, "the capped edge viewer").await;
    wait_for_layer(&slow, 0, T, "the constrained edge viewer").await;
    remb.store(20_000_000, Ordering::Relaxed);
    wait_for_layer(
        &slow,
        2,
        Duration::from_secs(20),
        "the edge viewer with room",
    )
    .await;

    stop.store(true, Ordering::Relaxed);
    sending.stopped.store(true, Ordering::Relaxed);
    for pc in [fast_pc, low_pc, slow_pc, pub_pc] {
        let _ = pc.close().await;
    }
    b.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
}
