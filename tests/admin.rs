//! The admin listener (`/metrics`, `/healthz`, `/readyz`) and the HTTP basics every route
//! shares: request ids and problem+json errors.

use streamedge_testkit as common;

use std::time::Duration;

use common::TestNode;

/// Checks Prometheus text exposition: every sample line is `name{labels} value` with a
/// known metric family, and every family has a TYPE line.
fn assert_valid_exposition(text: &str) {
    let mut typed = std::collections::HashSet::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let name = parts.next().unwrap();
            let kind = parts.next().unwrap();
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "bad type line: {line}"
            );
            typed.insert(name.to_string());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment: {line}");
        let (series, value) = line.rsplit_once(' ').expect("sample has a value");
        assert!(
            value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
            "bad value in {line}"
        );
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                assert!(
                    labels.starts_with('{') && labels.ends_with('}'),
                    "bad labels: {line}"
                );
            }
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f)))
            .unwrap_or(name);
        assert!(typed.contains(family), "sample without a TYPE line: {line}");
    }
}

#[tokio::test]
async fn metrics_are_valid_prometheus_text() {
    let node = TestNode::start(common::test_config()).await;
    // Make some traffic so request metrics exist.
    reqwest::get(node.api_url("/nope")).await.unwrap();
    reqwest::get(node.admin_url("/healthz")).await.unwrap();
    let resp = reqwest::get(node.admin_url("/metrics")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = resp.text().await.unwrap();
    assert_valid_exposition(&text);
    for needle in [
        "streamedge_build_info{version=\"",
        "streamedge_process_resident_memory_bytes ",
        "streamedge_process_open_fds ",
        "streamedge_process_cpu_seconds_total ",
        "streamedge_http_requests_total{listener=\"api\",route=\"unmatched\",method=\"GET\",status=\"404\"}",
        "streamedge_http_request_duration_seconds_bucket{",
        "# TYPE streamedge_http_request_duration_seconds histogram",
    ] {
        assert!(text.contains(needle), "metrics lack {needle}:\n{text}");
    }
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn health_and_readiness_on_the_embedded_backend() {
    let node = TestNode::start(common::test_config()).await;
    let h = reqwest::get(node.admin_url("/healthz")).await.unwrap();
    assert_eq!(h.status(), 200);
    let r = reqwest::get(node.admin_url("/readyz")).await.unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["ready"], true);
    assert_eq!(body["store"]["backend"], "memory");
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let node = TestNode::start(common::test_config()).await;
    let client = reqwest::Client::new();
    let r = client.get(node.api_url("/nope")).send().await.unwrap();
    let generated = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(generated.len(), 36, "expected a UUID, got {generated}");
    let r = client
        .get(node.admin_url("/healthz"))
        .header("x-request-id", "client-chosen-42")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "client-chosen-42");
    // One too long to log, or with spaces: replaced by a generated one.
    for bad in ["x".repeat(129), "has space".to_string()] {
        let r = client
            .get(node.api_url("/nope"))
            .header("x-request-id", &bad)
            .send()
            .await
            .unwrap();
        let id = r.headers()["x-request-id"].to_str().unwrap();
        assert_eq!(id.len(), 36, "{bad:?} was echoed as {id}");
    }
    let r = client
        .get(node.api_url("/nope"))
        .header("x-request-id", "y".repeat(128))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "y".repeat(128).as_str());
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problem_json() {
    let node = TestNode::start(common::test_config()).await;
    let client = reqwest::Client::new();
    let r = client
        .get(node.api_url("/v1/nothing"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "not_found");
    assert_eq!(body["status"], 404);

    let stream = uuid::Uuid::new_v4();
    let r = client
        .post(node.api_url(&format!("/v1/streams/{stream}/ws")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "method_not_allowed");

    let r = client
        .delete(node.admin_url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    // Any method an admin route does not take (TRACE included) is 405 with `Allow`, as on
    // the API listener.
    for (path, allow) in [
        ("/healthz", "GET,HEAD"),
        ("/readyz", "GET,HEAD"),
        ("/metrics", "GET,HEAD"),
        ("/drain", "POST"),
    ] {
        let r = client
            .request(reqwest::Method::TRACE, node.admin_url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405, "{path}");
        assert_eq!(r.headers()["allow"], allow, "{path}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["code"], "method_not_allowed", "{path}");
    }
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn in_process_shutdown_closes_websockets_with_1012() {
    let node = TestNode::start(common::test_config()).await;
    let stream = node.new_stream().await;
    let mut clients = Vec::new();
    for _ in 0..10 {
        let mut ws = common::ws_connect(&node.ws_url(&stream)).await;
        assert_eq!(
            common::next_json(&mut ws, Duration::from_secs(5)).await["type"],
            "welcome"
        );
        clients.push(ws);
    }
    let shutdown = tokio::spawn(node.shutdown());
    for ws in &mut clients {
        assert_eq!(common::close_code(ws, Duration::from_secs(5)).await, 1012);
    }
    shutdown.await.unwrap().expect("clean shutdown");
}
