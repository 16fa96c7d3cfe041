//! Node processes on a three-master Redis Cluster (the one `scripts/test` starts): a
//! stream's whole state lives in one hash slot, and the per-stream outboxes bring every
//! acknowledged record to PostgreSQL exactly once. (The conformance suite on the cluster is
//! in store_conformance.rs, the chat ordering test in chat.rs.)

use streamedge_testkit as common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::NodeProcess;
use serde_json::json;

const T: Duration = Duration::from_secs(60);

fn cluster_env(db: &str, prefix: &str) -> Vec<(&'static str, String)> {
    let mut env: Vec<(&'static str, String)> = common::redis_cluster_env()
        .into_iter()
        .filter(|(k, _)| *k != "STREAMEDGE_REDIS__KEY_PREFIX")
        .collect();
    env.extend([
        ("STREAMEDGE_REDIS__KEY_PREFIX", prefix.to_string()),
        ("STREAMEDGE_PERSIST__DATABASE_URL", db.to_string()),
        ("STREAMEDGE_PERSIST__POLL_INTERVAL", "20ms".into()),
        ("STREAMEDGE_CHAT__USER_PER_SEC", "0".into()),
    ]);
    env
}

async fn wait_count(db: &str, sql: &str, want: i64) {
    common::wait_pg_count(db, sql, want, T).await
}

/// Every key under `prefix` on every master of the cluster, with the master holding it.
async fn keys_by_master(prefix: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for url in common::redis_cluster_urls() {
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query_async(&mut c)
            .await
            .unwrap();
        out.extend(keys.into_iter().map(|k| (url.clone(), k)));
    }
    out
}

async fn keyslot(key: &str) -> u16 {
    let url = &common::redis_cluster_urls()[0];
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query_async(&mut c)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streams_keys_share_one_slot_and_its_records_reach_postgresql_once() {
    let db = common::fresh_database().await;
    let prefix = common::fresh_key_prefix();
    let env = cluster_env(&db, &prefix);
    let a = NodeProcess::spawn(&env);
    let b = NodeProcess::spawn(&env);
    let seller = common::seller("seller-cluster");
    let stream = common::live_stream(&a.api_url(""), "seller-cluster").await;
    let id = stream.to_string();

    // Buyers on both nodes chat; the seller bans one and turns slow mode on from node B.
    let (mut wa, _) = common::join_with(a.api, &id, &common::buyer("buyer-a")).await;
    let (mut wb, _) = common::join_with(b.api, &id, &common::buyer("buyer-b")).await;
    let mut seqs = BTreeSet::new();
    for i in 0..20 {
        for (ws, who) in [(&mut wa, "a"), (&mut wb, "b")] {
            let ack = common::send_and_ack(ws, &format!("{who}{i}"), &format!("hi {who}{i}")).await;
            assert_eq!(ack["type"], "ack", "{ack}");
            assert!(seqs.insert(ack["seq"].as_u64().unwrap()), "{ack}");
        }
    }
    assert_eq!(seqs, (1..=40).collect::<BTreeSet<u64>>());
    let base = b.api_url(&format!("/v1/streams/{id}"));
    let (st, v) = common::put(&format!("{base}/bans/troll"), &seller).await;
    assert_eq!(st, 200, "{v}");
    let (st, v) = common::call(
        reqwest::Method::PUT,
        &format!("{base}/chat-settings"),
        &seller,
        Some(json!({"slow_mode_secs": 5})),
    )
    .await;
    assert_eq!(st, 200, "{v}");

    // Every key of the stream, wherever a node wrote it, is in one slot of one master.
    let keys = keys_by_master(&prefix).await;
    let mine: Vec<&(String, String)> = keys.iter().filter(|(_, k)| k.contains(&id)).collect();
    let mut slots = BTreeMap::new();
    for (master, key) in &mine {
        slots.insert(key.clone(), (keyslot(key).await, master.clone()));
    }
    println!("keys of stream {id} (idempotency keys `…:sent:…` left out):");
    for (key, (slot, master)) in slots.iter().filter(|(k, _)| !k.contains(":sent:")) {
        println!("  slot {slot:>5}  {master}  {key}");
    }
    let distinct: BTreeSet<&(u16, String)> = slots.values().collect();
    assert_eq!(distinct.len(), 1, "a stream's keys span slots: {slots:#?}");
    let tag = format!("{{{id}}}");
    assert!(slots.keys().all(|k| k.contains(&tag)), "{slots:#?}");
    for part in [
        format!("{prefix}stream:{tag}"),
        format!("{prefix}log:chat:{tag}"),
        format!("{prefix}log:chat:{tag}:seq"),
        format!("{prefix}stream:{tag}:viewers"),
        format!("{prefix}stream:{tag}:ban:troll"),
        format!("{prefix}stream:{tag}:slow_mode"),
        format!("{prefix}outbox:{tag}"),
    ] {
        assert!(slots.contains_key(&part), "{part} missing: {slots:#?}");
    }

    // The per-stream outbox brings each record to PostgreSQL once.
    wait_count(&db, "select count(*) from chat_messages", 40).await;
    wait_count(&db, "select count(distinct seq) from chat_messages", 40).await;
    wait_count(
        &db,
        &format!("select count(*) from streams where id = '{id}'"),
        1,
    )
    .await;
    wait_count(
        &db,
        &format!("select count(*) from moderation_actions where stream_id = '{id}'"),
        2,
    )
    .await;
    for node in [&a, &b] {
        let drained = common::eventually(T, || async {
            node.metrics()
                .await
                .lines()
                .any(|l| l == "streamedge_persist_outbox_depth 0")
        })
        .await;
        assert!(drained, "the outbox never emptied");
    }
    drop((wa, wb));
    drop((a, b));
}
