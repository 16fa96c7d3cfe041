//! Every `streamedge-load` scenario that has no test of its own runs briefly against a node
//! started here (as `serve --dev` configures it, shipped limits on; `persist` against
//! PostgreSQL directly), so that a change to
//! the node (authentication, limits, protocol) that breaks a benchmark command breaks the
//! test command first. No timing thresholds: only that each run finishes without errors
//! and its counts add up.

use std::net::SocketAddr;
use std::time::Duration;

use streamedge_testkit as common;

use streamedge::config::Config;
use streamedge::server::{self, Listeners};

struct Node {
    api: SocketAddr,
    admin: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), server::RunError>>,
}

async fn dev_node(tune: impl FnOnce(&mut Config)) -> Node {
    let mut cfg = Config::default();
    streamedge::auth::dev::apply_dev_mode(&mut cfg);
    cfg.server.drain_delay = Duration::ZERO;
    cfg.server.drain_spread = Duration::ZERO;
    tune(&mut cfg);
    let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (api_addr, admin_addr) = (api.local_addr().unwrap(), admin.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server::run(cfg, Listeners { api, admin }, async {
        let _ = stopped.await;
    }));
    Node {
        api: api_addr,
        admin: admin_addr,
        stop,
        task,
    }
}

impl Node {
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

fn load() -> tokio::process::Command {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_streamedge-load"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_holds_signed_in_viewers_and_reads_memory() {
    let node = dev_node(|_| {}).await;
    let report = common::load_report(
        load()
            .args(["idle", "--api", &node.api.to_string()])
            .args(["--admin", &node.admin.to_string()])
            .args(["--checkpoints", "20,40", "--procs", "2", "--streams", "3"])
            .args(["--settle", "500ms", "--chat-per-stream", "2"]),
    )
    .await;
    assert_eq!(report["errors"], serde_json::json!({}), "{report:#}");
    let points = report["points"].as_array().unwrap();
    assert_eq!(points.len(), 2);
    assert_eq!(points[1]["connections"], 40);
    // The viewers and one chatting sender per stream.
    assert_eq!(points[1]["node_connections"], 43.0);
    assert_eq!(report["chat_refused"], 0, "{report:#}");
    assert!(report["chat_sent"].as_u64().unwrap() > 0, "{report:#}");
    assert!(report["baseline_rss_bytes"].as_f64().unwrap() > 0.0);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_storm_joins_every_signed_in_viewer() {
    let node = dev_node(|_| {}).await;
    let report = common::load_report(load().args([
        "connect-storm",
        "--api",
        &node.api.to_string(),
        "--connections",
        "200",
        "--streams",
        "3",
    ]))
    .await;
    assert_eq!(report["errors"], serde_json::json!({}), "{report:#}");
    assert_eq!(common::report_count(&report, "connected"), 200);
    assert_eq!(report["join_latency"]["count"], 200);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_all_issued() {
    let node = dev_node(|c| c.rate_limit.enabled = false).await;
    let report = common::load_report(
        load()
            .args(["tokens", "--api", &node.api.to_string()])
            .args(["--connections", "4", "--users", "50"])
            .args(["--duration", "1s", "--warmup", "200ms"]),
    )
    .await;
    let requests = common::report_count(&report, "requests");
    assert!(requests > 0, "{report:#}");
    assert_eq!(
        report["statuses"],
        serde_json::json!({ "200": requests }),
        "{report:#}"
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_flood_is_answered_431_everywhere() {
    let node = dev_node(|_| {}).await;
    let report = common::load_report(
        load()
            .args(["head-flood", "--api", &node.api.to_string()])
            .args(["--admin", &node.admin.to_string()])
            .args(["--connections", "40", "--header-bytes", "100000"])
            .args(["--sources", "8", "--settle", "200ms"]),
    )
    .await;
    assert_eq!(
        report["outcomes"],
        serde_json::json!({"431": 40}),
        "{report:#}"
    );
    assert!(report["peak_rss_bytes"].as_f64().unwrap() > 0.0);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_counts_every_connection_and_the_client_is_served() {
    let node = dev_node(|_| {}).await;
    let report = common::load_report(
        load()
            .args(["slowloris", "--api", &node.api.to_string()])
            .args(["--admin", &node.admin.to_string()])
            .args([
                "--connections",
                "60",
                "--hold",
                "500ms",
                "--trickle",
                "200ms",
            ]),
    )
    .await;
    let outcomes = report["outcomes"].as_object().unwrap();
    let total: u64 = outcomes.values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(total, 60, "{report:#}");
    // Within the shipped per-IP limits every one is held.
    assert_eq!(report["outcomes"]["held"], 60, "{report:#}");
    assert_eq!(report["client_failures"], 0);
    assert!(report["during"]["count"].as_u64().unwrap() > 0);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persist_writes_every_produced_record() {
    let db = common::fresh_database().await;
    let outbox =
        std::env::temp_dir().join(format!("se-load-outbox-{}", uuid::Uuid::new_v4().simple()));
    let report = common::load_report(
        load()
            .args(["persist", "--database-url", &db])
            .arg("--outbox-dir")
            .arg(&outbox)
            .args(["--rate", "500", "--streams", "5", "--producers", "4"])
            .args(["--writers", "2", "--batch", "200", "--duration", "2s"]),
    )
    .await;
    let produced = common::report_count(&report, "produced");
    assert!(produced > 0, "{report:#}");
    assert_eq!(
        common::report_count(&report, "written"),
        produced,
        "{report:#}"
    );
    let _ = std::fs::remove_dir_all(&outbox);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_viewers_all_connect_and_receive() {
    let node = dev_node(|c| {
        c.media.enabled = true;
        c.media.udp_addr = "127.0.0.1:0".into();
        // A node keeps a live WHIP publish until the end of its grace period when stopped.
        c.server.shutdown_grace = Duration::from_secs(3);
    })
    .await;
    let report = common::load_report(
        load()
            .args(["media", "--api", &node.api.to_string()])
            .args(["--admin", &node.admin.to_string()])
            .args(["--viewers", "2", "--kbps", "300", "--duration", "2s"]),
    )
    .await;
    assert_eq!(common::report_count(&report, "connected"), 2, "{report:#}");
    assert!(
        common::report_count(&report, "packets_sent") > 0,
        "{report:#}"
    );
    assert!(
        common::report_count(&report, "received_min") > 0,
        "{report:#}"
    );
    node.stop().await;
}
