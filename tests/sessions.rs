//! The session lifecycle over HTTP and WebSocket: transitions, idempotency, refusals,
//! summaries; racing commands on two nodes; timeouts enforced by a node that never saw
//! the seller.

use streamedge_testkit as common;

use std::time::Duration;

use common::{NodeProcess, TestNode};
use serde_json::Value;

const T: Duration = Duration::from_secs(10);

#[tokio::test]
async fn lifecycle_over_http_and_websocket() {
    let node = TestNode::start(common::test_config()).await;
    let api = format!("http://{}", node.api);
    let seller = common::seller("seller-1");
    let stream = node.new_stream().await.to_string();
    let mut ws = common::ws_connect(&node.ws_url(&stream.parse().unwrap())).await;
    let welcome = common::next_json(&mut ws, T).await;
    assert_eq!(
        (welcome["state"].as_str(), welcome["version"].as_u64()),
        (Some("idle"), Some(0))
    );
    // Wait until the node's hub for the stream is subscribed (its first viewers frame).
    common::next_of_type(&mut ws, "viewers", T).await;

    // A message before the session does not count towards it. (Chat goes through another
    // connection, so `ws` sees the state frames in order.)
    let mut chatter = common::ws_connect(&node.ws_url(&stream.parse().unwrap())).await;
    common::send_chat(&mut chatter, "pre", "early").await;
    common::next_of_type(&mut chatter, "ack", T).await;
    let (s, started) = common::session_action(&api, &stream, "start", &seller).await;
    assert_eq!(s, 200, "{started}");
    for id in ["c1", "c2"] {
        common::send_chat(&mut chatter, id, "hi").await;
        common::next_of_type(&mut chatter, "ack", T).await;
    }
    let session = started["stream"]["session"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(started["stream"]["state"], "live");
    assert_eq!(started["transition"]["kind"], "start");
    // Repeating start is a no-op returning the same session.
    let (s, again) = common::session_action(&api, &stream, "start", &seller).await;
    assert_eq!(s, 200);
    assert_eq!(again["stream"]["session"]["id"], session.as_str());
    assert!(again.get("transition").is_none());

    for (action, state) in [
        ("pause", "paused"),
        ("pause", "paused"),
        ("resume", "live"),
        ("heartbeat", "live"),
        ("end", "ended"),
        ("end", "ended"),
    ] {
        let (s, body) = common::session_action(&api, &stream, action, &seller).await;
        assert_eq!(
            (s, body["stream"]["state"].as_str()),
            (200, Some(state)),
            "{action}: {body}"
        );
    }
    // Subscribers saw each transition once, in order.
    let mut seen = Vec::new();
    for _ in 0..4 {
        let f = common::next_of_type(&mut ws, "state", T).await;
        assert_eq!(f["session_id"], session.as_str());
        seen.push((
            f["kind"].as_str().unwrap().to_string(),
            f["version"].as_u64().unwrap(),
        ));
    }
    assert_eq!(
        seen,
        vec![
            ("start".into(), 1),
            ("pause".into(), 2),
            ("resume".into(), 3),
            ("end".into(), 4)
        ]
    );

    // Impossible transitions: 409 with the current state.
    for action in ["pause", "resume", "heartbeat"] {
        let (s, body) = common::session_action(&api, &stream, action, &seller).await;
        assert_eq!(
            (s, body["code"].as_str(), body["state"].as_str()),
            (409, Some("invalid_transition"), Some("ended"))
        );
    }
    // The summary.
    let (s, sum) = common::get(
        &format!("{api}/v1/streams/{stream}/sessions/{session}"),
        &seller,
    )
    .await;
    assert_eq!(s, 200, "{sum}");
    assert_eq!(sum["state"], "ended");
    assert_eq!(sum["end_reason"], "seller");
    assert_eq!(sum["peak_viewers"], 1, "the WebSocket viewer");
    assert_eq!(sum["unique_viewers"], 1);
    assert_eq!(sum["chat_messages"], 2, "the two messages sent while live");
    let (d, l, p) = (
        sum["duration_ms"].as_u64().unwrap(),
        sum["live_ms"].as_u64().unwrap(),
        sum["paused_ms"].as_u64().unwrap(),
    );
    assert_eq!(d, l + p);
    // A new session after the end.
    let (s, restarted) = common::session_action(&api, &stream, "start", &seller).await;
    assert_eq!(s, 200);
    assert_ne!(restarted["stream"]["session"]["id"], session.as_str());
    assert_eq!(restarted["transition"]["version"], 5);
    // The old summary is still there.
    assert_eq!(
        common::get(
            &format!("{api}/v1/streams/{stream}/sessions/{session}"),
            &seller
        )
        .await
        .0,
        200
    );
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn refusals() {
    let node = TestNode::start(common::test_config()).await;
    let api = format!("http://{}", node.api);
    let stream = node.new_stream().await.to_string();
    let cases = [
        (
            stream.clone(),
            "start",
            common::buyer("b"),
            403,
            "not_owner",
        ),
        (
            stream.clone(),
            "start",
            common::seller("other-seller"),
            403,
            "not_owner",
        ),
        (
            uuid::Uuid::new_v4().to_string(),
            "start",
            common::seller("seller-1"),
            404,
            "stream_not_found",
        ),
        (
            "nope".into(),
            "start",
            common::seller("seller-1"),
            400,
            "invalid_stream_id",
        ),
        (
            stream.clone(),
            "explode",
            common::seller("seller-1"),
            404,
            "not_found",
        ),
        (
            stream.clone(),
            "pause",
            common::seller("seller-1"),
            409,
            "invalid_transition",
        ),
        (
            stream.clone(),
            "start",
            "garbage".into(),
            401,
            "token_malformed",
        ),
    ];
    for (id, action, token, status, code) in cases {
        let (s, body) = common::session_action(&api, &id, action, &token).await;
        assert_eq!(
            (s, body["code"].as_str().unwrap_or("")),
            (status, code),
            "{id} {action}: {body}"
        );
    }
    let seller = common::seller("seller-1");
    for (path, status, code) in [
        (
            format!("/v1/streams/{stream}/sessions/not-a-uuid"),
            400,
            "invalid_session_id",
        ),
        (
            format!("/v1/streams/{stream}/sessions/{}", uuid::Uuid::new_v4()),
            404,
            "session_not_found",
        ),
        (format!("/v1/streams/{stream}/viewers"), 200, ""),
        (
            format!("/v1/streams/{stream}/viewers?limit=0"),
            400,
            "invalid_query",
        ),
    ] {
        let (s, body) = common::get(&format!("{api}{path}"), &seller).await;
        assert_eq!(
            (s, body["code"].as_str().unwrap_or("")),
            (status, code),
            "{path}: {body}"
        );
    }
    let (s, body) = common::get(
        &format!("{api}/v1/streams/{stream}/viewers"),
        &common::buyer("b"),
    )
    .await;
    assert_eq!((s, body["code"].as_str()), (403, Some("not_owner")));
    node.shutdown().await.unwrap();
}

/// Collects `state` events from a WebSocket until `until` versions are seen or time runs out.
async fn collect_states(ws: &mut common::Ws, until: u64, limit: Duration) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut out = Vec::new();
    while out
        .last()
        .map_or(0, |f: &Value| f["version"].as_u64().unwrap())
        < until
    {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            break;
        }
        match tokio::time::timeout(left, common::next_json(ws, left)).await {
            // A `sync` (after the node's Redis link was lost) restates, it is no transition.
            Ok(f) if f["type"] == "state" && f["kind"] != "sync" => out.push(f),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_commands_on_two_nodes_end_in_a_serial_history() {
    let env = common::redis_env();
    let a = NodeProcess::spawn(&env);
    let b = NodeProcess::spawn(&env);
    let seller = common::seller("racer");
    let stream = common::create_stream(&a.api_url("/v1/streams"), &seller)
        .await
        .to_string();
    // An observer on each node.
    let viewer = common::buyer("watcher");
    let mut observers = Vec::new();
    for n in [&a, &b] {
        let mut ws = common::ws_connect(&common::stream_ws_url(n.api, &stream, &viewer)).await;
        common::next_json(&mut ws, T).await;
        common::next_of_type(&mut ws, "viewers", T).await;
        observers.push(ws);
    }
    let (s, _) = common::session_action(&a.api_url(""), &stream, "start", &seller).await;
    assert_eq!(s, 200);

    let actions = ["pause", "resume", "end"];
    let mut tasks = Vec::new();
    for i in 0..50 {
        let api = if i % 2 == 0 {
            a.api_url("")
        } else {
            b.api_url("")
        };
        let (stream, seller) = (stream.clone(), seller.clone());
        tasks.push(tokio::spawn(async move {
            common::session_action(&api, &stream, actions[i % 3], &seller).await
        }));
    }
    let mut made = Vec::new();
    for t in tasks {
        let (s, body) = t.await.unwrap();
        assert!(s == 200 || s == 409, "{s}: {body}");
        if let Some(t) = body.get("transition") {
            made.push(t["version"].as_u64().unwrap());
        }
    }
    // Every transition a request reports is unique.
    made.sort_unstable();
    let before = made.len();
    made.dedup();
    assert_eq!(before, made.len(), "a transition was reported twice");

    let (_, fin) = common::get(&a.api_url(&format!("/v1/streams/{stream}")), &viewer).await;
    let final_version = fin["version"].as_u64().unwrap();
    assert_eq!(
        final_version as usize,
        1 + made.len(),
        "start + the racing transitions"
    );
    for ws in &mut observers {
        let events = collect_states(ws, final_version, T).await;
        let versions: Vec<u64> = events
            .iter()
            .map(|e| e["version"].as_u64().unwrap())
            .collect();
        assert_eq!(
            versions,
            (1..=final_version).collect::<Vec<_>>(),
            "each event once, in order"
        );
        // The events chain: each starts where the previous ended, as a serial order would.
        for w in events.windows(2) {
            assert_eq!(w[0]["state"], w[1]["from"], "{} then {}", w[0], w[1]);
        }
        assert_eq!(events.last().unwrap()["state"], fin["state"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_never_saw_the_seller_pauses_then_ends_the_session() {
    let mut env = common::redis_env();
    env.extend([
        // Far above the 300 ms between heartbeats below, even on a stalled machine.
        ("STREAMEDGE_SESSION__HEARTBEAT_TIMEOUT", "3s".to_string()),
        ("STREAMEDGE_SESSION__PAUSE_TIMEOUT", "2s".to_string()),
        ("STREAMEDGE_SESSION__SWEEP_INTERVAL", "200ms".to_string()),
    ]);
    let mut a = NodeProcess::spawn(&env);
    let seller = common::seller("flaky");
    let stream = common::create_stream(&a.api_url("/v1/streams"), &seller)
        .await
        .to_string();
    assert_eq!(
        common::session_action(&a.api_url(""), &stream, "start", &seller)
            .await
            .0,
        200
    );
    for _ in 0..3 {
        assert_eq!(
            common::session_action(&a.api_url(""), &stream, "heartbeat", &seller)
                .await
                .0,
            200
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The only node that saw the seller dies.
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let b = NodeProcess::spawn(&env);
    let viewer = common::buyer("w");
    let mut ws = common::ws_connect(&common::stream_ws_url(b.api, &stream, &viewer)).await;
    let welcome = common::next_json(&mut ws, T).await;
    let from_version = welcome["version"].as_u64().unwrap();
    let events = collect_states(&mut ws, 3, Duration::from_secs(15)).await;
    let kinds: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| e["version"].as_u64().unwrap() > from_version)
        .map(|e| (e["kind"].as_str().unwrap(), e["cause"].as_str().unwrap()))
        .collect();
    // Version 2 is the auto-pause, 3 the auto-end; the observer sees those after its welcome.
    let expected = [
        ("auto_pause", "seller_disconnected"),
        ("auto_end", "pause_timeout"),
    ];
    let skip = (from_version.max(1) - 1) as usize;
    assert_eq!(
        kinds,
        expected[skip.min(2)..].to_vec(),
        "after version {from_version}"
    );
    let (_, fin) = common::get(&b.api_url(&format!("/v1/streams/{stream}")), &viewer).await;
    assert_eq!(fin["state"], "ended");
    assert_eq!(fin["version"], 3, "start, auto_pause, auto_end — each once");
    assert_eq!(fin["session"]["end_reason"], "pause_timeout");
}
