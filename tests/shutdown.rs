//! Graceful shutdown of the real binary: SIGTERM with 100 open WebSockets.

use streamedge_testkit as common;

use std::time::Duration;

use common::NodeProcess;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_100_websockets_with_1012_and_exits_0() {
    let grace = Duration::from_secs(10);
    let mut node = NodeProcess::spawn(&[
        ("STREAMEDGE_SERVER__SHUTDOWN_GRACE", "10s".to_string()),
        ("STREAMEDGE_WS__MAX_CONNECTIONS", "1000".to_string()),
    ]);
    let mut streams = Vec::new();
    for _ in 0..5 {
        streams
            .push(common::create_stream(&node.api_url("/v1/streams"), &common::seller("s")).await);
    }
    let viewer = common::buyer("viewer");
    let mut clients = Vec::new();
    for i in 0..100 {
        let url = common::stream_ws_url(node.api, streams[i % streams.len()], &viewer);
        let mut ws = common::ws_connect(&url).await;
        let welcome = common::next_json(&mut ws, Duration::from_secs(5)).await;
        assert_eq!(welcome["type"], "welcome");
        clients.push(ws);
    }
    let metrics = node.metrics().await;
    assert!(
        metrics.contains("streamedge_ws_connections 100"),
        "expected 100 connections in metrics"
    );

    node.signal("TERM");

    let mut codes = Vec::new();
    for ws in &mut clients {
        codes.push(common::close_code(ws, grace).await);
    }
    assert!(codes.iter().all(|c| *c == 1012), "close codes: {codes:?}");
    // After the close frame the node hangs up.
    for ws in &mut clients {
        let rest = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
        assert!(
            matches!(
                rest,
                Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_))))
            ),
            "unexpected frame after close: {rest:?}"
        );
    }
    let status = tokio::task::spawn_blocking(move || {
        let s = node.wait_exit(grace);
        (s, node)
    })
    .await
    .unwrap();
    let exit = status
        .0
        .expect("process did not exit within the grace period");
    assert!(exit.success(), "exit status {exit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_also_drains() {
    let mut node = NodeProcess::spawn(&[]);
    let stream = common::create_stream(&node.api_url("/v1/streams"), &common::seller("s")).await;
    let url = common::stream_ws_url(node.api, stream, &common::buyer("v"));
    let mut ws = common::ws_connect(&url).await;
    common::next_json(&mut ws, Duration::from_secs(5)).await;
    node.signal("INT");
    assert_eq!(
        common::close_code(&mut ws, Duration::from_secs(10)).await,
        1012
    );
    let exit = tokio::task::spawn_blocking(move || node.wait_exit(Duration::from_secs(10)))
        .await
        .unwrap()
        .expect("process did not exit");
    assert!(exit.success(), "exit status {exit:?}");
}
