//! `chat-fanout`: N viewers on one stream (spread over one or more nodes), M senders at a
//! total rate R. Every message carries its send time; each viewer measures
//! publish-to-deliver latency and checks its sequence: gaps, duplicates and out-of-order
//! deliveries are counted (all must be 0).
//!
//! `--protocol` runs the same workload against a peer (nats-server, a plain WebSocket
//! relay) through the adapters in `proto`; there, ordering is checked per sender.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use streamedge::auth::dev::DEV_JWT_SECRET;
use tokio_tungstenite::tungstenite::Message;

use crate::chat::{self, Arrivals, OrderCounters, SenderPlan, Senders, Stop};
use crate::proto::{Delivery, Protocol};
use crate::{conn, report};

#[derive(clap::Args, Clone)]
pub struct Args {
    /// The server's protocol: streamedge, or a peer measured side by side.
    #[arg(long, value_enum, default_value = "streamedge")]
    pub protocol: Protocol,
    /// API listeners of the nodes (viewers and senders are spread over them); for a
    /// peer, its WebSocket listener.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:8080")]
    pub api: Vec<SocketAddr>,
    /// The nodes' `auth.jwt_secret` (default: the development secret).
    #[arg(long, default_value = DEV_JWT_SECRET)]
    pub jwt_secret: String,
    #[arg(long, default_value_t = 1000)]
    pub viewers: usize,
    #[arg(long, default_value_t = 10)]
    pub senders: usize,
    /// Messages per second, all senders together.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Body bytes per message (besides the timestamp).
    #[arg(long, default_value_t = 64)]
    pub body_bytes: usize,
    /// How sends are spread in time: evenly (a constant total rate) or as independent
    /// senders (Poisson arrivals with the same mean rate).
    #[arg(long, value_enum, default_value = "uniform")]
    pub arrivals: Arrivals,
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Serialize)]
struct Report {
    scenario: &'static str,
    protocol: Protocol,
    nodes: usize,
    viewers: usize,
    senders: usize,
    target_rate: f64,
    arrivals: Arrivals,
    seconds: f64,
    sent: u64,
    deliveries: u64,
    expected_deliveries: u64,
    deliveries_per_second: f64,
    /// Seconds from the first send to the last delivery (a server that falls behind
    /// delivers its backlog after `seconds`).
    last_delivery_seconds: f64,
    latency: report::Latency,
    gaps: u64,
    duplicates: u64,
    out_of_order: u64,
    /// Viewers whose connection the server closed (or lost) before the end: a server
    /// that drops slow consumers shows here, not as gaps.
    viewers_closed: u64,
}

#[derive(Default)]
struct Counters {
    deliveries: AtomicU64,
    order: OrderCounters,
    /// Viewer connections the server closed (or lost) before the run ended.
    closed: AtomicU64,
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    anyhow::ensure!(!a.api.is_empty() && a.senders > 0 && a.rate > 0.0);
    let proto = a.protocol;
    let stream = if proto == Protocol::Streamedge {
        chat::create_stream(a.api[0], &a.jwt_secret, "fanout").await?
    } else {
        String::new()
    };
    let sequences = proto.sequences(a.senders);

    let counters = Arc::new(Counters::default());
    let (hist_tx, mut hist_rx) = tokio::sync::mpsc::unbounded_channel::<(_, Option<Instant>)>();
    let stop = Stop::new();
    eprintln!(
        "connecting {} viewers over {} node(s)",
        a.viewers,
        a.api.len()
    );
    let mut viewers = Vec::new();
    for i in 0..a.viewers {
        let api = a.api[i % a.api.len()];
        let url = chat::stream_ws_url(api, &stream, &a.jwt_secret, &format!("viewer-{i}"));
        let mut ws = proto
            .open_viewer(api, &url, conn::source_addr(&api, i))
            .await
            .map_err(|e| anyhow::anyhow!("viewer {i}: {e}"))?;
        let counters = counters.clone();
        let hist_tx = hist_tx.clone();
        let stop = stop.clone();
        viewers.push(tokio::spawn(async move {
            let mut hist = report::histogram();
            let mut decoder = proto.decoder();
            let mut delivered = Vec::new();
            // The last sequence seen on each checked sequence (0: none yet).
            let mut last = vec![0u64; sequences];
            let mut last_at = None;
            // One stop future for the task's life, not one (and a cloned watch receiver)
            // per received frame.
            let stopped = stop.wait();
            tokio::pin!(stopped);
            loop {
                let msg = tokio::select! {
                    _ = &mut stopped => break,
                    m = ws.next() => m,
                };
                let msg = match msg {
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                        counters.closed.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    Some(Ok(m)) => m,
                };
                let mut reply = None;
                decoder.feed(&msg, &mut delivered, &mut reply);
                if let Some(r) = reply {
                    if ws.send(r).await.is_err() {
                        break;
                    }
                }
                if delivered.is_empty() {
                    continue;
                }
                let now = chat::now_us();
                counters
                    .deliveries
                    .fetch_add(delivered.len() as u64, Ordering::Relaxed);
                last_at = Some(Instant::now());
                for Delivery { stream, seq, ts_us } in delivered.drain(..) {
                    report::record(&mut hist, Duration::from_micros(now.saturating_sub(ts_us)));
                    let Some(last) = last.get_mut(stream) else {
                        continue;
                    };
                    counters.order.check(last, seq);
                }
            }
            let _ = hist_tx.send((hist, last_at));
        }));
    }
    drop(hist_tx);
    // Let the nodes' hubs subscribe.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let started = Instant::now();
    let senders = Senders::start(
        SenderPlan {
            protocol: proto,
            apis: &a.api,
            stream: &stream,
            jwt_secret: &a.jwt_secret,
            user_prefix: "sender",
            senders: a.senders,
            rate: a.rate,
            duration: a.duration,
            body_bytes: a.body_bytes,
            arrivals: a.arrivals,
        },
        started,
    )
    .await?;
    let sent = &senders.counters.clone();
    let progress_counters = counters.clone();
    let progress_sent = sent.clone();
    let progress = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            report::progress(&format!(
                "{:.1}s sent {} delivered {}",
                started.elapsed().as_secs_f64(),
                progress_sent.sent.load(Ordering::Relaxed),
                progress_counters.deliveries.load(Ordering::Relaxed)
            ));
        }
    });
    senders.finish().await;
    let secs = a.duration.as_secs_f64();
    // Wait for the tail to arrive (or give up).
    let expected = sent.sent.load(Ordering::Relaxed) * a.viewers as u64;
    let deadline = Instant::now() + Duration::from_secs(10);
    while counters.deliveries.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.stop();
    progress.abort();
    report::end_progress();
    let mut hist = report::histogram();
    let mut last_delivery = Duration::ZERO;
    while let Some((h, at)) = hist_rx.recv().await {
        hist.add(&h)?;
        if let Some(at) = at {
            last_delivery = last_delivery.max(at.saturating_duration_since(started));
        }
    }
    for v in viewers {
        let _ = v.await;
    }
    let lat = report::latency(&hist);
    let deliveries = counters.deliveries.load(Ordering::Relaxed);
    let rep = Report {
        scenario: "chat-fanout",
        protocol: proto,
        nodes: a.api.len(),
        viewers: a.viewers,
        senders: a.senders,
        target_rate: a.rate,
        arrivals: a.arrivals,
        seconds: secs,
        sent: sent.sent.load(Ordering::Relaxed),
        deliveries,
        expected_deliveries: expected,
        deliveries_per_second: deliveries as f64 / secs,
        last_delivery_seconds: last_delivery.as_secs_f64(),
        latency: lat.clone(),
        gaps: counters.order.gaps.load(Ordering::Relaxed),
        duplicates: counters.order.dups.load(Ordering::Relaxed),
        out_of_order: counters.order.ooo.load(Ordering::Relaxed),
        viewers_closed: counters.closed.load(Ordering::Relaxed),
    };
    println!(
        "sent {} msgs, {} deliveries (expected {}), {:.0} deliveries/s; latency ms p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}; gaps {} dupes {} out-of-order {}; viewers closed by the server {}",
        rep.sent, rep.deliveries, rep.expected_deliveries, rep.deliveries_per_second,
        lat.p50_ms, lat.p90_ms, lat.p99_ms, lat.p999_ms, lat.max_ms, rep.gaps, rep.duplicates, rep.out_of_order, rep.viewers_closed
    );
    report::write_json(a.json.as_deref(), &rep)
}
