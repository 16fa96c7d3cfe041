//! `tokens`: the RTC token endpoint under load — requests per second and latency with
//! valid Supabase-style access tokens (signed with the node's JWT secret), spread over
//! many users so per-user rate limits measure nothing but themselves.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;
use streamedge::auth::dev::DEV_JWT_SECRET;
use streamedge::auth::Role;

use crate::conn::token;
use crate::{http1, report};

#[derive(clap::Args, Clone)]
pub struct Args {
    /// The node's API listener.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub api: SocketAddr,
    /// The node's `auth.jwt_secret` (default: the development secret of `serve --dev`).
    #[arg(long, default_value = DEV_JWT_SECRET)]
    pub jwt_secret: String,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Requests in flight per connection (HTTP/1.1 pipelining: written together, answered
    /// in order). 1 is one request per round trip, like a typical client; more measures
    /// the node with the loopback round trip cost shared by several requests.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub pipeline: u16,
    /// Distinct users the requests are spread over.
    #[arg(long, default_value_t = 10_000)]
    pub users: usize,
    /// Measurement time (after warm-up).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Write the JSON report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Serialize)]
struct Report {
    scenario: &'static str,
    connections: usize,
    pipeline: u16,
    seconds: f64,
    requests: u64,
    requests_per_second: f64,
    latency: report::Latency,
    statuses: BTreeMap<u16, u64>,
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    // A stream to ask tokens for.
    let mut c = http1::Conn::connect(a.api).await?;
    let seller = token(&a.jwt_secret, "load-seller", Role::Seller);
    let resp = c
        .send(&http1::request(
            "POST",
            a.api,
            "/v1/streams",
            &seller,
            r#"{"title":"load test"}"#,
        ))
        .await?;
    anyhow::ensure!(
        resp.status == 201,
        "creating a stream failed: {} {}",
        resp.status,
        String::from_utf8_lossy(&resp.body)
    );
    let stream: serde_json::Value = serde_json::from_slice(&resp.body)?;
    let path = format!(
        "/v1/streams/{}/rtc-token",
        stream["id"].as_str().unwrap_or("")
    );
    let requests: Vec<Vec<u8>> = (0..a.users)
        .map(|i| {
            let t = token(&a.jwt_secret, &format!("load-user-{i}"), Role::Buyer);
            http1::request("POST", a.api, &path, &t, "")
        })
        .collect();
    let requests = std::sync::Arc::new(requests);

    let start = Instant::now();
    let measure_from = start + a.warmup;
    let stop_at = measure_from + a.duration;
    let depth = usize::from(a.pipeline);
    let mut tasks = Vec::new();
    for w in 0..a.connections {
        let requests = requests.clone();
        let api = a.api;
        tasks.push(tokio::spawn(async move {
            let mut hist = report::histogram();
            let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
            let mut conn = http1::Conn::connect(api).await?;
            let mut i = w;
            let mut batch = Vec::new();
            loop {
                let t0 = Instant::now();
                if t0 >= stop_at {
                    break;
                }
                if depth == 1 {
                    let resp = conn.send(&requests[i % requests.len()]).await?;
                    i += 64;
                    if t0 >= measure_from {
                        report::record(&mut hist, t0.elapsed());
                        *statuses.entry(resp.status).or_default() += 1;
                    }
                    continue;
                }
                batch.clear();
                for _ in 0..depth {
                    batch.extend_from_slice(&requests[i % requests.len()]);
                    i += 64;
                }
                // Each response's latency is from the batch's write to its arrival.
                conn.send_pipelined(&batch, depth, |resp| {
                    if t0 >= measure_from {
                        report::record(&mut hist, t0.elapsed());
                        *statuses.entry(resp.status).or_default() += 1;
                    }
                })
                .await?;
            }
            anyhow::Ok((hist, statuses))
        }));
    }
    let progress = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let el = start.elapsed();
            report::progress(&format!("running {:.1}s", el.as_secs_f64()));
            if Instant::now() > stop_at {
                break;
            }
        }
    });
    let mut hist = report::histogram();
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    for t in tasks {
        let (h, s) = t.await??;
        hist.add(&h)?;
        for (k, v) in s {
            *statuses.entry(k).or_default() += v;
        }
    }
    let _ = progress.await;
    report::end_progress();
    let secs = a.duration.as_secs_f64();
    let total: u64 = statuses.values().sum();
    let lat = report::latency(&hist);
    println!(
        "{} requests in {:.1}s (pipeline {}): {:.0} req/s; latency ms p50 {:.3} p90 {:.3} p99 {:.3} p99.9 {:.3} max {:.3}; statuses {:?}",
        total,
        secs,
        a.pipeline,
        total as f64 / secs,
        lat.p50_ms,
        lat.p90_ms,
        lat.p99_ms,
        lat.p999_ms,
        lat.max_ms,
        statuses
    );
    report::write_json(
        a.json.as_deref(),
        &Report {
            scenario: "tokens",
            connections: a.connections,
            pipeline: a.pipeline,
            seconds: secs,
            requests: total,
            requests_per_second: total as f64 / secs,
            latency: lat,
            statuses,
        },
    )
}
