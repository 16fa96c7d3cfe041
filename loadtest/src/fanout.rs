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
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use streamedge::auth::dev::DEV_JWT_SECRET;
use streamedge::auth::Role;
use tokio_tungstenite::tungstenite::Message;

use crate::conn::token;
use crate::proto::{Delivery, Protocol};
use crate::{conn, http1, report};

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
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

#[derive(Default)]
struct Counters {
    deliveries: AtomicU64,
    gaps: AtomicU64,
    dups: AtomicU64,
    ooo: AtomicU64,
}

/// Checks one delivery against the last sequence seen on its sequence (0: none yet).
fn check_sequence(counters: &Counters, last: &mut u64, seq: u64) {
    if *last != 0 {
        if seq == *last {
            counters.dups.fetch_add(1, Ordering::Relaxed);
        } else if seq < *last {
            counters.ooo.fetch_add(1, Ordering::Relaxed);
        } else if seq > *last + 1 {
            counters.gaps.fetch_add(seq - *last - 1, Ordering::Relaxed);
        }
    }
    *last = (*last).max(seq);
}

/// Creates the stream on the first node (streamedge only); returns its id.
async fn create_stream(a: &Args) -> anyhow::Result<String> {
    let first = a.api[0];
    let mut c = http1::Conn::connect(first).await?;
    let seller = token(&a.jwt_secret, "fanout-seller", Role::Seller);
    let resp = c
        .send(&http1::request(
            "POST",
            first,
            "/v1/streams",
            &seller,
            r#"{"title":"fanout"}"#,
        ))
        .await?;
    anyhow::ensure!(resp.status == 201, "create stream: {}", resp.status);
    let stream: serde_json::Value = serde_json::from_slice(&resp.body)?;
    Ok(stream["id"].as_str().unwrap_or_default().to_string())
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    anyhow::ensure!(!a.api.is_empty() && a.senders > 0 && a.rate > 0.0);
    let proto = a.protocol;
    let stream = if proto == Protocol::Streamedge {
        create_stream(&a).await?
    } else {
        String::new()
    };
    let sequences = proto.sequences(a.senders);

    let counters = Arc::new(Counters::default());
    let (hist_tx, mut hist_rx) = tokio::sync::mpsc::unbounded_channel::<(_, Option<Instant>)>();
    let stop = tokio_util_like::Stop::new();
    eprintln!(
        "connecting {} viewers over {} node(s)",
        a.viewers,
        a.api.len()
    );
    let mut viewers = Vec::new();
    for i in 0..a.viewers {
        let api = a.api[i % a.api.len()];
        let url = format!(
            "ws://{api}/v1/streams/{stream}/ws?access_token={}",
            token(&a.jwt_secret, &format!("viewer-{i}"), Role::Buyer)
        );
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
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
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
                let now = now_us();
                counters
                    .deliveries
                    .fetch_add(delivered.len() as u64, Ordering::Relaxed);
                last_at = Some(Instant::now());
                for Delivery { stream, seq, ts_us } in delivered.drain(..) {
                    report::record(&mut hist, Duration::from_micros(now.saturating_sub(ts_us)));
                    let Some(last) = last.get_mut(stream) else {
                        continue;
                    };
                    check_sequence(&counters, last, seq);
                }
            }
            let _ = hist_tx.send((hist, last_at));
        }));
    }
    drop(hist_tx);
    // Let the nodes' hubs subscribe.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let pad = "x".repeat(a.body_bytes);
    let per_sender = a.rate / a.senders as f64;
    let sent = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut senders = Vec::new();
    for s in 0..a.senders {
        let api = a.api[s % a.api.len()];
        let url = format!(
            "ws://{api}/v1/streams/{stream}/ws?access_token={}",
            token(&a.jwt_secret, &format!("sender-{s}"), Role::Buyer)
        );
        let ws = proto
            .open_sender(api, &url)
            .await
            .map_err(|e| anyhow::anyhow!("sender {s}: {e}"))?;
        let (mut tx, mut rx) = ws.split();
        let pad = pad.clone();
        let sent = sent.clone();
        let duration = a.duration;
        senders.push(tokio::spawn(async move {
            // Senders only read to keep their sockets drained (streamedge echoes messages to
            // them; a NATS server only PINGs every two minutes, longer than any run).
            let drain = tokio::spawn(async move { while let Some(Ok(_)) = rx.next().await {} });
            let interval = Duration::from_secs_f64(1.0 / per_sender);
            let mut next = tokio::time::Instant::now();
            let mut i = 1u64;
            while started.elapsed() < duration {
                tokio::time::sleep_until(next).await;
                next += interval;
                if tx
                    .send(proto.publish_frame(s, i, now_us(), &pad))
                    .await
                    .is_err()
                {
                    break;
                }
                sent.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            drain.abort();
        }));
    }
    let progress_counters = counters.clone();
    let progress_sent = sent.clone();
    let progress = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            report::progress(&format!(
                "{:.1}s sent {} delivered {}",
                started.elapsed().as_secs_f64(),
                progress_sent.load(Ordering::Relaxed),
                progress_counters.deliveries.load(Ordering::Relaxed)
            ));
        }
    });
    for s in senders {
        let _ = s.await;
    }
    let secs = a.duration.as_secs_f64();
    // Wait for the tail to arrive (or give up).
    let expected = sent.load(Ordering::Relaxed) * a.viewers as u64;
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
        seconds: secs,
        sent: sent.load(Ordering::Relaxed),
        deliveries,
        expected_deliveries: expected,
        deliveries_per_second: deliveries as f64 / secs,
        last_delivery_seconds: last_delivery.as_secs_f64(),
        latency: lat.clone(),
        gaps: counters.gaps.load(Ordering::Relaxed),
        duplicates: counters.dups.load(Ordering::Relaxed),
        out_of_order: counters.ooo.load(Ordering::Relaxed),
    };
    println!(
        "sent {} msgs, {} deliveries (expected {}), {:.0} deliveries/s; latency ms p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}; gaps {} dupes {} out-of-order {}",
        rep.sent, rep.deliveries, rep.expected_deliveries, rep.deliveries_per_second,
        lat.p50_ms, lat.p90_ms, lat.p99_ms, lat.p999_ms, lat.max_ms, rep.gaps, rep.duplicates, rep.out_of_order
    );
    report::write_json(a.json.as_deref(), &rep)
}

/// A tiny stop signal shared by tasks.
mod tokio_util_like {
    use std::sync::Arc;
    use tokio::sync::watch;

    #[derive(Clone)]
    pub struct Stop(Arc<watch::Sender<bool>>, watch::Receiver<bool>);

    impl Stop {
        pub fn new() -> Self {
            let (tx, rx) = watch::channel(false);
            Self(Arc::new(tx), rx)
        }
        pub fn stop(&self) {
            let _ = self.0.send(true);
        }
        pub async fn wait(&self) {
            let mut rx = self.1.clone();
            let _ = rx.wait_for(|v| *v).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_check_counts_gaps_duplicates_and_reordering() {
        let c = Counters::default();
        let mut last = 0;
        for seq in [5, 6, 6, 9, 7, 10] {
            check_sequence(&c, &mut last, seq);
        }
        // 6 twice: one duplicate; 6 -> 9: two missing; 7 after 9: reordered.
        assert_eq!(c.dups.load(Ordering::Relaxed), 1);
        assert_eq!(c.gaps.load(Ordering::Relaxed), 2);
        assert_eq!(c.ooo.load(Ordering::Relaxed), 1);
        assert_eq!(last, 10);
    }
}
