//! Runs `streamedge-load reconnect` briefly against two nodes started here (sharing the
//! Redis that `scripts/test` starts), with viewers dropping and reconnecting to the other
//! node, and checks the report: every viewer got every message exactly once, in order.

use streamedge_testkit as common;

use common::TestNode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_viewers_get_every_message_once_in_order_across_nodes() {
    let mut cfg = common::redis_test_config();
    cfg.chat.user_per_sec = 0.0;
    cfg.rate_limit.enabled = false;
    let a = TestNode::start(cfg.clone()).await;
    cfg.server.node_id = format!("{}-b", cfg.server.node_id);
    let b = TestNode::start(cfg).await;

    let r = common::load_report(
        tokio::process::Command::new(env!("CARGO_BIN_EXE_streamedge-load"))
            .arg("reconnect")
            .args(["--api", &format!("{},{}", a.api, b.api)])
            .args(["--jwt-secret", common::TEST_JWT_SECRET])
            .args(["--viewers", "40", "--senders", "4", "--rate", "100"])
            .args(["--duration", "3s", "--drop-fraction", "0.5"])
            .args([
                "--drop-every",
                "400ms",
                "--offline",
                "150ms",
                "--switch-node",
            ]),
    )
    .await;
    let n = |k: &str| common::report_count(&r, k);
    // Every message was sequenced, and every viewer got each of them once, in order.
    assert!(n("acked") >= 200, "{r:#}");
    assert_eq!(n("acked"), n("sent"), "{r:#}");
    assert_eq!(n("last_seq"), n("acked"), "{r:#}");
    assert_eq!(n("deliveries"), n("last_seq") * 40, "{r:#}");
    assert_eq!(n("viewers_complete"), 40, "{r:#}");
    for k in [
        "gaps",
        "duplicates",
        "out_of_order",
        "not_recovered",
        "refused",
        // A reconnect with since_seq never sees live messages ahead of its replay.
        "skipped_before_resumed",
    ] {
        assert_eq!(n(k), 0, "{k}: {r:#}");
    }
    // The viewers did drop, came back on the other node and caught up from history.
    assert!(n("reconnects") >= 20, "{r:#}");
    assert_eq!(n("node_switches"), n("reconnects"), "{r:#}");
    assert!(n("replayed") > 0, "{r:#}");
    assert_eq!(r["resume_latency"]["count"], r["reconnects"], "{r:#}");

    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
