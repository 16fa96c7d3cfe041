//! HTTP helpers: API calls with a bearer token, creating streams and driving their
//! sessions, a node's metrics page.

use reqwest::Method;
use serde_json::Value;

/// One API call; returns the status and the JSON body (`Null` when none).
pub async fn call(method: Method, url: &str, token: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method, url)
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// `GET url` with `token`, no body; returns the status and the JSON body (`Null` when none).
pub async fn get(url: &str, token: &str) -> (u16, Value) {
    call(Method::GET, url, token, None).await
}

/// `POST url` with `token`, no body; returns the status and the JSON body (`Null` when none).
pub async fn post(url: &str, token: &str) -> (u16, Value) {
    call(Method::POST, url, token, None).await
}

/// `PUT url` with `token`, no body; returns the status and the JSON body (`Null` when none).
pub async fn put(url: &str, token: &str) -> (u16, Value) {
    call(Method::PUT, url, token, None).await
}

/// `DELETE url` with `token`; returns the status and the JSON body (`Null` when none).
pub async fn delete(url: &str, token: &str) -> (u16, Value) {
    call(Method::DELETE, url, token, None).await
}

/// The JSON body of `GET url` with `token`, whatever the status (failing when it is not
/// JSON).
pub async fn get_json(url: &str, token: &str) -> Value {
    reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
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
    let v: Value = r.json().await.unwrap();
    v["id"].as_str().unwrap().parse().unwrap()
}

/// `POST {api}/v1/streams/{stream}/session/{action}` (`start`, `pause`, `resume`, `end`,
/// `heartbeat`) with `token`; returns the status and the JSON body (`Null` when none).
pub async fn session_action(api: &str, stream: &str, action: &str, token: &str) -> (u16, Value) {
    post(
        &format!("{api}/v1/streams/{stream}/session/{action}"),
        token,
    )
    .await
}

/// Creates a stream as the seller `seller` (a user id) on the node at `api` (its base URL)
/// and starts its session; returns the stream's id.
pub async fn live_stream(api: &str, seller: &str) -> uuid::Uuid {
    let id = create_stream(&format!("{api}/v1/streams"), &crate::auth::seller(seller)).await;
    let (st, body) =
        session_action(api, &id.to_string(), "start", &crate::auth::seller(seller)).await;
    assert_eq!(st, 200, "{body}");
    id
}

/// The Prometheus text page at `url` (a node's admin `/metrics`).
pub async fn metrics_page(url: &str) -> String {
    reqwest::get(url).await.unwrap().text().await.unwrap()
}
