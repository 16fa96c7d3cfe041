//! Readiness follows Redis: a node on a Redis that dies reports 503 and recovers by itself
//! when Redis comes back; pub/sub subscribers are told to resync after the reconnect.

use streamedge_testkit as common;

use std::time::Duration;

use common::{RedisServer, TestNode};
use streamedge::store::redis::RedisStore;
use streamedge::store::{KeyValue, PubSub, PubSubEvent, SharedState};

async fn readyz(node: &TestNode) -> (u16, serde_json::Value) {
    let r = reqwest::get(node.admin_url("/readyz")).await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

async fn metric(node: &TestNode, name: &str) -> Option<f64> {
    let text = node.metrics().await;
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn readyz_follows_redis_down_and_back() {
    let mut redis = RedisServer::start();
    let mut cfg = common::test_config();
    cfg.redis.url = redis.url();
    let node = TestNode::start(cfg).await;

    let (status, body) = readyz(&node).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["store"]["backend"], "redis");
    assert_eq!(metric(&node, "streamedge_redis_up").await, Some(1.0));

    redis.stop();
    assert!(
        common::eventually(Duration::from_secs(10), || async {
            readyz(&node).await.0 == 503
        })
        .await,
        "readyz stayed 200 with Redis down"
    );
    let (_, body) = readyz(&node).await;
    assert_eq!(body["store"]["healthy"], false);
    assert_eq!(metric(&node, "streamedge_redis_up").await, Some(0.0));
    // Liveness does not depend on Redis.
    assert_eq!(
        reqwest::get(node.admin_url("/healthz"))
            .await
            .unwrap()
            .status(),
        200
    );

    redis.restart();
    assert!(
        common::eventually(Duration::from_secs(10), || async {
            readyz(&node).await.0 == 200
        })
        .await,
        "readyz did not recover after Redis came back"
    );
    assert_eq!(metric(&node, "streamedge_redis_up").await, Some(1.0));
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn node_starts_while_redis_is_down_and_becomes_ready() {
    let mut redis = RedisServer::start();
    redis.stop();
    let mut cfg = common::test_config();
    cfg.redis.url = redis.url();
    let node = TestNode::start(cfg).await;
    assert_eq!(readyz(&node).await.0, 503);
    redis.restart();
    assert!(
        common::eventually(Duration::from_secs(10), || async {
            readyz(&node).await.0 == 200
        })
        .await,
        "node never became ready"
    );
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn store_commands_and_pubsub_recover_after_redis_restart() {
    let mut redis = RedisServer::start();
    let mut cfg = common::test_config().redis;
    cfg.url = redis.url();
    let store = RedisStore::connect(&cfg).await.unwrap();
    let mut sub = store.subscribe("ch").await.unwrap();
    store.set("k", b"v", None).await.unwrap();

    redis.stop();
    assert!(
        store.get("k").await.is_err(),
        "command succeeded with Redis down"
    );
    redis.restart();

    // Commands work again without any intervention.
    assert!(
        common::eventually(Duration::from_secs(10), || async {
            store.set("k2", b"v2", None).await.is_ok()
        })
        .await,
        "commands did not recover"
    );
    // The subscriber is told it may have missed messages, then receives new ones.
    let ev = tokio::time::timeout(Duration::from_secs(10), sub.recv())
        .await
        .expect("no resync after reconnect")
        .unwrap();
    assert_eq!(ev, PubSubEvent::Resync);
    store
        .publish("ch", bytes::Bytes::from_static(b"after"))
        .await
        .unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(5), sub.recv())
        .await
        .expect("no message after reconnect")
        .unwrap();
    assert_eq!(
        ev,
        PubSubEvent::Message(bytes::Bytes::from_static(b"after"))
    );
    store.close().await;
}

#[tokio::test]
async fn route_limits_hold_on_the_node_alone_while_redis_is_down() {
    let mut redis = RedisServer::start();
    let mut cfg = common::test_config();
    cfg.redis.url = redis.url();
    // 3 at once, then one per 100 s: nothing refills during the test.
    cfg.rate_limit.streams_read.user_per_sec = 0.01;
    cfg.rate_limit.streams_read.user_burst = 3;
    cfg.rate_limit.streams_read.ip_per_sec = 0.0;
    let node = TestNode::start(cfg).await;
    let stream = node.new_stream().await;
    redis.stop();
    let client = node.client();
    let mut codes = Vec::new();
    for _ in 0..6 {
        let r = client
            .get(node.api_url(&format!("/v1/streams/{stream}")))
            .bearer_auth(common::buyer("greedy"))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body: serde_json::Value = r.json().await.unwrap();
        codes.push((status, body["code"].as_str().unwrap_or("").to_string()));
    }
    // The burst passes the limiter (and then finds the shared state down); the rest are
    // refused by the node's own limiter, not let through.
    let limited = codes
        .iter()
        .filter(|(s, c)| *s == 429 && c == "rate_limited");
    assert_eq!(limited.count(), 3, "{codes:?}");
    assert!(codes[..3].iter().all(|(s, _)| *s == 503), "{codes:?}");
    assert!(metric(&node, "streamedge_rate_limit_errors_total").await >= Some(6.0));
    redis.restart();
    node.shutdown().await.unwrap();
}
