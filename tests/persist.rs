//! Persistence to PostgreSQL against real servers: the `migrate` command (Row Level
//! Security has tests/rls.rs),
//! zero loss through a PostgreSQL outage, a killed node and a restart without Redis,
//! restoring after Redis lost its data, and session exports.

use streamedge_testkit as common;

use std::sync::Arc;
use std::time::Duration;

use common::{NodeProcess, PgServer, RedisServer, TestNode};
use serde_json::{json, Value};
use streamedge::config::{Config, Secret};
use uuid::Uuid;

const T: Duration = Duration::from_secs(60);

fn persist_config(db: &str) -> Config {
    let mut c = common::test_config();
    c.persist.database_url = Secret::new(db);
    c.persist.poll_interval = Duration::from_millis(20);
    c.persist.retry_initial = Duration::from_millis(50);
    c.persist.retry_max = Duration::from_millis(500);
    c.persist.reclaim_after = Duration::from_secs(1);
    c.chat.user_per_sec = 0.0;
    c
}

fn persist_env(db: &str, redis_url: &str, prefix: &str) -> Vec<(&'static str, String)> {
    vec![
        ("STREAMEDGE_REDIS__URL", redis_url.to_string()),
        ("STREAMEDGE_REDIS__KEY_PREFIX", prefix.to_string()),
        ("STREAMEDGE_PERSIST__DATABASE_URL", db.to_string()),
        ("STREAMEDGE_PERSIST__POLL_INTERVAL", "20ms".into()),
        ("STREAMEDGE_PERSIST__RETRY_INITIAL", "50ms".into()),
        ("STREAMEDGE_PERSIST__RETRY_MAX", "500ms".into()),
        ("STREAMEDGE_PERSIST__RECLAIM_AFTER", "1s".into()),
        ("STREAMEDGE_CHAT__USER_PER_SEC", "0".into()),
    ]
}

async fn count(db: &str, sql: &str) -> i64 {
    common::pg_count(db, sql).await
}

/// Waits until `sql` (a count) returns `want`.
async fn wait_count(db: &str, sql: &str, want: i64) {
    common::wait_pg_count(db, sql, want, T).await
}

/// Sends `n` messages numbered from `from`, each acknowledged.
async fn send_many(ws: &mut common::Ws, from: usize, n: usize) -> Vec<u64> {
    let mut seqs = Vec::with_capacity(n);
    for i in from..from + n {
        let ack = common::send_and_ack(ws, &format!("m{i}"), &format!("message {i}")).await;
        assert_eq!(ack["type"], "ack", "{ack}");
        seqs.push(ack["seq"].as_u64().unwrap());
    }
    seqs
}

/// Runs `streamedge migrate` with `args`; returns (success, stdout, stderr).
fn migrate_cli(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_streamedge"))
        .arg("migrate")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// `applied <version>` for every bundled migration, in order.
fn all_applied() -> String {
    streamedge::persist::migrate::MIGRATIONS
        .iter()
        .map(|(v, _)| format!("applied {v}\n"))
        .collect()
}

// What each caller may read and write once migrated: tests/rls.rs.
#[tokio::test]
async fn migrate_cli_is_idempotent() {
    let db = common::empty_database_on(&common::database_url()).await;
    let (ok, stdout, stderr) = migrate_cli(&["--auth-shim", "--database-url", &db]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout, all_applied());
    let (ok, stdout, stderr) = migrate_cli(&["--auth-shim", "--database-url", &db]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout.trim(), "schema up to date");
}

#[tokio::test]
async fn migrate_on_a_plain_postgresql_says_to_use_the_auth_shim() {
    // A server of its own: the shared one has the Supabase roles (scripts/test made them).
    let pg = PgServer::start();
    let db = pg.url();
    let (ok, stdout, stderr) = migrate_cli(&["--database-url", &db]);
    assert!(!ok, "{stdout}");
    assert!(
        stderr.contains(
            "missing: role anon, role authenticated, role service_role, function auth.uid()"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("run `streamedge migrate --auth-shim`"),
        "{stderr}"
    );
    assert!(!stderr.contains("does not exist"), "{stderr}");
    // Nothing was applied: no table, no migration recorded.
    assert_eq!(
        count(
            &db,
            "select count(*) from pg_tables where schemaname = 'public'"
        )
        .await,
        0
    );
    let (ok, stdout, stderr) = migrate_cli(&["--auth-shim", "--database-url", &db]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout, all_applied());

    // The shared server has the roles; a new database there still lacks auth.uid().
    let db = common::empty_database_on(&common::database_url()).await;
    let (ok, _, stderr) = migrate_cli(&["--database-url", &db]);
    assert!(!ok);
    assert!(
        stderr.contains("(missing: function auth.uid())")
            && stderr.contains("streamedge migrate --auth-shim"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_message_is_persisted_once_through_a_postgresql_outage() {
    let mut pg = PgServer::start();
    let db = common::fresh_database_on(&pg.url()).await;
    let mut cfg = persist_config(&db);
    cfg.redis.url = common::redis_url();
    let node = TestNode::start(cfg).await;
    let api = node.api_url("");
    let stream = common::live_stream(&api, "seller-pg").await;
    let (mut ws, _) = common::join_with(node.api, &stream, &common::buyer("talker")).await;

    let mut seqs = send_many(&mut ws, 0, 100).await;
    wait_count(&db, "select count(*) from chat_messages", 100).await;
    pg.stop();
    // Chat goes on while PostgreSQL is down.
    seqs.extend(send_many(&mut ws, 100, 100).await);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    pg.restart();
    seqs.extend(send_many(&mut ws, 200, 100).await);
    assert_eq!(seqs, (1..=300).collect::<Vec<u64>>());

    wait_count(&db, "select count(*) from chat_messages", 300).await;
    let c = common::pg(&db).await;
    let r = c
        .query_one(
            "select count(distinct seq), min(seq), max(seq),
                    count(*) filter (where body = 'message ' || (seq - 1)) from chat_messages",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            r.get::<_, i64>(0),
            r.get::<_, i64>(1),
            r.get::<_, i64>(2),
            r.get::<_, i64>(3)
        ),
        (300, 1, 300, 300)
    );
    // The stream and its session were persisted too.
    wait_count(
        &db,
        &format!("select count(*) from streams where id = '{stream}' and state = 'live'"),
        1,
    )
    .await;
    wait_count(
        &db,
        "select count(*) from stream_sessions where state = 'live'",
        1,
    )
    .await;
    let metrics = node.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("streamedge_persist_retries_total") && !l.ends_with(" 0")),
        "no retries counted during the outage"
    );
    // Persistence lag and batch sizes are recorded.
    for name in [
        "streamedge_persist_lag_seconds_count",
        "streamedge_persist_batch_records_count",
    ] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with(name) && !l.ends_with(" 0")),
            "{name} missing"
        );
    }
    // The fan-out latency (publish to socket) is sampled.
    assert!(
        metrics.lines().any(
            |l| l.starts_with("streamedge_chat_publish_to_socket_seconds_count")
                && !l.ends_with(" 0")
        ),
        "no publish-to-socket samples"
    );
    drop(ws);
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_a_killed_node_took_are_persisted_by_another_node() {
    let db = common::fresh_database().await;
    let prefix = common::test_config().redis.key_prefix;
    // Node A cannot reach PostgreSQL: its writers take records and hold them.
    let unreachable = format!(
        "postgres://postgres@127.0.0.1:{}/postgres",
        common::free_port()
    );
    let a = NodeProcess::spawn(&persist_env(&unreachable, &common::redis_url(), &prefix));
    let stream = common::live_stream(&a.api_url(""), "seller-kill").await;
    let (mut ws, _) = common::join_with(a.api, &stream, &common::buyer("talker")).await;
    let seqs = send_many(&mut ws, 0, 50).await;
    assert_eq!(seqs.len(), 50);
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.signal("KILL");
    drop(ws);
    drop(a);
    assert_eq!(count(&db, "select count(*) from chat_messages").await, 0);
    // Node B shares Redis and reaches PostgreSQL: it takes the records over.
    let b = NodeProcess::spawn(&persist_env(&db, &common::redis_url(), &prefix));
    wait_count(&db, "select count(*) from chat_messages", 50).await;
    wait_count(&db, "select count(distinct seq) from chat_messages", 50).await;
    wait_count(
        &db,
        &format!("select count(*) from streams where id = '{stream}'"),
        1,
    )
    .await;
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_the_local_outbox_is_replayed_after_a_crash() {
    let mut pg = PgServer::start();
    let db = common::fresh_database_on(&pg.url()).await;
    pg.stop();
    let outbox = std::env::temp_dir().join(format!("se-outbox-{}", Uuid::new_v4().simple()));
    let env = vec![
        ("STREAMEDGE_PERSIST__DATABASE_URL", db.clone()),
        (
            "STREAMEDGE_PERSIST__LOCAL_OUTBOX_DIR",
            outbox.display().to_string(),
        ),
        ("STREAMEDGE_PERSIST__POLL_INTERVAL", "20ms".to_string()),
        ("STREAMEDGE_PERSIST__RETRY_MAX", "300ms".to_string()),
        ("STREAMEDGE_CHAT__USER_PER_SEC", "0".to_string()),
    ];
    let node = NodeProcess::spawn(&env);
    let stream = common::live_stream(&node.api_url(""), "seller-local").await;
    let (mut ws, _) = common::join_with(node.api, &stream, &common::buyer("talker")).await;
    let seqs = send_many(&mut ws, 0, 40).await;
    assert_eq!(seqs, (1..=40).collect::<Vec<u64>>());
    node.signal("KILL");
    drop(ws);
    drop(node);
    pg.restart();
    let node = NodeProcess::spawn(&env);
    wait_count(&db, "select count(*) from chat_messages", 40).await;
    wait_count(
        &db,
        &format!("select count(*) from streams where id = '{stream}'"),
        1,
    )
    .await;
    // Replayed once: the outbox is confirmed and a second restart writes nothing new.
    common::eventually(T, || async {
        node.metrics()
            .await
            .lines()
            .any(|l| l == "streamedge_persist_outbox_depth 0")
    })
    .await;
    drop(node);
    let _node = NodeProcess::spawn(&env);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count(&db, "select count(*) from chat_messages").await, 40);
    let _ = std::fs::remove_dir_all(&outbox);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_redis_loses_its_data_streams_history_bans_and_sequence_come_back() {
    let mut redis = RedisServer::start_volatile();
    let db = common::fresh_database().await;
    let mut cfg = persist_config(&db);
    cfg.redis.url = redis.url();
    // The operator accepted a Redis without persistence: what it loses comes back from
    // PostgreSQL.
    cfg.persist.allow_volatile_redis = true;
    cfg.chat.history_size = 20;
    let node = TestNode::start(cfg).await;
    let api = node.api_url("");
    let seller = common::seller("seller-restore");
    let stream = common::live_stream(&api, "seller-restore").await;
    let (mut ws, _) = common::join_with(node.api, &stream, &common::buyer("talker")).await;
    send_many(&mut ws, 0, 30).await;
    drop(ws);
    let (st, _) = common::put(&format!("{api}/v1/streams/{stream}/bans/spammer"), &seller).await;
    assert_eq!(st, 200);
    // Message 5 is older than the shared history (20): deleting it needs the archive.
    wait_count(&db, "select count(*) from chat_messages", 30).await;
    let (st, _) = common::delete(&format!("{api}/v1/streams/{stream}/messages/5"), &seller).await;
    assert_eq!(st, 204);
    wait_count(&db, "select count(*) from chat_messages", 30).await;
    wait_count(
        &db,
        "select count(*) from chat_messages where deleted_at is not null",
        1,
    )
    .await;
    wait_count(&db, "select count(*) from moderation_actions", 2).await;

    // Redis restarts empty.
    redis.stop();
    redis.restart();
    assert!(
        common::eventually(T, || async {
            reqwest::get(node.admin_url("/readyz"))
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await
    );
    let (st, body) = common::get(&format!("{api}/v1/streams/{stream}"), &seller).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["state"], "live");
    assert_eq!(body["owner_id"], "seller-restore");

    // History: the newest 20 from the restored shared history, older ones from PostgreSQL.
    let mut seen = Vec::new();
    let mut url = format!("{api}/v1/streams/{stream}/messages?limit=8");
    loop {
        let (st, page) = common::get(&url, &seller).await;
        assert_eq!(st, 200, "{page}");
        for m in page["messages"].as_array().unwrap() {
            seen.push(m["seq"].as_u64().unwrap());
            assert_eq!(
                m["body"],
                format!("message {}", m["seq"].as_u64().unwrap() - 1)
            );
        }
        match page["next_before_seq"].as_u64() {
            Some(b) => url = format!("{api}/v1/streams/{stream}/messages?limit=8&before_seq={b}"),
            None => break,
        }
    }
    let want: Vec<u64> = (1..=30).rev().filter(|s| *s != 5).collect();
    assert_eq!(seen, want);

    // The ban still holds, and numbering continues after 30.
    let (mut spam, _) = common::join_with(node.api, &stream, &common::buyer("spammer")).await;
    let refused = common::send_and_ack(&mut spam, "s1", "hello").await;
    assert_eq!(refused["code"], "banned", "{refused}");
    let (mut ws, welcome) = common::join_with(node.api, &stream, &common::buyer("talker")).await;
    assert_eq!(welcome["last_seq"], 30);
    let ack = common::send_and_ack(&mut ws, "after-flush", "still here").await;
    assert_eq!(ack["seq"], 31, "{ack}");
    wait_count(&db, "select count(*) from chat_messages", 31).await;
    drop((ws, spam));
    node.shutdown().await.unwrap();
}

/// Splits RFC 4180 CSV into records of fields.
fn parse_csv(s: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_streams_a_sessions_summary_and_transcript_as_json_and_csv() {
    let db = common::fresh_database().await;
    let mut cfg = persist_config(&db);
    cfg.redis.url = common::redis_url();
    let node = TestNode::start(cfg).await;
    let api = node.api_url("");
    let seller = common::seller("seller-export");
    let stream = common::live_stream(&api, "seller-export").await;
    let (mut ws, _) =
        common::join_with(node.api, &stream, &common::buyer("buyer, \"quoted\"")).await;
    let n = 2500;
    let body = |i: usize| format!("#{i}: a, b and \"c\"");
    for i in 0..n {
        common::send_text(
            &mut ws,
            &json!({"type": "send", "client_msg_id": format!("e{i}"), "body": body(i)}).to_string(),
        )
        .await;
    }
    // The last ack means every message is sequenced.
    loop {
        let f = common::next_json(&mut ws, T).await;
        if f["type"] == "ack" && f["client_msg_id"] == format!("e{}", n - 1) {
            break;
        }
    }
    let (st, ended) =
        common::post(&format!("{api}/v1/streams/{stream}/session/end"), &seller).await;
    assert_eq!(st, 200);
    let session = ended["stream"]["session"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_count(&db, "select count(*) from chat_messages", n as i64).await;
    // An operator edited one archived message in Supabase to span two lines.
    common::pg(&db)
        .await
        .execute(
            "update chat_messages set body = 'line one\nline two' where seq = 7",
            &[],
        )
        .await
        .unwrap();
    let export = |format: &str| {
        let url = format!("{api}/v1/streams/{stream}/sessions/{session}/export?format={format}");
        let seller = seller.clone();
        async move {
            let r = reqwest::Client::new()
                .get(url)
                .bearer_auth(seller)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let ctype = r.headers()["content-type"].to_str().unwrap().to_string();
            (ctype, r.text().await.unwrap())
        }
    };
    let (ctype, text) = export("json").await;
    assert_eq!(ctype, "application/json");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["summary"]["session_id"], session);
    assert_eq!(v["summary"]["chat_messages"], n);
    let msgs = v["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), n);
    for (i, m) in msgs.iter().enumerate() {
        assert_eq!(m["seq"], i + 1);
        if i + 1 != 7 {
            assert_eq!(m["body"], body(i));
        }
        assert_eq!(m["user"], "buyer, \"quoted\"");
    }
    assert_eq!(msgs[6]["body"], "line one\nline two");

    let (ctype, text) = export("csv").await;
    assert!(ctype.starts_with("text/csv"));
    let rows = parse_csv(&text);
    assert_eq!(
        rows[0],
        vec!["seq", "id", "user_id", "sent_at", "deleted", "body"]
    );
    assert_eq!(rows.len(), n + 1);
    for (i, r) in rows[1..].iter().enumerate() {
        assert_eq!(r.len(), 6, "{r:?}");
        assert_eq!(r[0], (i + 1).to_string());
        assert_eq!(r[2], "buyer, \"quoted\"");
        let want = if i + 1 == 7 {
            "line one\nline two".to_string()
        } else {
            body(i)
        };
        assert_eq!(r[5], want);
    }

    // Only the owner exports; formats are checked.
    let (st, body) = common::get(
        &format!("{api}/v1/streams/{stream}/sessions/{session}/export?format=json"),
        &common::buyer("someone"),
    )
    .await;
    assert_eq!((st, body["code"].as_str()), (403, Some("not_owner")));
    let (st, body) = common::get(
        &format!("{api}/v1/streams/{stream}/sessions/{session}/export?format=xml"),
        &seller,
    )
    .await;
    assert_eq!((st, body["code"].as_str()), (400, Some("invalid_format")));
    let (st, body) = common::get(
        &format!(
            "{api}/v1/streams/{stream}/sessions/{}/export",
            Uuid::new_v4()
        ),
        &seller,
    )
    .await;
    assert_eq!(
        (st, body["code"].as_str()),
        (404, Some("session_not_found"))
    );
    let r = reqwest::get(format!(
        "{api}/v1/streams/{stream}/sessions/{session}/export"
    ))
    .await
    .unwrap();
    assert_eq!(r.status(), 401);
    let (st, body) = common::get(
        &format!("{api}/v1/streams/{stream}/sessions/not-a-uuid/export"),
        &seller,
    )
    .await;
    assert_eq!(
        (st, body["code"].as_str()),
        (400, Some("invalid_session_id"))
    );
    let (st, body) = common::get(
        &format!("{api}/v1/streams/{stream}/sessions/{session}/export?format=csv&extra=1"),
        &seller,
    )
    .await;
    assert_eq!((st, body["code"].as_str()), (400, Some("invalid_query")));
    // The summary and viewer statistics reached PostgreSQL.
    wait_count(
        &db,
        &format!("select count(*) from viewer_stats where session_id = '{session}' and chat_messages = {n}"),
        1,
    )
    .await;
    wait_count(
        &db,
        &format!("select count(*) from stream_sessions where id = '{session}' and state = 'ended' and summary is not null"),
        1,
    )
    .await;
    drop(ws);
    node.shutdown().await.unwrap();
}

/// With persistence on, a Redis without an append-only file would lose acknowledged
/// outbox records on a restart: the node refuses to start against it, saying what to do,
/// unless the operator accepts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_can_lose_the_outbox_is_refused_unless_accepted() {
    let redis = RedisServer::start_volatile();
    let db = common::fresh_database().await;
    let mut cfg = persist_config(&db);
    cfg.redis.url = redis.url();
    let mut bound = cfg.clone();
    bound.server.listen = "127.0.0.1:0".parse().unwrap();
    bound.server.admin_listen = "127.0.0.1:0".parse().unwrap();
    let listeners = streamedge::server::Listeners::bind(&bound)
        .await
        .expect("bind loopback listeners");
    let run = streamedge::server::run(cfg.clone(), listeners, std::future::pending::<()>());
    let err = tokio::time::timeout(T, run)
        .await
        .expect("the node started instead of refusing")
        .expect_err("the node started against a volatile Redis");
    let text = err.to_string();
    assert!(text.contains("appendonly"), "{text}");
    assert!(text.contains("persist.allow_volatile_redis"), "{text}");

    cfg.persist.allow_volatile_redis = true;
    let node = TestNode::start(cfg).await;
    let (st, _) = common::get(&node.api_url("/v1/streams?limit=1"), &common::buyer("b")).await;
    assert_eq!(st, 200);
    node.shutdown().await.unwrap();
}

/// Redis crashes (SIGKILL) and restarts with its append-only file — the settings the docs
/// require — while a client sends chat, retrying with the same `client_msg_id` whatever
/// goes wrong: every acknowledged message is in the stream's history afterwards, once and
/// in order, and reaches PostgreSQL exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_crash_under_chat_load_loses_nothing_acknowledged() {
    const N: usize = 150;
    let mut redis = RedisServer::start();
    let db = common::fresh_database().await;
    let mut cfg = persist_config(&db);
    cfg.redis.url = redis.url();
    let node = TestNode::start(cfg).await;
    let api = node.api_url("");
    let stream = common::live_stream(&api, "seller-crash").await;
    let acked = Arc::new(std::sync::Mutex::new(Vec::<(String, u64)>::new()));
    let sender = {
        let (addr, acked) = (node.api, acked.clone());
        tokio::spawn(async move {
            let token = common::buyer("talker");
            let (mut ws, _) = common::join_with(addr, &stream, &token).await;
            for i in 0..N {
                let id = format!("m{i}");
                loop {
                    let f = common::send_and_ack(&mut ws, &id, &format!("message {i}")).await;
                    if f["type"] == "ack" {
                        let seq = f["seq"].as_u64().unwrap();
                        acked.lock().unwrap().push((id.clone(), seq));
                        break;
                    }
                    // `unavailable` while Redis is away: retry the same id.
                    assert_eq!(f["code"], "unavailable", "{f}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        })
    };
    assert!(
        common::eventually(T, || async { acked.lock().unwrap().len() >= N / 3 }).await,
        "no progress before the crash"
    );
    redis.stop();
    tokio::time::sleep(Duration::from_millis(700)).await;
    redis.restart();
    tokio::time::timeout(T, sender)
        .await
        .expect("the sender never finished")
        .unwrap();

    let acked = acked.lock().unwrap().clone();
    let seqs: Vec<u64> = acked.iter().map(|(_, s)| *s).collect();
    assert_eq!(
        seqs,
        (1..=N as u64).collect::<Vec<_>>(),
        "acks out of order or repeated"
    );
    // The history (newest first) holds every acknowledged message once.
    let seller = common::seller("seller-crash");
    let (st, page) = common::get(
        &format!("{api}/v1/streams/{stream}/messages?limit=200"),
        &seller,
    )
    .await;
    assert_eq!(st, 200, "{page}");
    let history: Vec<(String, u64)> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|m| {
            (
                m["body"].as_str().unwrap().to_string(),
                m["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, u64)> = acked
        .iter()
        .map(|(id, s)| (format!("message {}", &id[1..]), *s))
        .collect();
    assert_eq!(history, expected);
    // PostgreSQL gets each exactly once.
    wait_count(&db, "select count(*) from chat_messages", N as i64).await;
    let c = common::pg(&db).await;
    let rows = c
        .query(
            "select client_msg_id, seq from chat_messages order by seq",
            &[],
        )
        .await
        .unwrap();
    let stored: Vec<(String, u64)> = rows
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as u64))
        .collect();
    assert_eq!(stored, acked);
    node.shutdown().await.unwrap();
}
