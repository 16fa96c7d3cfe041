//! Chat across nodes: ordered, gapless, exactly-once delivery on three node processes (on
//! one Redis and on a Redis Cluster);
//! resume after a disconnect; idempotent sends across nodes; history; malformed frames.

use streamedge_testkit as common;

use std::time::Duration;

use common::{NodeProcess, TestNode};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(15);

/// Joins `stream` as the buyer `user`; returns the socket and the welcome's `last_seq`.
async fn join(addr: std::net::SocketAddr, stream: &str, user: &str) -> (common::Ws, u64) {
    let (ws, welcome) = common::join_with(addr, stream, &common::buyer(user)).await;
    (ws, welcome["last_seq"].as_u64().unwrap())
}

/// Reads `message` frames until `n` were received (acks and others are collected apart).
async fn messages(ws: &mut common::Ws, n: usize) -> Vec<Value> {
    common::messages(ws, n, T).await
}

fn chat_env() -> Vec<(&'static str, String)> {
    let mut env = common::redis_env();
    env.push(("STREAMEDGE_CHAT__USER_PER_SEC", "0".into()));
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_thirty_clients_ten_senders_identical_gapless_order() {
    identical_gapless_order(chat_env()).await;
}

/// The same on a three-master Redis Cluster: the stream's log, counter, idempotency keys
/// and channel share its hash tag; pub/sub is sharded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_redis_cluster_three_nodes_thirty_clients_ten_senders_identical_gapless_order() {
    let mut env = common::redis_cluster_env();
    env.push(("STREAMEDGE_CHAT__USER_PER_SEC", "0".into()));
    identical_gapless_order(env).await;
}

/// 3 nodes, 30 clients, 10 of them sending 20 messages each: every client sees the same
/// gapless sequence, each sender's messages in its order, nothing twice.
async fn identical_gapless_order(env: Vec<(&'static str, String)>) {
    let nodes: Vec<NodeProcess> = (0..3).map(|_| NodeProcess::spawn(&env)).collect();
    let stream = common::create_stream(&nodes[0].api_url("/v1/streams"), &common::seller("s"))
        .await
        .to_string();
    let mut clients = Vec::new();
    for i in 0..30 {
        let (ws, _) = join(nodes[i % 3].api, &stream, &format!("user-{i}")).await;
        clients.push(ws);
    }
    // Let every node's hub subscribe (its first viewers push).
    for ws in clients.iter_mut().take(3) {
        common::next_of_type(ws, "viewers", T).await;
    }
    const PER_SENDER: usize = 20;
    let (senders, readers) = clients.split_at_mut(10);
    let sends = senders.iter_mut().enumerate().map(|(i, ws)| async move {
        for j in 0..PER_SENDER {
            common::send_chat(ws, &format!("m-{i}-{j}"), &format!("hello {i}/{j}")).await;
        }
        messages(ws, 10 * PER_SENDER).await
    });
    let reads = readers.iter_mut().map(|ws| messages(ws, 10 * PER_SENDER));
    let (sent_views, read_views) = tokio::join!(
        futures_util::future::join_all(sends),
        futures_util::future::join_all(reads)
    );
    let all: Vec<Vec<Value>> = sent_views.into_iter().chain(read_views).collect();
    let reference: Vec<(u64, String)> = all[0]
        .iter()
        .map(|m| {
            (
                m["seq"].as_u64().unwrap(),
                m["id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    // Gapless and in order.
    let first = reference[0].0;
    let seqs: Vec<u64> = reference.iter().map(|r| r.0).collect();
    assert_eq!(
        seqs,
        (first..first + 10 * PER_SENDER as u64).collect::<Vec<_>>()
    );
    // Every client saw exactly the same sequence.
    for (i, view) in all.iter().enumerate() {
        let v: Vec<(u64, String)> = view
            .iter()
            .map(|m| {
                (
                    m["seq"].as_u64().unwrap(),
                    m["id"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(v, reference, "client {i} saw a different sequence");
    }
    // Each sender's messages appear in the order it sent them.
    for i in 0..10 {
        let mine: Vec<String> = all[0]
            .iter()
            .filter(|m| m["user"] == format!("user-{i}"))
            .map(|m| m["body"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            mine,
            (0..PER_SENDER)
                .map(|j| format!("hello {i}/{j}"))
                .collect::<Vec<_>>()
        );
    }
    // Nothing more arrives (no duplicates).
    for ws in clients.iter_mut().take(5) {
        let extra = tokio::time::timeout(Duration::from_millis(300), async {
            loop {
                let f = common::next_json(ws, Duration::from_secs(5)).await;
                if f["type"] == "message" {
                    return f;
                }
            }
        })
        .await;
        assert!(extra.is_err(), "unexpected extra message {extra:?}");
    }
}

#[tokio::test]
async fn resume_delivers_exactly_what_was_missed_then_live() {
    let mut cfg = common::test_config();
    cfg.chat.user_per_sec = 0.0;
    let node = TestNode::start(cfg).await;
    let stream = node.new_stream().await.to_string();
    let (mut talker, _) = join(node.api, &stream, "talker").await;
    let (mut listener, _) = join(node.api, &stream, "listener").await;
    common::send_chat(&mut talker, "before", "before the drop").await;
    let seen = messages(&mut listener, 1).await;
    let last = seen[0]["seq"].as_u64().unwrap();
    drop(listener); // the phone drops off Wi-Fi
    for i in 0..200 {
        common::send_chat(&mut talker, &format!("gap-{i}"), &format!("missed {i}")).await;
    }
    messages(&mut talker, 201).await;
    let (mut back, _) = join(node.api, &stream, "listener").await;
    common::send_text(
        &mut back,
        &json!({"type": "resume", "since_seq": last, "ref": "r1"}).to_string(),
    )
    .await;
    let resumed = common::next_of_type(&mut back, "resumed", T).await;
    assert_eq!(resumed["recovered"], true);
    assert_eq!(resumed["since_seq"], last);
    assert_eq!(resumed["ref"], "r1");
    let missed = messages(&mut back, 200).await;
    let seqs: Vec<u64> = missed.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (last + 1..=last + 200).collect::<Vec<_>>());
    assert_eq!(missed[199]["body"], "missed 199");
    // Then the live feed, seamlessly.
    common::send_chat(&mut talker, "after", "live again").await;
    let live = messages(&mut back, 1).await;
    assert_eq!(live[0]["seq"], last + 201);
    assert_eq!(live[0]["body"], "live again");
    // Reconnecting with since_seq on the URL: welcome, resumed, exactly the missed
    // messages, then live — no live message ahead of the replay, none twice.
    let mark = last + 201;
    drop(back);
    for i in 0..30 {
        common::send_chat(
            &mut talker,
            &format!("gap2-{i}"),
            &format!("missed again {i}"),
        )
        .await;
    }
    messages(&mut talker, 30).await;
    let mut url_back = common::ws_connect(&format!(
        "ws://{}/v1/streams/{stream}/ws?since_seq={mark}&access_token={}",
        node.api,
        common::buyer("listener")
    ))
    .await;
    let first = common::next_json(&mut url_back, T).await;
    assert_eq!(first["type"], "welcome", "{first}");
    common::send_chat(&mut talker, "after2", "live once more").await;
    let mut kinds = Vec::new();
    let mut seqs = Vec::new();
    while seqs.len() < 31 {
        let f = common::next_json(&mut url_back, T).await;
        match f["type"].as_str() {
            Some("resumed") => {
                assert_eq!(f["recovered"], true);
                assert_eq!(f["since_seq"], mark);
                kinds.push("resumed");
            }
            Some("message") => {
                assert!(kinds.contains(&"resumed"), "a message before resumed: {f}");
                seqs.push(f["seq"].as_u64().unwrap());
            }
            _ => {}
        }
    }
    assert_eq!(seqs, (mark + 1..=mark + 31).collect::<Vec<_>>());
    // A since_seq that is not a number is refused before the upgrade.
    let r = reqwest::get(format!(
        "http://{}/v1/streams/{stream}/ws?since_seq=soon&access_token={}",
        node.api,
        common::buyer("listener")
    ))
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "invalid_query", "{body}");
    // Resuming from further back than history holds says so.
    let mut cfg = common::test_config();
    cfg.chat.history_size = 50;
    cfg.chat.user_per_sec = 0.0;
    let small = TestNode::start(cfg).await;
    let s2 = small.new_stream().await.to_string();
    let (mut t2, _) = join(small.api, &s2, "t2").await;
    for i in 0..80 {
        common::send_chat(&mut t2, &format!("x{i}"), "x").await;
    }
    messages(&mut t2, 80).await;
    common::send_text(
        &mut t2,
        &json!({"type": "resume", "since_seq": 3}).to_string(),
    )
    .await;
    let r = common::next_of_type(&mut t2, "resumed", T).await;
    assert_eq!(r["recovered"], false);
    let kept = messages(&mut t2, 50).await;
    assert_eq!(kept[0]["seq"], 31, "the oldest message history still holds");
    node.shutdown().await.unwrap();
    small.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_repeated_client_msg_id_is_one_message_even_across_nodes() {
    let (a, b) = TestNode::start_pair(common::redis_test_config()).await;
    let stream = a.new_stream().await.to_string();
    let (mut watcher, _) = join(b.api, &stream, "watcher").await;
    common::next_of_type(&mut watcher, "viewers", T).await;
    let (mut ws, _) = join(a.api, &stream, "retrier").await;
    common::send_chat(&mut ws, "once-1", "only once").await;
    common::send_chat(&mut ws, "once-1", "only once").await;
    let acks: Vec<Value> = {
        let mut v = Vec::new();
        while v.len() < 2 {
            let f = common::next_json(&mut ws, T).await;
            if f["type"] == "ack" {
                v.push(f);
            }
        }
        v
    };
    assert_eq!(acks[0]["seq"], acks[1]["seq"]);
    drop(ws);
    // Reconnect to the other node and retry.
    let (mut ws, _) = join(b.api, &stream, "retrier").await;
    common::send_chat(&mut ws, "once-1", "only once").await;
    let ack = common::next_of_type(&mut ws, "ack", T).await;
    assert_eq!(ack["seq"], acks[0]["seq"]);
    assert_eq!(ack["client_msg_id"], "once-1");
    let got = messages(&mut watcher, 1).await;
    assert_eq!(got[0]["seq"], acks[0]["seq"]);
    let extra = tokio::time::timeout(Duration::from_millis(500), messages(&mut watcher, 1)).await;
    assert!(extra.is_err(), "published twice: {extra:?}");
    // History holds it once.
    let page = common::get_json(
        &format!("http://{}/v1/streams/{stream}/messages", a.api),
        &common::buyer("x"),
    )
    .await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 1);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn malformed_and_refused_sends_get_error_frames_and_the_connection_stays_up() {
    let mut cfg = common::test_config();
    cfg.chat.user_per_sec = 0.5;
    cfg.chat.user_burst = 3;
    let node = TestNode::start(cfg).await;
    let stream = node.new_stream().await.to_string();
    let (mut ws, _) = join(node.api, &stream, "sender").await;
    let long = "x".repeat(501);
    for (frame, code) in [
        (json!({"type": "send", "body": "hi"}), "missing_field"),
        (
            json!({"type": "send", "client_msg_id": "a"}),
            "missing_field",
        ),
        (
            json!({"type": "send", "client_msg_id": 5, "body": "hi"}),
            "invalid_field",
        ),
        (
            json!({"type": "send", "client_msg_id": "a", "body": ["x"]}),
            "invalid_field",
        ),
        (
            json!({"type": "send", "client_msg_id": "has space", "body": "hi"}),
            "invalid_field",
        ),
        (
            json!({"type": "send", "client_msg_id": "a", "body": "   "}),
            "empty_body",
        ),
        (
            json!({"type": "send", "client_msg_id": "a", "body": long}),
            "body_too_long",
        ),
        (
            json!({"type": "send", "client_msg_id": "a", "body": "bell\u{7}"}),
            "invalid_body",
        ),
        // The text rule (docs/api.md): something visible, nothing that hides or reorders.
        (
            json!({"type": "send", "client_msg_id": "a", "body": "\u{200B}\u{FEFF}"}),
            "empty_body",
        ),
        (
            json!({"type": "send", "client_msg_id": "a", "body": "\u{3164}"}),
            "empty_body",
        ),
        (
            json!({"type": "send", "client_msg_id": "a", "body": "line\u{2028}break"}),
            "invalid_body",
        ),
        (
            json!({"type": "send", "client_msg_id": "a", "body": "tag\u{E0041}ged"}),
            "invalid_body",
        ),
        (json!({"type": "resume"}), "missing_field"),
        (json!({"type": "resume", "since_seq": -1}), "invalid_field"),
        (json!({"type": "resume", "since_seq": "7"}), "invalid_field"),
    ] {
        common::send_text(&mut ws, &frame.to_string()).await;
        let e = common::next_json(&mut ws, T).await;
        assert_eq!(
            (e["type"].as_str(), e["code"].as_str()),
            (Some("error"), Some(code)),
            "{frame}"
        );
    }
    // Rate limit: 3 at once, then refused.
    for i in 0..3 {
        common::send_chat(&mut ws, &format!("ok-{i}"), "fine").await;
        assert_eq!(
            common::next_of_type(&mut ws, "ack", T).await["client_msg_id"],
            format!("ok-{i}")
        );
    }
    common::send_chat(&mut ws, "too-fast", "whoa").await;
    let e = common::next_of_type(&mut ws, "error", T).await;
    assert_eq!(
        (e["code"].as_str(), e["ref"].as_str()),
        (Some("rate_limited"), Some("too-fast"))
    );
    // Still up.
    common::send_text(&mut ws, r#"{"type":"ping"}"#).await;
    assert_eq!(
        common::next_of_type(&mut ws, "pong", T).await["type"],
        "pong"
    );
    // An anonymous viewer may watch but not chat.
    node.shutdown().await.unwrap();
    let mut cfg = common::test_config();
    cfg.auth.allow_anonymous_viewers = true;
    let node = TestNode::start(cfg).await;
    let stream = node.new_stream().await.to_string();
    let anon = common::token_with(
        "anon",
        streamedge::auth::Role::Buyer,
        Duration::from_secs(600),
        true,
    );
    let mut ws = common::ws_connect(&common::stream_ws_url(node.api, &stream, &anon)).await;
    common::next_json(&mut ws, T).await;
    common::send_chat(&mut ws, "a1", "hello").await;
    assert_eq!(
        common::next_of_type(&mut ws, "error", T).await["code"],
        "forbidden"
    );
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn history_pages_backwards() {
    let mut cfg = common::test_config();
    cfg.chat.user_per_sec = 0.0;
    let node = TestNode::start(cfg).await;
    let stream = node.new_stream().await.to_string();
    let (mut ws, _) = join(node.api, &stream, "writer").await;
    for i in 1..=25 {
        common::send_chat(&mut ws, &format!("h{i}"), &format!("msg {i}")).await;
    }
    messages(&mut ws, 25).await;
    let token = common::buyer("reader");
    let mut seen = Vec::new();
    let mut before = String::new();
    loop {
        let page = common::get_json(
            &format!(
                "http://{}/v1/streams/{stream}/messages?limit=10{before}",
                node.api
            ),
            &token,
        )
        .await;
        for m in page["messages"].as_array().unwrap() {
            assert!(m.get("client_msg_id").is_none());
            seen.push(m["seq"].as_u64().unwrap());
        }
        match page["next_before_seq"].as_u64() {
            Some(b) => before = format!("&before_seq={b}"),
            None => break,
        }
    }
    assert_eq!(seen, (1..=25).rev().collect::<Vec<_>>());
    for (q, code) in [
        ("?limit=0", "invalid_query"),
        ("?before_seq=-3", "invalid_query"),
        ("?x=1", "invalid_query"),
    ] {
        let (status, b) = common::get(
            &format!("http://{}/v1/streams/{stream}/messages{q}", node.api),
            &token,
        )
        .await;
        assert_eq!(status, 400);
        assert_eq!(b["code"], code);
    }
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn moderation_ban_on_one_node_stops_sends_on_another_and_deletes_reach_everyone() {
    let mut cfg = common::redis_test_config();
    cfg.chat.user_per_sec = 0.0;
    let (a, b) = TestNode::start_pair(cfg).await;
    let stream = a.new_stream().await.to_string();
    let seller = common::seller("seller-1");
    let (mut troll, _) = join(b.api, &stream, "troll").await;
    let (mut fan, _) = join(a.api, &stream, "fan").await;
    common::next_of_type(&mut fan, "viewers", T).await;
    common::send_chat(&mut troll, "t1", "spam").await;
    let spam = messages(&mut fan, 1).await;
    let spam_seq = spam[0]["seq"].as_u64().unwrap();

    // Ban through node A; the troll is on node B.
    let base = format!("http://{}/v1/streams/{stream}", a.api);
    let (s, v) = common::put(&format!("{base}/bans/troll"), &seller).await;
    assert_eq!((s, v["user_id"].as_str()), (200, Some("troll")));
    common::send_chat(&mut troll, "t2", "more spam").await;
    let e = common::next_of_type(&mut troll, "error", T).await;
    assert_eq!(
        (e["code"].as_str(), e["ref"].as_str()),
        (Some("banned"), Some("t2"))
    );
    // Lifted; then a 3-second timeout that expires by itself.
    assert_eq!(
        common::delete(&format!("{base}/bans/troll"), &seller)
            .await
            .0,
        204
    );
    common::send_chat(&mut troll, "t3", "sorry").await;
    assert_eq!(
        common::next_of_type(&mut troll, "ack", T).await["client_msg_id"],
        "t3"
    );
    let (s, v) = common::call(
        reqwest::Method::PUT,
        &format!("{base}/bans/troll"),
        &seller,
        // Long enough that the next message arrives inside it even on a stalled machine.
        Some(json!({"duration_secs": 3})),
    )
    .await;
    assert_eq!((s, v["expires_in_secs"].as_u64()), (200, Some(3)));
    common::send_chat(&mut troll, "t4", "x").await;
    assert_eq!(
        common::next_of_type(&mut troll, "error", T).await["code"],
        "banned"
    );
    tokio::time::sleep(Duration::from_millis(3200)).await;
    common::send_chat(&mut troll, "t5", "back").await;
    assert_eq!(
        common::next_of_type(&mut troll, "ack", T).await["client_msg_id"],
        "t5"
    );

    // Delete the spam: everyone is told, and history and resumes no longer have it.
    assert_eq!(
        common::delete(&format!("{base}/messages/{spam_seq}"), &seller)
            .await
            .0,
        204
    );
    let d = common::next_of_type(&mut fan, "deleted", T).await;
    assert_eq!(d["seq"], spam_seq);
    let d = common::next_of_type(&mut troll, "deleted", T).await;
    assert_eq!(d["seq"], spam_seq);
    let (_, hist) = common::get(&format!("{base}/messages"), &seller).await;
    let seqs: Vec<u64> = hist["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert!(!seqs.contains(&spam_seq), "{seqs:?}");
    common::send_text(
        &mut fan,
        &json!({"type": "resume", "since_seq": 0}).to_string(),
    )
    .await;
    common::next_of_type(&mut fan, "resumed", T).await;
    let replay = messages(&mut fan, seqs.len()).await;
    assert!(replay.iter().all(|m| m["seq"] != spam_seq));

    // Refusals.
    for (method, url, token, body, status, code) in [
        (
            reqwest::Method::DELETE,
            format!("{base}/messages/{spam_seq}"),
            seller.clone(),
            None,
            404,
            "message_not_found",
        ),
        (
            reqwest::Method::DELETE,
            format!("{base}/messages/abc"),
            seller.clone(),
            None,
            400,
            "invalid_seq",
        ),
        (
            reqwest::Method::DELETE,
            format!("{base}/messages/1"),
            common::buyer("fan"),
            None,
            403,
            "not_owner",
        ),
        (
            reqwest::Method::PUT,
            format!("{base}/bans/x"),
            common::buyer("fan"),
            None,
            403,
            "not_owner",
        ),
        (
            reqwest::Method::PUT,
            format!("{base}/bans/x"),
            seller.clone(),
            Some(json!({"duration_secs": 0})),
            400,
            "invalid_body",
        ),
        (
            reqwest::Method::PUT,
            format!("{base}/bans/x"),
            seller.clone(),
            Some(json!({"forever": true})),
            400,
            "invalid_body",
        ),
        (
            reqwest::Method::PUT,
            format!("{base}/bans/seller-1"),
            seller.clone(),
            None,
            400,
            "invalid_user_id",
        ),
        (
            reqwest::Method::DELETE,
            format!("{base}/bans/nobody"),
            seller.clone(),
            None,
            404,
            "ban_not_found",
        ),
        (
            reqwest::Method::PUT,
            format!("{base}/chat-settings"),
            seller.clone(),
            Some(json!({"slow_mode_secs": 99999})),
            400,
            "invalid_body",
        ),
    ] {
        let (s, v) = common::call(method, &url, &token, body).await;
        assert_eq!(
            (s, v["code"].as_str().unwrap_or("")),
            (status, code),
            "{url}: {v}"
        );
    }
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn moderation_requests_are_read_as_the_openapi_description_says() {
    let node = TestNode::start(common::test_config()).await;
    let stream = node.new_stream().await;
    let seller = common::seller("seller-1");
    let base = node.api_url(&format!("/v1/streams/{stream}"));
    // Integer fields take any JSON number without a fraction, as JSON Schema's `integer`
    // does (`600.0` from encoders that write every number as a float); `null` is absent.
    for (body, status, expires) in [
        (json!({"duration_secs": 600.0}), 200, Some(600)),
        (json!({"duration_secs": 4439.0}), 200, Some(4439)),
        (json!({"duration_secs": null}), 200, None),
        (json!({}), 200, None),
        (json!({"duration_secs": 600.5}), 400, None),
        (json!({"duration_secs": -1.0}), 400, None),
        (json!({"duration_secs": "600"}), 400, None),
    ] {
        let (s, v) = common::call(
            reqwest::Method::PUT,
            &format!("{base}/bans/troll"),
            &seller,
            Some(body.clone()),
        )
        .await;
        assert_eq!(s, status, "{body}: {v}");
        if s == 200 {
            assert_eq!(v["expires_in_secs"].as_u64(), expires, "{body}: {v}");
        } else {
            assert_eq!(v["code"], "invalid_body", "{body}: {v}");
        }
    }
    let (s, v) = common::call(
        reqwest::Method::PUT,
        &format!("{base}/chat-settings"),
        &seller,
        Some(json!({"slow_mode_secs": 5.0})),
    )
    .await;
    assert_eq!((s, v), (200, json!({"slow_mode_secs": 5})));
    // `seq` is a positive integer; a path segment that is not UTF-8 once decoded is refused
    // as the parameter it stands for, as problem+json.
    for (method, path, code) in [
        (reqwest::Method::DELETE, "messages/0", "invalid_seq"),
        (reqwest::Method::DELETE, "messages/%FF", "invalid_seq"),
        (reqwest::Method::PUT, "bans/%FF", "invalid_user_id"),
        (reqwest::Method::DELETE, "bans/%C3%28", "invalid_user_id"),
    ] {
        let r = reqwest::Client::new()
            .request(method, format!("{base}/{path}"))
            .bearer_auth(&seller)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{path}");
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["code"], code, "{path}: {v}");
    }
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn slow_mode_spaces_out_each_users_messages() {
    let mut cfg = common::test_config();
    cfg.chat.user_per_sec = 0.0;
    let node = TestNode::start(cfg).await;
    let stream = node.new_stream().await.to_string();
    let seller = common::seller("seller-1");
    let (s, _) = common::call(
        reqwest::Method::PUT,
        &format!("http://{}/v1/streams/{stream}/chat-settings", node.api),
        &seller,
        // Long enough that the second message arrives inside it even on a stalled machine.
        Some(json!({"slow_mode_secs": 3})),
    )
    .await;
    assert_eq!(s, 200);
    let (mut ws, _) = join(node.api, &stream, "chatty").await;
    common::send_chat(&mut ws, "s1", "one").await;
    assert_eq!(
        common::next_of_type(&mut ws, "ack", T).await["client_msg_id"],
        "s1"
    );
    common::send_chat(&mut ws, "s2", "two").await;
    assert_eq!(
        common::next_of_type(&mut ws, "error", T).await["code"],
        "slow_mode"
    );
    let (mut other, _) = join(node.api, &stream, "other").await;
    common::send_chat(&mut other, "o1", "mine").await;
    assert_eq!(
        common::next_of_type(&mut other, "ack", T).await["client_msg_id"],
        "o1"
    );
    tokio::time::sleep(Duration::from_millis(3100)).await;
    common::send_chat(&mut ws, "s3", "three").await;
    assert_eq!(
        common::next_of_type(&mut ws, "ack", T).await["client_msg_id"],
        "s3"
    );
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_with_4002_and_others_keep_receiving() {
    let mut cfg = common::test_config();
    cfg.chat.user_per_sec = 0.0;
    cfg.ws.send_queue_bytes = 64 * 1024;
    let node = TestNode::start(cfg).await;
    let stream = node.new_stream().await.to_string();
    // The slow client: handshake, then never reads again.
    let mut slow = common::RawWs::connect_with_recv_buffer(
        node.api,
        &format!(
            "/v1/streams/{stream}/ws?access_token={}",
            common::buyer("slow")
        ),
        Some(16 * 1024),
    )
    .await;
    // The fast client sends rounds of 50 messages and reads each round (its acks and the
    // messages) before the next, as a real client keeps up; only the client that stopped
    // reading falls behind. Up to ~15 MB: more than a loopback socket's kernel buffers.
    let (mut fast, _) = join(node.api, &stream, "fast").await;
    let body = "y".repeat(480);
    let mut next_seq = 1u64;
    let mut closed = false;
    for round in 0..600 {
        for i in 0..50 {
            common::send_chat(&mut fast, &format!("b{round}-{i}"), &body).await;
        }
        let got = messages(&mut fast, 50).await;
        for m in got {
            assert_eq!(m["seq"], next_seq, "the fast client misses nothing");
            next_seq += 1;
        }
        let metrics = node.metrics().await;
        if metrics.contains(r#"streamedge_ws_closed_total{reason="slow_consumer"} 1"#) {
            closed = true;
            break;
        }
    }
    assert!(closed, "the slow client was never closed");
    // It was the client that stopped reading (the node hung up on it: it sees the 4002
    // close frame, or the end of the stream when the frame could not be written); the
    // fast one still works.
    let gone = common::eventually(Duration::from_secs(20), || async {
        let m = node.metrics().await;
        m.lines().any(|l| l == "streamedge_ws_connections 1")
    })
    .await;
    assert!(gone, "the slow connection is still open on the node");
    let end = slow.read_until_close(Duration::from_secs(20)).await;
    assert!(matches!(end, Some(4002) | None), "{end:?}");
    common::send_chat(&mut fast, "still-here", "ok").await;
    assert_eq!(
        common::next_of_type(&mut fast, "ack", T).await["client_msg_id"],
        "still-here"
    );
    eprintln!("slow consumer closed after {} messages", next_seq - 1);
    node.shutdown().await.unwrap();
}
