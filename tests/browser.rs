//! A real browser against the media path: headless Chromium (Debian's `chromium`, with
//! a fake camera and microphone) publishes through a page using WHIP; a second Chromium
//! plays with WHEP and must decode video (`framesDecoded > 0` from `getStats`). With
//! simulcast, Chromium publishes three layers; a Chromium viewer capped at `low` decodes
//! 320x180, then 1280x720 once its cap is lifted (its link is unconstrained), while a
//! `webrtc`-crate viewer reporting a low REMB gets the bottom layer and moves up when its
//! REMB rises.
//! `scripts/test` installs Chromium when it is missing.

use streamedge_testkit as common;

#[path = "support/webrtc_peer.rs"]
mod webrtc_peer;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use axum::extract::Query;
use axum::routing::get;
use common::TestNode;
use streamedge::config::Secret;
use tokio::sync::mpsc;

const PAGE: &str = include_str!("browser/media.html");

fn chromium_bin() -> PathBuf {
    let p = std::env::var("CHROMIUM_BIN").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let p = PathBuf::from(p);
    assert!(
        p.exists(),
        "Chromium not found at {}: run the tests through scripts/test (it installs it)",
        p.display()
    );
    p
}

/// A headless Chromium showing `url`, killed on drop.
struct Browser {
    child: Child,
    dir: PathBuf,
}

impl Browser {
    fn open(url: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("se-chromium-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new(chromium_bin())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--use-fake-device-for-media-stream",
                "--use-fake-ui-for-media-stream",
                "--autoplay-policy=no-user-gesture-required",
                // Real host candidates instead of mDNS names the node cannot resolve.
                "--disable-features=WebRtcHideLocalIpsWithMdns",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", dir.display()))
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        Self { child, dir }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_publishes_with_whip_and_another_chromium_decodes_it_with_whep() {
    let mut cfg = common::test_config();
    cfg.media.enabled = true;
    cfg.media.node_key = Secret::new("test-media-node-key-0123456789abcdef");
    // Every interface but loopback: the browser's host candidates are on them too.
    cfg.media.udp_addr = "0.0.0.0:0".into();
    let node = TestNode::start(cfg).await;
    let api = node.api_url("");
    let seller = common::seller("browser-seller");
    let stream = common::create_stream(&format!("{api}/v1/streams"), &seller).await;

    // The pages come from their own origin, as a shop's would (CORS on the node).
    let (origin, mut reports) = pages().await;

    let whip = format!("{api}/v1/streams/{stream}/whip");
    let whep = format!("{api}/v1/streams/{stream}/whep");
    let _publisher = Browser::open(&format!("{origin}/page?page=pub&url={whip}&token={seller}"));
    let _viewer = Browser::open(&format!(
        "{origin}/page?page=play&url={whep}&token={}",
        common::buyer("browser-viewer")
    ));
    let mut seen = Vec::new();
    let frames = loop {
        let r = tokio::time::timeout(Duration::from_secs(90), reports.recv())
            .await
            .unwrap_or_else(|_| panic!("no result from the browsers; reports so far: {seen:?}"))
            .unwrap();
        if let Some(e) = r.get("error") {
            let m = node.metrics().await;
            let media: Vec<&str> = m
                .lines()
                .filter(|l| l.starts_with("streamedge_media"))
                .collect();
            panic!(
                "{} page failed: {e}; reports so far: {seen:?}; node: {media:?}",
                r["page"]
            );
        }
        if let Some(f) = r.get("frames") {
            break f.parse::<u64>().unwrap();
        }
        seen.push(r);
    };
    assert!(frames > 0);
    let (_, s) = common::get(&format!("{api}/v1/streams/{stream}"), &seller).await;
    assert_eq!(s["state"], "live");
    drop(_viewer);
    drop(_publisher);
    node.shutdown().await.unwrap();
}

/// Percent-encodes a URL for a query parameter.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Serves the test page from its own origin (as a shop's would: CORS on the node) and
/// collects its reports.
async fn pages() -> (
    String,
    mpsc::UnboundedReceiver<std::collections::HashMap<String, String>>,
) {
    let (tx, reports) = mpsc::unbounded_channel::<std::collections::HashMap<String, String>>();
    let pages = axum::Router::new()
        .route("/page", get(|| async { axum::response::Html(PAGE) }))
        .route(
            "/report",
            get(
                move |Query(q): Query<std::collections::HashMap<String, String>>| {
                    let tx = tx.clone();
                    async move {
                        let _ = tx.send(q);
                        ""
                    }
                },
            ),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, pages).await });
    (origin, reports)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_simulcast_reaches_each_viewer_at_the_layer_its_link_carries() {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use std::sync::Arc;
    let mut cfg = common::test_config();
    cfg.media.enabled = true;
    cfg.media.node_key = Secret::new("test-media-node-key-0123456789abcdef");
    cfg.media.udp_addr = "0.0.0.0:0".into();
    let node = TestNode::start(cfg).await;
    let api = node.api_url("");
    let seller = common::seller("simulcast-seller");
    let stream = common::create_stream(&format!("{api}/v1/streams"), &seller).await;
    let (origin, mut reports) = pages().await;
    let whip = format!("{api}/v1/streams/{stream}/whip");
    let whep = format!("{api}/v1/streams/{stream}/whep");
    let _publisher = Browser::open(&format!(
        "{origin}/page?page=pub&simulcast=1&url={whip}&token={seller}"
    ));
    // Once the publish is up: a Chromium viewer on an unconstrained link, and a viewer
    // whose REMB says its downlink carries 200 kbit/s.
    assert!(
        common::eventually(Duration::from_secs(30), || async {
            node.metrics()
                .await
                .contains("streamedge_media_publishers 1")
        })
        .await,
        "Chromium did not publish"
    );
    // The Chromium viewer starts capped at the low layer (the app's choice); the cap is
    // lifted later, on its unconstrained link.
    let viewer_token = common::buyer("simulcast-viewer");
    let capped_whep = urlencode(&format!("{whep}?max_layer=low"));
    let _viewer = Browser::open(&format!(
        "{origin}/page?page=play&watch=1&url={capped_whep}&token={viewer_token}"
    ));
    let (slow_pc, slow, _) =
        webrtc_peer::start_viewer(&api, &stream, &common::buyer("slow-viewer"), "").await;
    let remb = Arc::new(AtomicU32::new(200_000));
    let stop = Arc::new(AtomicBool::new(false));
    webrtc_peer::send_remb(slow.clone(), remb.clone(), stop.clone());

    // The Chromium viewer decodes the low layer (320x180), continuously; once its cap is
    // lifted, the top layer (1280x720) — switching without renegotiation, still decoding.
    let mut seen: Vec<String> = Vec::new();
    let mut location = None;
    let mut wanted = 320;
    let mut since: Option<u64> = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let r = tokio::time::timeout_at(deadline, reports.recv())
            .await
            .unwrap_or_else(|_| panic!("the viewer never decoded {wanted} wide: {seen:?}"))
            .unwrap();
        if let Some(e) = r.get("error") {
            panic!("{} page failed: {e}; reports so far: {seen:?}", r["page"]);
        }
        if let Some(l) = r.get("location") {
            location = Some(l.clone());
        }
        let Some(w) = r.get("watch") else {
            continue;
        };
        seen.push(w.clone());
        let v: serde_json::Value = serde_json::from_str(w).unwrap();
        let decoded = v["decoded"].as_u64().unwrap_or(0);
        if v["width"] != wanted {
            since = None;
            continue;
        }
        match since {
            // Three more seconds at that layer, frames still being decoded.
            Some(d) if decoded > d + 30 => {
                if wanted == 1280 {
                    break;
                }
                // Lift the cap.
                let loc = location.clone().expect("the viewer's Location");
                let (st, body) = common::call(
                    reqwest::Method::POST,
                    &format!("{api}{loc}/layer"),
                    &viewer_token,
                    Some(serde_json::json!({ "max_layer": null })),
                )
                .await;
                assert_eq!(st, 200, "{body}");
                wanted = 1280;
                since = None;
            }
            Some(_) => {}
            None => since = Some(decoded),
        }
    }
    // The constrained viewer gets the bottom layer (320x180) meanwhile.
    assert_eq!(
        slow.keyframe_size(),
        Some((320, 180)),
        "the constrained viewer's layer"
    );
    let recent = slow.since(std::time::Instant::now() - Duration::from_secs(2));
    assert!(recent.len() > 20, "the constrained viewer is starved");

    // Its limit is lifted: it moves up to the top layer within seconds, without a gap.
    let lifted = std::time::Instant::now();
    remb.store(20_000_000, Ordering::Relaxed);
    assert!(
        common::eventually(Duration::from_secs(30), || async {
            slow.keyframe_size() == Some((1280, 720))
        })
        .await,
        "the viewer did not move up: {:?}",
        slow.keyframe_size()
    );
    let took = lifted.elapsed();
    let got = slow.since(lifted);
    let gap = got
        .windows(2)
        .map(|w| w[1].at - w[0].at)
        .max()
        .unwrap_or_default();
    assert!(
        gap < Duration::from_secs(1),
        "a {gap:?} gap while moving up"
    );
    eprintln!("moved up in {took:?}; longest gap {gap:?}; Chromium viewer: {seen:?}");
    stop.store(true, Ordering::Relaxed);
    let _ = slow_pc.close().await;
    drop(_viewer);
    drop(_publisher);
    node.shutdown().await.unwrap();
}
