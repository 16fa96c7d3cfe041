//! One conformance suite for the shared-state backends: every test runs against the
//! in-memory backend, a real Redis and a real three-master Redis Cluster (the ones
//! `scripts/test` starts).

use streamedge_testkit as common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use streamedge::store::memory::MemoryStore;
use streamedge::store::outbox_file::FileOutbox;
use streamedge::store::redis::RedisStore;
use streamedge::store::{
    decode_log_publish, AppendOptions, LogEntry, Outbox, OutboxTag, PubSubEvent, SharedState,
    Subscription,
};

type Store = Arc<dyn SharedState>;

async fn memory() -> Store {
    let dir =
        std::env::temp_dir().join(format!("streamedge-conf-{}", uuid::Uuid::new_v4().simple()));
    let outbox = FileOutbox::open(&dir).expect("local outbox");
    Arc::new(MemoryStore::with_outbox(
        Arc::new(outbox),
        Duration::from_millis(100),
    ))
}

async fn redis_with_prefix(prefix: &str) -> Store {
    let mut cfg = common::test_config().redis;
    cfg.url = common::redis_url();
    cfg.key_prefix = prefix.to_string();
    let store = RedisStore::connect(&cfg).await.expect("redis store");
    assert!(
        store.is_healthy(),
        "Redis at {} does not answer; run the tests through scripts/test",
        cfg.url
    );
    Arc::new(store)
}

/// A store on the three-master Redis Cluster `scripts/test` started.
async fn redis_cluster() -> Store {
    let mut cfg = common::test_config().redis;
    let urls = common::redis_cluster_urls();
    cfg.url = urls[0].clone();
    cfg.cluster_nodes = urls[1..].to_vec();
    cfg.mode = streamedge::config::RedisMode::Cluster;
    let store = RedisStore::connect(&cfg)
        .await
        .expect("redis cluster store");
    assert!(
        store.is_healthy(),
        "the Redis Cluster at {urls:?} does not answer; run the tests through scripts/test"
    );
    Arc::new(store)
}

async fn redis() -> Store {
    redis_with_prefix(&common::test_config().redis.key_prefix).await
}

const WAIT: Duration = Duration::from_secs(5);

async fn recv(sub: &mut Subscription) -> PubSubEvent {
    tokio::time::timeout(WAIT, sub.recv())
        .await
        .expect("timed out waiting for a pub/sub event")
        .expect("subscription closed")
}

async fn recv_message(sub: &mut Subscription) -> Bytes {
    match recv(sub).await {
        PubSubEvent::Message(b) => b,
        PubSubEvent::Resync => panic!("unexpected resync"),
    }
}

async fn nothing_more(sub: &mut Subscription) {
    let r = tokio::time::timeout(Duration::from_millis(200), sub.recv()).await;
    assert!(r.is_err(), "unexpected event {r:?}");
}

// --- key/value -----------------------------------------------------------------------------

async fn kv_round_trip(s: Store) {
    assert_eq!(s.get("k").await.unwrap(), None);
    s.set("k", b"v1", None).await.unwrap();
    assert_eq!(s.get("k").await.unwrap().as_deref(), Some(&b"v1"[..]));
    s.set("k", b"\x00\xffbinary\n", None).await.unwrap();
    assert_eq!(
        s.get("k").await.unwrap().as_deref(),
        Some(&b"\x00\xffbinary\n"[..])
    );
    assert!(s.delete("k").await.unwrap());
    assert!(!s.delete("k").await.unwrap());
    assert_eq!(s.get("k").await.unwrap(), None);
}

async fn kv_ttl_expires(s: Store) {
    // Long enough that a stalled machine does not expire it before the first check.
    s.set("short", b"x", Some(Duration::from_millis(1500)))
        .await
        .unwrap();
    s.set("long", b"y", Some(Duration::from_secs(60)))
        .await
        .unwrap();
    assert!(s.get("short").await.unwrap().is_some());
    assert!(
        common::eventually(WAIT, || async { s.get("short").await.unwrap().is_none() }).await,
        "value with a TTL never expired"
    );
    assert!(s.get("long").await.unwrap().is_some());
    // Setting again without a TTL makes it permanent.
    s.set("short", b"z", Some(Duration::from_millis(200)))
        .await
        .unwrap();
    s.set("short", b"z", None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(s.get("short").await.unwrap().is_some());
}

async fn kv_set_nx(s: Store) {
    assert!(s.set_nx("once", b"a", None).await.unwrap());
    assert!(!s.set_nx("once", b"b", None).await.unwrap());
    assert_eq!(s.get("once").await.unwrap().as_deref(), Some(&b"a"[..]));
    s.delete("once").await.unwrap();
    assert!(s
        .set_nx("once", b"c", Some(Duration::from_millis(200)))
        .await
        .unwrap());
    assert!(
        common::eventually(WAIT, || async {
            s.set_nx("once", b"d", None).await.unwrap()
        })
        .await,
        "set_nx never succeeded after the TTL"
    );
}

async fn counters(s: Store) {
    assert_eq!(s.incr("c", 1, None).await.unwrap(), 1);
    assert_eq!(s.incr("c", 5, None).await.unwrap(), 6);
    assert_eq!(s.incr("c", -2, None).await.unwrap(), 4);
    assert_eq!(s.get("c").await.unwrap().as_deref(), Some(&b"4"[..]));
    assert_eq!(
        s.incr("ct", 1, Some(Duration::from_millis(300)))
            .await
            .unwrap(),
        1
    );
    assert!(
        common::eventually(WAIT, || async { s.get("ct").await.unwrap().is_none() }).await,
        "counter with a TTL never expired"
    );
    s.set("notnum", b"abc", None).await.unwrap();
    assert!(s.incr("notnum", 1, None).await.is_err());
}

async fn concurrent_counter_increments(s: Store) {
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..25 {
                s.incr("shared", 1, None).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(s.incr("shared", 0, None).await.unwrap(), 200);
}

// --- presence ------------------------------------------------------------------------------

async fn presence_members(s: Store) {
    let ttl = Duration::from_secs(30);
    assert_eq!(s.presence_count("p").await.unwrap(), 0);
    assert!(s.presence_touch("p", "bob", ttl).await.unwrap());
    assert!(s.presence_touch("p", "alice", ttl).await.unwrap());
    assert!(!s.presence_touch("p", "bob", ttl).await.unwrap());
    assert!(s.presence_touch("p", "carol", ttl).await.unwrap());
    assert_eq!(s.presence_count("p").await.unwrap(), 3);
    assert_eq!(
        s.presence_list("p", None, 10).await.unwrap(),
        vec!["alice", "bob", "carol"]
    );
    assert_eq!(
        s.presence_list("p", None, 2).await.unwrap(),
        vec!["alice", "bob"]
    );
    assert_eq!(
        s.presence_list("p", Some("bob"), 10).await.unwrap(),
        vec!["carol"]
    );
    assert!(s
        .presence_list("p", Some("carol"), 10)
        .await
        .unwrap()
        .is_empty());
    assert!(s.presence_remove("p", "bob").await.unwrap());
    assert!(!s.presence_remove("p", "bob").await.unwrap());
    assert_eq!(s.presence_count("p").await.unwrap(), 2);
    assert_eq!(s.presence_count("other").await.unwrap(), 0);
}

async fn presence_expires(s: Store) {
    s.presence_touch("e", "stays", Duration::from_secs(30))
        .await
        .unwrap();
    s.presence_touch("e", "goes", Duration::from_millis(1500))
        .await
        .unwrap();
    assert_eq!(s.presence_count("e").await.unwrap(), 2);
    assert!(
        common::eventually(WAIT, || async { s.presence_count("e").await.unwrap() == 1 }).await,
        "expired member still counted"
    );
    assert_eq!(s.presence_list("e", None, 10).await.unwrap(), vec!["stays"]);
    // An expired member counts as absent: touching it again reports it as new, and
    // removing it reports it was not there.
    s.presence_touch("e", "flash", Duration::from_millis(100))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!s.presence_remove("e", "flash").await.unwrap());
    s.presence_touch("e", "flash", Duration::from_millis(100))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(s
        .presence_touch("e", "flash", Duration::from_secs(5))
        .await
        .unwrap());
}

// --- ordered log -----------------------------------------------------------------------------

fn seqs(entries: &[streamedge::store::LogEntry]) -> Vec<u64> {
    entries.iter().map(|e| e.seq).collect()
}

async fn log_append_and_read(s: Store) {
    let o = AppendOptions::default();
    assert_eq!(s.log_last_seq("l").await.unwrap(), 0);
    assert!(s.log_after("l", 0, 10).await.unwrap().is_empty());
    assert!(s.log_before("l", u64::MAX, 10).await.unwrap().is_empty());
    for i in 1..=5u64 {
        let payload = format!("m{i}\nwith newline");
        assert_eq!(s.log_append("l", payload.as_bytes(), &o).await.unwrap(), i);
    }
    let all = s.log_after("l", 0, 100).await.unwrap();
    assert_eq!(seqs(&all), vec![1, 2, 3, 4, 5]);
    assert_eq!(&all[2].payload[..], b"m3\nwith newline");
    assert_eq!(seqs(&s.log_after("l", 2, 2).await.unwrap()), vec![3, 4]);
    assert!(s.log_after("l", 5, 10).await.unwrap().is_empty());
    assert_eq!(seqs(&s.log_before("l", 4, 2).await.unwrap()), vec![3, 2]);
    assert_eq!(
        seqs(&s.log_before("l", u64::MAX, 2).await.unwrap()),
        vec![5, 4]
    );
    assert!(s.log_before("l", 1, 10).await.unwrap().is_empty());
    assert_eq!(s.log_last_seq("l").await.unwrap(), 5);
    assert!(s.log_remove("l", 3).await.unwrap());
    assert!(!s.log_remove("l", 3).await.unwrap());
    assert!(!s.log_remove("l", 99).await.unwrap());
    assert_eq!(
        seqs(&s.log_after("l", 0, 100).await.unwrap()),
        vec![1, 2, 4, 5]
    );
    assert_eq!(seqs(&s.log_before("l", 5, 2).await.unwrap()), vec![4, 2]);
    // Removal never reuses a sequence number.
    assert_eq!(s.log_append("l", b"six", &o).await.unwrap(), 6);
    // Logs are independent.
    assert_eq!(s.log_append("other", b"x", &o).await.unwrap(), 1);
}

async fn log_trims_to_max_len(s: Store) {
    let o = AppendOptions {
        max_len: 3,
        ..Default::default()
    };
    for i in 1..=10u64 {
        assert_eq!(s.log_append("t", b"x", &o).await.unwrap(), i);
    }
    assert_eq!(
        seqs(&s.log_after("t", 0, 100).await.unwrap()),
        vec![8, 9, 10]
    );
    assert_eq!(s.log_last_seq("t").await.unwrap(), 10);
}

async fn log_expires(s: Store) {
    let o = AppendOptions {
        ttl: Some(Duration::from_millis(300)),
        ..Default::default()
    };
    s.log_append("x", b"a", &o).await.unwrap();
    s.log_append("x", b"b", &o).await.unwrap();
    assert_eq!(s.log_last_seq("x").await.unwrap(), 2);
    assert!(
        common::eventually(WAIT, || async {
            s.log_last_seq("x").await.unwrap() == 0
                && s.log_after("x", 0, 10).await.unwrap().is_empty()
        })
        .await,
        "log with a TTL never expired"
    );
}

async fn log_append_publishes_in_order(s: Store) {
    let mut sub = s.subscribe("{pl}:events").await.unwrap();
    let o = AppendOptions {
        publish: Some("{pl}:events".into()),
        ..Default::default()
    };
    let mut tasks = Vec::new();
    for t in 0..4 {
        let s = s.clone();
        let o = o.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                s.log_append("pl", format!("{t}:{i}").as_bytes(), &o)
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..100 {
        let frame = recv_message(&mut sub).await;
        let entry = decode_log_publish(&frame).expect("log publish frame");
        got.push(entry);
    }
    let order: Vec<u64> = got.iter().map(|e| e.seq).collect();
    assert_eq!(
        order,
        (1..=100).collect::<Vec<_>>(),
        "published out of order or with gaps"
    );
    let stored = s.log_after("pl", 0, 1000).await.unwrap();
    assert_eq!(stored, got, "published entries differ from stored ones");
    nothing_more(&mut sub).await;
}

async fn concurrent_appends_are_gapless(s: Store) {
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for _ in 0..25 {
                mine.push(
                    s.log_append("g", b"x", &AppendOptions::default())
                        .await
                        .unwrap(),
                );
            }
            mine
        }));
    }
    let mut all = BTreeSet::new();
    for t in tasks {
        for seq in t.await.unwrap() {
            assert!(all.insert(seq), "sequence {seq} handed out twice");
        }
    }
    assert_eq!(all, (1..=200).collect::<BTreeSet<_>>());
}

// --- publish / subscribe -------------------------------------------------------------------

async fn pubsub_fanout(s: Store) {
    let mut a = s.subscribe("room").await.unwrap();
    let mut b = s.subscribe("room").await.unwrap();
    let mut other = s.subscribe("elsewhere").await.unwrap();
    s.publish("room", Bytes::from_static(b"hello"))
        .await
        .unwrap();
    assert_eq!(&recv_message(&mut a).await[..], b"hello");
    assert_eq!(&recv_message(&mut b).await[..], b"hello");
    nothing_more(&mut other).await;
    drop(b);
    s.publish("room", Bytes::from_static(b"\x00bin\xff"))
        .await
        .unwrap();
    assert_eq!(&recv_message(&mut a).await[..], b"\x00bin\xff");
    drop(a);
    // Publishing with nobody listening is fine; a new subscriber gets every message
    // published after `subscribe` returned. (One published just before may or may not
    // arrive: the node's Redis subscription can outlive its last subscriber briefly.)
    s.publish("room", Bytes::from_static(b"lost"))
        .await
        .unwrap();
    let mut c = s.subscribe("room").await.unwrap();
    s.publish("room", Bytes::from_static(b"again"))
        .await
        .unwrap();
    let mut first = recv_message(&mut c).await;
    if &first[..] == b"lost" {
        first = recv_message(&mut c).await;
    }
    assert_eq!(&first[..], b"again");
    nothing_more(&mut c).await;
}

async fn log_append_once_is_idempotent(s: Store) {
    let mut sub = s.subscribe("{o}:events").await.unwrap();
    let opts = |k: &str| AppendOptions {
        publish: Some("{o}:events".into()),
        once: Some((format!("{{o}}:once:{k}"), Duration::from_secs(60))),
        ..Default::default()
    };
    assert_eq!(s.log_append("o", b"first", &opts("m1")).await.unwrap(), 1);
    assert_eq!(s.log_append("o", b"again", &opts("m1")).await.unwrap(), 1);
    assert_eq!(s.log_append("o", b"second", &opts("m2")).await.unwrap(), 2);
    let entries = s.log_after("o", 0, 10).await.unwrap();
    assert_eq!(seqs(&entries), vec![1, 2]);
    assert_eq!(&entries[0].payload[..], b"first");
    // Published once each.
    assert_eq!(
        decode_log_publish(&recv_message(&mut sub).await)
            .unwrap()
            .seq,
        1
    );
    assert_eq!(
        decode_log_publish(&recv_message(&mut sub).await)
            .unwrap()
            .seq,
        2
    );
    nothing_more(&mut sub).await;
    // Concurrent retries of one message: one append.
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let s = s.clone();
        let o = opts("m3");
        tasks.push(tokio::spawn(async move {
            s.log_append("o", b"race", &o).await.unwrap()
        }));
    }
    let mut got = BTreeSet::new();
    for t in tasks {
        got.insert(t.await.unwrap());
    }
    assert_eq!(got, BTreeSet::from([3]));
    assert_eq!(s.log_last_seq("o").await.unwrap(), 3);
}

// --- rate limits, indexes, compare-and-swap, maxima, distinct counts ---------------------

async fn rate_limit_burst_then_refusal(s: Store) {
    // Burst 3 at a rate too slow to refill during the test.
    for i in 0..3 {
        let d = s.rate_limit("rl", 0.5, 3).await.unwrap();
        assert!(d.allowed, "request {i} of the burst refused");
    }
    let d = s.rate_limit("rl", 0.5, 3).await.unwrap();
    assert!(!d.allowed);
    // Two seconds from the first of the burst, less however long the calls took.
    assert!(
        d.retry_after > Duration::ZERO && d.retry_after <= Duration::from_secs(2),
        "retry after {:?}",
        d.retry_after
    );
    // Other keys are independent.
    assert!(s.rate_limit("rl-other", 0.5, 1).await.unwrap().allowed);
    // A faster limiter refills (every 500 ms: slow enough that two calls in a row on a
    // stalled machine still see the refusal).
    assert!(s.rate_limit("fast", 2.0, 1).await.unwrap().allowed);
    assert!(!s.rate_limit("fast", 2.0, 1).await.unwrap().allowed);
    assert!(
        common::eventually(WAIT, || async {
            s.rate_limit("fast", 2.0, 1).await.unwrap().allowed
        })
        .await
    );
}

async fn concurrent_rate_limit_admits_exactly_the_burst(s: Store) {
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.rate_limit("shared-rl", 0.01, 7).await.unwrap().allowed
        }));
    }
    let mut allowed = 0;
    for t in tasks {
        allowed += usize::from(t.await.unwrap());
    }
    assert_eq!(allowed, 7);
}

async fn sorted_index_pages_descending(s: Store) {
    for m in ["b", "a", "d", "c", "e"] {
        assert!(s.index_add("ix", m).await.unwrap());
    }
    assert!(!s.index_add("ix", "c").await.unwrap());
    assert_eq!(
        s.index_page_desc("ix", None, 2).await.unwrap(),
        vec!["e", "d"]
    );
    assert_eq!(
        s.index_page_desc("ix", Some("d"), 2).await.unwrap(),
        vec!["c", "b"]
    );
    assert_eq!(
        s.index_page_desc("ix", Some("b"), 10).await.unwrap(),
        vec!["a"]
    );
    assert!(s
        .index_page_desc("ix", Some("a"), 10)
        .await
        .unwrap()
        .is_empty());
    assert!(s.index_remove("ix", "c").await.unwrap());
    assert!(!s.index_remove("ix", "c").await.unwrap());
    assert_eq!(
        s.index_page_desc("ix", Some("d"), 2).await.unwrap(),
        vec!["b", "a"]
    );
    assert!(s
        .index_page_desc("nothing", None, 5)
        .await
        .unwrap()
        .is_empty());
}

async fn compare_and_swap_publishes_once(s: Store) {
    let mut sub = s.subscribe("{k}:events").await.unwrap();
    assert!(
        !s.compare_and_swap("{k}", b"x", b"y", None, None, None)
            .await
            .unwrap(),
        "missing key"
    );
    s.set("{k}", b"v1", None).await.unwrap();
    assert!(!s
        .compare_and_swap(
            "{k}",
            b"other",
            b"v2",
            None,
            Some(("{k}:events", b"lost")),
            None
        )
        .await
        .unwrap());
    assert!(s
        .compare_and_swap(
            "{k}",
            b"v1",
            b"v2",
            None,
            Some(("{k}:events", b"won")),
            None
        )
        .await
        .unwrap());
    assert_eq!(s.get("{k}").await.unwrap().as_deref(), Some(&b"v2"[..]));
    assert_eq!(&recv_message(&mut sub).await[..], b"won");
    nothing_more(&mut sub).await;
    // Racing swaps from the same value: exactly one wins.
    let mut tasks = Vec::new();
    for i in 0..10 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.compare_and_swap(
                "{k}",
                b"v2",
                format!("w{i}").as_bytes(),
                None,
                Some(("{k}:events", b"race")),
                None,
            )
            .await
            .unwrap()
        }));
    }
    let mut wins = 0;
    for t in tasks {
        wins += usize::from(t.await.unwrap());
    }
    assert_eq!(wins, 1);
    assert_eq!(&recv_message(&mut sub).await[..], b"race");
    nothing_more(&mut sub).await;
    // A TTL on the new value.
    s.set("t", b"a", None).await.unwrap();
    assert!(s
        .compare_and_swap(
            "t",
            b"a",
            b"b",
            Some(Duration::from_millis(200)),
            None,
            None
        )
        .await
        .unwrap());
    assert!(common::eventually(WAIT, || async { s.get("t").await.unwrap().is_none() }).await);
}

async fn maxima_and_distinct_counts(s: Store) {
    assert_eq!(s.set_max("peak", 3, None).await.unwrap(), 3);
    assert_eq!(s.set_max("peak", 1, None).await.unwrap(), 3);
    assert_eq!(s.set_max("peak", 7, None).await.unwrap(), 7);
    assert_eq!(s.get("peak").await.unwrap().as_deref(), Some(&b"7"[..]));
    assert_eq!(s.distinct_count("u").await.unwrap(), 0);
    for i in 0..100 {
        s.distinct_add("u", &[&format!("user-{}", i % 40)], None)
            .await
            .unwrap();
    }
    // Exact in memory; HyperLogLog is exact enough at this size (error < 1%).
    let n = s.distinct_count("u").await.unwrap();
    assert!((39..=41).contains(&n), "distinct count {n}");
    s.distinct_add("short", &["x", "y"], Some(Duration::from_millis(200)))
        .await
        .unwrap();
    assert!(
        common::eventually(WAIT, || async {
            s.distinct_count("short").await.unwrap() == 0
        })
        .await
    );
}

// --- outbox ----------------------------------------------------------------------------------

const RECLAIM: Duration = Duration::from_secs(60);

async fn outbox_records_atomic_steps(s: Store) {
    assert_eq!(s.outbox_stats().await.unwrap().depth, 0);
    let tag = OutboxTag::new("chat", "stream-1");
    let o = AppendOptions {
        outbox: Some(tag.clone()),
        ..Default::default()
    };
    assert_eq!(s.log_append("chat:{stream-1}", b"m1", &o).await.unwrap(), 1);
    assert_eq!(s.log_append("chat:{stream-1}", b"m2", &o).await.unwrap(), 2);
    // A swap records its new value only when it swaps.
    let st = OutboxTag::new("stream", "stream-1");
    s.set("{stream-1}:rec", b"v1", None).await.unwrap();
    assert!(!s
        .compare_and_swap("{stream-1}:rec", b"nope", b"v2", None, None, Some(&st))
        .await
        .unwrap());
    assert!(s
        .compare_and_swap("{stream-1}:rec", b"v1", b"v2", None, None, Some(&st))
        .await
        .unwrap());
    s.outbox_add(&OutboxTag::new("moderation", "stream-1"), b"{}")
        .await
        .unwrap();
    let stats = s.outbox_stats().await.unwrap();
    assert_eq!(stats.depth, 4);
    assert!(stats.oldest_added_ms.is_some());
    let got = s.outbox_take("w1", 10, RECLAIM).await.unwrap();
    let summary: Vec<(String, String, u64, Vec<u8>)> = got
        .iter()
        .map(|e| (e.kind.clone(), e.scope.clone(), e.seq, e.data.to_vec()))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("chat".into(), "stream-1".into(), 1, b"m1".to_vec()),
            ("chat".into(), "stream-1".into(), 2, b"m2".to_vec()),
            ("stream".into(), "stream-1".into(), 0, b"v2".to_vec()),
            ("moderation".into(), "stream-1".into(), 0, b"{}".to_vec()),
        ]
    );
    // Taken but not confirmed: still counted, not handed out again to the same reader.
    assert_eq!(s.outbox_stats().await.unwrap().depth, 4);
    assert!(s.outbox_take("w1", 10, RECLAIM).await.unwrap().is_empty());
    let ids: Vec<String> = got.iter().map(|e| e.id.clone()).collect();
    s.outbox_ack(&ids[..2]).await.unwrap();
    assert_eq!(s.outbox_stats().await.unwrap().depth, 2);
    s.outbox_ack(&ids[2..]).await.unwrap();
    let stats = s.outbox_stats().await.unwrap();
    assert_eq!(stats.depth, 0);
    assert_eq!(stats.oldest_added_ms, None);
}

async fn outbox_hands_each_record_to_one_reader(s: Store) {
    let tag = OutboxTag::new("chat", "s");
    let o = AppendOptions {
        outbox: Some(tag),
        ..Default::default()
    };
    for i in 0..200 {
        s.log_append("{s}:ob2", format!("m{i}").as_bytes(), &o)
            .await
            .unwrap();
    }
    let mut readers = Vec::new();
    for r in 0..3 {
        let s = s.clone();
        readers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            loop {
                let got = s.outbox_take(&format!("r{r}"), 7, RECLAIM).await.unwrap();
                if got.is_empty() {
                    return seen;
                }
                let ids: Vec<String> = got.iter().map(|e| e.id.clone()).collect();
                seen.extend(got.into_iter().map(|e| e.seq));
                s.outbox_ack(&ids).await.unwrap();
            }
        }));
    }
    let mut all = Vec::new();
    for r in readers {
        all.extend(r.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (1..=200).collect::<Vec<u64>>());
    assert_eq!(s.outbox_stats().await.unwrap().depth, 0);
}

async fn log_restore_continues_the_sequence(s: Store) {
    let entries: Vec<LogEntry> = (8..=10)
        .map(|i| LogEntry {
            seq: i,
            payload: Bytes::from(format!("old{i}")),
        })
        .collect();
    let o = AppendOptions {
        max_len: 2,
        keep_seq: true,
        ..Default::default()
    };
    s.log_restore("rl", &entries, 12, &o).await.unwrap();
    assert_eq!(s.log_last_seq("rl").await.unwrap(), 12);
    let got: Vec<u64> = s
        .log_after("rl", 0, 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(got, vec![9, 10]);
    assert_eq!(s.log_append("rl", b"new", &o).await.unwrap(), 13);
    // Repeating it (another node racing) changes nothing.
    s.log_restore("rl", &entries, 12, &o).await.unwrap();
    assert_eq!(s.log_last_seq("rl").await.unwrap(), 13);
    let got: Vec<u64> = s
        .log_after("rl", 0, 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(got, vec![10, 13]);
}

async fn log_keep_seq_survives_expiry(s: Store) {
    let o = AppendOptions {
        ttl: Some(Duration::from_millis(300)),
        keep_seq: true,
        ..Default::default()
    };
    s.log_append("ks", b"a", &o).await.unwrap();
    assert_eq!(s.log_append("ks", b"b", &o).await.unwrap(), 2);
    assert!(
        common::eventually(WAIT, || async {
            s.log_after("ks", 0, 10).await.unwrap().is_empty()
        })
        .await,
        "entries never expired"
    );
    assert_eq!(s.log_append("ks", b"c", &o).await.unwrap(), 3);
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod memory_backend {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::memory().await).await;
                }
            )*
        }
        mod redis_backend {
            $(
                #[tokio::test]
                async fn $name() {
                    let s = super::redis().await;
                    super::$name(s.clone()).await;
                    s.close().await;
                }
            )*
        }
        mod redis_cluster_backend {
            $(
                #[tokio::test]
                async fn $name() {
                    let s = super::redis_cluster().await;
                    super::$name(s.clone()).await;
                    s.close().await;
                }
            )*
        }
    };
}

conformance!(
    kv_round_trip,
    kv_ttl_expires,
    kv_set_nx,
    counters,
    concurrent_counter_increments,
    presence_members,
    presence_expires,
    log_append_and_read,
    log_trims_to_max_len,
    log_expires,
    log_append_publishes_in_order,
    concurrent_appends_are_gapless,
    pubsub_fanout,
    rate_limit_burst_then_refusal,
    log_append_once_is_idempotent,
    concurrent_rate_limit_admits_exactly_the_burst,
    sorted_index_pages_descending,
    compare_and_swap_publishes_once,
    maxima_and_distinct_counts,
    outbox_records_atomic_steps,
    outbox_hands_each_record_to_one_reader,
    log_restore_continues_the_sequence,
    log_keep_seq_survives_expiry,
);

/// Records a writer took but never confirmed (its node died) go to another writer once
/// they have been idle for the reclaim time.
#[tokio::test]
async fn redis_outbox_records_of_a_dead_reader_are_taken_over() {
    let s = redis().await;
    for i in 0..5 {
        s.outbox_add(&OutboxTag::new("chat", "s"), format!("r{i}").as_bytes())
            .await
            .unwrap();
    }
    let dead = s.outbox_take("dead-node-0", 3, RECLAIM).await.unwrap();
    assert_eq!(dead.len(), 3);
    // Not yet idle long enough (2 s: more than a stalled machine takes between the two
    // calls): the other reader gets only the untaken two.
    const IDLE: Duration = Duration::from_secs(2);
    let live = s.outbox_take("live-node-0", 10, IDLE).await.unwrap();
    assert_eq!(live.len(), 2);
    tokio::time::sleep(IDLE + Duration::from_millis(200)).await;
    let mut taken = Vec::new();
    for _ in 0..5 {
        taken.extend(s.outbox_take("live-node-0", 10, IDLE).await.unwrap());
        if dead.iter().all(|d| taken.iter().any(|t| t.id == d.id)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Every record idle that long is handed out again (the live reader's own unconfirmed
    // ones too: writing twice is harmless), so the dead reader's are among them.
    let a: BTreeSet<String> = taken.iter().map(|e| e.id.clone()).collect();
    let b: BTreeSet<String> = dead.iter().map(|e| e.id.clone()).collect();
    assert!(
        a.is_superset(&b),
        "the dead reader's records were not taken over"
    );
    let all: Vec<String> = a
        .into_iter()
        .chain(live.iter().map(|e| e.id.clone()))
        .collect();
    s.outbox_ack(&all).await.unwrap();
    assert_eq!(s.outbox_stats().await.unwrap().depth, 0);
    s.close().await;
}

/// Two Redis-backed nodes share state and see each other's publishes.
#[tokio::test]
async fn redis_nodes_share_state_and_messages() {
    let prefix = common::test_config().redis.key_prefix;
    let a = redis_with_prefix(&prefix).await;
    let b = redis_with_prefix(&prefix).await;
    let mut sub = a.subscribe("stream:1").await.unwrap();
    let o = AppendOptions {
        publish: Some("stream:1".into()),
        ..Default::default()
    };
    assert_eq!(b.log_append("chat", b"from b", &o).await.unwrap(), 1);
    assert_eq!(a.log_append("chat", b"from a", &o).await.unwrap(), 2);
    let first = decode_log_publish(&recv_message(&mut sub).await).unwrap();
    let second = decode_log_publish(&recv_message(&mut sub).await).unwrap();
    assert_eq!((first.seq, &first.payload[..]), (1, &b"from b"[..]));
    assert_eq!((second.seq, &second.payload[..]), (2, &b"from a"[..]));
    b.presence_touch("viewers", "u1", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(a.presence_count("viewers").await.unwrap(), 1);
    // A different prefix is a different deployment.
    let c = redis().await;
    assert_eq!(c.log_last_seq("chat").await.unwrap(), 0);
}

/// On a cluster each stream has its own outbox, listed in a registry: a stream whose
/// outbox is empty and that no node registered for a long time leaves it; one with
/// records waiting stays, however old its registration.
#[tokio::test]
async fn redis_cluster_registry_forgets_only_idle_empty_outboxes() {
    let prefix = common::fresh_key_prefix();
    let urls = common::redis_cluster_urls();
    let mut cfg = common::test_config().redis;
    cfg.url = urls[0].clone();
    cfg.cluster_nodes = urls[1..].to_vec();
    cfg.mode = streamedge::config::RedisMode::Cluster;
    cfg.key_prefix = prefix.clone();
    let writer = RedisStore::connect(&cfg).await.unwrap();
    for scope in ["idle", "busy", "recent"] {
        writer
            .outbox_add(&OutboxTag::new("chat", scope), b"r")
            .await
            .unwrap();
    }
    let got = writer.outbox_take("w", 10, RECLAIM).await.unwrap();
    assert_eq!(got.len(), 3);
    let idle_and_recent: Vec<String> = got
        .iter()
        .filter(|e| e.scope != "busy")
        .map(|e| e.id.clone())
        .collect();
    writer.outbox_ack(&idle_and_recent).await.unwrap();
    // Age the registrations of "idle" and "busy" (as if no node wrote there for an hour).
    let client = redis::cluster::ClusterClient::new(urls.clone()).unwrap();
    let mut c = client.get_async_connection().await.unwrap();
    let registry = format!("{prefix}outbox:streams");
    let old = streamedge::domain::clock::now_ms() - 3_600_000;
    for scope in ["idle", "busy"] {
        let _: i64 = redis::cmd("ZADD")
            .arg(&registry)
            .arg(old)
            .arg(scope)
            .query_async(&mut c)
            .await
            .unwrap();
    }
    // A fresh node's first look at the outbox also tidies the registry.
    let other = RedisStore::connect(&cfg).await.unwrap();
    assert_eq!(other.outbox_stats().await.unwrap().depth, 1);
    let left: Vec<String> = redis::cmd("ZRANGE")
        .arg(&registry)
        .arg(0)
        .arg(-1)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(left, vec!["busy".to_string(), "recent".to_string()]);
    let exists: i64 = redis::cmd("EXISTS")
        .arg(format!("{prefix}outbox:{{idle}}"))
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(exists, 0, "the idle stream's empty outbox was not deleted");
    // The busy stream's record is still handed out and confirmed.
    let ids: Vec<String> = got
        .iter()
        .filter(|e| e.scope == "busy")
        .map(|e| e.id.clone())
        .collect();
    other.outbox_ack(&ids).await.unwrap();
    assert_eq!(other.outbox_stats().await.unwrap().depth, 0);
    // Writing to a forgotten stream registers it again.
    writer.close().await;
    let again = RedisStore::connect(&cfg).await.unwrap();
    again
        .outbox_add(&OutboxTag::new("chat", "idle"), b"r2")
        .await
        .unwrap();
    let got = again.outbox_take("w2", 10, RECLAIM).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].data[..], b"r2");
    again.outbox_ack(&[got[0].id.clone()]).await.unwrap();
    other.close().await;
    again.close().await;
}
