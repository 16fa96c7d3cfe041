//! Attacks on admission, measured: `head-flood` (many connections each sending a huge,
//! never-finished request head: the node's RSS before, at its peak during, and after) and
//! `slowloris` (thousands of slow-header connections from one IP while a client from
//! another IP keeps making requests: how long that client waits).
//!
//! Run them against a node on loopback only; the attacker's source addresses are taken from
//! 127.0.0.0/8.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::{conn, metrics, report};

#[derive(clap::Args, Clone)]
pub struct FloodArgs {
    /// The node's API listener (loopback).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub api: SocketAddr,
    /// The node's admin listener (its RSS is read from /metrics).
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub admin: SocketAddr,
    /// Attacking connections, all open at once.
    #[arg(long, default_value_t = 4000)]
    pub connections: usize,
    /// Bytes of the one header field each connection sends (never finished).
    #[arg(long, default_value_t = 500_000)]
    pub header_bytes: usize,
    /// Source addresses the connections come from (127.0.0.2 upwards, at most 250): many,
    /// so the per-IP connection limit does not hide the head-size bound.
    #[arg(long, default_value_t = 250)]
    pub sources: usize,
    /// Connections opened at once.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Wait after the attack before reading the node's RSS again.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub settle: Duration,
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(clap::Args, Clone)]
pub struct SlowlorisArgs {
    /// The node's API listener (loopback).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub api: SocketAddr,
    /// The node's admin listener.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub admin: SocketAddr,
    /// Slow-header connections, all from one address.
    #[arg(long, default_value_t = 15_000)]
    pub connections: usize,
    /// The attacker's address.
    #[arg(long, default_value = "127.0.0.3")]
    pub attacker: IpAddr,
    /// The legitimate client's address.
    #[arg(long, default_value = "127.0.0.2")]
    pub client: IpAddr,
    /// How long the attack lasts once every connection was tried.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub hold: Duration,
    /// How often each held connection sends one more header byte.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub trickle: Duration,
    /// Connections opened at once.
    #[arg(long, default_value_t = 512)]
    pub concurrency: usize,
    #[arg(long)]
    pub json: Option<PathBuf>,
}

async fn rss(admin: SocketAddr) -> f64 {
    match metrics::scrape(admin).await {
        Ok(t) => metrics::value(&t, "streamedge_process_resident_memory_bytes").unwrap_or(0.0),
        Err(_) => 0.0,
    }
}

async fn tcp_from(source: Option<SocketAddr>, target: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if let Some(s) = source {
        socket.bind(s)?;
    }
    socket.connect(target).await
}

/// The status code of an HTTP answer's first bytes ("HTTP/1.1 431 ..."), or what
/// happened instead.
fn outcome(buf: &[u8], err: Option<&std::io::Error>) -> String {
    if buf.len() >= 12 && buf.starts_with(b"HTTP/1.1 ") {
        return String::from_utf8_lossy(&buf[9..12]).into_owned();
    }
    match err {
        Some(e) if e.kind() == std::io::ErrorKind::ConnectionReset => "reset".into(),
        Some(e) => format!("error: {}", e.kind()),
        None if buf.is_empty() => "closed".into(),
        None => "garbage".into(),
    }
}

/// Reads what the node answered (until it closes or `limit`).
async fn read_answer(tcp: &mut TcpStream, limit: Duration) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut chunk)).await {
            Err(_) => {
                return if buf.is_empty() {
                    "held".into()
                } else {
                    outcome(&buf, None)
                }
            }
            Ok(Ok(0)) => return outcome(&buf, None),
            Ok(Ok(n)) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() >= 12 {
                    return outcome(&buf, None);
                }
            }
            Ok(Err(e)) => return outcome(&buf, Some(&e)),
        }
    }
}

#[derive(Serialize)]
struct FloodReport {
    scenario: &'static str,
    connections: usize,
    header_bytes: usize,
    sources: usize,
    baseline_rss_bytes: f64,
    peak_rss_bytes: f64,
    after_rss_bytes: f64,
    peak_above_baseline_bytes: f64,
    after_vs_baseline: f64,
    outcomes: BTreeMap<String, u64>,
    seconds: f64,
}

/// `head-flood`: see the module documentation.
pub async fn flood(a: FloodArgs) -> anyhow::Result<()> {
    let baseline = rss(a.admin).await;
    anyhow::ensure!(
        baseline > 0.0,
        "no streamedge_process_resident_memory_bytes at {}",
        a.admin
    );
    let peak = Arc::new(Mutex::new(baseline));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = tokio::spawn({
        let (peak, sampling, admin) = (peak.clone(), sampling.clone(), a.admin);
        async move {
            while sampling.load(Ordering::Relaxed) {
                let r = rss(admin).await;
                {
                    let mut p = peak.lock().unwrap();
                    *p = p.max(r);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    let started = Instant::now();
    let outcomes: Arc<Mutex<BTreeMap<String, u64>>> = Default::default();
    let done = Arc::new(AtomicU64::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(a.concurrency));
    // Every connection stays open until all were made (the node holds them all at once).
    let release = Arc::new(tokio::sync::Notify::new());
    let all_open = Arc::new(tokio::sync::Barrier::new(a.connections + 1));
    let chunk = vec![b'a'; 16 * 1024];
    let mut tasks = Vec::with_capacity(a.connections);
    for i in 0..a.connections {
        let permit = gate.clone().acquire_owned().await?;
        let source = conn::source_addr(&a.api, i % a.sources.clamp(1, 250));
        let (outcomes, done, release, all_open, chunk) = (
            outcomes.clone(),
            done.clone(),
            release.clone(),
            all_open.clone(),
            chunk.clone(),
        );
        let (api, header_bytes) = (a.api, a.header_bytes);
        tasks.push(tokio::spawn(async move {
            let result = async {
                let mut tcp = tcp_from(source, api).await?;
                tcp.write_all(b"GET /v1/streams HTTP/1.1\r\nhost: attack\r\nx-flood: ")
                    .await?;
                let mut sent = 0;
                while sent < header_bytes {
                    let n = chunk.len().min(header_bytes - sent);
                    // The node stops reading at its head limit: a write that cannot go on
                    // within a second means it has.
                    match tokio::time::timeout(Duration::from_secs(1), tcp.write_all(&chunk[..n]))
                        .await
                    {
                        Ok(Ok(())) => sent += n,
                        Ok(Err(_)) | Err(_) => break,
                    }
                }
                Ok::<TcpStream, std::io::Error>(tcp)
            }
            .await;
            drop(permit);
            let (kind, held) = match result {
                Ok(mut tcp) => (
                    read_answer(&mut tcp, Duration::from_millis(500)).await,
                    Some(tcp),
                ),
                Err(e) => (format!("error: {}", e.kind()), None),
            };
            *outcomes.lock().unwrap().entry(kind).or_insert(0) += 1;
            let n = done.fetch_add(1, Ordering::Relaxed) + 1;
            if n % 250 == 0 {
                report::progress(&format!("head-flood: {n} connections tried"));
            }
            all_open.wait().await;
            release.notified().await;
            drop(held);
        }));
    }
    all_open.wait().await;
    report::end_progress();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let peak_during = *peak.lock().unwrap();
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.await;
    release.notify_waiters();
    for t in tasks {
        let _ = t.await;
    }
    let seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(a.settle).await;
    let after = rss(a.admin).await;
    let outcomes = Arc::try_unwrap(outcomes).unwrap().into_inner().unwrap();
    let r = FloodReport {
        scenario: "head-flood",
        connections: a.connections,
        header_bytes: a.header_bytes,
        sources: a.sources,
        baseline_rss_bytes: baseline,
        peak_rss_bytes: peak_during,
        after_rss_bytes: after,
        peak_above_baseline_bytes: peak_during - baseline,
        after_vs_baseline: after / baseline,
        outcomes,
        seconds,
    };
    let mib = |b: f64| b / (1024.0 * 1024.0);
    println!(
        "head-flood: {} connections × {} KB of unfinished header from {} addresses",
        r.connections,
        r.header_bytes / 1000,
        r.sources
    );
    println!(
        "  node RSS: idle {:.1} MiB, peak during {:.1} MiB (+{:.1} MiB), after {:.1} MiB ({:+.1} %)",
        mib(r.baseline_rss_bytes),
        mib(r.peak_rss_bytes),
        mib(r.peak_above_baseline_bytes),
        mib(r.after_rss_bytes),
        (r.after_vs_baseline - 1.0) * 100.0
    );
    println!("  answers: {:?}", r.outcomes);
    report::write_json(a.json.as_deref(), &r)
}

#[derive(Serialize)]
struct SlowlorisReport {
    scenario: &'static str,
    connections: usize,
    outcomes: BTreeMap<String, u64>,
    /// The legitimate client's request latency before the attack.
    before: report::Latency,
    /// ... and while every attacking connection was tried and held.
    during: report::Latency,
    client_failures: u64,
    node_rss_before_bytes: f64,
    node_rss_during_bytes: f64,
}

/// One request of the legitimate client on a new connection: the time to its answer.
async fn legit_request(client: IpAddr, api: SocketAddr) -> Result<Duration, String> {
    let t = Instant::now();
    let mut tcp = tcp_from(Some(SocketAddr::new(client, 0)), api)
        .await
        .map_err(|e| e.to_string())?;
    tcp.write_all(b"GET /v1/streams HTTP/1.1\r\nhost: client\r\nconnection: close\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let answer = read_answer(&mut tcp, Duration::from_secs(10)).await;
    if answer == "401" {
        Ok(t.elapsed())
    } else {
        Err(answer)
    }
}

/// `slowloris`: see the module documentation.
pub async fn slowloris(a: SlowlorisArgs) -> anyhow::Result<()> {
    let (api, client) = (a.api, a.client);
    let measure = |stop: Arc<AtomicBool>| {
        tokio::spawn(async move {
            let mut h = report::histogram();
            let mut failures = 0u64;
            while !stop.load(Ordering::Relaxed) {
                match legit_request(client, api).await {
                    Ok(d) => report::record(&mut h, d),
                    Err(e) => {
                        failures += 1;
                        tracing_free_log(&e);
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (h, failures)
        })
    };
    let stop = Arc::new(AtomicBool::new(false));
    let before_task = measure(stop.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let (before, _) = before_task.await?;
    let rss_before = rss(a.admin).await;

    let stop = Arc::new(AtomicBool::new(false));
    let during_task = measure(stop.clone());
    let outcomes: Arc<Mutex<BTreeMap<String, u64>>> = Default::default();
    let gate = Arc::new(tokio::sync::Semaphore::new(a.concurrency));
    let end = Arc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::with_capacity(a.connections);
    for i in 0..a.connections {
        let permit = gate.clone().acquire_owned().await?;
        let (outcomes, end, attacker, trickle) =
            (outcomes.clone(), end.clone(), a.attacker, a.trickle);
        tasks.push(tokio::spawn(async move {
            let opened = async {
                let mut tcp = tcp_from(Some(SocketAddr::new(attacker, 0)), api).await?;
                tcp.write_all(b"GET /v1/streams HTTP/1.1\r\nhost: slow\r\nx-slow: ")
                    .await?;
                Ok::<TcpStream, std::io::Error>(tcp)
            }
            .await;
            let mut tcp = match opened {
                Ok(t) => t,
                Err(e) => {
                    drop(permit);
                    *outcomes
                        .lock()
                        .unwrap()
                        .entry(format!("error: {}", e.kind()))
                        .or_insert(0) += 1;
                    return;
                }
            };
            let first = read_answer(&mut tcp, Duration::from_millis(200)).await;
            drop(permit);
            *outcomes.lock().unwrap().entry(first.clone()).or_insert(0) += 1;
            if first != "held" {
                return;
            }
            // Held: one more byte now and then, until the attack ends.
            let ended = end.notified();
            tokio::pin!(ended);
            loop {
                tokio::select! {
                    _ = &mut ended => return,
                    _ = tokio::time::sleep(trickle) => {
                        if tcp.write_all(b"a").await.is_err() {
                            return;
                        }
                    }
                }
            }
        }));
        if i % 500 == 499 {
            report::progress(&format!("slowloris: {} connections tried", i + 1));
        }
    }
    report::end_progress();
    tokio::time::sleep(a.hold).await;
    let rss_during = rss(a.admin).await;
    stop.store(true, Ordering::Relaxed);
    let (during, client_failures) = during_task.await?;
    end.notify_waiters();
    for t in tasks {
        let _ = t.await;
    }
    let outcomes = Arc::try_unwrap(outcomes).unwrap().into_inner().unwrap();
    let r = SlowlorisReport {
        scenario: "slowloris",
        connections: a.connections,
        outcomes,
        before: report::latency(&before),
        during: report::latency(&during),
        client_failures,
        node_rss_before_bytes: rss_before,
        node_rss_during_bytes: rss_during,
    };
    println!(
        "slowloris: {} slow-header connections from {}",
        r.connections, a.attacker
    );
    println!("  attacker's connections: {:?}", r.outcomes);
    println!(
        "  client {} request latency: before p50 {:.2} ms p99 {:.2} ms; during p50 {:.2} ms p99 {:.2} ms max {:.2} ms; failures {}",
        a.client,
        r.before.p50_ms,
        r.before.p99_ms,
        r.during.p50_ms,
        r.during.p99_ms,
        r.during.max_ms,
        r.client_failures
    );
    println!(
        "  node RSS {:.1} MiB before, {:.1} MiB during",
        r.node_rss_before_bytes / 1048576.0,
        r.node_rss_during_bytes / 1048576.0
    );
    report::write_json(a.json.as_deref(), &r)
}

fn tracing_free_log(e: &str) {
    eprintln!("\nlegitimate request failed: {e}");
}
