//! Malformed and oversized requests against a node process: each gets a clear answer and
//! the node keeps serving others. (Connection limits are in admission.rs; the WebSocket
//! frame limits in ws.rs; token, text and JWT rules in auth.rs and chat.rs.)

use streamedge_testkit as common;

use std::net::IpAddr;
use std::time::Duration;

use common::NodeProcess;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends `bytes` on a new connection and reads the answer (until the node closes or 3 s).
async fn exchange(node: &NodeProcess, bytes: &[u8]) -> String {
    let mut tcp = tokio::net::TcpStream::connect(node.api).await.unwrap();
    // The node may answer and close before everything is sent.
    let _ = tcp.write_all(bytes).await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), tcp.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).into_owned()
}

fn chunked_post(token: &str, chunks: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "POST /v1/streams HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    req.extend_from_slice(chunks);
    req
}

#[tokio::test]
async fn chunked_bodies_over_the_limits_or_malformed_get_413_or_400() {
    let node = NodeProcess::spawn(&[]);
    let seller = common::seller("seller-chunks");
    let body = br#"{"title":"fine"}"#;
    // A normal chunked body.
    let mut ok = format!("{:x}\r\n", body.len()).into_bytes();
    ok.extend_from_slice(body);
    ok.extend_from_slice(b"\r\n0\r\n\r\n");
    let a = exchange(&node, &chunked_post(&seller, &ok)).await;
    assert!(a.starts_with("HTTP/1.1 201"), "{a}");
    // A 20 KB body in chunks: over the 16 KiB body limit.
    let mut big = Vec::new();
    let filler = format!(r#"{{"title":"x","pad":"{}"}}"#, "a".repeat(20_000)).into_bytes();
    for part in filler.chunks(1000) {
        big.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        big.extend_from_slice(part);
        big.extend_from_slice(b"\r\n");
    }
    big.extend_from_slice(b"0\r\n\r\n");
    let a = exchange(&node, &chunked_post(&seller, &big)).await;
    assert!(a.starts_with("HTTP/1.1 413"), "{a}");
    assert!(a.contains("\"code\":\"payload_too_large\""), "{a}");
    // Chunk extensions of 20 KB and 100 KB (over hyper's 16 KiB).
    for n in [20_000, 100_000] {
        let mut ext = format!("{:x};x={}\r\n", body.len(), "e".repeat(n)).into_bytes();
        ext.extend_from_slice(body);
        ext.extend_from_slice(b"\r\n0\r\n\r\n");
        let a = exchange(&node, &chunked_post(&seller, &ext)).await;
        assert!(a.starts_with("HTTP/1.1 413"), "{n}: {a}");
        assert!(a.contains("\"code\":\"payload_too_large\""), "{a}");
    }
    // Broken chunk syntax.
    let a = exchange(&node, &chunked_post(&seller, b"zz\r\n{}\r\n0\r\n\r\n")).await;
    assert!(a.starts_with("HTTP/1.1 400"), "{a}");
    assert!(a.contains("\"code\":\"invalid_body\""), "{a}");
    // And the node still serves.
    let a = exchange(&node, &chunked_post(&seller, &ok)).await;
    assert!(a.starts_with("HTTP/1.1 201"), "{a}");
}

/// Unfinished request heads of 500 KB on 200 connections from many addresses: each is
/// answered 431 once it passes `server.max_request_head_bytes`, and a client is served
/// meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_unfinished_heads_get_431_and_others_are_served() {
    let node = NodeProcess::spawn(&[]);
    let mut tasks = Vec::new();
    for i in 0..200u8 {
        let api = node.api;
        tasks.push(tokio::spawn(async move {
            let from: IpAddr = format!("127.0.1.{}", 1 + i).parse().unwrap();
            let mut tcp = common::tcp_from(from, api).await;
            let _ = tcp
                .write_all(b"GET /v1/streams HTTP/1.1\r\nhost: t\r\nx-big: ")
                .await;
            let chunk = vec![b'a'; 16 * 1024];
            for _ in 0..31 {
                let w = tokio::time::timeout(Duration::from_secs(1), tcp.write_all(&chunk)).await;
                if !matches!(w, Ok(Ok(()))) {
                    break;
                }
            }
            let mut buf = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(15), tcp.read_to_end(&mut buf)).await;
            String::from_utf8_lossy(&buf).into_owned()
        }));
    }
    let seller = common::seller("seller-heads");
    let id = common::create_stream(&node.api_url("/v1/streams"), &seller).await;
    let (st, _) = common::get(&node.api_url(&format!("/v1/streams/{id}")), &seller).await;
    assert_eq!(st, 200);
    for t in tasks {
        let a = t.await.unwrap();
        // A head far over the limit gets hyper's bare 431 (docs/api.md).
        assert!(a.starts_with("HTTP/1.1 431"), "{a}");
    }
}

fn counter(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// After a burst of connections ends, the node asks its worker threads to give the freed
/// memory back (docs/operations.md, "Security"): 150 connections holding unfinished heads
/// open at once, then all closed, move `streamedge_memory_releases_total`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_is_released_after_a_burst_of_connections_closes() {
    let node = NodeProcess::spawn(&[]);
    let before = counter(&node.metrics().await, "streamedge_memory_releases_total");
    let mut held = Vec::new();
    for i in 0..150u8 {
        let from: IpAddr = format!("127.0.2.{}", 1 + i).parse().unwrap();
        let mut tcp = common::tcp_from(from, node.api).await;
        tcp.write_all(b"GET /v1/streams HTTP/1.1\r\nhost: t\r\nx-slow: ")
            .await
            .unwrap();
        held.push(tcp);
    }
    // Every connection is open at the node before they close (a request on a new
    // connection is answered after the node accepted the earlier ones).
    let (st, _) = common::get(&node.api_url("/v1/streams/not-a-uuid"), "").await;
    assert_eq!(st, 401);
    drop(held);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now = counter(&node.metrics().await, "streamedge_memory_releases_total");
        if now > before {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no memory release after 150 connections closed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
