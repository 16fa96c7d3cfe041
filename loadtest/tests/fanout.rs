//! Runs `streamedge-load chat-fanout` briefly against a node started here and checks the
//! report: every message delivered to every viewer, no gaps, duplicates or reordering.

use std::time::Duration;

use streamedge_testkit as common;

use streamedge::config::{Config, Secret};
use streamedge::server::{self, Listeners};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_fanout_report_counts_every_delivery_once() {
    let mut cfg = Config::default();
    streamedge::auth::dev::apply_dev_mode(&mut cfg);
    cfg.auth.jwt_secret = Secret::new("loadtest-secret-0123456789abcdefghij");
    cfg.chat.user_per_sec = 0.0;
    cfg.rate_limit.enabled = false;
    let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = api.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let node = tokio::spawn(server::run(cfg, Listeners { api, admin }, async {
        let _ = stopped.await;
    }));
    let report = common::load_report(
        tokio::process::Command::new(env!("CARGO_BIN_EXE_streamedge-load"))
            .args(["chat-fanout", "--api", &addr.to_string()])
            .args(["--jwt-secret", "loadtest-secret-0123456789abcdefghij"])
            .args([
                "--viewers",
                "50",
                "--senders",
                "5",
                "--rate",
                "100",
                "--duration",
                "2s",
            ]),
    )
    .await;
    let sent = report["sent"].as_u64().unwrap();
    assert!(sent >= 150, "sent {sent}");
    assert_eq!(report["deliveries"].as_u64().unwrap(), sent * 50);
    assert_eq!(report["expected_deliveries"].as_u64().unwrap(), sent * 50);
    assert_eq!(report["gaps"], 0);
    assert_eq!(report["duplicates"], 0);
    assert_eq!(report["out_of_order"], 0);
    assert_eq!(report["viewers_closed"], 0);
    assert!(report["latency"]["p99_ms"].as_f64().unwrap() > 0.0);
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(15), node)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
