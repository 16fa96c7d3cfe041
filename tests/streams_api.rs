//! `POST /v1/streams`, `GET /v1/streams/{id}`, `GET /v1/streams`: ownership,
//! idempotent creation, browsing with cursors, and bad input.

use streamedge_testkit as common;

use common::TestNode;
use serde_json::{json, Value};

async fn post(
    node: &TestNode,
    token: Option<&str>,
    body: reqwest::Body,
    ctype: &str,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(node.api_url("/v1/streams"))
        .header("content-type", ctype)
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn post_json(node: &TestNode, token: &str, body: Value) -> (u16, Value) {
    post(
        node,
        Some(token),
        body.to_string().into(),
        "application/json",
    )
    .await
}

async fn get(node: &TestNode, token: &str, path: &str) -> (u16, Value) {
    common::get(&node.api_url(path), token).await
}

#[tokio::test]
async fn seller_creates_and_anyone_signed_in_reads() {
    let node = TestNode::start(common::test_config()).await;
    let (status, s) = post_json(
        &node,
        &common::seller("alice"),
        json!({"title": "  Drop #1  "}),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(s["title"], "Drop #1");
    assert_eq!(s["owner_id"], "alice");
    assert_eq!(s["state"], "idle");
    assert!(s["created_at"].as_str().unwrap().ends_with('Z'));
    let id = s["id"].as_str().unwrap();
    let (status, mut got) = get(&node, &common::buyer("bob"), &format!("/v1/streams/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(
        got.as_object_mut().unwrap().remove("viewers").unwrap(),
        json!({"current": 0, "peak": 0, "unique": 0})
    );
    assert_eq!(got, s);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn creation_with_a_client_id_is_idempotent() {
    let node = TestNode::start(common::test_config()).await;
    let id = uuid::Uuid::new_v4();
    let body = json!({"title": "Flash sale", "id": id});
    let (s1, first) = post_json(&node, &common::seller("alice"), body.clone()).await;
    let (s2, again) = post_json(&node, &common::seller("alice"), body.clone()).await;
    assert_eq!((s1, s2), (201, 200));
    assert_eq!(first, again);
    assert_eq!(first["id"], id.to_string());
    // Another seller cannot take the id.
    let (s3, e) = post_json(&node, &common::seller("mallory"), body).await;
    assert_eq!((s3, e["code"].as_str()), (409, Some("stream_id_taken")));
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_input_is_refused_with_stable_codes() {
    let node = TestNode::start(common::test_config()).await;
    let seller = common::seller("alice");
    let cases: Vec<(Option<&str>, reqwest::Body, &str, u16, &str)> = vec![
        (
            None,
            json!({"title":"x"}).to_string().into(),
            "application/json",
            401,
            "token_missing",
        ),
        (
            Some(&seller),
            "{not json".into(),
            "application/json",
            400,
            "invalid_json",
        ),
        (
            Some(&seller),
            json!({"title":"x"}).to_string().into(),
            "text/plain",
            415,
            "unsupported_media_type",
        ),
        (
            Some(&seller),
            json!({"title": 7}).to_string().into(),
            "application/json",
            400,
            "invalid_body",
        ),
        (
            Some(&seller),
            json!({}).to_string().into(),
            "application/json",
            400,
            "invalid_body",
        ),
        (
            Some(&seller),
            json!({"title":"x","extra":1}).to_string().into(),
            "application/json",
            400,
            "invalid_body",
        ),
        (
            Some(&seller),
            json!({"title":"x","id":"not-a-uuid"}).to_string().into(),
            "application/json",
            400,
            "invalid_body",
        ),
        (
            Some(&seller),
            json!({"title":"   "}).to_string().into(),
            "application/json",
            400,
            "invalid_title",
        ),
        (
            Some(&seller),
            json!({"title":"a\u{0000}b"}).to_string().into(),
            "application/json",
            400,
            "invalid_title",
        ),
        (
            Some(&seller),
            json!({"title":"x".repeat(121)}).to_string().into(),
            "application/json",
            400,
            "invalid_title",
        ),
        (
            Some(&seller),
            json!({"title":"x".repeat(20_000)}).to_string().into(),
            "application/json",
            413,
            "payload_too_large",
        ),
    ];
    for (token, body, ctype, status, code) in cases {
        let (s, b) = post(&node, token, body, ctype).await;
        assert_eq!((s, b["code"].as_str().unwrap_or("")), (status, code), "{b}");
        assert_eq!(b["status"], status);
    }
    // A buyer cannot create.
    let (s, b) = post_json(&node, &common::buyer("bob"), json!({"title":"x"})).await;
    assert_eq!((s, b["code"].as_str()), (403, Some("seller_required")));
    // `"id": null` is no id (what clients generated from the OpenAPI description send for
    // an unset optional field): the node picks one.
    let (s, b) = post_json(&node, &seller, json!({"title": "x", "id": null})).await;
    assert_eq!(s, 201, "{b}");
    assert!(b["id"].as_str().unwrap().parse::<uuid::Uuid>().is_ok());
    // Reads.
    let buyer = common::buyer("bob");
    for (path, status, code) in [
        ("/v1/streams/not-a-uuid", 400, "invalid_stream_id"),
        // Not UTF-8 once decoded: refused as problem+json like any other bad id.
        ("/v1/streams/%FF", 400, "invalid_stream_id"),
        ("/v1/streams/%C3%28/viewers", 400, "invalid_stream_id"),
        (
            &*format!("/v1/streams/{}", uuid::Uuid::new_v4()),
            404,
            "stream_not_found",
        ),
        ("/v1/streams?state=streaming", 400, "invalid_query"),
        ("/v1/streams?limit=0", 400, "invalid_query"),
        ("/v1/streams?limit=1000", 400, "invalid_query"),
        ("/v1/streams?limit=abc", 400, "invalid_query"),
        ("/v1/streams?cursor=%%%", 400, "invalid_cursor"),
        ("/v1/streams?cursor=bm9wZQ", 400, "invalid_cursor"),
        ("/v1/streams?bogus=1", 400, "invalid_query"),
    ] {
        let (s, b) = get(&node, &buyer, path).await;
        assert_eq!(
            (s, b["code"].as_str().unwrap_or("")),
            (status, code),
            "{path}: {b}"
        );
    }
    // An empty `state=` is no filter (docs/openapi.yaml lists it).
    let (s, b) = get(&node, &buyer, "/v1/streams?state=").await;
    assert_eq!(s, 200, "{b}");
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn browsing_pages_newest_first_without_gaps_or_repeats() {
    let mut cfg = common::test_config();
    cfg.rate_limit.enabled = false;
    let node = TestNode::start(cfg).await;
    let seller = common::seller("alice");
    let mut created = Vec::new();
    for i in 0..25 {
        let (s, b) = post_json(&node, &seller, json!({"title": format!("s{i}")})).await;
        assert_eq!(s, 201);
        created.push(b["id"].as_str().unwrap().to_string());
        // Distinct creation milliseconds keep the expected order unambiguous.
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let buyer = common::buyer("bob");
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/streams?state=idle&limit=10&cursor={c}"),
            None => "/v1/streams?state=idle&limit=10".to_string(),
        };
        let (s, page) = get(&node, &buyer, &path).await;
        assert_eq!(s, 200, "{page}");
        pages += 1;
        for st in page["streams"].as_array().unwrap() {
            assert_eq!(st["state"], "idle");
            seen.push(st["id"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    created.reverse();
    assert_eq!(seen, created);
    let (_, live) = get(&node, &buyer, "/v1/streams?state=live").await;
    assert!(live["streams"].as_array().unwrap().is_empty());
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let node = TestNode::start(common::test_config()).await;
    let seller = common::seller("seller-pipeline");
    let stream = common::create_stream(&node.api_url("/v1/streams"), &seller).await;
    let unknown = uuid::Uuid::new_v4();
    let mut tcp = tokio::net::TcpStream::connect(node.api).await.unwrap();
    // Three requests in one write: found, not found, found.
    let req = |id: &uuid::Uuid| {
        format!(
            "GET /v1/streams/{id} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {seller}\r\n\r\n"
        )
    };
    let all = format!("{}{}{}", req(&stream), req(&unknown), req(&stream));
    tcp.write_all(all.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let statuses = loop {
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), tcp.read(&mut buf))
            .await
            .expect("responses")
            .unwrap();
        assert!(
            n > 0,
            "connection closed early: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        let statuses: Vec<&str> = text
            .match_indices("HTTP/1.1 ")
            .map(|(i, _)| &text[i + 9..i + 12])
            .map(|s| match s {
                "200" => "200",
                "404" => "404",
                _ => "other",
            })
            .collect();
        // Each response's body is complete once the next one starts, or the last ends.
        if statuses.len() == 3 && text.ends_with('}') {
            break statuses;
        }
    };
    assert_eq!(statuses, vec!["200", "404", "200"]);
    // A malformed request line gets 400 and the connection closes (hyper's
    // pipeline_flush would otherwise keep the 400 to itself).
    let out = raw_exchange(node.api, b"NOT HTTP AT ALL\r\n\r\n").await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    // Too many header fields: 431, then the close.
    let mut req = String::from("GET /v1/streams HTTP/1.1\r\nHost: x\r\n");
    for i in 0..200 {
        req.push_str(&format!("X-Filler-{i}: y\r\n"));
    }
    req.push_str("\r\n");
    let out = raw_exchange(node.api, req.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 431"), "{out}");
    // A head over server.max_request_head_bytes (32 KiB): 431 as well, and a head just
    // under it is served. (A far larger head is cut off while the client is still writing
    // it: a 431, or a reset that loses it — either way nothing more is read.)
    for (filler, want) in [
        (200 * 1024, ""),
        (40 * 1024, "HTTP/1.1 431"),
        (20 * 1024, "HTTP/1.1 401"),
    ] {
        let req = format!(
            "GET /v1/streams HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
            "y".repeat(filler)
        );
        let out = raw_exchange(node.api, req.as_bytes()).await;
        assert!(
            out.starts_with(want)
                && (!want.is_empty() || out.is_empty() || out.starts_with("HTTP/1.1 431")),
            "{filler}: {out}"
        );
    }
    node.shutdown().await.unwrap();
}

/// Writes `bytes` on a fresh connection (the server may close it before all are written)
/// and reads everything it answers until it closes.
async fn raw_exchange(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = c.write_all(bytes).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), c.read_to_end(&mut out))
        .await
        .expect("an answer and a close");
    String::from_utf8_lossy(&out).into_owned()
}
