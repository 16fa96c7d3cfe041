//! Admission control against node processes: one client IP cannot take every connection
//! (nor open them too fast), one user cannot hold more than their share of WebSockets
//! across the cluster, and behind a trusted proxy the forwarded client is the one limited —
//! while other clients keep being served. Clients play different IPs from 127.0.0.0/8.

use streamedge_testkit as common;

use std::net::IpAddr;
use std::time::Duration;

use common::NodeProcess;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn refused_count(metrics: &str, reason: &str) -> u64 {
    let prefix = format!("streamedge_admission_refused_total{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// Reads what the node answered on a raw connection within `limit` (empty if nothing).
async fn answer(tcp: &mut tokio::net::TcpStream, limit: Duration) -> String {
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(limit, tcp.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).into_owned()
}

/// A slow-header attack from one IP: the node holds `ip_connections` of them and answers
/// the rest `429 too_many_connections` at once; a client from another IP is served
/// throughout; the attacker's slots come back when its connections close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_ip_holds_at_most_its_connections_and_others_are_served() {
    let node = NodeProcess::spawn(&[
        ("STREAMEDGE_ADMISSION__IP_CONNECTIONS", "50".into()),
        ("STREAMEDGE_ADMISSION__IP_CONNECTS_PER_SEC", "0".into()),
    ]);
    let attacker = ip("127.0.0.3");
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..200 {
        let mut tcp = common::tcp_from(attacker, node.api).await;
        // An unfinished request head, as slowloris sends.
        tcp.write_all(b"GET /v1/streams HTTP/1.1\r\nhost: x\r\nx-a: ")
            .await
            .unwrap();
        held.push(tcp);
    }
    for tcp in held.iter_mut() {
        let a = answer(tcp, Duration::from_millis(20)).await;
        if !a.is_empty() {
            assert!(a.starts_with("HTTP/1.1 429 "), "{a}");
            assert!(a.contains("retry-after: 1"), "{a}");
            assert!(a.contains("\"code\":\"too_many_connections\""), "{a}");
            refused += 1;
        }
    }
    assert_eq!(
        refused, 150,
        "the node held more (or fewer) than 50 of the 200"
    );
    // Meanwhile another client is served, over HTTP and WebSocket.
    let seller = common::seller("seller-adm");
    let client = reqwest::Client::builder()
        .local_address(ip("127.0.0.2"))
        .build()
        .unwrap();
    let resp = client
        .post(node.api_url("/v1/streams"))
        .bearer_auth(&seller)
        .json(&serde_json::json!({"title": "during the attack"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let stream: serde_json::Value = resp.json().await.unwrap();
    let id = stream["id"].as_str().unwrap();
    let url = common::stream_ws_url(node.api, id, &common::buyer("fine"));
    let ws = common::ws_connect_from(ip("127.0.0.2"), node.api, &url, &[]).await;
    assert!(ws.is_ok(), "{:?}", ws.err());
    assert_eq!(refused_count(&node.metrics().await, "ip_connections"), 150);
    // The attacker's held connections close: its slots come back.
    drop(held);
    let back = common::eventually(Duration::from_secs(10), || async {
        let mut tcp = common::tcp_from(attacker, node.api).await;
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let a = answer(&mut tcp, Duration::from_secs(2)).await;
        a.starts_with("HTTP/1.1 404") || a.starts_with("HTTP/1.1 200")
    })
    .await;
    assert!(back, "the attacker's address never got a connection again");
}

/// Opening connections faster than the rate: the burst goes through, then
/// `429 connection_rate_limited` with `Retry-After`; another IP is not affected.
#[tokio::test]
async fn one_ip_opens_connections_at_most_at_its_rate() {
    let node = NodeProcess::spawn(&[
        ("STREAMEDGE_ADMISSION__IP_CONNECTS_PER_SEC", "2".into()),
        ("STREAMEDGE_ADMISSION__IP_CONNECTS_BURST", "10".into()),
    ]);
    let mut statuses = Vec::new();
    let started = std::time::Instant::now();
    for _ in 0..20 {
        let mut tcp = common::tcp_from(ip("127.0.0.4"), node.api).await;
        tcp.write_all(b"GET /v1/nothing HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let a = answer(&mut tcp, Duration::from_secs(2)).await;
        assert!(a.len() >= 12, "no status line: {a:?}");
        statuses.push(a[9..12].to_string());
        if a.starts_with("HTTP/1.1 429") {
            assert!(a.contains("\"code\":\"connection_rate_limited\""), "{a}");
            assert!(a.contains("retry-after: 1"), "{a}");
        }
    }
    let ok = statuses.iter().filter(|s| *s == "404").count();
    let limited = statuses.iter().filter(|s| *s == "429").count();
    // 10 at once, and what the rate (2/s) earned while the test ran.
    let earned = (started.elapsed().as_secs_f64() * 2.0).ceil() as usize;
    assert!(
        (10..=11 + earned).contains(&ok),
        "{statuses:?} in {:?}",
        started.elapsed()
    );
    assert_eq!(ok + limited, 20, "{statuses:?}");
    let mut tcp = common::tcp_from(ip("127.0.0.5"), node.api).await;
    tcp.write_all(b"GET /v1/nothing HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    assert!(answer(&mut tcp, Duration::from_secs(2))
        .await
        .starts_with("HTTP/1.1 404"));
    assert_eq!(
        refused_count(&node.metrics().await, "ip_rate") as usize,
        limited
    );
}

/// One user's stream WebSockets are counted across nodes sharing Redis: the one over
/// `admission.user_websockets` is refused wherever it lands; closing one makes room;
/// other users are not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_websockets_are_capped_across_the_cluster() {
    let mut env = common::redis_env();
    env.push(("STREAMEDGE_ADMISSION__USER_WEBSOCKETS", "3".into()));
    let a = NodeProcess::spawn(&env);
    let b = NodeProcess::spawn(&env);
    let stream = common::live_stream(&a.api_url(""), "seller-cap").await;
    let me = common::buyer("many-tabs");
    let on = |n: &NodeProcess| common::stream_ws_url(n.api, stream, &me);
    let local = ip("127.0.0.1");
    let first = common::ws_connect_from(local, a.api, &on(&a), &[])
        .await
        .unwrap();
    let _second = common::ws_connect_from(local, a.api, &on(&a), &[])
        .await
        .unwrap();
    let _third = common::ws_connect_from(local, b.api, &on(&b), &[])
        .await
        .unwrap();
    for node in [&a, &b] {
        let r = common::ws_connect_from(local, node.api, &on(node), &[])
            .await
            .expect_err("a fourth connection was admitted");
        assert_eq!(r.status, 429);
        assert_eq!(r.body["code"], "too_many_connections", "{:?}", r.body);
        assert_eq!(r.retry_after.as_deref(), Some("5"));
    }
    // Another user is not affected.
    let other = common::stream_ws_url(b.api, stream, &common::buyer("someone-else"));
    assert!(common::ws_connect_from(local, b.api, &other, &[])
        .await
        .is_ok());
    // Closing one makes room (on any node).
    drop(first);
    let room = common::eventually(Duration::from_secs(10), || async {
        match common::ws_connect_from(local, b.api, &on(&b), &[]).await {
            Ok(ws) => {
                std::mem::forget(ws);
                true
            }
            Err(_) => false,
        }
    })
    .await;
    assert!(room, "closing a connection never made room");
    assert!(refused_count(&b.metrics().await, "user_websockets") >= 1);
}

/// Behind a trusted proxy the TCP peer is the proxy: the listener does not limit it, and
/// the WebSocket upgrade counts the forwarded client's connections instead.
#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_is_limited() {
    let node = NodeProcess::spawn(&[
        (
            "STREAMEDGE_SERVER__TRUSTED_PROXIES",
            "[\"127.0.0.6\"]".into(),
        ),
        ("STREAMEDGE_ADMISSION__IP_CONNECTIONS", "2".into()),
    ]);
    let seller = common::seller("seller-proxy");
    let stream = common::create_stream(&node.api_url("/v1/streams"), &seller).await;
    let proxy = ip("127.0.0.6");
    let url = |user: &str| common::stream_ws_url(node.api, stream, &common::buyer(user));
    let xff = |client: &'static str| [("x-forwarded-for", client)];
    let mut held = Vec::new();
    for i in 0..2 {
        let ws =
            common::ws_connect_from(proxy, node.api, &url(&format!("p{i}")), &xff("203.0.113.9"))
                .await
                .unwrap();
        held.push(ws);
    }
    let r = common::ws_connect_from(proxy, node.api, &url("p2"), &xff("203.0.113.9"))
        .await
        .expect_err("a third connection of the forwarded client was admitted");
    assert_eq!(r.status, 429);
    assert_eq!(r.body["code"], "too_many_connections");
    // The proxy itself holds three connections now and opens more for other clients.
    for i in 0..3 {
        let ws = common::ws_connect_from(
            proxy,
            node.api,
            &url(&format!("q{i}")),
            &xff(["203.0.113.10", "203.0.113.11", "203.0.113.12"][i]),
        )
        .await;
        assert!(ws.is_ok(), "{:?}", ws.err());
        held.push(ws.unwrap());
    }
}
