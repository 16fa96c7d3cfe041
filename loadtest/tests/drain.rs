//! Runs `streamedge-load drain` briefly against two nodes started here (sharing the Redis
//! that `scripts/test` starts): 50 viewers spread over both, the first node drained through
//! its admin listener; every viewer it closed must come back on the other node and resume.
//! Counts only, no timing.

use std::time::Duration;

use streamedge_testkit as common;

use common::TestNode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_viewer_of_a_drained_node_comes_back_on_the_other() {
    let mut cfg = common::redis_test_config();
    cfg.chat.user_per_sec = 0.0;
    cfg.rate_limit.enabled = false;
    cfg.server.drain_delay = Duration::from_millis(200);
    cfg.server.drain_spread = Duration::from_millis(300);
    let a = TestNode::start(cfg.clone()).await;
    let a_id = cfg.server.node_id.clone();
    cfg.server.node_id = format!("{}-b", cfg.server.node_id);
    let b = TestNode::start(cfg.clone()).await;

    let r = common::load_report(
        tokio::process::Command::new(env!("CARGO_BIN_EXE_streamedge-load"))
            .arg("drain")
            .args(["--api", &format!("{},{}", a.api, b.api)])
            .args(["--jwt-secret", common::TEST_JWT_SECRET])
            .args(["--viewers", "50", "--messages", "5", "--timeout", "30s"])
            .args(["--drain-admin", &a.admin.to_string()]),
    )
    .await;
    let n = |k: &str| common::report_count(&r, k);
    assert_eq!(r["timed_out"], false, "{r:#}");
    assert_eq!(r["drained_node"], a_id.as_str(), "{r:#}");
    assert_eq!(r["nodes_before"][&a_id], 25, "{r:#}");
    // Every viewer of the drained node was closed with 1012, and came back on the other
    // node, resuming from the messages it had seen.
    assert_eq!(n("moved"), 25, "{r:#}");
    assert_eq!(n("closes_1012"), 25, "{r:#}");
    assert_eq!(n("back"), 25, "{r:#}");
    assert_eq!(r["nodes_after"][&cfg.server.node_id], 25, "{r:#}");
    assert_eq!(r["reconnect"]["count"], 25, "{r:#}");
    assert_eq!(n("resumed"), 25, "{r:#}");
    for k in [
        "failed",
        "closes_other",
        "closes_before_drain",
        "not_recovered",
    ] {
        assert_eq!(n(k), 0, "{k}: {r:#}");
    }

    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
