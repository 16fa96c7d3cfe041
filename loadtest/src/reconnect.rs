//! `reconnect`: N viewers on one stream (spread over one or more nodes) while M senders
//! publish at a total rate R; some viewers keep dropping their WebSocket, stay away for a
//! while and reconnect (optionally to another node) with the last `seq` they saw on the
//! URL (`?since_seq=`). Every viewer must end up with every message exactly once and in
//! order: gaps, duplicates, reordering and `recovered: false` answers are counted (all
//! must be 0 while the node's history covers the time a viewer is away).
//!
//! A reconnect with `since_seq` gets `welcome`, `resumed`, the missed messages and only
//! then the live feed; a `message` before `resumed` would be a node fault, counted as
//! `skipped_before_resumed` (and skipped).
//!
//! Resume latency is from starting the reconnect (TCP connect) to the first replayed
//! message, or to `resumed` when nothing was missed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde::Serialize;
use streamedge::auth::dev::DEV_JWT_SECRET;
use tokio_tungstenite::tungstenite::Message;

use crate::chat::{self, Arrivals, OrderCounters, Rng, SenderPlan, Senders, Stop};
use crate::conn::{self, Ws};
use crate::proto::{self, Protocol};
use crate::report;

#[derive(clap::Args, Clone)]
pub struct Args {
    /// API listeners of the nodes (viewers and senders are spread over them).
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:8080")]
    pub api: Vec<SocketAddr>,
    /// The nodes' `auth.jwt_secret` (default: the development secret).
    #[arg(long, default_value = DEV_JWT_SECRET)]
    pub jwt_secret: String,
    #[arg(long, default_value_t = 500)]
    pub viewers: usize,
    #[arg(long, default_value_t = 5)]
    pub senders: usize,
    /// Messages per second, all senders together.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// How long the senders send (viewers keep dropping meanwhile).
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Body bytes per message (besides the timestamp).
    #[arg(long, default_value_t = 64)]
    pub body_bytes: usize,
    /// Fraction of the viewers that drop and reconnect (the others stay connected).
    #[arg(long, default_value_t = 0.5)]
    pub drop_fraction: f64,
    /// Mean time between two drops of a dropping viewer (exponentially distributed).
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub drop_every: Duration,
    /// Mean time a dropped viewer stays away before reconnecting (uniform in 0..2×).
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    pub offline: Duration,
    /// Reconnect to another node than the one dropped (with several `--api`).
    #[arg(long)]
    pub switch_node: bool,
    /// Seed of the drop schedule (runs with the same seed drop the same way).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Serialize)]
struct Report {
    scenario: &'static str,
    nodes: usize,
    viewers: usize,
    dropping_viewers: usize,
    senders: usize,
    target_rate: f64,
    seconds: f64,
    sent: u64,
    /// Messages the node acknowledged (sequenced); `last_seq` is the highest.
    acked: u64,
    refused: u64,
    last_seq: u64,
    deliveries: u64,
    expected_deliveries: u64,
    /// Deliveries over the time from the first send to the last delivery.
    deliveries_per_second: f64,
    last_delivery_seconds: f64,
    /// Viewers that got every message from 1 to `last_seq` exactly once, in order.
    viewers_complete: usize,
    viewers_incomplete: usize,
    reconnects: u64,
    /// Reconnects to another node than the one dropped.
    node_switches: u64,
    /// Connection attempts that failed (retried after 200 ms).
    reconnect_failures: u64,
    /// Connections the node closed (or lost) that the viewer had not dropped itself.
    unexpected_closes: u64,
    /// Messages delivered from history after a `resume` (missed while away).
    replayed: u64,
    skipped_before_resumed: u64,
    not_recovered: u64,
    gaps: u64,
    duplicates: u64,
    out_of_order: u64,
    /// Reconnect start to the first replayed message (or `resumed` if none was missed).
    resume_latency: report::Latency,
    /// Reconnect start to `welcome`.
    welcome_latency: report::Latency,
}

#[derive(Default)]
struct Counters {
    deliveries: AtomicU64,
    order: OrderCounters,
    reconnects: AtomicU64,
    switches: AtomicU64,
    failures: AtomicU64,
    unexpected: AtomicU64,
    replayed: AtomicU64,
    skipped: AtomicU64,
    not_recovered: AtomicU64,
    /// Viewers between losing their connection and finishing their resume.
    away: AtomicU64,
}

/// What every viewer task shares.
struct Shared {
    apis: Vec<SocketAddr>,
    stream: String,
    jwt_secret: String,
    drop_every: Duration,
    offline: Duration,
    switch_node: bool,
    counters: Counters,
    stop: Stop,
    /// Set when the senders are done: no new drops start, so the tail can settle.
    calm: AtomicBool,
}

/// One viewer's result.
struct Outcome {
    /// Messages taken (each checked against the previous one).
    consumed: u64,
    last: u64,
    last_delivery: Option<Instant>,
    resume: Histogram<u64>,
    welcome: Histogram<u64>,
}

/// Where a viewer is in a reconnect.
#[derive(Clone, Copy)]
enum Phase {
    Live,
    /// `resume` sent, `resumed` not yet received.
    AwaitResumed {
        started: Instant,
    },
    /// `resumed` received; the first replayed message ends the resume.
    AwaitReplay {
        started: Instant,
    },
}

enum Event {
    Stop,
    Drop,
    Frame(Option<Result<Message, tokio_tungstenite::tungstenite::Error>>),
}

impl Shared {
    fn url(&self, node: usize, viewer: usize) -> String {
        chat::stream_ws_url(
            self.apis[node],
            &self.stream,
            &self.jwt_secret,
            &format!("viewer-{viewer}"),
        )
    }

    /// Connects viewer `i` to `node`, retrying until it gets a `welcome` (or the run
    /// stops); returns the socket and the time to `welcome` of the attempt that worked.
    /// Connects viewer `i` to `node`; reconnecting, with the last `seq` it saw (`since`).
    async fn connect(&self, i: usize, node: usize, since: Option<u64>) -> Option<(Ws, Duration)> {
        let api = self.apis[node];
        let mut url = self.url(node, i);
        if let Some(s) = since {
            url.push_str(&format!("&since_seq={s}"));
        }
        loop {
            if self.stop.is_stopped() {
                return None;
            }
            match conn::open_welcome(
                api,
                &url,
                conn::source_addr(&api, i),
                Duration::from_secs(10),
            )
            .await
            {
                Ok((ws, took, _)) => return Some((ws, took)),
                Err(e) => {
                    self.counters.failures.fetch_add(1, Ordering::Relaxed);
                    report_failure(i, &e);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
}

/// Failed attempts are counted; the first few are printed so a broken setup is visible.
fn report_failure(viewer: usize, e: &str) {
    static PRINTED: AtomicU64 = AtomicU64::new(0);
    if PRINTED.fetch_add(1, Ordering::Relaxed) < 5 {
        eprintln!("\nviewer {viewer}: reconnect failed: {e}");
    }
}

/// One viewer: reads the feed, drops and reconnects on its schedule (when `drops`).
async fn viewer(
    sh: Arc<Shared>,
    i: usize,
    mut ws: Ws,
    mut node: usize,
    drops: bool,
    seed: u64,
) -> Outcome {
    let c = &sh.counters;
    let mut rng = Rng(seed ^ (i as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let mut out = Outcome {
        consumed: 0,
        last: 0,
        last_delivery: None,
        resume: report::histogram(),
        welcome: report::histogram(),
    };
    let mut phase = Phase::Live;
    // Messages up to here come from history after the current resume.
    let mut replay_until = 0u64;
    let mut next_drop = drops.then(|| tokio::time::Instant::now() + rng.exp(sh.drop_every));
    let stopped = sh.stop.wait();
    tokio::pin!(stopped);
    loop {
        let ev = tokio::select! {
            _ = &mut stopped => Event::Stop,
            _ = sleep_until_opt(next_drop) => Event::Drop,
            m = ws.next() => Event::Frame(m),
        };
        let dropped_by_us = match ev {
            Event::Stop => break,
            Event::Drop if sh.calm.load(Ordering::Relaxed) => {
                next_drop = None;
                continue;
            }
            // A viewer drops only once its last resume is done (so every reconnect has
            // one resume latency).
            Event::Drop if !matches!(phase, Phase::Live) => {
                next_drop = Some(tokio::time::Instant::now() + rng.exp(sh.drop_every));
                continue;
            }
            Event::Drop => true,
            Event::Frame(Some(Ok(Message::Text(t)))) => {
                if t.starts_with(r#"{"type":"message""#) {
                    let Some((seq, _)) = proto::parse_streamedge(&t) else {
                        continue;
                    };
                    match phase {
                        Phase::AwaitResumed { .. } => {
                            c.skipped.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        Phase::AwaitReplay { started } => {
                            report::record(&mut out.resume, started.elapsed());
                            c.away.fetch_sub(1, Ordering::Relaxed);
                            phase = Phase::Live;
                        }
                        Phase::Live => {}
                    }
                    if seq <= replay_until {
                        c.replayed.fetch_add(1, Ordering::Relaxed);
                    }
                    c.order.check(&mut out.last, seq);
                    out.consumed += 1;
                    out.last_delivery = Some(Instant::now());
                    c.deliveries.fetch_add(1, Ordering::Relaxed);
                } else if let Some(r) = proto::parse_resumed(&t) {
                    if !r.recovered {
                        c.not_recovered.fetch_add(1, Ordering::Relaxed);
                    }
                    replay_until = r.last_seq;
                    if let Phase::AwaitResumed { started } = phase {
                        phase = if r.last_seq > r.since_seq {
                            Phase::AwaitReplay { started }
                        } else {
                            report::record(&mut out.resume, started.elapsed());
                            c.away.fetch_sub(1, Ordering::Relaxed);
                            Phase::Live
                        };
                    }
                }
                continue;
            }
            Event::Frame(Some(Ok(Message::Close(_))))
            | Event::Frame(Some(Err(_)))
            | Event::Frame(None) => false,
            Event::Frame(Some(Ok(_))) => continue,
        };
        // The connection is gone (dropped here, or lost): reconnect and resume.
        if !dropped_by_us {
            c.unexpected.fetch_add(1, Ordering::Relaxed);
        }
        if let Phase::Live = phase {
            c.away.fetch_add(1, Ordering::Relaxed);
        }
        drop(ws);
        if dropped_by_us {
            let away = sh.offline.mul_f64(2.0 * rng.unit());
            tokio::select! {
                _ = &mut stopped => return out,
                _ = tokio::time::sleep(away) => {}
            }
        }
        let from = node;
        if sh.switch_node && sh.apis.len() > 1 {
            node = (node + 1 + (rng.next_u64() as usize % (sh.apis.len() - 1))) % sh.apis.len();
        }
        let started = Instant::now();
        let Some((new_ws, took)) = sh.connect(i, node, Some(out.last)).await else {
            return out;
        };
        ws = new_ws;
        report::record(&mut out.welcome, took);
        phase = Phase::AwaitResumed { started };
        c.reconnects.fetch_add(1, Ordering::Relaxed);
        if node != from {
            c.switches.fetch_add(1, Ordering::Relaxed);
        }
        next_drop = (drops && !sh.calm.load(Ordering::Relaxed))
            .then(|| tokio::time::Instant::now() + rng.exp(sh.drop_every));
    }
    out
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    anyhow::ensure!(!a.api.is_empty() && a.senders > 0 && a.rate > 0.0);
    anyhow::ensure!(
        (0.0..=1.0).contains(&a.drop_fraction),
        "--drop-fraction is 0..1"
    );
    let stream = chat::create_stream(a.api[0], &a.jwt_secret, "reconnect").await?;
    let sh = Arc::new(Shared {
        apis: a.api.clone(),
        stream: stream.clone(),
        jwt_secret: a.jwt_secret.clone(),
        drop_every: a.drop_every,
        offline: a.offline,
        switch_node: a.switch_node,
        counters: Counters::default(),
        stop: Stop::new(),
        calm: AtomicBool::new(false),
    });
    let dropping = (a.viewers as f64 * a.drop_fraction).round() as usize;
    eprintln!(
        "connecting {} viewers over {} node(s); {dropping} of them drop and reconnect",
        a.viewers,
        a.api.len()
    );
    let (out_tx, mut out_rx) = tokio::sync::mpsc::unbounded_channel::<Outcome>();
    let mut viewers = Vec::new();
    for i in 0..a.viewers {
        let node = i % a.api.len();
        let (ws, _) = sh
            .connect(i, node, None)
            .await
            .ok_or_else(|| anyhow::anyhow!("viewer {i}: not connected"))?;
        // Spread the dropping viewers over the nodes: every k-th viewer drops.
        let drops = dropping > 0 && (i * dropping) % a.viewers < dropping;
        let sh = sh.clone();
        let out_tx = out_tx.clone();
        let seed = a.seed;
        viewers.push(tokio::spawn(async move {
            let _ = out_tx.send(viewer(sh, i, ws, node, drops, seed).await);
        }));
    }
    drop(out_tx);
    // Let the nodes' hubs subscribe.
    tokio::time::sleep(Duration::from_millis(1000)).await;

    let started = Instant::now();
    let senders = Senders::start(
        SenderPlan {
            protocol: Protocol::Streamedge,
            apis: &a.api,
            stream: &stream,
            jwt_secret: &a.jwt_secret,
            user_prefix: "sender",
            senders: a.senders,
            rate: a.rate,
            duration: a.duration,
            body_bytes: a.body_bytes,
            arrivals: Arrivals::Uniform,
        },
        started,
    )
    .await?;
    let sent = senders.counters.clone();
    let progress = {
        let (sh, sent) = (sh.clone(), sent.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let c = &sh.counters;
                report::progress(&format!(
                    "{:.1}s sent {} delivered {} reconnects {} skipped {} gaps {} dupes {}",
                    started.elapsed().as_secs_f64(),
                    sent.sent.load(Ordering::Relaxed),
                    c.deliveries.load(Ordering::Relaxed),
                    c.reconnects.load(Ordering::Relaxed),
                    c.skipped.load(Ordering::Relaxed),
                    c.order.gaps.load(Ordering::Relaxed),
                    c.order.dups.load(Ordering::Relaxed),
                ));
            }
        })
    };
    // No new drops once the send window is over, so the tail settles.
    tokio::time::sleep_until((started + a.duration).into()).await;
    sh.calm.store(true, Ordering::Relaxed);
    senders.finish().await;
    // Every viewer should reach the last acknowledged message with its resume done (or
    // give up after 15 s).
    let last_seq = sent.max_seq.load(Ordering::Relaxed);
    let expected = last_seq * a.viewers as u64;
    let deadline = Instant::now() + Duration::from_secs(15);
    while (sh.counters.deliveries.load(Ordering::Relaxed) < expected
        || sh.counters.away.load(Ordering::Relaxed) > 0)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sh.stop.stop();
    progress.abort();
    report::end_progress();

    let mut resume = report::histogram();
    let mut welcome = report::histogram();
    let mut last_delivery = Duration::ZERO;
    let (mut complete, mut incomplete) = (0, 0);
    while let Some(o) = out_rx.recv().await {
        resume.add(&o.resume)?;
        welcome.add(&o.welcome)?;
        if let Some(at) = o.last_delivery {
            last_delivery = last_delivery.max(at.saturating_duration_since(started));
        }
        if o.consumed == last_seq && o.last == last_seq {
            complete += 1;
        } else {
            incomplete += 1;
        }
    }
    for v in viewers {
        let _ = v.await;
    }
    let c = &sh.counters;
    let deliveries = c.deliveries.load(Ordering::Relaxed);
    let window = last_delivery.max(a.duration).as_secs_f64();
    let rep = Report {
        scenario: "reconnect",
        nodes: a.api.len(),
        viewers: a.viewers,
        dropping_viewers: dropping,
        senders: a.senders,
        target_rate: a.rate,
        seconds: a.duration.as_secs_f64(),
        sent: sent.sent.load(Ordering::Relaxed),
        acked: sent.acked.load(Ordering::Relaxed),
        refused: sent.refused.load(Ordering::Relaxed),
        last_seq,
        deliveries,
        expected_deliveries: expected,
        deliveries_per_second: deliveries as f64 / window,
        last_delivery_seconds: last_delivery.as_secs_f64(),
        viewers_complete: complete,
        viewers_incomplete: incomplete,
        reconnects: c.reconnects.load(Ordering::Relaxed),
        node_switches: c.switches.load(Ordering::Relaxed),
        reconnect_failures: c.failures.load(Ordering::Relaxed),
        unexpected_closes: c.unexpected.load(Ordering::Relaxed),
        replayed: c.replayed.load(Ordering::Relaxed),
        skipped_before_resumed: c.skipped.load(Ordering::Relaxed),
        not_recovered: c.not_recovered.load(Ordering::Relaxed),
        gaps: c.order.gaps.load(Ordering::Relaxed),
        duplicates: c.order.dups.load(Ordering::Relaxed),
        out_of_order: c.order.ooo.load(Ordering::Relaxed),
        resume_latency: report::latency(&resume),
        welcome_latency: report::latency(&welcome),
    };
    print_table(&rep);
    report::write_json(a.json.as_deref(), &rep)
}

fn print_table(r: &Report) {
    let lat = |l: &report::Latency| {
        format!(
            "n {} p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2} ms",
            l.count, l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms
        )
    };
    let rows: Vec<(&str, String)> = vec![
        (
            "nodes / viewers / dropping",
            format!("{} / {} / {}", r.nodes, r.viewers, r.dropping_viewers),
        ),
        (
            "sent / acked / refused",
            format!("{} / {} / {}", r.sent, r.acked, r.refused),
        ),
        ("last seq", r.last_seq.to_string()),
        (
            "deliveries / expected",
            format!("{} / {}", r.deliveries, r.expected_deliveries),
        ),
        ("deliveries/s", format!("{:.0}", r.deliveries_per_second)),
        (
            "viewers complete / incomplete",
            format!("{} / {}", r.viewers_complete, r.viewers_incomplete),
        ),
        (
            "reconnects (node switches)",
            format!("{} ({})", r.reconnects, r.node_switches),
        ),
        (
            "failed attempts / unexpected closes",
            format!("{} / {}", r.reconnect_failures, r.unexpected_closes),
        ),
        ("replayed from history", r.replayed.to_string()),
        (
            "skipped before resumed",
            r.skipped_before_resumed.to_string(),
        ),
        (
            "gaps / dupes / out-of-order",
            format!("{} / {} / {}", r.gaps, r.duplicates, r.out_of_order),
        ),
        ("recovered: false", r.not_recovered.to_string()),
        ("resume latency", lat(&r.resume_latency)),
        ("welcome latency", lat(&r.welcome_latency)),
    ];
    let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in rows {
        println!("{k:<w$}  {v}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_schedule_has_the_asked_mean_and_is_seeded() {
        let mean = Duration::from_millis(300);
        let mut rng = Rng(7);
        let n = 20_000;
        let total: Duration = (0..n).map(|_| rng.exp(mean)).sum();
        let got = total / n;
        // The mean of 20,000 exponential draws is within 5 % of the asked one (the
        // standard error is 0.7 %).
        assert!(
            got > Duration::from_millis(285) && got < Duration::from_millis(315),
            "{got:?}"
        );
        assert!((0..1000).all(|_| (0.0..1.0).contains(&rng.unit())));
        let (mut a, mut b) = (Rng(42), Rng(42));
        assert!((0..100).all(|_| a.next_u64() == b.next_u64()));
    }
}
