//! WHIP ingest and WHEP playback with the `webrtc` crate as the real peer on both sides: a
//! publisher sends synthetic VP8 and Opus RTP, three viewers receive the same payloads in
//! order; DELETE tears it down and the session follows; bad requests get clear errors.

use streamedge_testkit as common;

#[path = "support/webrtc_peer.rs"]
mod webrtc_peer;
use webrtc_peer::{offer, post_sdp};

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::TestNode;
use reqwest::Method;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use streamedge::config::Secret;
use tokio::sync::{mpsc, Notify};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{PeerConnection, PeerConnectionEventHandler, RTCIceGatheringState};

const T: Duration = Duration::from_secs(20);

struct Client {
    gathered: Arc<Notify>,
    /// (mime type, payload) of every received packet.
    packets: Option<mpsc::UnboundedSender<(String, Bytes)>>,
    /// Every received track.
    remotes: Remotes,
}

type Remotes = Arc<std::sync::Mutex<Vec<Arc<dyn TrackRemote>>>>;

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Client {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered.notify_one();
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        self.remotes.lock().unwrap().push(track.clone());
        let Some(tx) = self.packets.clone() else {
            return;
        };
        tokio::spawn(async move {
            let ssrc = track.ssrcs().await.first().copied().unwrap_or(0);
            let mime = track
                .codec(ssrc)
                .await
                .map(|c| c.mime_type)
                .unwrap_or_default();
            while let Some(ev) = track.poll().await {
                match ev {
                    TrackRemoteEvent::OnRtpPacket(p) => {
                        let _ = tx.send((mime.to_ascii_lowercase(), p.payload.clone()));
                    }
                    TrackRemoteEvent::OnEnded => break,
                    _ => {}
                }
            }
        });
    }
}

async fn peer(
    packets: Option<mpsc::UnboundedSender<(String, Bytes)>>,
) -> (Arc<dyn PeerConnection>, Arc<Notify>) {
    peer_with(packets, Remotes::default()).await
}

/// A peer that also hands keyframe requests it receives to its local tracks (the same
/// interceptor the node uses), and records its received tracks in `remotes`.
async fn peer_with(
    packets: Option<mpsc::UnboundedSender<(String, Bytes)>>,
    remotes: Remotes,
) -> (Arc<dyn PeerConnection>, Arc<Notify>) {
    let gathered = Arc::new(Notify::new());
    let handler = Arc::new(Client {
        gathered: gathered.clone(),
        packets,
        remotes,
    });
    (webrtc_peer::build(handler).await, gathered)
}

/// A receive-only offer for `kinds` (what a WHEP viewer sends).
async fn recvonly_offer(
    pc: &Arc<dyn PeerConnection>,
    gathered: &Notify,
    kinds: &[RtpCodecKind],
) -> String {
    for kind in kinds {
        pc.add_transceiver_from_kind(
            *kind,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Recvonly,
                ..Default::default()
            }),
        )
        .await
        .unwrap();
    }
    offer(pc, gathered).await
}

fn local_track(
    kind: RtpCodecKind,
    mime: &str,
    clock: u32,
    channels: u16,
    ssrc: u32,
) -> Arc<TrackLocalStaticRTP> {
    Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "pub".into(),
        format!("pub-{mime}"),
        "pub".into(),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: RTCRtpCodec {
                mime_type: mime.into(),
                clock_rate: clock,
                channels,
                ..Default::default()
            },
            ..Default::default()
        }],
    )))
}

fn media_config() -> streamedge::config::Config {
    let mut c = common::test_config();
    c.media.enabled = true;
    c.media.node_key = Secret::new("test-media-node-key-0123456789abcdef");
    c.media.udp_addr = "127.0.0.1:0".into();
    c.media.ice_servers = vec!["stun:stun.example.net:3478".into()];
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_publisher_reaches_three_whep_viewers_and_delete_tears_down() {
    let node = TestNode::start(media_config()).await;
    let api = node.api_url("");
    let seller = common::seller("seller-media");
    let stream = common::create_stream(&format!("{api}/v1/streams"), &seller).await;

    // The publisher: a VP8 and an Opus track.
    let (pub_pc, pub_gathered) = peer(None).await;
    let video = local_track(RtpCodecKind::Video, "video/VP8", 90000, 0, 1111);
    let audio = local_track(RtpCodecKind::Audio, "audio/opus", 48000, 2, 2222);
    pub_pc
        .add_track(video.clone() as Arc<dyn TrackLocal>)
        .await
        .unwrap();
    pub_pc
        .add_track(audio.clone() as Arc<dyn TrackLocal>)
        .await
        .unwrap();
    let sdp = offer(&pub_pc, &pub_gathered).await;
    let r = reqwest::Client::new()
        .post(format!("{api}/v1/streams/{stream}/whip"))
        .bearer_auth(&seller)
        .header("content-type", "application/sdp")
        .body(sdp)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["content-type"], "application/sdp");
    let link = r.headers()["link"].to_str().unwrap().to_string();
    assert_eq!(link, "<stun:stun.example.net:3478>; rel=\"ice-server\"");
    let whip_resource = r.headers()["location"].to_str().unwrap().to_string();
    assert!(whip_resource.starts_with(&format!("/v1/streams/{stream}/whip/")));
    let answer = r.text().await.unwrap();
    assert!(answer.contains("a=candidate"), "{answer}");
    pub_pc
        .set_remote_description(RTCSessionDescription::answer(answer).unwrap())
        .await
        .unwrap();

    // Publishing made the session live.
    let (_, s) = common::get(&format!("{api}/v1/streams/{stream}"), &seller).await;
    assert_eq!(s["state"], "live");

    // Packets flow from here on: payload = a counter, so order and content are checkable.
    let (sending, sender) =
        send_packets(vec![(video.clone(), 96, 1111), (audio.clone(), 111, 2222)]);

    // Three viewers.
    let mut viewers = Vec::new();
    for v in 0..3 {
        let buyer = common::buyer(&format!("viewer-{v}"));
        let (pc, rx, loc) = start_viewer(&api, &stream, &buyer).await;
        viewers.push((pc, rx, loc, buyer));
    }

    // Each viewer receives both tracks: the payloads are the publisher's, in order.
    for (_, rx, _, _) in viewers.iter_mut() {
        expect_ordered_packets(rx, 30).await;
    }
    let metrics = node.metrics().await;
    assert!(metrics.contains("streamedge_media_viewers 3"), "{metrics}");
    assert!(metrics.contains("streamedge_media_publishers 1"));
    // Forwarding is timed (one packet in 64 sampled; 3 viewers × 30+ packets each).
    assert!(
        metrics.contains("streamedge_media_forward_seconds_count"),
        "{metrics}"
    );

    // A viewer cannot end another's session or the publish.
    let (st, body) = common::delete(&format!("{api}{}", viewers[0].2), &viewers[1].3).await;
    assert_eq!((st, body["code"].as_str()), (403, Some("not_owner")));
    let (st, _) = common::delete(&format!("{api}{whip_resource}"), &viewers[1].3).await;
    assert_eq!(st, 403);
    // One viewer leaves.
    let (st, _) = common::delete(&format!("{api}{}", viewers[0].2), &viewers[0].3).await;
    assert_eq!(st, 200);
    // The publisher stops: everything is torn down and the session pauses.
    let (st, _) = common::delete(&format!("{api}{whip_resource}"), &seller).await;
    assert_eq!(st, 200);
    sending.store(false, std::sync::atomic::Ordering::Relaxed);
    let _ = sender.await;
    let (_, s) = common::get(&format!("{api}/v1/streams/{stream}"), &seller).await;
    assert_eq!(s["state"], "paused");
    assert!(
        common::eventually(T, || async {
            let m = node.metrics().await;
            m.contains("streamedge_media_viewers 0") && m.contains("streamedge_media_publishers 0")
        })
        .await,
        "viewers or publisher left dangling"
    );
    let (st, body) = common::delete(&format!("{api}{whip_resource}"), &seller).await;
    assert_eq!(
        (st, body["code"].as_str()),
        (404, Some("media_session_not_found"))
    );
    for (pc, ..) in viewers {
        let _ = pc.close().await;
    }
    let _ = pub_pc.close().await;
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_whip_and_whep_requests_get_clear_errors() {
    let node = TestNode::start(media_config()).await;
    let api = node.api_url("");
    let seller = common::seller("seller-bad");
    let stream = common::create_stream(&format!("{api}/v1/streams"), &seller).await;
    let whip = format!("{api}/v1/streams/{stream}/whip");
    let whep = format!("{api}/v1/streams/{stream}/whep");

    let code = |st: u16, body: &str| {
        (
            st,
            serde_json::from_str::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v["code"].as_str().map(String::from)),
        )
    };
    let (st, _, b) = post_sdp(&whip, &seller, "this is not sdp").await;
    assert_eq!(code(st, &b), (400, Some("invalid_sdp".into())));
    let no_media = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";
    let (st, _, b) = post_sdp(&whip, &seller, no_media).await;
    assert_eq!(code(st, &b), (400, Some("sdp_without_media".into())));
    let garbage_media =
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n";
    let (st, _, b) = post_sdp(&whip, &seller, garbage_media).await;
    assert_eq!(code(st, &b), (400, Some("invalid_sdp".into())), "{b}");
    // A buyer trying to publish.
    let (st, _, b) = post_sdp(&whip, &common::buyer("b"), no_media).await;
    assert_eq!(code(st, &b), (403, Some("not_owner".into())));
    let (pc, gathered) = peer(None).await;
    pc.add_transceiver_from_kind(RtpCodecKind::Video, None)
        .await
        .unwrap();
    let good = offer(&pc, &gathered).await;
    let (st, _, b) = post_sdp(&whip, &common::buyer("b"), &good).await;
    assert_eq!(code(st, &b), (403, Some("not_owner".into())));
    // An unknown stream, a missing token, a wrong content type, an oversized offer.
    let (st, _, b) = post_sdp(
        &format!("{api}/v1/streams/{}/whip", uuid::Uuid::new_v4()),
        &seller,
        &good,
    )
    .await;
    assert_eq!(code(st, &b), (404, Some("stream_not_found".into())));
    let r = reqwest::Client::new()
        .post(&whip)
        .header("content-type", "application/sdp")
        .body(good.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = reqwest::Client::new()
        .post(&whip)
        .bearer_auth(&seller)
        .header("content-type", "text/plain")
        .body(good.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let big = format!("{good}{}", "a=x-pad:".repeat(10_000));
    let (st, _, _) = post_sdp(&whip, &seller, &big).await;
    assert_eq!(st, 413);
    // WHEP before anyone publishes.
    let (st, _, b) = post_sdp(&whep, &common::buyer("b"), &good).await;
    assert_eq!(code(st, &b), (404, Some("not_publishing".into())));
    // PATCH is refused as RFC 9725 says for servers without trickle ICE.
    let r = reqwest::Client::new()
        .patch(format!("{whip}/whatever"))
        .bearer_auth(&seller)
        .header("content-type", "application/trickle-ice-sdpfrag")
        .body("a=candidate:1 1 udp 1 127.0.0.1 9 typ host")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    // CORS preflight advertises the offer type.
    let r = reqwest::Client::new()
        .request(Method::OPTIONS, &whip)
        .header("origin", "https://shop.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap();
    // 204, as docs/api.md says (the CORS layer alone would say 200).
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["accept-post"], "application/sdp");
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    // A plain OPTIONS (no preflight) on either endpoint gets the same, without a token.
    for url in [&whip, &whep] {
        let r = reqwest::Client::new()
            .request(Method::OPTIONS, url)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "{url}");
        assert_eq!(r.headers()["accept-post"], "application/sdp", "{url}");
        assert!(r.headers().get("content-length").is_none(), "{url}");
    }
    // Nothing was left behind by the refused requests.
    let m = node.metrics().await;
    assert!(!m.contains("streamedge_media_publishers 1"));
    let _ = pc.close().await;
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn media_endpoints_are_absent_when_media_is_disabled() {
    let node = TestNode::start(common::test_config()).await;
    let api = node.api_url("");
    let seller = common::seller("s");
    let stream = common::create_stream(&format!("{api}/v1/streams"), &seller).await;
    let (st, _, b) = post_sdp(&format!("{api}/v1/streams/{stream}/whip"), &seller, "v=0").await;
    assert_eq!(st, 404, "{b}");
    assert!(b.contains("media_disabled"));
    node.shutdown().await.unwrap();
}

/// Publishes a VP8 + Opus offer through WHIP; returns the peer, its tracks and the resource.
async fn start_publisher(
    api: &str,
    stream: &uuid::Uuid,
    seller: &str,
) -> (
    Arc<dyn PeerConnection>,
    Vec<(Arc<TrackLocalStaticRTP>, u8, u32)>,
    String,
) {
    let (pc, gathered) = peer(None).await;
    let video = local_track(RtpCodecKind::Video, "video/VP8", 90000, 0, 3333);
    let audio = local_track(RtpCodecKind::Audio, "audio/opus", 48000, 2, 4444);
    pc.add_track(video.clone() as Arc<dyn TrackLocal>)
        .await
        .unwrap();
    pc.add_track(audio.clone() as Arc<dyn TrackLocal>)
        .await
        .unwrap();
    let sdp = offer(&pc, &gathered).await;
    let (st, loc, answer) =
        post_sdp(&format!("{api}/v1/streams/{stream}/whip"), seller, &sdp).await;
    assert_eq!(st, 201, "{answer}");
    pc.set_remote_description(RTCSessionDescription::answer(answer).unwrap())
        .await
        .unwrap();
    (
        pc,
        vec![(video, 96, 3333), (audio, 111, 4444)],
        loc.unwrap(),
    )
}

/// Starts a WHEP viewer; returns its peer, received packets and resource.
async fn start_viewer(
    api: &str,
    stream: &uuid::Uuid,
    token: &str,
) -> (
    Arc<dyn PeerConnection>,
    mpsc::UnboundedReceiver<(String, Bytes)>,
    String,
) {
    let (pc, rx, loc, _) = start_viewer_with(api, stream, token, Remotes::default()).await;
    (pc, rx, loc)
}

/// [`start_viewer`], recording the received tracks; also returns the answer.
async fn start_viewer_with(
    api: &str,
    stream: &uuid::Uuid,
    token: &str,
    remotes: Remotes,
) -> (
    Arc<dyn PeerConnection>,
    mpsc::UnboundedReceiver<(String, Bytes)>,
    String,
    String,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (pc, gathered) = peer_with(Some(tx), remotes).await;
    let sdp = recvonly_offer(&pc, &gathered, &[RtpCodecKind::Audio, RtpCodecKind::Video]).await;
    let (st, loc, answer) = post_sdp(&format!("{api}/v1/streams/{stream}/whep"), token, &sdp).await;
    assert_eq!(st, 201, "{answer}");
    pc.set_remote_description(RTCSessionDescription::answer(answer.clone()).unwrap())
        .await
        .unwrap();
    (pc, rx, loc.unwrap(), answer)
}

/// Two media nodes sharing the test Redis.
async fn media_pair() -> (TestNode, TestNode) {
    let mut cfg = media_config();
    cfg.redis.url = common::redis_url();
    TestNode::start_pair(cfg).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_on_another_node_is_served_through_a_relay() {
    let (a, b) = media_pair().await;
    let (api_a, api_b) = (a.api_url(""), b.api_url(""));
    let seller = common::seller("seller-relay");
    let stream = common::create_stream(&format!("{api_a}/v1/streams"), &seller).await;
    let (pub_pc, tracks, whip) = start_publisher(&api_a, &stream, &seller).await;
    let (sending, sender) = send_packets(tracks);
    // The viewer asks node B, which never saw the publisher.
    let buyer = common::buyer("edge-viewer");
    let (view_pc, mut rx, whep) = start_viewer(&api_b, &stream, &buyer).await;
    expect_ordered_packets(&mut rx, 30).await;
    // A second viewer on B shares the same relay.
    let (view2_pc, mut rx2, _) =
        start_viewer(&api_b, &stream, &common::buyer("edge-viewer-2")).await;
    tokio::time::timeout(T, rx2.recv())
        .await
        .expect("second edge viewer got nothing")
        .unwrap();
    // The publish ends on A: the relay and B's viewers end with it.
    let (st, _) = common::delete(&format!("{api_a}{whip}"), &seller).await;
    assert_eq!(st, 200);
    sending.store(false, std::sync::atomic::Ordering::Relaxed);
    let _ = sender.await;
    assert!(
        common::eventually(T, || async {
            common::delete(&format!("{api_b}{whep}"), &buyer).await.0 == 404
        })
        .await,
        "the edge viewer outlived the publish"
    );
    for pc in [view_pc, view2_pc, pub_pc] {
        let _ = pc.close().await;
    }
    b.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
}

/// Behind a load balancer a `DELETE` lands on any node: the node that does not hold the
/// session forwards it to the one that does, whose answer comes back — for the publish and
/// for a viewer, in both directions, with the owner check still made by the session's node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_reaches_the_sessions_node_from_any_node() {
    let (a, b) = media_pair().await;
    let (api_a, api_b) = (a.api_url(""), b.api_url(""));
    let seller = common::seller("seller-lb");
    let stream = common::create_stream(&format!("{api_a}/v1/streams"), &seller).await;
    let (pub_pc, tracks, whip) = start_publisher(&api_a, &stream, &seller).await;
    let (sending, sender) = send_packets(tracks);
    let buyer = common::buyer("lb-viewer");
    let (view_pc, mut rx, whep) = start_viewer(&api_a, &stream, &buyer).await;
    expect_ordered_packets(&mut rx, 10).await;

    // Someone else's DELETE of the viewer's session, sent to B: A refuses it.
    let (st, body) = common::delete(&format!("{api_b}{whep}"), &common::buyer("other")).await;
    assert_eq!(st, 403, "{body}");
    // The viewer's own DELETE, sent to B, ends its session on A.
    let (st, body) = common::delete(&format!("{api_b}{whep}"), &buyer).await;
    assert_eq!(st, 200, "{body}");
    let (st, _) = common::delete(&format!("{api_a}{whep}"), &buyer).await;
    assert_eq!(st, 404, "the viewer's session outlived its DELETE");
    // The seller's DELETE of the publish, sent to B, ends it on A and pauses the session.
    let (st, body) = common::delete(&format!("{api_b}{whip}"), &seller).await;
    assert_eq!(st, 200, "{body}");
    let (_, s) = common::get(&format!("{api_a}/v1/streams/{stream}"), &seller).await;
    assert_eq!(s["state"], "paused", "{s}");
    // Gone everywhere now.
    for api in [&api_a, &api_b] {
        let (st, _) = common::delete(&format!("{api}{whip}"), &seller).await;
        assert_eq!(st, 404);
    }
    assert!(
        metric(
            &b.admin_url("/metrics"),
            "streamedge_media_deletes_forwarded_total"
        )
        .await
            >= 3.0
    );
    sending.store(false, std::sync::atomic::Ordering::Relaxed);
    let _ = sender.await;
    for pc in [view_pc, pub_pc] {
        let _ = pc.close().await;
    }
    b.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
}

/// The whole media path behind nginx (configured by `deploy/nginx/`): the seller publishes
/// with WHIP and buyers play with WHEP through the balancer, whichever node each request
/// lands on, and every `DELETE` through the balancer ends its session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_and_whep_work_through_nginx_and_delete_from_any_node() {
    let (a, b) = media_pair().await;
    let nginx = common::Nginx::start(&[a.api.port(), b.api.port()]);
    let api = nginx.url("");
    let seller = common::seller("seller-nginx");
    let stream = common::create_stream(&format!("{api}/v1/streams"), &seller).await;
    let (pub_pc, tracks, whip) = start_publisher(&api, &stream, &seller).await;
    let (sending, sender) = send_packets(tracks);
    let mut viewers = Vec::new();
    for v in 0..4 {
        let buyer = common::buyer(&format!("nginx-viewer-{v}"));
        let (pc, mut rx, whep) = start_viewer(&api, &stream, &buyer).await;
        expect_ordered_packets(&mut rx, 10).await;
        viewers.push((pc, whep, buyer));
    }
    for (_, whep, buyer) in &viewers {
        let (st, body) = common::delete(&format!("{api}{whep}"), buyer).await;
        assert_eq!(st, 200, "{whep}: {body}");
        // Gone from both nodes.
        for node in [&a, &b] {
            let (st, _) = common::delete(&node.api_url(whep), buyer).await;
            assert_eq!(st, 404, "{whep} still held");
        }
    }
    let (st, body) = common::delete(&format!("{api}{whip}"), &seller).await;
    assert_eq!(st, 200, "{body}");
    for node in [&a, &b] {
        assert_eq!(common::delete(&node.api_url(&whip), &seller).await.0, 404);
    }
    sending.store(false, std::sync::atomic::Ordering::Relaxed);
    let _ = sender.await;
    for (pc, _, _) in viewers {
        let _ = pc.close().await;
    }
    let _ = pub_pc.close().await;
    drop(nginx);
    b.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
}

/// Sends numbered packets on the tracks every 10 ms until the flag is cleared.
fn send_packets(
    tracks: Vec<(Arc<TrackLocalStaticRTP>, u8, u32)>,
) -> (
    Arc<std::sync::atomic::AtomicBool>,
    tokio::task::JoinHandle<()>,
) {
    let sending = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flag = sending.clone();
    let task = tokio::spawn(async move {
        let mut i: u32 = 0;
        while flag.load(std::sync::atomic::Ordering::Relaxed) {
            for (t, pt, ssrc) in &tracks {
                let p = rtp::Packet {
                    header: rtp::Header {
                        version: 2,
                        payload_type: *pt,
                        sequence_number: i as u16,
                        timestamp: i.wrapping_mul(960),
                        ssrc: *ssrc,
                        marker: true,
                        ..Default::default()
                    },
                    payload: Bytes::from(format!("pkt-{i:08}").into_bytes()),
                };
                let _ = t.write_rtp(p).await;
            }
            i += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    (sending, task)
}

/// Waits for `n` packets of each track, checking they are the publisher's, in order.
async fn expect_ordered_packets(rx: &mut mpsc::UnboundedReceiver<(String, Bytes)>, n: usize) {
    let mut last = std::collections::HashMap::<String, u32>::new();
    let mut got = std::collections::HashMap::<String, usize>::new();
    let deadline = tokio::time::Instant::now() + T;
    while got.get("video/vp8").copied().unwrap_or(0) < n
        || got.get("audio/opus").copied().unwrap_or(0) < n
    {
        let (mime, payload) = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("a viewer received too little: {got:?}"))
            .unwrap();
        let seq: u32 = std::str::from_utf8(&payload)
            .unwrap()
            .strip_prefix("pkt-")
            .unwrap()
            .parse()
            .unwrap();
        if let Some(prev) = last.get(&mime) {
            assert!(seq > *prev, "{mime}: {seq} after {prev}");
        }
        last.insert(mime.clone(), seq);
        *got.entry(mime).or_default() += 1;
    }
}

/// Ports of the host candidates in an SDP.
fn candidate_ports(sdp: &str) -> Vec<u16> {
    sdp.lines()
        .filter_map(|l| l.strip_prefix("a=candidate:"))
        .filter_map(|c| c.split_whitespace().nth(5)?.parse().ok())
        .collect()
}

/// The value of an unlabelled gauge or counter in a Prometheus text page.
async fn metric(url: &str, name: &str) -> f64 {
    common::metrics_page(url)
        .await
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyframe_requests_travel_upstream_and_edge_ports_come_from_the_range() {
    let mut cfg = media_config();
    cfg.redis.url = common::redis_url();
    cfg.media.keyframe_interval = Duration::from_millis(10);
    let mut cfg_b = cfg.clone();
    cfg_b.server.node_id = format!("{}-b", cfg.server.node_id);
    // Node B binds its media connections on a port range, and drops idle relays fast.
    let lo = common::free_port().clamp(20_000, 60_000);
    cfg_b.media.udp_port_range = format!("{lo}-{}", lo + 7);
    cfg_b.media.relay_idle_timeout = Duration::from_secs(1);
    let a = TestNode::start(cfg).await;
    let b = TestNode::start(cfg_b).await;
    let (api_a, api_b) = (a.api_url(""), b.api_url(""));
    let seller = common::seller("seller-pli");
    let stream = common::create_stream(&format!("{api_a}/v1/streams"), &seller).await;
    let (pub_pc, tracks, whip) = start_publisher(&api_a, &stream, &seller).await;
    // Count the keyframe requests reaching the publisher's video track.
    let video = tracks[0].0.clone();
    let plis = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = plis.clone();
    tokio::spawn(async move {
        while let Some(ev) = video.poll().await {
            if let webrtc::media_stream::track_local::TrackLocalEvent::OnRtcpPacket(p) = ev {
                let n = p
                    .iter()
                    .filter(|p| streamedge::media::feedback::is_keyframe_request(p.as_ref()))
                    .count();
                seen.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
            }
        }
    });
    let (sending, sender) = send_packets(tracks);
    let buyer = common::buyer("pli-viewer");
    let remotes = Remotes::default();
    let (view_pc, mut rx, whep, answer) =
        start_viewer_with(&api_b, &stream, &buyer, remotes.clone()).await;
    let ports = candidate_ports(&answer);
    assert!(!ports.is_empty(), "{answer}");
    assert!(
        ports.iter().all(|p| (lo..=lo + 7).contains(p)),
        "node B answered with ports {ports:?}, outside {lo}-{}",
        lo + 7
    );
    expect_ordered_packets(&mut rx, 20).await;
    // The viewer and B's relay to A each hold a port of the range.
    let metrics_b = b.admin_url("/metrics");
    assert_eq!(
        metric(&metrics_b, "streamedge_media_udp_ports_leased").await,
        2.0
    );

    // Joining viewers cause at most three requests each on each node (at bind, +1 s,
    // +3 s): six here. A viewer asking for keyframes must push the count past that.
    let received: Vec<_> = remotes.lock().unwrap().clone();
    let mut remote = None;
    for t in received {
        if t.kind().await == RtpCodecKind::Video {
            remote = Some(t);
        }
    }
    let remote = remote.expect("the viewer got a video track");
    let media_ssrc = remote.ssrcs().await[0];
    let asked = common::eventually(T, || {
        let remote = remote.clone();
        let plis = plis.clone();
        async move {
            let _ = remote
                .write_rtcp(vec![Box::new(
                    rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication {
                        sender_ssrc: 1,
                        media_ssrc,
                    },
                )])
                .await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            plis.load(std::sync::atomic::Ordering::SeqCst) > 6
        }
    })
    .await;
    assert!(
        asked,
        "the viewer's keyframe requests did not reach the publisher ({} arrived)",
        plis.load(std::sync::atomic::Ordering::SeqCst)
    );

    // The viewer leaves: its port comes back at once, the idle relay's soon after.
    let (st, _) = common::delete(&format!("{api_b}{whep}"), &buyer).await;
    assert_eq!(st, 200);
    assert!(
        common::eventually(T, || async {
            metric(&metrics_b, "streamedge_media_udp_ports_leased").await == 0.0
        })
        .await,
        "the idle relay kept its port: {}",
        common::metrics_page(&metrics_b)
            .await
            .lines()
            .filter(|l| l.starts_with("streamedge_media"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // A new viewer on B opens a new relay and still gets the stream.
    let (view2_pc, mut rx2, _) =
        start_viewer(&api_b, &stream, &common::buyer("pli-viewer-2")).await;
    expect_ordered_packets(&mut rx2, 10).await;

    let (st, _) = common::delete(&format!("{api_a}{whip}"), &seller).await;
    assert_eq!(st, 200);
    sending.store(false, std::sync::atomic::Ordering::Relaxed);
    let _ = sender.await;
    for pc in [view_pc, view2_pc, pub_pc] {
        let _ = pc.close().await;
    }
    b.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_port_range_answers_503_until_a_session_ends() {
    let mut cfg = media_config();
    let port = common::free_port();
    cfg.media.udp_port_range = format!("{port}-{port}");
    let node = TestNode::start(cfg).await;
    let api = node.api_url("");
    let seller = common::seller("seller-ports");
    let stream = common::create_stream(&format!("{api}/v1/streams"), &seller).await;
    let (pub_pc, tracks, whip) = start_publisher(&api, &stream, &seller).await;
    let (sending, sender) = send_packets(tracks);
    // The only port is the publisher's: a viewer is refused, with a hint when to retry.
    let (pc, gathered) = peer(None).await;
    let sdp = recvonly_offer(&pc, &gathered, &[RtpCodecKind::Video]).await;
    let r = reqwest::Client::new()
        .post(format!("{api}/v1/streams/{stream}/whep"))
        .bearer_auth(common::buyer("too-many"))
        .header("content-type", "application/sdp")
        .body(sdp)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "media_full", "{body}");
    // The publish ends: its port is free again for the next publish.
    let (st, _) = common::delete(&format!("{api}{whip}"), &seller).await;
    assert_eq!(st, 200);
    sending.store(false, std::sync::atomic::Ordering::Relaxed);
    let _ = sender.await;
    let _ = pub_pc.close().await;
    let (pub2, _, _) = start_publisher(&api, &stream, &seller).await;
    for pc in [pc, pub2] {
        let _ = pc.close().await;
    }
    node.shutdown().await.unwrap();
}
