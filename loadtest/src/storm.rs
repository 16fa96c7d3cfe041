//! `connect-storm`: open connections as fast as the concurrency allows (optionally capped
//! at a rate) until a target count, measuring join latency (TCP connect to `welcome`) and
//! errors by kind.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::Serialize;

use crate::{conn, idle, report};

#[derive(clap::Args, Clone)]
pub struct Args {
    /// The node's API listener.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub api: SocketAddr,
    /// Connections to open (this process holds them all: stay under its open-file limit).
    #[arg(long, default_value_t = 5000)]
    pub connections: usize,
    /// Connection attempts in flight at once.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Cap on new connections per second (0 = as fast as possible).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Streams the connections are spread over (created by the scenario).
    #[arg(long, default_value_t = 100)]
    pub streams: usize,
    /// The node's `auth.jwt_secret` (default: the development secret of `serve --dev`).
    #[arg(long, default_value = streamedge::auth::dev::DEV_JWT_SECRET)]
    pub jwt_secret: String,
    /// Write the JSON report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Serialize)]
struct Report {
    scenario: &'static str,
    target: usize,
    connected: usize,
    seconds: f64,
    connections_per_second: f64,
    join_latency: report::Latency,
    errors: BTreeMap<String, u64>,
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    let streams = idle::create_streams(a.api, &a.jwt_secret, a.streams).await?;
    // Tokens are signed before the clock starts: a storm of real clients brings its own.
    let urls: Vec<String> = (0..a.connections)
        .map(|i| idle::viewer_url(a.api, &streams, &a.jwt_secret, i))
        .collect();
    let urls = &urls;
    let started = Instant::now();
    let mut hist = report::histogram();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut held = Vec::with_capacity(a.connections);
    let interval = (a.rate > 0).then(|| Duration::from_secs_f64(1.0 / a.rate as f64));
    let api = a.api;
    let attempts = futures_util::stream::iter(0..a.connections)
        .then(|i| async move {
            if let Some(iv) = interval {
                tokio::time::sleep_until((started + iv * i as u32).into()).await;
            }
            i
        })
        .map(|i| async move {
            conn::open(
                api,
                &urls[i],
                conn::source_addr(&api, i),
                Duration::from_secs(30),
            )
            .await
        })
        .buffer_unordered(a.concurrency.max(1));
    let mut attempts = std::pin::pin!(attempts);
    let mut last_progress = Instant::now();
    while let Some(r) = attempts.next().await {
        match r {
            Ok((ws, took)) => {
                report::record(&mut hist, took);
                held.push(tokio::spawn(conn::hold(ws)));
            }
            Err(e) => *errors.entry(conn::error_kind(&e)).or_default() += 1,
        }
        if last_progress.elapsed() > Duration::from_millis(250) {
            last_progress = Instant::now();
            let secs = started.elapsed().as_secs_f64();
            report::progress(&format!(
                "{} connected, {} errors, {:.0} conn/s",
                held.len(),
                errors.values().sum::<u64>(),
                held.len() as f64 / secs
            ));
        }
    }
    report::end_progress();
    let secs = started.elapsed().as_secs_f64();
    let lat = report::latency(&hist);
    println!(
        "connected {}/{} in {:.2}s: {:.0} conn/s; join latency ms p50 {:.2} p90 {:.2} p99 {:.2} max {:.2}",
        held.len(),
        a.connections,
        secs,
        held.len() as f64 / secs,
        lat.p50_ms,
        lat.p90_ms,
        lat.p99_ms,
        lat.max_ms
    );
    if !errors.is_empty() {
        println!("errors: {errors:?}");
    }
    let rep = Report {
        scenario: "connect-storm",
        target: a.connections,
        connected: held.len(),
        seconds: secs,
        connections_per_second: held.len() as f64 / secs,
        join_latency: lat,
        errors,
    };
    for h in held {
        h.abort();
    }
    report::write_json(a.json.as_deref(), &rep)
}
