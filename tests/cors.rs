//! Browser pages and the API: CORS on the REST routes and the stream WebSocket's `Origin`
//! check (`server.cors_origins`), and the development login (`auth.dev_login`).

use streamedge_testkit as common;

use std::net::SocketAddr;
use std::time::Duration;

use common::TestNode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SHOP: &str = "https://shop.example.com";

async fn node(origins: &[&str], dev_login: bool) -> TestNode {
    let mut c = common::test_config();
    c.server.cors_origins = origins.iter().map(|o| o.to_string()).collect();
    c.auth.dev_login = dev_login;
    TestNode::start(c).await
}

/// A raw HTTP/1.1 exchange; returns the response head.
async fn exchange(addr: SocketAddr, request: String) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
            .await
            .expect("answer")
            .unwrap();
        got.extend_from_slice(&buf[..n]);
        if n == 0 || got.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    String::from_utf8_lossy(&got).to_lowercase()
}

/// A WebSocket upgrade to `stream`'s socket with `origin` (if any); returns the status line
/// and head.
async fn upgrade(node: &TestNode, stream: uuid::Uuid, origin: Option<&str>, token: &str) -> String {
    let origin = origin.map_or(String::new(), |o| format!("Origin: {o}\r\n"));
    exchange(
        node.api,
        format!(
            "GET /v1/streams/{stream}/ws HTTP/1.1\r\nHost: {}\r\n{origin}Upgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Protocol: streamedge.v1, access_token.{token}\r\n\r\n",
            node.api
        ),
    )
    .await
}

fn preflight(node: &TestNode, path: &str, origin: &str) -> String {
    format!(
        "OPTIONS {path} HTTP/1.1\r\nHost: {}\r\nOrigin: {origin}\r\n\
         Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: authorization, content-type\r\n\r\n",
        node.api
    )
}

#[tokio::test]
async fn a_listed_origin_may_call_the_api_and_open_the_websocket() {
    let node = node(&[SHOP], false).await;
    // The preflight needs no token and names what the page may send.
    let head = exchange(node.api, preflight(&node, "/v1/streams", SHOP)).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains(&format!("access-control-allow-origin: {SHOP}")),
        "{head}"
    );
    assert!(
        head.contains("access-control-allow-headers: authorization,content-type"),
        "{head}"
    );
    assert!(head.contains("access-control-max-age: 600"), "{head}");
    // The answer itself carries the origin and exposes Retry-After and the request id.
    let seller = common::seller("cors-seller");
    let r = reqwest::Client::new()
        .post(node.api_url("/v1/streams"))
        .header("origin", SHOP)
        .bearer_auth(&seller)
        .json(&json!({"title": "cors"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["access-control-allow-origin"], SHOP);
    assert!(r.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .contains("retry-after"));
    let stream: Value = r.json().await.unwrap();
    let stream: uuid::Uuid = stream["id"].as_str().unwrap().parse().unwrap();
    let buyer = common::buyer("cors-buyer");
    let head = upgrade(&node, stream, Some(SHOP), &buyer).await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    // Another page is refused before authentication, with a stable code.
    let head = upgrade(&node, stream, Some("https://evil.example"), &buyer).await;
    assert!(head.starts_with("http/1.1 403"), "{head}");
    let head = upgrade(&node, stream, Some("https://evil.example"), "not-a-token").await;
    assert!(head.starts_with("http/1.1 403"), "{head}");
    let head = exchange(
        node.api,
        preflight(&node, "/v1/streams", "https://evil.example"),
    )
    .await;
    assert!(!head.contains("access-control-allow-origin"), "{head}");
}

#[tokio::test]
async fn without_origins_only_the_nodes_own_pages_and_non_browsers_get_through() {
    let node = node(&[], false).await;
    let stream = node.new_stream().await;
    let buyer = common::buyer("cors-buyer");
    let head = exchange(node.api, preflight(&node, "/v1/streams", SHOP)).await;
    assert!(!head.contains("access-control-allow-origin"), "{head}");
    let head = upgrade(&node, stream, Some(SHOP), &buyer).await;
    assert!(head.starts_with("http/1.1 403"), "{head}");
    // The body says why.
    let r = reqwest::Client::new()
        .get(node.api_url(&format!("/v1/streams/{stream}/ws")))
        .header("origin", SHOP)
        .header("upgrade", "websocket")
        .header("connection", "upgrade")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .bearer_auth(&buyer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "origin_not_allowed");
    // No Origin (an app, a server) and the node's own origin pass.
    let head = upgrade(&node, stream, None, &buyer).await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    let own = format!("http://{}", node.api);
    let head = upgrade(&node, stream, Some(&own), &buyer).await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
}

#[tokio::test]
async fn the_development_login_exists_only_when_turned_on() {
    let off = node(&[], false).await;
    let (st, body) = common::call(
        reqwest::Method::POST,
        &off.api_url("/v1/dev/login"),
        "",
        Some(json!({"user_id": "alice", "role": "seller"})),
    )
    .await;
    assert_eq!(st, 404, "{body}");

    let on = node(&[], true).await;
    let url = on.api_url("/v1/dev/login");
    let (st, body) = common::call(
        reqwest::Method::POST,
        &url,
        "",
        Some(json!({"user_id": "alice", "role": "seller"})),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["role"], "seller");
    assert_eq!(body["expires_in"], 3600);
    // The token is a seller's.
    let token = body["access_token"].as_str().unwrap();
    common::create_stream(&on.api_url("/v1/streams"), token).await;
    // A buyer by default.
    let (st, body) = common::call(
        reqwest::Method::POST,
        &url,
        "",
        Some(json!({"user_id": "bob"})),
    )
    .await;
    assert_eq!((st, body["role"].as_str()), (200, Some("buyer")));
    // Bad input: a clear code each.
    for (input, code) in [
        (json!({"user_id": "alice", "role": "admin"}), "invalid_role"),
        (json!({"user_id": "\u{200b}"}), "invalid_user_id"),
        (json!({"user_id": "a".repeat(129)}), "invalid_user_id"),
        (json!({"role": "seller"}), "invalid_body"),
        (json!({"user_id": "alice", "admin": true}), "invalid_body"),
    ] {
        let (st, body) = common::call(reqwest::Method::POST, &url, "", Some(input.clone())).await;
        assert_eq!(
            (st, body["code"].as_str()),
            (400, Some(code)),
            "{input}: {body}"
        );
    }
    let big = json!({"user_id": "x".repeat(20_000)});
    let (st, body) = common::call(reqwest::Method::POST, &url, "", Some(big)).await;
    assert_eq!(st, 413, "{body}");
    let r = reqwest::Client::new().get(&url).send().await.unwrap();
    assert_eq!(r.status(), 405);
}

#[tokio::test]
async fn the_console_is_served_only_when_enabled() {
    let off = node(&[], false).await;
    let r = reqwest::get(off.api_url("/")).await.unwrap();
    assert_eq!(r.status(), 404);
    let mut c = common::test_config();
    c.console.enabled = true;
    let on = TestNode::start(c).await;
    for (path, kind) in [
        ("/", "text/html"),
        ("/console/app.js", "text/javascript"),
        ("/console/app.css", "text/css"),
        ("/console/streamedge.js", "text/javascript"),
    ] {
        let r = reqwest::get(on.api_url(path)).await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers().clone();
        assert!(
            h["content-type"].to_str().unwrap().starts_with(kind),
            "{path}"
        );
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(
            csp.starts_with("default-src 'self'") && !csp.contains("http"),
            "{csp}"
        );
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert!(!r.text().await.unwrap().is_empty());
    }
    // The page imports the library it is served with, from this origin only.
    let page = reqwest::get(on.api_url("/console/app.js"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("from '/console/streamedge.js'"));
    assert!(!page.contains("https://"), "no CDN");
}
