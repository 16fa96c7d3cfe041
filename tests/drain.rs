//! Draining the real binary: readiness goes false first while the node keeps serving for
//! `server.drain_delay`; then WebSockets close with 1012 spread over `server.drain_spread`;
//! the process exits 0. Triggered by SIGTERM or by `POST /drain` on the admin listener.

use streamedge_testkit as common;

use std::time::{Duration, Instant};

use common::NodeProcess;

// Long enough for the checks of the first phase on a loaded machine (debug build).
const DELAY: Duration = Duration::from_secs(6);
const SPREAD: Duration = Duration::from_secs(2);

fn draining_node() -> NodeProcess {
    NodeProcess::spawn(&[
        ("STREAMEDGE_SERVER__SHUTDOWN_GRACE", "20s".to_string()),
        ("STREAMEDGE_SERVER__DRAIN_DELAY", "6s".to_string()),
        ("STREAMEDGE_SERVER__DRAIN_SPREAD", "2s".to_string()),
    ])
}

async fn readyz(node: &NodeProcess) -> (u16, serde_json::Value) {
    let r = reqwest::get(format!("http://{}/readyz", node.admin))
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// Opens `n` viewer WebSockets on `stream` and reads their welcomes.
async fn viewers(node: &NodeProcess, stream: &uuid::Uuid, n: usize) -> Vec<common::Ws> {
    let mut out = Vec::new();
    for i in 0..n {
        let url = format!(
            "ws://{}/v1/streams/{stream}/ws?access_token={}",
            node.api,
            common::buyer(&format!("v{i}"))
        );
        let mut ws = common::ws_connect(&url).await;
        let welcome = common::next_json(&mut ws, Duration::from_secs(5)).await;
        assert_eq!(welcome["type"], "welcome");
        out.push(ws);
    }
    out
}

/// Waits for every client's close code; returns the codes and when each arrived.
async fn closes(clients: &mut [common::Ws], limit: Duration) -> Vec<(u16, Instant)> {
    let waits = clients.iter_mut().map(|ws| async move {
        let code = common::close_code(ws, limit).await;
        (code, Instant::now())
    });
    futures_util::future::join_all(waits).await
}

/// The sequence both triggers share, checked from the outside; `triggered` is taken just
/// before the drain was asked for (the node's drain_delay cannot start earlier).
async fn drains_in_order(
    mut node: NodeProcess,
    stream: uuid::Uuid,
    mut clients: Vec<common::Ws>,
    triggered: Instant,
) {
    // Readiness goes false at once…
    assert!(
        common::eventually(Duration::from_secs(5), || async {
            readyz(&node).await.0 == 503
        })
        .await,
        "readiness stayed true"
    );
    let (_, body) = readyz(&node).await;
    assert_eq!(body["draining"], true, "{body}");
    // …while the node still serves: the API answers and a new WebSocket is welcomed.
    let r = reqwest::Client::new()
        .get(node.api_url(&format!("/v1/streams/{stream}")))
        .bearer_auth(common::buyer("late"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    clients.extend(viewers(&node, &stream, 1).await);
    assert!(
        triggered.elapsed() < DELAY,
        "the checks above took longer than drain_delay; the test cannot tell the phases apart"
    );
    // Then every WebSocket closes with 1012, not before drain_delay and spread out.
    let done = closes(&mut clients, Duration::from_secs(20)).await;
    assert!(
        done.iter().all(|(c, _)| *c == 1012),
        "close codes: {done:?}"
    );
    let first = done.iter().map(|(_, t)| *t).min().unwrap();
    let last = done.iter().map(|(_, t)| *t).max().unwrap();
    assert!(first - triggered >= DELAY, "closed before drain_delay");
    // The node pauses between steps of the spread: the closes cannot all land together
    // (seen from here, where a stalled test can bunch them up somewhat).
    assert!(
        last - first >= SPREAD / 4,
        "closes not spread: {:?}",
        last - first
    );
    let exit = tokio::task::spawn_blocking(move || node.wait_exit(Duration::from_secs(20)))
        .await
        .unwrap()
        .expect("process did not exit");
    assert!(exit.success(), "exit status {exit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_readiness_first_then_spread_closes() {
    let node = draining_node();
    let stream = common::create_stream(&node.api_url("/v1/streams"), &common::seller("s")).await;
    let clients = viewers(&node, &stream, 20).await;
    let triggered = Instant::now();
    node.signal("TERM");
    drains_in_order(node, stream, clients, triggered).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_drain_on_the_admin_listener_does_the_same() {
    let node = draining_node();
    let stream = common::create_stream(&node.api_url("/v1/streams"), &common::seller("s")).await;
    let clients = viewers(&node, &stream, 20).await;
    let admin = format!("http://{}/drain", node.admin);
    let triggered = Instant::now();
    let r = reqwest::Client::new().post(&admin).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["draining"], true);
    assert_eq!(body["drain_delay_ms"], 6000);
    // GET is not how one drains a node.
    let r = reqwest::get(&admin).await.unwrap();
    assert_eq!(r.status(), 405);
    drains_in_order(node, stream, clients, triggered).await;
}

#[tokio::test]
async fn a_grace_period_shorter_than_the_drain_is_refused() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_streamedge"))
        .arg("check-config")
        .env("STREAMEDGE_SERVER__SHUTDOWN_GRACE", "5s")
        .env("STREAMEDGE_SERVER__DRAIN_DELAY", "3s")
        .env("STREAMEDGE_SERVER__DRAIN_SPREAD", "3s")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("server.shutdown_grace"), "{err}");
}
