//! `idle`: hold many idle stream WebSockets and measure the node's resident memory per
//! connection at checkpoints (e.g. 1k, 5k, 15k), projecting the slope to 100k.
//!
//! Connections are spread over `--procs` worker processes (each process may hold at most
//! ~19k sockets on a machine with a 20k open-file cap) and over source addresses across
//! 127.0.0.0/8 (so ephemeral ports never run out).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use futures_util::StreamExt;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::{conn, metrics, report};

#[derive(clap::Args, Clone)]
pub struct Args {
    /// The node's API listener.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub api: SocketAddr,
    /// The node's admin listener (metrics are read from it).
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub admin: SocketAddr,
    /// Connection counts at which memory is measured, ascending.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000,15000")]
    pub checkpoints: Vec<usize>,
    /// Worker processes holding the connections.
    #[arg(long, default_value_t = 2)]
    pub procs: usize,
    /// Streams the connections are spread over (created by the scenario).
    #[arg(long, default_value_t = 100)]
    pub streams: usize,
    /// The node's `auth.jwt_secret` (default: the development secret of `serve --dev`).
    #[arg(long, default_value = streamedge::auth::dev::DEV_JWT_SECRET)]
    pub jwt_secret: String,
    /// Connections each worker opens at once.
    #[arg(long, default_value_t = 128)]
    pub concurrency: usize,
    /// Wait after each checkpoint before reading memory.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub settle: Duration,
    /// Keep everything open this long after the last checkpoint.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub hold: Duration,
    /// Chat going on meanwhile: messages per second on each stream (0: none), from one
    /// signed-in sender per stream (`chatter-<n>`, connected from this process and not
    /// counted among the viewers); every viewer receives them.
    #[arg(long, default_value_t = 0.0)]
    pub chat_per_stream: f64,
    /// Body bytes of those messages (besides the timestamp).
    #[arg(long, default_value_t = 100)]
    pub chat_body_bytes: usize,
    /// Write the JSON report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(clap::Args, Clone)]
pub struct WorkerArgs {
    #[arg(long)]
    api: SocketAddr,
    #[arg(long)]
    index: usize,
    /// The stream ids, comma-separated.
    #[arg(long, value_delimiter = ',')]
    streams: Vec<String>,
    #[arg(long)]
    jwt_secret: String,
    #[arg(long)]
    concurrency: usize,
}

#[derive(Debug, Serialize)]
struct Point {
    connections: usize,
    node_connections: Option<f64>,
    rss_bytes: f64,
    open_fds: Option<f64>,
    rss_per_conn_bytes: Option<f64>,
    slope_bytes_per_conn: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Report {
    scenario: &'static str,
    procs: usize,
    streams: usize,
    chat_per_stream: f64,
    chat_sent: u64,
    chat_refused: u64,
    baseline_rss_bytes: f64,
    points: Vec<Point>,
    projected_rss_at_100k_bytes: Option<f64>,
    errors: BTreeMap<String, u64>,
}

/// Creates `n` streams on the node (as sellers) for viewers to join.
pub async fn create_streams(
    api: SocketAddr,
    secret: &str,
    n: usize,
) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n.max(1) {
        ids.push(crate::chat::create_stream(api, secret, &format!("load-{i}")).await?);
    }
    Ok(ids)
}

/// The WebSocket URL of viewer `i`: a signed-in buyer (`viewer-<i>`) on one of `streams`.
pub fn viewer_url(api: SocketAddr, streams: &[String], secret: &str, i: usize) -> String {
    crate::chat::stream_ws_url(
        api,
        &streams[i % streams.len()],
        secret,
        &format!("viewer-{i}"),
    )
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    anyhow::ensure!(a.procs >= 1, "--procs must be at least 1");
    anyhow::ensure!(
        a.checkpoints.windows(2).all(|w| w[0] < w[1]),
        "--checkpoints must be ascending"
    );
    let streams = create_streams(a.api, &a.jwt_secret, a.streams).await?;
    let exe = std::env::current_exe()?;
    let mut workers = Vec::new();
    for i in 0..a.procs {
        let mut child = tokio::process::Command::new(&exe)
            .arg("idle-worker")
            .args(["--api", &a.api.to_string()])
            .args(["--index", &i.to_string()])
            .args(["--streams", &streams.join(",")])
            .args(["--jwt-secret", &a.jwt_secret])
            .args(["--concurrency", &a.concurrency.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        workers.push((child, stdin, stdout));
    }

    let base = metrics::scrape(a.admin).await?;
    let baseline =
        metrics::value(&base, "streamedge_process_resident_memory_bytes").ok_or_else(|| {
            anyhow::anyhow!("node metrics lack streamedge_process_resident_memory_bytes")
        })?;
    eprintln!("baseline RSS {:.1} MiB", baseline / 1048576.0);

    // Chat from the start (the baseline above is before it), so every checkpoint sees
    // viewers that have received messages.
    let mut chat = Vec::new();
    if a.chat_per_stream > 0.0 {
        let started = std::time::Instant::now();
        for (k, stream) in streams.iter().enumerate() {
            let prefix = format!("chatter-{k}");
            chat.push(
                crate::chat::Senders::start(
                    crate::chat::SenderPlan {
                        protocol: crate::proto::Protocol::Streamedge,
                        apis: &[a.api],
                        stream,
                        jwt_secret: &a.jwt_secret,
                        user_prefix: &prefix,
                        senders: 1,
                        rate: a.chat_per_stream,
                        duration: Duration::from_secs(365 * 24 * 3600),
                        body_bytes: a.chat_body_bytes,
                        arrivals: crate::chat::Arrivals::Poisson,
                    },
                    started,
                )
                .await?,
            );
        }
    }

    let mut points: Vec<Point> = Vec::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for &target in &a.checkpoints {
        for (i, (_, stdin, _)) in workers.iter_mut().enumerate() {
            let share = target / a.procs + usize::from(i < target % a.procs);
            stdin
                .write_all(format!("open {share}\n").as_bytes())
                .await?;
            stdin.flush().await?;
        }
        let mut held = 0usize;
        for (_, _, stdout) in workers.iter_mut() {
            let line = stdout
                .next_line()
                .await?
                .ok_or_else(|| anyhow::anyhow!("worker exited"))?;
            // "held N" followed by "kind=count" pairs.
            let mut parts = line.split_whitespace();
            anyhow::ensure!(parts.next() == Some("held"), "bad worker line {line}");
            held += parts.next().unwrap_or("0").parse::<usize>()?;
            for kv in parts {
                if let Some((k, v)) = kv.split_once('=') {
                    *errors.entry(k.to_string()).or_default() += v.parse::<u64>().unwrap_or(0);
                }
            }
        }
        report::progress(&format!("holding {held} connections; settling"));
        tokio::time::sleep(a.settle).await;
        let text = metrics::scrape(a.admin).await?;
        let rss = metrics::value(&text, "streamedge_process_resident_memory_bytes").unwrap_or(0.0);
        let prev = points.last();
        let slope = prev.map(|p| (rss - p.rss_bytes) / (held as f64 - p.connections as f64));
        points.push(Point {
            connections: held,
            node_connections: metrics::value(&text, "streamedge_ws_connections"),
            rss_bytes: rss,
            open_fds: metrics::value(&text, "streamedge_process_open_fds"),
            rss_per_conn_bytes: (held > 0).then(|| (rss - baseline) / held as f64),
            slope_bytes_per_conn: slope,
        });
        report::end_progress();
    }
    if !a.hold.is_zero() {
        report::progress(&format!("holding for {:?}", a.hold));
        tokio::time::sleep(a.hold).await;
        report::end_progress();
    }
    let chat_counts = |f: fn(&crate::chat::SendCounters) -> u64| -> u64 {
        chat.iter().map(|s| f(&s.counters)).sum()
    };
    let chat_sent = chat_counts(|c| c.sent.load(std::sync::atomic::Ordering::Relaxed));
    let chat_refused = chat_counts(|c| c.refused.load(std::sync::atomic::Ordering::Relaxed));
    for s in chat {
        s.abort();
    }
    if a.chat_per_stream > 0.0 {
        println!(
            "chat: {chat_sent} messages sent over {} streams, {chat_refused} refused",
            a.streams
        );
        if chat_refused > 0 {
            *errors.entry("chat_refused".into()).or_default() += chat_refused;
        }
    }
    for (_, stdin, _) in workers.iter_mut() {
        let _ = stdin.write_all(b"quit\n").await;
    }
    for (mut child, _, _) in workers {
        let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    }

    // Least-squares slope over all points, projected to 100k connections.
    let projected = fit(&points).map(|(intercept, slope)| intercept + slope * 100_000.0);
    println!(
        "{:>12} {:>14} {:>12} {:>18} {:>18}",
        "connections", "node conns", "RSS MiB", "RSS/conn KiB", "slope KiB/conn"
    );
    for p in &points {
        println!(
            "{:>12} {:>14} {:>12.1} {:>18} {:>18}",
            p.connections,
            p.node_connections.map_or("-".into(), |v| format!("{v:.0}")),
            p.rss_bytes / 1048576.0,
            p.rss_per_conn_bytes
                .map_or("-".into(), |v| format!("{:.2}", v / 1024.0)),
            p.slope_bytes_per_conn
                .map_or("-".into(), |v| format!("{:.2}", v / 1024.0)),
        );
    }
    if let Some(p) = projected {
        println!(
            "projected RSS at 100k connections: {:.0} MiB",
            p / 1048576.0
        );
    }
    if !errors.is_empty() {
        println!("errors: {errors:?}");
    }
    report::write_json(
        a.json.as_deref(),
        &Report {
            scenario: "idle",
            procs: a.procs,
            streams: a.streams,
            chat_per_stream: a.chat_per_stream,
            chat_sent,
            chat_refused,
            baseline_rss_bytes: baseline,
            points,
            projected_rss_at_100k_bytes: projected,
            errors,
        },
    )
}

/// (intercept, slope) of RSS against connections.
fn fit(points: &[Point]) -> Option<(f64, f64)> {
    if points.len() < 2 {
        return None;
    }
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.connections as f64).sum::<f64>() / n;
    let my = points.iter().map(|p| p.rss_bytes).sum::<f64>() / n;
    let sxy: f64 = points
        .iter()
        .map(|p| (p.connections as f64 - mx) * (p.rss_bytes - my))
        .sum();
    let sxx: f64 = points
        .iter()
        .map(|p| (p.connections as f64 - mx).powi(2))
        .sum();
    (sxx > 0.0).then(|| (my - sxy / sxx * mx, sxy / sxx))
}

/// A worker process: opens connections when told ("open N" = hold N in total) and reports
/// "held N kind=count ...".
pub async fn worker(a: WorkerArgs) -> anyhow::Result<()> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut out = tokio::io::stdout();
    let mut held = 0usize;
    let mut next = 0usize;
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    while let Some(line) = lines.next_line().await? {
        let line = line.trim();
        if line == "quit" {
            break;
        }
        let Some(n) = line
            .strip_prefix("open ")
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        let want = n.saturating_sub(held);
        let start = next;
        next += want;
        let api = a.api;
        let index = a.index;
        let (streams, secret) = (&a.streams, &a.jwt_secret);
        let mut opened = futures_util::stream::iter(start..start + want)
            .map(|i| async move {
                // Viewer ids unique across workers.
                let viewer = index * 1_000_000 + i;
                let url = viewer_url(api, streams, secret, viewer);
                let src = conn::source_addr(&api, index * 97 + i);
                conn::open(api, &url, src, Duration::from_secs(30)).await
            })
            .buffer_unordered(a.concurrency.max(1));
        while let Some(r) = opened.next().await {
            match r {
                Ok((ws, _)) => {
                    held += 1;
                    tokio::spawn(conn::hold(ws));
                }
                Err(e) => *errors.entry(conn::error_kind(&e)).or_default() += 1,
            }
        }
        let errs: Vec<String> = errors
            .iter()
            .map(|(k, v)| format!("{}={v}", k.replace(' ', "_")))
            .collect();
        out.write_all(format!("held {held} {}\n", errs.join(" ")).as_bytes())
            .await?;
        out.flush().await?;
    }
    Ok(())
}
