//! `persist`: sustained chat rows per second written to PostgreSQL and the persistence lag.
//!
//! Producers append chat messages exactly as a node's `send` does (the atomic log append
//! that sequences, publishes and adds the record to the outbox), at a fixed total rate;
//! the node's own persistence writers move them to PostgreSQL. Lag per row is
//! `persisted_at - sent_at`, read back from PostgreSQL after the run, so it covers the
//! outbox wait, the batch and the commit.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use streamedge::config::{Config, Secret};
use streamedge::domain::chat::StoredMessage;
use streamedge::domain::keys;
use streamedge::persist::{records, Persistence};
use streamedge::store::{self, AppendOptions};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::report;

#[derive(clap::Args, Clone)]
pub struct Args {
    /// PostgreSQL (migrations are applied, with the Supabase shim when `auth` is missing).
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// Redis for the outbox; without it, the local append-only outbox in `--outbox-dir`.
    #[arg(long)]
    pub redis_url: Option<String>,
    #[arg(long, default_value = "/tmp/streamedge-load-outbox")]
    pub outbox_dir: PathBuf,
    /// Chat messages per second, all producers together.
    #[arg(long, default_value_t = 10_000)]
    pub rate: u64,
    /// Streams the messages are spread over.
    #[arg(long, default_value_t = 100)]
    pub streams: usize,
    /// Concurrent producers.
    #[arg(long, default_value_t = 64)]
    pub producers: usize,
    /// Writer tasks and batch size (the node's defaults: persist.writers, batch_max_records).
    #[arg(long, default_value_t = 4)]
    pub writers: usize,
    #[arg(long, default_value_t = 5000)]
    pub batch: usize,
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Write the JSON report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Serialize)]
struct Report {
    scenario: &'static str,
    backend: &'static str,
    target_rate: u64,
    seconds: f64,
    produced: u64,
    produced_per_second: f64,
    written: u64,
    /// Rows written per second over the run (first send to last write).
    written_per_second: f64,
    max_outbox_depth: u64,
    lag_ms: LagMs,
}

#[derive(Serialize)]
struct LagMs {
    p50: f64,
    p90: f64,
    p99: f64,
    p999: f64,
    max: f64,
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    let mut cfg = Config::default();
    cfg.persist.database_url = Secret::new(&a.database_url);
    cfg.persist.writers = a.writers;
    cfg.persist.pool_size = a.writers + 2;
    cfg.persist.batch_max_records = a.batch;
    cfg.persist.poll_interval = Duration::from_millis(20);
    cfg.persist.local_outbox_dir = a.outbox_dir.clone();
    if let Some(r) = &a.redis_url {
        cfg.redis.url = r.clone();
        cfg.redis.key_prefix = format!("load{}:", &Uuid::new_v4().simple().to_string()[..8]);
    }
    let mut client = streamedge::persist::pg::connect(&cfg.persist).await?;
    streamedge::persist::migrate::run(&mut client, true).await?;
    let store = store::from_config(&cfg).await?;
    let persist = Persistence::new(&cfg.persist, store.clone(), "load")?;
    let stop = CancellationToken::new();
    let tasks = persist.start(stop.clone());

    let streams: Vec<Uuid> = (0..a.streams).map(|_| Uuid::new_v4()).collect();
    let produced = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + a.duration;
    let per_producer = a.rate as f64 / a.producers as f64;
    let mut producers = Vec::new();
    for p in 0..a.producers {
        let store = store.clone();
        let streams = streams.clone();
        let produced = produced.clone();
        producers.push(tokio::spawn(async move {
            let interval = Duration::from_secs_f64(1.0 / per_producer);
            let mut next = Instant::now();
            let mut i = 0u64;
            while Instant::now() < deadline {
                let stream = streams[(p + i as usize * a.producers) % streams.len()];
                let msg = StoredMessage {
                    id: Uuid::new_v4(),
                    user: format!("user-{p}"),
                    body: format!("message {i} from producer {p}, about the blue jacket"),
                    ts: streamedge::domain::clock::rfc3339(streamedge::domain::clock::now_ms()),
                    client_msg_id: format!("p{p}-{i}"),
                };
                let payload = serde_json::to_vec(&msg).unwrap();
                let opts = AppendOptions {
                    max_len: 1000,
                    ttl: Some(Duration::from_secs(3600)),
                    publish: Some(keys::stream_events(&stream)),
                    once: Some((
                        keys::chat_sent(&stream, &format!("user-{p}"), &format!("p{p}-{i}")),
                        Duration::from_secs(600),
                    )),
                    outbox: Some(records::tag(records::CHAT, &stream)),
                    keep_seq: true,
                };
                if store
                    .log_append(&keys::chat_log(&stream), &payload, &opts)
                    .await
                    .is_ok()
                {
                    produced.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
                next += interval;
                let now = Instant::now();
                if next > now {
                    tokio::time::sleep(next - now).await;
                } else if now - next > Duration::from_secs(1) {
                    // Far behind: do not burst to catch up.
                    next = now;
                }
            }
        }));
    }
    let mut max_depth = 0;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let depth = store.outbox_stats().await.map(|s| s.depth).unwrap_or(0);
        max_depth = max_depth.max(depth);
        let secs = start.elapsed().as_secs_f64();
        report::progress(&format!(
            "{secs:5.1}s produced {} ({:.0}/s) outbox {depth}",
            produced.load(Ordering::Relaxed),
            produced.load(Ordering::Relaxed) as f64 / secs
        ));
    }
    for p in producers {
        let _ = p.await;
    }
    let produced_secs = start.elapsed().as_secs_f64();
    // Drain.
    let drain_deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let depth = store.outbox_stats().await.map(|s| s.depth).unwrap_or(0);
        max_depth = max_depth.max(depth);
        if depth == 0 || Instant::now() > drain_deadline {
            break;
        }
        report::progress(&format!("draining: outbox {depth}"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    report::end_progress();
    stop.cancel();
    for t in tasks {
        let _ = t.await;
    }
    let ids: Vec<String> = streams.iter().map(|s| s.to_string()).collect();
    let row = client
        .query_one(
            "select count(*),
                    extract(epoch from max(persisted_at) - min(sent_at))::float8,
                    percentile_cont(array[0.5, 0.9, 0.99, 0.999]) within group
                      (order by extract(epoch from persisted_at - sent_at)::float8),
                    1000 * max(extract(epoch from persisted_at - sent_at))::float8
             from chat_messages where stream_id = any($1::text[]::uuid[])",
            &[&ids],
        )
        .await?;
    let written: i64 = row.get(0);
    let span: f64 = row.get::<_, Option<f64>>(1).unwrap_or(0.0);
    let q: Vec<f64> = row
        .get::<_, Option<Vec<f64>>>(2)
        .unwrap_or_default()
        .into_iter()
        .map(|s| s * 1000.0)
        .collect();
    let max: f64 = row.get::<_, Option<f64>>(3).unwrap_or(0.0);
    let produced = produced.load(Ordering::Relaxed);
    let rep = Report {
        scenario: "persist",
        backend: store.backend(),
        target_rate: a.rate,
        seconds: produced_secs,
        produced,
        produced_per_second: produced as f64 / produced_secs,
        written: written as u64,
        written_per_second: if span > 0.0 {
            written as f64 / span
        } else {
            0.0
        },
        max_outbox_depth: max_depth,
        lag_ms: LagMs {
            p50: q.first().copied().unwrap_or(0.0),
            p90: q.get(1).copied().unwrap_or(0.0),
            p99: q.get(2).copied().unwrap_or(0.0),
            p999: q.get(3).copied().unwrap_or(0.0),
            max,
        },
    };
    println!(
        "persist ({}): target {}/s, produced {} ({:.0}/s), written {} ({:.0}/s), max outbox {}",
        rep.backend,
        rep.target_rate,
        rep.produced,
        rep.produced_per_second,
        rep.written,
        rep.written_per_second,
        rep.max_outbox_depth
    );
    println!(
        "lag ms: p50 {:.0}  p90 {:.0}  p99 {:.0}  p99.9 {:.0}  max {:.0}",
        rep.lag_ms.p50, rep.lag_ms.p90, rep.lag_ms.p99, rep.lag_ms.p999, rep.lag_ms.max
    );
    if rep.written != rep.produced {
        println!(
            "WARNING: {} produced but {} written",
            rep.produced, rep.written
        );
    }
    store.close().await;
    report::write_json(a.json.as_deref(), &rep)
}
