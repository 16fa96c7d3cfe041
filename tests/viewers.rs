//! Viewer counts across nodes: one user in two tabs counts once, a node killed with
//! SIGKILL takes its viewers with it within `viewers.ttl`, and 5,000 viewers over two
//! nodes are counted exactly on both.

use streamedge_testkit as common;

use std::time::{Duration, Instant};

use common::{NodeProcess, TestNode};

async fn current(api: &str, stream: &str) -> u64 {
    let v = common::get_json(
        &format!("{api}/v1/streams/{stream}"),
        &common::buyer("counter"),
    )
    .await;
    v["viewers"]["current"].as_u64().unwrap()
}

async fn viewer(api_addr: std::net::SocketAddr, stream: &str, user: &str) -> common::Ws {
    let url = common::stream_ws_url(api_addr, stream, &common::buyer(user));
    let mut ws = common::ws_connect(&url).await;
    common::next_json(&mut ws, Duration::from_secs(10)).await;
    ws
}

fn redis_env(extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    let mut env = common::redis_env();
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_of_a_killed_node_drop_out_within_the_ttl() {
    let env = redis_env(&[("STREAMEDGE_VIEWERS__TTL", "2s")]);
    let mut a = NodeProcess::spawn(&env);
    let b = NodeProcess::spawn(&env);
    let stream = common::create_stream(&a.api_url("/v1/streams"), &common::seller("s"))
        .await
        .to_string();
    let mut held = Vec::new();
    for i in 0..10 {
        held.push(viewer(a.api, &stream, &format!("on-a-{i}")).await);
    }
    for i in 0..5 {
        held.push(viewer(b.api, &stream, &format!("on-b-{i}")).await);
    }
    // One user with a tab on each node counts once.
    held.push(viewer(a.api, &stream, "two-tabs").await);
    held.push(viewer(b.api, &stream, "two-tabs").await);
    let b_api = b.api_url("");
    assert!(
        common::eventually(Duration::from_secs(5), || async {
            current(&b_api, &stream).await == 16
        })
        .await,
        "expected 16, got {}",
        current(&b_api, &stream).await
    );
    let killed = Instant::now();
    a.child.kill().unwrap(); // SIGKILL: nobody cleans up
    a.child.wait().unwrap();
    // B's own viewers (5 + the two-tabs user) remain.
    assert!(
        common::eventually(Duration::from_secs(8), || async {
            current(&b_api, &stream).await == 6
        })
        .await,
        "expected 6 after the kill, got {}",
        current(&b_api, &stream).await
    );
    eprintln!(
        "viewers of the killed node gone after {:?} (ttl 2s)",
        killed.elapsed()
    );
}

#[tokio::test]
async fn two_tabs_count_once_and_leaving_is_seen_everywhere() {
    let (a, b) = TestNode::start_pair(common::redis_test_config()).await;
    let stream = a.new_stream().await.to_string();
    let (api_a, api_b) = (format!("http://{}", a.api), format!("http://{}", b.api));
    let mut tab1 = viewer(a.api, &stream, "same-user").await;
    let tab2 = viewer(b.api, &stream, "same-user").await;
    let other = viewer(b.api, &stream, "other-user").await;
    assert!(
        common::eventually(Duration::from_secs(5), || async {
            current(&api_a, &stream).await == 2
        })
        .await
    );
    // Closing one tab leaves the user watching (the other node re-marks them at once).
    tab1.close(None).await.unwrap();
    drop(tab1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        common::eventually(Duration::from_secs(5), || async {
            current(&api_b, &stream).await == 2
        })
        .await
    );
    drop(tab2);
    drop(other);
    assert!(
        common::eventually(Duration::from_secs(5), || async {
            current(&api_a, &stream).await == 0
        })
        .await,
        "viewers that left are still counted"
    );
    // The seller's list.
    let mut held = Vec::new();
    for i in 0..7 {
        held.push(viewer(b.api, &stream, &format!("u{i}")).await);
    }
    let seller = common::seller("seller-1");
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let url = format!("{api_a}/v1/streams/{stream}/viewers?limit=3{cursor}");
        let page = common::get_json(&url, &seller).await;
        for v in page["viewers"].as_array().unwrap() {
            seen.push(v.as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, (0..7).map(|i| format!("u{i}")).collect::<Vec<_>>());
    drop(held);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_viewers_over_two_nodes_are_counted_exactly_on_both() {
    const N: usize = 5000;
    let mut cfg = common::redis_test_config();
    cfg.ws.max_connections = N;
    let (a, b) = TestNode::start_pair(cfg).await;
    let stream = a.new_stream().await.to_string();
    // A watcher on each node sees the pushed counts.
    let mut watch_a = viewer(a.api, &stream, "watcher-a").await;
    let mut watch_b = viewer(b.api, &stream, "watcher-b").await;
    let tokens: Vec<String> = (0..N - 2)
        .map(|i| common::buyer(&format!("v{i}")))
        .collect();
    let started = Instant::now();
    let mut conns = Vec::with_capacity(N);
    let mut pending = futures_util::stream::FuturesUnordered::new();
    use futures_util::StreamExt;
    for (i, t) in tokens.iter().enumerate() {
        let addr = if i % 2 == 0 { a.api } else { b.api };
        let url = common::stream_ws_url(addr, &stream, t);
        pending.push(async move {
            tokio_tungstenite::connect_async(url)
                .await
                .map(|(ws, _)| ws)
        });
        if pending.len() >= 200 {
            conns.push(pending.next().await.unwrap().expect("connect"));
        }
    }
    while let Some(ws) = pending.next().await {
        conns.push(ws.expect("connect"));
    }
    let joined = started.elapsed();
    let last_join = Instant::now();
    for ws in [&mut watch_a, &mut watch_b] {
        // Each join still has its store round trips to make after the upgrade: 5,000 of
        // them on two cores shared with the clients.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let f = common::next_of_type(ws, "viewers", deadline - Instant::now()).await;
            if f["current"].as_u64() == Some(N as u64) {
                break;
            }
        }
    }
    let seen_after = last_join.elapsed();
    assert_eq!(
        current(&format!("http://{}", a.api), &stream).await,
        N as u64
    );
    assert_eq!(
        current(&format!("http://{}", b.api), &stream).await,
        N as u64
    );
    eprintln!("{N} viewers joined in {joined:?}; both nodes pushed the exact count {seen_after:?} after the last join");
    drop(conns);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
