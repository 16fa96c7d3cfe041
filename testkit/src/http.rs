//! HTTP helpers: API calls with a bearer token, creating streams, a node's metrics page.

/// One API call; returns the status and the JSON body (`Null` when none).
pub async fn call(
    method: reqwest::Method,
    url: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut req = reqwest::Client::new()
        .request(method, url)
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    (
        r.status().as_u16(),
        r.json().await.unwrap_or(serde_json::Value::Null),
    )
}

/// Creates a stream through the API (`url` is the `/v1/streams` endpoint).
pub async fn create_stream(url: &str, seller_token: &str) -> uuid::Uuid {
    let r = reqwest::Client::new()
        .post(url)
        .bearer_auth(seller_token)
        .json(&serde_json::json!({"title": "test stream"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        201,
        "create stream: {}",
        r.text().await.unwrap()
    );
    let v: serde_json::Value = r.json().await.unwrap();
    v["id"].as_str().unwrap().parse().unwrap()
}

/// The Prometheus text page at `url` (a node's admin `/metrics`).
pub async fn metrics_page(url: &str) -> String {
    reqwest::get(url).await.unwrap().text().await.unwrap()
}
