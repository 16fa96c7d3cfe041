//! The stream WebSocket endpoint: upgrade checks, admission, keepalive, frame handling and
//! limits, against a node running in-process.

use streamedge_testkit as common;

use std::time::Duration;

use common::{next_json, send_text, TestNode};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

const T: Duration = Duration::from_secs(5);

async fn raw_path(node: &TestNode) -> String {
    format!(
        "/v1/streams/{}/ws?access_token={}",
        node.new_stream().await,
        common::buyer("raw")
    )
}

#[tokio::test]
async fn welcome_then_ping_pong() {
    let node = TestNode::start(common::test_config()).await;
    let stream = node.new_stream().await;
    let mut ws = common::ws_connect(&node.ws_url(&stream)).await;
    let welcome = next_json(&mut ws, T).await;
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["stream"], stream.to_string());
    assert_eq!(welcome["protocol"], "streamedge.v1");
    send_text(&mut ws, r#"{"type":"ping","ref":"p1"}"#).await;
    let pong = next_json(&mut ws, T).await;
    assert_eq!(pong, serde_json::json!({"type": "pong", "ref": "p1"}));
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn websocket_pings_are_answered_and_a_client_close_is_answered_in_order() {
    let node = TestNode::start(common::test_config()).await;
    let mut ws = common::ws_connect(&node.ws_url(&node.new_stream().await)).await;
    next_json(&mut ws, T).await;
    // A protocol-level ping gets a pong with its payload, between application frames.
    send_text(&mut ws, r#"{"type":"ping","ref":"a"}"#).await;
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    send_text(&mut ws, r#"{"type":"ping","ref":"b"}"#).await;
    let mut got = Vec::new();
    while got.len() < 3 {
        match tokio::time::timeout(T, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            // The viewer count is broadcast on its own schedule; it is not part of the order.
            Message::Text(t) if t.contains(r#""type":"viewers""#) => {}
            Message::Text(t) => got.push(t.to_string()),
            Message::Pong(p) => got.push(format!("pong:{}", String::from_utf8_lossy(&p))),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        got,
        vec![
            r#"{"type":"pong","ref":"a"}"#.to_string(),
            "pong:are you there".to_string(),
            r#"{"type":"pong","ref":"b"}"#.to_string(),
        ]
    );
    // A client's close is answered with the same code, then the node hangs up.
    ws.send(Message::Close(Some(
        tokio_tungstenite::tungstenite::protocol::CloseFrame {
            code: 1000.into(),
            reason: "bye".into(),
        },
    )))
    .await
    .unwrap();
    let mut reply = None;
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(T, ws.next()).await {
        if let Message::Close(f) = msg {
            reply = f.map(|f| u16::from(f.code));
        }
    }
    assert_eq!(reply, Some(1000));
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn malformed_frames_get_error_frames_and_the_connection_stays_up() {
    let node = TestNode::start(common::test_config()).await;
    let mut ws = common::ws_connect(&node.ws_url(&node.new_stream().await)).await;
    next_json(&mut ws, T).await;
    for (frame, code) in [
        ("{not json", "invalid_json"),
        ("", "invalid_json"),
        ("[]", "invalid_frame"),
        ("{}", "missing_field"),
        (r#"{"type":42}"#, "invalid_field"),
        (r#"{"type":"warp","ref":"r9"}"#, "unknown_type"),
        (r#"{"type":"ping","ref":{"nested":true}}"#, "invalid_field"),
    ] {
        send_text(&mut ws, frame).await;
        let e = next_json(&mut ws, T).await;
        assert_eq!(e["type"], "error", "{frame}");
        assert_eq!(e["code"], code, "{frame}");
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    ws.send(Message::Binary(vec![0xff, 0x00, 0xfe].into()))
        .await
        .unwrap();
    let e = next_json(&mut ws, T).await;
    assert_eq!(e["code"], "binary_not_supported");
    // Still alive and answering.
    assert_eq!(common::ping(&mut ws, T).await["type"], "pong");
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn oversized_message_closes_with_1009() {
    let mut cfg = common::test_config();
    cfg.ws.max_message_size = 1024;
    let node = TestNode::start(cfg).await;
    let mut ws = common::ws_connect(&node.ws_url(&node.new_stream().await)).await;
    next_json(&mut ws, T).await;
    let big = format!(r#"{{"type":"ping","ref":"{}"}}"#, "x".repeat(4096));
    send_text(&mut ws, &big).await;
    assert_eq!(common::close_code(&mut ws, T).await, 1009);
    // Other connections are unaffected.
    let mut other = common::ws_connect(&node.ws_url(&node.new_stream().await)).await;
    next_json(&mut other, T).await;
    assert_eq!(common::ping(&mut other, T).await["type"], "pong");
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn idle_connection_is_closed_with_4001() {
    let mut cfg = common::test_config();
    cfg.ws.ping_interval = Duration::from_millis(200);
    cfg.ws.idle_timeout = Duration::from_millis(600);
    let node = TestNode::start(cfg).await;
    let mut ws = common::RawWs::connect(node.api, &raw_path(&node).await).await;
    // This client never answers the node's pings: the node must give up on it.
    assert_eq!(ws.read_until_close(T).await, Some(4001));
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn answering_pings_keeps_a_quiet_connection_open() {
    let mut cfg = common::test_config();
    // The idle timeout is generous against a stalled test thread (the node and this client
    // share it), and the reading lasts well past it.
    cfg.ws.ping_interval = Duration::from_millis(250);
    cfg.ws.idle_timeout = Duration::from_millis(1500);
    let node = TestNode::start(cfg).await;
    let mut ws = common::ws_connect(&node.ws_url(&node.new_stream().await)).await;
    next_json(&mut ws, T).await;
    // Read (and so auto-answer pings) for well past the idle timeout.
    let mut pings = 0;
    let until = tokio::time::Instant::now() + Duration::from_millis(3500);
    while let Ok(Some(msg)) = tokio::time::timeout_at(until, ws.next()).await {
        match msg.unwrap() {
            Message::Ping(_) => pings += 1,
            Message::Close(f) => panic!("closed while answering pings: {f:?}"),
            _ => {}
        }
    }
    assert!(pings >= 3, "expected keepalive pings, got {pings}");
    assert_eq!(common::ping(&mut ws, T).await["type"], "pong");
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn full_node_refuses_upgrades_with_503() {
    let mut cfg = common::test_config();
    cfg.ws.max_connections = 2;
    let node = TestNode::start(cfg).await;
    let stream = node.new_stream().await;
    let mut a = common::ws_connect(&node.ws_url(&stream)).await;
    let mut b = common::ws_connect(&node.ws_url(&stream)).await;
    next_json(&mut a, T).await;
    next_json(&mut b, T).await;
    match tokio_tungstenite::connect_async(node.ws_url(&stream)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 503);
            assert_eq!(resp.headers()["retry-after"], "1");
            assert_eq!(resp.headers()["content-type"], "application/problem+json");
            let body: serde_json::Value =
                serde_json::from_slice(resp.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["code"], "node_full");
        }
        other => panic!("expected 503, got {other:?}"),
    }
    // A slot frees when a client leaves.
    a.close(None).await.unwrap();
    drop(a);
    assert!(
        common::eventually(T, || async {
            tokio_tungstenite::connect_async(node.ws_url(&stream))
                .await
                .is_ok()
        })
        .await,
        "slot never freed"
    );
    node.shutdown().await.unwrap();
}

async fn upgrade_refused(url: &str) -> (u16, serde_json::Value) {
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = serde_json::from_slice(resp.body().as_deref().unwrap_or(b"null"))
                .unwrap_or(serde_json::Value::Null);
            (resp.status().as_u16(), body)
        }
        other => panic!("expected an HTTP refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_upgrade_requests_are_problem_json() {
    let node = TestNode::start(common::test_config()).await;
    let client = reqwest::Client::new();
    let stream = node.new_stream().await;
    let tok = common::buyer("b");
    // Not an upgrade.
    let r = client
        .get(node.api_url(&format!("/v1/streams/{stream}/ws")))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 426);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "websocket_required");
    // Malformed stream id, as an upgrade.
    let (status, body) = upgrade_refused(&format!(
        "ws://{}/v1/streams/not-a-uuid/ws?access_token={tok}",
        node.api
    ))
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_stream_id"))
    );
    // Unknown stream.
    let (status, body) = upgrade_refused(&format!(
        "ws://{}/v1/streams/{}/ws?access_token={tok}",
        node.api,
        Uuid::new_v4()
    ))
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("stream_not_found"))
    );
    // No token, a garbage token, an expired token.
    let base = format!("ws://{}/v1/streams/{stream}/ws", node.api);
    let (status, body) = upgrade_refused(&base).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("token_missing"))
    );
    let (status, body) = upgrade_refused(&format!("{base}?access_token=garbage")).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("token_malformed"))
    );
    // An oversized path segment is still just a bad id.
    let long = "a".repeat(5000);
    let r = client
        .get(node.api_url(&format!("/v1/streams/{long}/ws")))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn token_in_subprotocol_is_accepted_and_not_echoed() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let node = TestNode::start(common::test_config()).await;
    let stream = node.new_stream().await;
    let mut req = format!("ws://{}/v1/streams/{stream}/ws", node.api)
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "sec-websocket-protocol",
        format!("streamedge.v1, access_token.{}", common::buyer("sp"))
            .parse()
            .unwrap(),
    );
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.headers()["sec-websocket-protocol"], "streamedge.v1");
    assert_eq!(next_json(&mut ws, T).await["type"], "welcome");
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn invalid_utf8_text_frame_closes_with_1007() {
    let node = TestNode::start(common::test_config()).await;
    let mut ws = common::RawWs::connect(node.api, &raw_path(&node).await).await;
    ws.send_frame(0x1, b"{\"type\":\"ping\",\"ref\":\"\xff\xfe\"}", true)
        .await;
    assert_eq!(ws.read_until_close(T).await, Some(1007));
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn unmasked_client_frame_closes_with_1002() {
    let node = TestNode::start(common::test_config()).await;
    let mut ws = common::RawWs::connect(node.api, &raw_path(&node).await).await;
    ws.send_frame(0x1, br#"{"type":"ping"}"#, false).await;
    assert_eq!(ws.read_until_close(T).await, Some(1002));
    node.shutdown().await.unwrap();
}

/// Clients that vanish (their TCP connection dropped, no close frame) are not counted as
/// protocol errors: an alert on those must not fire for phones losing their network.
#[tokio::test]
async fn clients_that_drop_their_connection_are_not_protocol_errors() {
    let node = TestNode::start(common::test_config()).await;
    let stream = node.new_stream().await;
    for _ in 0..20 {
        let mut ws = common::ws_connect(&node.ws_url(&stream)).await;
        next_json(&mut ws, T).await;
        // Dropping the stream closes the socket without a close frame.
        drop(ws);
    }
    assert!(
        common::eventually(T, || async {
            node.metrics()
                .await
                .lines()
                .any(|l| l == "streamedge_ws_connections 0")
        })
        .await,
        "connections were not released"
    );
    // The counter is registered at zero (alerting counters are, for their rules); it must
    // stay there.
    let metrics = node.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l == r#"streamedge_ws_closed_total{reason="protocol_error"} 0"#),
        "{metrics}"
    );
    node.shutdown().await.unwrap();
}

/// A message may be split into frames, up to `ws.max_fragments`; endless empty
/// continuation frames (no bytes, so `ws.max_message_size` never trips) close the
/// connection with 1009, while other clients are served.
#[tokio::test]
async fn a_message_in_too_many_fragments_closes_with_1009() {
    let node = common::NodeProcess::spawn(&[("STREAMEDGE_WS__MAX_FRAGMENTS", "8".into())]);
    let stream = common::create_stream(&node.api_url("/v1/streams"), &common::seller("s")).await;
    let path = |u: &str| format!("/v1/streams/{stream}/ws?access_token={}", common::buyer(u));
    // Within the limit: a ping in 8 frames (7 fragments and the last), with a control
    // frame between them, is one message.
    let mut ok = common::RawWs::connect(node.api, &path("fine")).await;
    let text = br#"{"type":"ping","ref":"frag"}"#;
    let parts: Vec<&[u8]> = text.chunks(4).collect();
    assert_eq!(parts.len(), 7);
    ok.send_fragment(false, 0x1, parts[0], true).await;
    ok.send_frame(0x9, b"", true).await;
    for p in &parts[1..] {
        ok.send_fragment(false, 0x0, p, true).await;
    }
    ok.send_fragment(true, 0x0, b"", true).await;
    let pong = loop {
        let t = ok.next_text(T).await.expect("connection closed");
        if t.contains("pong") {
            break t;
        }
    };
    assert!(pong.contains("\"ref\":\"frag\""), "{pong}");
    // Over it: 1009 after the 9th frame of one message.
    let mut bad = common::RawWs::connect(node.api, &path("fragmenter")).await;
    bad.send_fragment(false, 0x1, b"{", true).await;
    for _ in 0..20 {
        bad.send_fragment(false, 0x0, b"", true).await;
    }
    assert_eq!(bad.read_until_close(T).await, Some(1009));
    // The other client is still served.
    ok.send_frame(0x1, br#"{"type":"ping","ref":"after"}"#, true)
        .await;
    let after = loop {
        let t = ok.next_text(T).await.expect("connection closed");
        if t.contains("pong") {
            break t;
        }
    };
    assert!(after.contains("after"), "{after}");
    assert!(
        common::eventually(T, || async {
            node.metrics()
                .await
                .lines()
                .any(|l| l == "streamedge_ws_closed_total{reason=\"too_many_fragments\"} 1")
        })
        .await
    );
}
