//! `media`: how many WHEP viewers of one stream a node carries. A publisher (the `webrtc`
//! crate) sends synthetic VP8-sized RTP at a bitrate through WHIP; N viewers (also the
//! crate) join through WHEP; each viewer counts the packets it receives (payloads carry a
//! counter), so loss per viewer is exact. The node's CPU comes from its `/metrics`.
//! With `--simulcast` the publisher sends three layers (rids `q`, `h`, `f` at a tenth, a
//! third and all of the bitrate) and each viewer receives one: the top one, as an
//! unconstrained viewer does (`--spread`: a third of them on each layer, by their cap);
//! loss is counted against the layer each viewer receives.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::interceptor::Registry;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use serde::Serialize;
use streamedge::auth::dev::DEV_JWT_SECRET;
use streamedge::auth::Role;
use tokio::sync::Notify;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState,
};

use crate::conn::token;
use crate::{metrics, report};

#[derive(clap::Args, Clone)]
pub struct Args {
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub api: SocketAddr,
    /// The node's admin listener (for its CPU time).
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub admin: SocketAddr,
    #[arg(long, default_value = DEV_JWT_SECRET)]
    pub jwt_secret: String,
    #[arg(long, default_value_t = 100)]
    pub viewers: usize,
    /// Video bitrate of the synthetic stream, in kbit/s (1,200-byte packets).
    #[arg(long, default_value_t = 1500)]
    pub kbps: u64,
    /// Measurement time once every viewer is connected.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Local address for the peers' UDP sockets.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub udp_addr: String,
    /// Publish three simulcast layers (a tenth, a third and all of `--kbps`).
    #[arg(long)]
    pub simulcast: bool,
    /// With `--simulcast`: spread the viewers evenly over the three layers (each capped
    /// with `?max_layer=low|mid|high`) instead of all on the top one.
    #[arg(long)]
    pub spread: bool,
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Serialize)]
struct Report {
    scenario: &'static str,
    simulcast: bool,
    spread: bool,
    viewers: usize,
    connected: usize,
    kbps: u64,
    seconds: f64,
    packets_sent: u64,
    /// Per viewer over the measurement window: the fewest and the median received.
    received_min: u64,
    received_median: u64,
    /// Packets sent but not received, over all viewers, in percent.
    loss_percent: f64,
    /// Viewers that lost anything.
    viewers_with_loss: usize,
    node_cpu_cores: f64,
    node_cpu_ms_per_viewer_second: f64,
}

struct Handler {
    gathered: Arc<Notify>,
    received: Option<Arc<AtomicU64>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered.notify_one();
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let Some(received) = self.received.clone() else {
            return;
        };
        tokio::spawn(async move {
            while let Some(ev) = track.poll().await {
                match ev {
                    TrackRemoteEvent::OnRtpPacket(_) => {
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                    TrackRemoteEvent::OnEnded => break,
                    _ => {}
                }
            }
        });
    }
}

async fn peer(
    udp_addr: &str,
    received: Option<Arc<AtomicU64>>,
) -> anyhow::Result<(Arc<dyn PeerConnection>, Arc<Notify>)> {
    let mut media = MediaEngine::default();
    media.register_default_codecs()?;
    let registry = register_default_interceptors(Registry::new(), &mut media)?;
    let gathered = Arc::new(Notify::new());
    let pc = PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(media)
        .with_setting_engine(
            SettingEngineBuilder::new()
                .with_include_loopback_candidate(true)
                .build(),
        )
        .with_interceptor_registry(registry)
        .with_handler(Arc::new(Handler {
            gathered: gathered.clone(),
            received,
        }) as Arc<dyn PeerConnectionEventHandler>)
        .with_udp_addrs(vec![udp_addr.to_string()])
        .build()
        .await?;
    Ok((Arc::new(pc), gathered))
}

/// Posts the offer, sets the answer and returns it.
async fn negotiate(
    pc: &Arc<dyn PeerConnection>,
    gathered: &Notify,
    url: &str,
    token: &str,
) -> anyhow::Result<String> {
    let offer = pc.create_offer(None).await?;
    let wait = gathered.notified();
    pc.set_local_description(offer).await?;
    let _ = tokio::time::timeout(Duration::from_secs(5), wait).await;
    let sdp = pc
        .local_description()
        .await
        .ok_or_else(|| anyhow::anyhow!("no offer"))?
        .sdp;
    let r = reqwest::Client::new()
        .post(url)
        .bearer_auth(token)
        .header("content-type", "application/sdp")
        .body(sdp)
        .send()
        .await?;
    anyhow::ensure!(r.status().as_u16() == 201, "{url}: {}", r.status());
    let answer = r.text().await?;
    pc.set_remote_description(RTCSessionDescription::answer(answer.clone())?)
        .await?;
    Ok(answer)
}

/// The id an SDP's `a=extmap` gives `uri`.
fn extmap_id(sdp: &str, uri: &str) -> Option<u8> {
    sdp.lines().find_map(|l| {
        let (id, rest) = l.strip_prefix("a=extmap:")?.split_once(' ')?;
        (rest.trim() == uri).then(|| id.parse().ok())?
    })
}

/// The simulcast layers: rid, SSRC and share of the bitrate (the last one is the top).
const LAYERS: [(&str, u32, u64); 3] = [("q", 7775, 10), ("h", 7776, 3), ("f", 7777, 1)];

async fn node_cpu(admin: SocketAddr) -> f64 {
    metrics::scrape(admin)
        .await
        .ok()
        .and_then(|m| metrics::value(&m, "streamedge_process_cpu_seconds_total"))
        .unwrap_or(0.0)
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    let api = format!("http://{}", a.api);
    let seller = token(&a.jwt_secret, "media-load-seller", Role::Seller);
    let r = reqwest::Client::new()
        .post(format!("{api}/v1/streams"))
        .bearer_auth(&seller)
        .json(&serde_json::json!({"title": "media load"}))
        .send()
        .await?;
    anyhow::ensure!(r.status().as_u16() == 201, "create stream: {}", r.status());
    let stream = r.json::<serde_json::Value>().await?["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();

    let (publisher, gathered) = peer(&a.udp_addr, None).await?;
    let codec = RTCRtpCodec {
        mime_type: "video/VP8".into(),
        clock_rate: 90000,
        ..Default::default()
    };
    let layers: &[(&str, u32, u64)] = if a.simulcast { &LAYERS } else { &LAYERS[2..] };
    let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "load".into(),
        "load-video".into(),
        "load".into(),
        RtpCodecKind::Video,
        layers
            .iter()
            .map(|(rid, ssrc, _)| RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    rid: if a.simulcast {
                        rid.to_string()
                    } else {
                        String::new()
                    },
                    ssrc: Some(*ssrc),
                    ..Default::default()
                },
                codec: codec.clone(),
                ..Default::default()
            })
            .collect(),
    )));
    publisher
        .add_track(track.clone() as Arc<dyn TrackLocal>)
        .await?;
    let answer = negotiate(
        &publisher,
        &gathered,
        &format!("{api}/v1/streams/{stream}/whip"),
        &seller,
    )
    .await?;
    // A simulcast sender marks its packets with their mid and rid.
    let ids = (
        extmap_id(&answer, "urn:ietf:params:rtp-hdrext:sdes:mid"),
        extmap_id(&answer, "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"),
        answer.lines().find_map(|l| l.strip_prefix("a=mid:")),
    );
    let marks = match ids {
        (Some(mid_id), Some(rid_id), Some(mid)) if a.simulcast => {
            Some((mid_id, rid_id, bytes::Bytes::from(mid.to_string())))
        }
        _ if a.simulcast => anyhow::bail!("the WHIP answer lacks the mid/rid extensions"),
        _ => None,
    };

    // The stream: 1,200-byte packets at the bitrate, each layer at its share; `sent`
    // counts each layer's.
    let sent: Arc<[AtomicU64; 3]> = Arc::new(Default::default());
    let sending = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut senders = Vec::new();
    for (l, (rid, ssrc, share)) in layers.iter().copied().enumerate() {
        let per_sec = (a.kbps * 1000 / share / (1200 * 8)).max(1);
        let (sent, sending, track, marks) =
            (sent.clone(), sending.clone(), track.clone(), marks.clone());
        senders.push(tokio::spawn(async move {
            let interval = Duration::from_secs_f64(1.0 / per_sec as f64);
            let mut next = tokio::time::Instant::now();
            let mut i: u32 = 0;
            let payload = bytes::Bytes::from(vec![0x90u8; 1200]);
            while sending.load(Ordering::Relaxed) {
                let mut p = rtp::Packet {
                    header: rtp::Header {
                        version: 2,
                        payload_type: 96,
                        sequence_number: i as u16,
                        timestamp: i.wrapping_mul(3000),
                        ssrc,
                        marker: i % 4 == 3,
                        ..Default::default()
                    },
                    payload: payload.clone(),
                };
                if let Some((mid_id, rid_id, mid)) = &marks {
                    let _ = p.header.set_extension(*mid_id, mid.clone());
                    let _ = p
                        .header
                        .set_extension(*rid_id, bytes::Bytes::from_static(rid.as_bytes()));
                }
                if track.write_rtp(p).await.is_ok() {
                    sent[l].fetch_add(1, Ordering::Relaxed);
                }
                i = i.wrapping_add(1);
                next += interval;
                tokio::time::sleep_until(next).await;
            }
        }));
    }

    let top = layers.len() - 1;
    let mut viewers = Vec::with_capacity(a.viewers);
    for v in 0..a.viewers {
        // The layer this viewer receives, and the cap that makes it so.
        let (layer, query) = if a.simulcast && a.spread {
            (
                v % 3,
                ["?max_layer=low", "?max_layer=mid", "?max_layer=high"][v % 3],
            )
        } else {
            (top, "")
        };
        let received = Arc::new(AtomicU64::new(0));
        let (pc, gathered) = peer(&a.udp_addr, Some(received.clone())).await?;
        pc.add_transceiver_from_kind(
            RtpCodecKind::Video,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Recvonly,
                ..Default::default()
            }),
        )
        .await?;
        let buyer = token(&a.jwt_secret, &format!("media-viewer-{v}"), Role::Buyer);
        match negotiate(
            &pc,
            &gathered,
            &format!("{api}/v1/streams/{stream}/whep{query}"),
            &buyer,
        )
        .await
        {
            Ok(_) => viewers.push((pc, received, layer)),
            Err(e) => {
                eprintln!("viewer {v}: {e}");
                let _ = pc.close().await;
                break;
            }
        }
        if v % 10 == 9 {
            report::progress(&format!("{} viewers connected", v + 1));
        }
    }
    report::end_progress();
    // Let every viewer's connection come up, then measure.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let start_counts: Vec<u64> = viewers
        .iter()
        .map(|(_, r, _)| r.load(Ordering::Relaxed))
        .collect();
    let count = || -> [u64; 3] { std::array::from_fn(|l| sent[l].load(Ordering::Relaxed)) };
    let sent_start = count();
    let cpu_start = node_cpu(a.admin).await;
    let t0 = Instant::now();
    tokio::time::sleep(a.duration).await;
    let secs = t0.elapsed().as_secs_f64();
    let sent_n: [u64; 3] = {
        let now = count();
        std::array::from_fn(|l| now[l] - sent_start[l])
    };
    let cpu = node_cpu(a.admin).await - cpu_start;
    // Packets in flight at the end still arrive: give them a moment, then count.
    let sent_end = count();
    sending.store(false, Ordering::Relaxed);
    for sender in senders {
        let _ = sender.await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Per viewer: received in the window, and sent on its layer in the window.
    let per_viewer: Vec<(u64, u64)> = viewers
        .iter()
        .zip(&start_counts)
        .map(|((_, r, l), s)| {
            let got = (r.load(Ordering::Relaxed) - s).min(sent_end[*l] - sent_start[*l]);
            (got, sent_n[*l])
        })
        .collect();
    // A packet sent in the window reached the viewer or was lost; the count is capped so
    // late arrivals of earlier packets do not mask losses.
    let expected: u64 = per_viewer.iter().map(|(_, n)| n).sum();
    let total: u64 = per_viewer.iter().map(|(g, n)| (*g).min(*n)).sum();
    let viewers_with_loss = per_viewer.iter().filter(|(g, n)| g < n).count();
    let mut got: Vec<u64> = per_viewer.iter().map(|(g, _)| *g).collect();
    got.sort_unstable();
    let rep = Report {
        scenario: "media",
        simulcast: a.simulcast,
        spread: a.simulcast && a.spread,
        viewers: a.viewers,
        connected: viewers.len(),
        kbps: a.kbps,
        seconds: secs,
        packets_sent: sent_n[top],
        received_min: got.first().copied().unwrap_or(0),
        received_median: got.get(got.len() / 2).copied().unwrap_or(0),
        loss_percent: if expected == 0 {
            0.0
        } else {
            100.0 * (expected.saturating_sub(total)) as f64 / expected as f64
        },
        viewers_with_loss,
        node_cpu_cores: cpu / secs,
        node_cpu_ms_per_viewer_second: if viewers.is_empty() {
            0.0
        } else {
            1000.0 * cpu / secs / viewers.len() as f64
        },
    };
    println!(
        "media{}: {} of {} viewers at {} kbit/s; {} packets sent in {:.1}s; received min {} median {}; loss {:.3}% ({} viewers lost any); node {:.2} cores, {:.2} ms CPU per viewer-second",
        match (rep.simulcast, rep.spread) {
            (true, true) => " (simulcast: 3 layers in, viewers spread over them)",
            (true, false) => " (simulcast: 3 layers in, the top one out)",
            _ => "",
        },
        rep.connected, rep.viewers, rep.kbps, rep.packets_sent, rep.seconds, rep.received_min,
        rep.received_median, rep.loss_percent, rep.viewers_with_loss, rep.node_cpu_cores,
        rep.node_cpu_ms_per_viewer_second
    );
    for (pc, ..) in viewers {
        let _ = pc.close().await;
    }
    let _ = publisher.close().await;
    report::write_json(a.json.as_deref(), &rep)
}
