//! A real browser against the media path: headless Chromium (Debian's `chromium`, with
//! a fake camera and microphone) publishes through a page using WHIP; a second Chromium
//! plays with WHEP and must decode video (`framesDecoded > 0` from `getStats`).
//! `scripts/test` installs Chromium when it is missing.

use streamedge_testkit as common;

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
    let (tx, mut reports) = mpsc::unbounded_channel::<std::collections::HashMap<String, String>>();
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
