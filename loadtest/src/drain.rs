//! `drain`: what a node's graceful drain costs its clients. N authenticated viewers join
//! one stream through `--api` (a load balancer, or a list of nodes the viewers are spread
//! over and fail over along), the node each landed on is read from its `welcome`
//! (`node`), optionally a few messages are sent so every viewer has a `seq` to resume
//! from; then one node is told to drain (`POST /drain` on `--drain-admin`, or SIGTERM to
//! `--drain-pid`).
//!
//! Every viewer the drained node closes reconnects the way docs/protocol.md says: at once
//! after a 1012 close, with `since_seq` when it has seen messages; after any other close,
//! and after a failed attempt, with exponential backoff and full jitter (a random wait in
//! 0..min(`--backoff-max`, `--backoff` × 2^attempt)). With several `--api` addresses a
//! viewer reconnects to the next one after the address it was on.
//!
//! Measured: for every close, the time from the close to the `welcome` of the
//! reconnection (and to its `resumed`); the time from the drain call until every viewer
//! the node closed is back; failed attempts and viewers that never came back; and with
//! `--watch-pid` the CPU seconds (utime + stime from `/proc/PID/stat`) the watched
//! processes (the other nodes, the balancer) spent from the drain call until everyone was
//! back. The whole run after the drain call is bounded by `--timeout`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use streamedge::auth::dev::DEV_JWT_SECRET;
use tokio_tungstenite::tungstenite::Message;

use crate::chat::{self, Rng, Stop};
use crate::conn::{self, Ws};
use crate::{http1, proto, report};

#[derive(clap::Args, Clone)]
#[command(group(clap::ArgGroup::new("how").required(true).args(["drain_admin", "drain_pid"])))]
pub struct Args {
    /// Where viewers connect: one address (a load balancer such as nginx), or several
    /// nodes (viewers are spread over them and reconnect to the next one in the list).
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:18080")]
    pub api: Vec<SocketAddr>,
    /// The nodes' `auth.jwt_secret` (default: the development secret).
    #[arg(long, default_value = DEV_JWT_SECRET)]
    pub jwt_secret: String,
    /// Viewer WebSockets (distinct users) on one stream.
    #[arg(long, default_value_t = 1000)]
    pub viewers: usize,
    /// Joins in flight at once while the viewers connect.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Messages sent on the stream (and seen by every viewer) before the drain, so
    /// reconnections carry `since_seq` and resume from the history; 0: none.
    #[arg(long, default_value_t = 10)]
    pub messages: u64,
    /// Drain by `POST http://ADDR/drain` (the node's admin listener).
    #[arg(long)]
    pub drain_admin: Option<SocketAddr>,
    /// Drain by sending SIGTERM to this process.
    #[arg(long)]
    pub drain_pid: Option<u32>,
    /// Processes whose CPU time (utime + stime) is reported from the drain call until
    /// every moved viewer is back: the receiving nodes, the balancer's worker.
    #[arg(long, num_args = 1.., value_delimiter = ',')]
    pub watch_pid: Vec<u32>,
    /// Most time from the drain call to the end of the run (viewers not back by then
    /// count as failed).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Base of the backoff after a close other than 1012 or a failed attempt.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    pub backoff: Duration,
    /// Cap of that backoff.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub backoff_max: Duration,
    /// Seed of the backoff jitter.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Serialize)]
struct Report {
    scenario: &'static str,
    api: Vec<SocketAddr>,
    viewers: usize,
    messages: u64,
    /// How the viewers were spread over the nodes before the drain (`welcome.node`).
    nodes_before: BTreeMap<String, u64>,
    /// The node whose viewers were closed (the one closing the most).
    drained_node: String,
    /// Viewers the drained node had.
    on_drained_node: u64,
    /// Viewers closed after the drain call (any node, any code), and by code.
    moved: u64,
    closes_1012: u64,
    closes_other: u64,
    closes_before_drain: u64,
    /// Moved viewers welcomed again / not back when the run ended.
    back: u64,
    failed: u64,
    /// Connection attempts that failed (refused, 502/503, timeout) and were retried.
    failed_attempts: u64,
    /// Where the moved viewers landed.
    nodes_after: BTreeMap<String, u64>,
    /// `resumed` frames after reconnecting with `since_seq`, and how many said
    /// `recovered: false`.
    resumed: u64,
    not_recovered: u64,
    /// Seconds from the drain call to the first and the last close.
    first_close_s: f64,
    last_close_s: f64,
    /// Seconds from the drain call until every moved viewer was welcomed again.
    all_back_s: f64,
    timed_out: bool,
    /// Close to `welcome` of the reconnection, per close.
    reconnect: report::Latency,
    /// Close to `resumed` (reconnections with `since_seq`).
    resume: report::Latency,
    /// CPU seconds per watched process, from the drain call until all were back.
    cpu_seconds: BTreeMap<u32, f64>,
    cpu_window_s: f64,
}

#[derive(Default)]
struct Counters {
    closes_1012: AtomicU64,
    closes_other: AtomicU64,
    closes_before: AtomicU64,
    /// Viewers between a close and their next `welcome`.
    away: AtomicU64,
    failed_attempts: AtomicU64,
    resumed: AtomicU64,
    not_recovered: AtomicU64,
    /// Viewers that have seen the last pre-drain message.
    caught_up: AtomicU64,
}

struct Shared {
    apis: Vec<SocketAddr>,
    stream: String,
    jwt_secret: String,
    backoff: Duration,
    backoff_max: Duration,
    messages: u64,
    seed: u64,
    stop: Stop,
    drained_at: OnceLock<Instant>,
    c: Counters,
    /// Closes after the drain call by the node the viewer was on.
    closed_from: Mutex<BTreeMap<String, u64>>,
}

/// One viewer's record.
#[derive(Default)]
struct Outcome {
    /// The node it is on (after its last reconnection).
    node: String,
    /// Times of closes after the drain call.
    closes: Vec<Instant>,
    back_at: Option<Instant>,
    away_at_end: bool,
    reconnect: Option<Histogram<u64>>,
    resume: Option<Histogram<u64>>,
}

/// The wait before reconnection attempt `attempt` (0 = the first) after a close that was
/// not a 1012, or after a failed attempt: "full jitter", uniform in
/// 0..min(`max`, `base` × 2^attempt); `unit` is a uniform draw in [0, 1).
pub fn full_jitter(base: Duration, max: Duration, attempt: u32, unit: f64) -> Duration {
    let cap = base.saturating_mul(1u32 << attempt.min(20)).min(max);
    cap.mul_f64(unit.clamp(0.0, 1.0))
}

/// `node` of a `welcome` frame.
pub fn welcome_node(welcome: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(welcome).ok()?;
    Some(v["node"].as_str()?.to_string())
}

/// utime + stime in clock ticks from the text of `/proc/PID/stat` (fields 14 and 15,
/// counted after the parenthesised command name, which may contain spaces).
pub fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, stime 15.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// CPU seconds of a process so far (Linux reports `/proc` times in USER_HZ = 100 ticks/s).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(stat_cpu_ticks(&s)? as f64 / 100.0)
}

impl Shared {
    /// Opens viewer `i` on `apis[idx]`, resuming after `since` when non-zero.
    async fn open(&self, i: usize, idx: usize, since: u64) -> Result<(Ws, String), String> {
        let api = self.apis[idx];
        let mut url = chat::stream_ws_url(api, &self.stream, &self.jwt_secret, &format!("v{i}"));
        if since > 0 {
            url.push_str(&format!("&since_seq={since}"));
        }
        let (ws, _, welcome) = conn::open_welcome(
            api,
            &url,
            conn::source_addr(&api, i),
            Duration::from_secs(10),
        )
        .await?;
        Ok((ws, welcome_node(&welcome).unwrap_or_default()))
    }
}

/// One viewer: reads its feed; when closed, reconnects and records how long it took.
async fn viewer(sh: Arc<Shared>, i: usize, mut ws: Ws, mut idx: usize, node: String) -> Outcome {
    let c = &sh.c;
    let mut rng = Rng(sh.seed ^ (i as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let mut out = Outcome {
        node,
        ..Outcome::default()
    };
    let (mut last_seq, mut counted) = (0u64, false);
    // The close a pending `resumed` answers.
    let mut resuming: Option<Instant> = None;
    let stopped = sh.stop.wait();
    tokio::pin!(stopped);
    loop {
        let frame = tokio::select! {
            _ = &mut stopped => break,
            f = ws.next() => f,
        };
        let code = match frame {
            Some(Ok(Message::Text(t))) => {
                if t.starts_with(r#"{"type":"message""#) {
                    if let Some(seq) = seq_of(&t) {
                        last_seq = last_seq.max(seq);
                    }
                    if !counted && sh.messages > 0 && last_seq >= sh.messages {
                        counted = true;
                        c.caught_up.fetch_add(1, Ordering::Relaxed);
                    }
                } else if let Some(r) = proto::parse_resumed(&t) {
                    c.resumed.fetch_add(1, Ordering::Relaxed);
                    if !r.recovered {
                        c.not_recovered.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Some(at) = resuming.take() {
                        report::record(
                            out.resume.get_or_insert_with(report::histogram),
                            at.elapsed(),
                        );
                    }
                }
                continue;
            }
            Some(Ok(Message::Close(f))) => f.map(|f| u16::from(f.code)),
            Some(Err(_)) | None => None,
            Some(Ok(_)) => continue,
        };
        let closed = Instant::now();
        drop(ws);
        match code {
            Some(1012) => c.closes_1012.fetch_add(1, Ordering::Relaxed),
            _ => c.closes_other.fetch_add(1, Ordering::Relaxed),
        };
        if sh.drained_at.get().is_some() {
            out.closes.push(closed);
            *sh.closed_from
                .lock()
                .expect("lock")
                .entry(out.node.clone())
                .or_default() += 1;
        } else {
            c.closes_before.fetch_add(1, Ordering::Relaxed);
        }
        c.away.fetch_add(1, Ordering::Relaxed);
        idx = (idx + 1) % sh.apis.len();
        // 1012: at once; anything else: back off first.
        let mut attempt = 0u32;
        let mut wait = if code == Some(1012) {
            Duration::ZERO
        } else {
            full_jitter(sh.backoff, sh.backoff_max, 0, rng.unit())
        };
        let reopened = loop {
            let work = async {
                tokio::time::sleep(wait).await;
                sh.open(i, idx, last_seq).await
            };
            let r = tokio::select! {
                _ = &mut stopped => None,
                r = work => Some(r),
            };
            match r {
                None => break None,
                Some(Ok(ok)) => break Some(ok),
                Some(Err(_)) => {
                    c.failed_attempts.fetch_add(1, Ordering::Relaxed);
                    attempt += 1;
                    idx = (idx + 1) % sh.apis.len();
                    wait = full_jitter(sh.backoff, sh.backoff_max, attempt, rng.unit());
                }
            }
        };
        let Some((new_ws, node)) = reopened else {
            out.away_at_end = true;
            return out;
        };
        report::record(
            out.reconnect.get_or_insert_with(report::histogram),
            closed.elapsed(),
        );
        c.away.fetch_sub(1, Ordering::Relaxed);
        out.back_at = Some(Instant::now());
        out.node = node;
        resuming = (last_seq > 0).then_some(closed);
        ws = new_ws;
    }
    out
}

/// `"seq":N` of a frame whose body does not carry a send stamp.
fn seq_of(text: &str) -> Option<u64> {
    let s = text.split("\"seq\":").nth(1)?;
    s[..s.find(|c: char| !c.is_ascii_digit())?].parse().ok()
}

/// Sends `n` messages on the stream through `api` and waits for their acks.
async fn send_messages(api: SocketAddr, stream: &str, secret: &str, n: u64) -> anyhow::Result<()> {
    let url = chat::stream_ws_url(api, stream, secret, "drain-sender");
    let (mut ws, _) = conn::open(api, &url, None, Duration::from_secs(10))
        .await
        .map_err(|e| anyhow::anyhow!("sender: {e}"))?;
    for k in 1..=n {
        let f =
            format!(r#"{{"type":"send","client_msg_id":"d{k}","body":"before the drain {k}"}}"#);
        ws.send(Message::Text(f.into())).await?;
    }
    let mut acked = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while acked < n {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) if proto::parse_ack(&t).is_some() => acked += 1,
            Ok(Some(Ok(Message::Text(t)))) if t.starts_with(r#"{"type":"error""#) => {
                anyhow::bail!("sender: refused: {t}")
            }
            Ok(Some(Ok(_))) => {}
            _ => anyhow::bail!("sender: {acked} of {n} messages acknowledged"),
        }
    }
    let _ = ws.close(None).await;
    Ok(())
}

/// Starts the drain: `POST /drain` on the admin listener, or SIGTERM.
async fn start_drain(a: &Args) -> anyhow::Result<()> {
    if let Some(admin) = a.drain_admin {
        let mut c = http1::Conn::connect(admin).await?;
        let r = c
            .send(&http1::request("POST", admin, "/drain", "", ""))
            .await?;
        anyhow::ensure!(r.status / 100 == 2, "POST /drain: {}", r.status);
    } else if let Some(pid) = a.drain_pid {
        let st = tokio::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .await?;
        anyhow::ensure!(st.success(), "kill -TERM {pid} failed");
    }
    Ok(())
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    anyhow::ensure!(!a.api.is_empty() && a.viewers > 0);
    let stream = chat::create_stream(a.api[0], &a.jwt_secret, "drain").await?;
    let sh = Arc::new(Shared {
        apis: a.api.clone(),
        stream: stream.clone(),
        jwt_secret: a.jwt_secret.clone(),
        backoff: a.backoff,
        backoff_max: a.backoff_max,
        messages: a.messages,
        seed: a.seed,
        stop: Stop::new(),
        drained_at: OnceLock::new(),
        c: Counters::default(),
        closed_from: Mutex::new(BTreeMap::new()),
    });
    eprintln!("connecting {} viewers through {:?}", a.viewers, a.api);
    let joined_at = Instant::now();
    let joins = futures_util::stream::iter(0..a.viewers)
        .map(|i| {
            let sh = sh.clone();
            async move {
                let idx = i % sh.apis.len();
                let mut last = String::new();
                for attempt in 0..5u32 {
                    match sh.open(i, idx, 0).await {
                        Ok((ws, node)) => return Ok((i, idx, ws, node)),
                        Err(e) => last = e,
                    }
                    tokio::time::sleep(Duration::from_millis(100) * (attempt + 1)).await;
                }
                Err(format!("viewer {i}: {last}"))
            }
        })
        .buffer_unordered(a.concurrency.max(1));
    let mut joins = std::pin::pin!(joins);
    let (out_tx, mut out_rx) = tokio::sync::mpsc::unbounded_channel::<Outcome>();
    let mut nodes_before: BTreeMap<String, u64> = BTreeMap::new();
    let mut tasks = Vec::with_capacity(a.viewers);
    while let Some(r) = joins.next().await {
        let (i, idx, ws, node) = r.map_err(|e| anyhow::anyhow!(e))?;
        *nodes_before.entry(node.clone()).or_default() += 1;
        let (sh, out_tx) = (sh.clone(), out_tx.clone());
        tasks.push(tokio::spawn(async move {
            let _ = out_tx.send(viewer(sh, i, ws, idx, node).await);
        }));
        if tasks.len() % 500 == 0 {
            report::progress(&format!("{} welcomed", tasks.len()));
        }
    }
    drop(out_tx);
    report::end_progress();
    eprintln!(
        "{} viewers welcomed in {:.2}s: {nodes_before:?}",
        a.viewers,
        joined_at.elapsed().as_secs_f64()
    );
    if a.messages > 0 {
        send_messages(a.api[0], &stream, &a.jwt_secret, a.messages).await?;
        let deadline = Instant::now() + Duration::from_secs(15);
        while sh.c.caught_up.load(Ordering::Relaxed) < a.viewers as u64 {
            anyhow::ensure!(
                Instant::now() < deadline,
                "only {} of {} viewers saw the {} messages",
                sh.c.caught_up.load(Ordering::Relaxed),
                a.viewers,
                a.messages
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    let cpu_before: Vec<Option<f64>> = a.watch_pid.iter().map(|&p| cpu_seconds(p)).collect();
    let t0 = Instant::now();
    let _ = sh.drained_at.set(t0);
    start_drain(&a).await?;
    eprintln!("drain started");
    let deadline = t0 + a.timeout;
    let done = |sh: &Shared| -> bool {
        let closed = sh.closed_from.lock().expect("lock");
        let Some((node, n)) = closed.iter().max_by_key(|(_, n)| **n) else {
            return false;
        };
        sh.c.away.load(Ordering::Relaxed) == 0
            && *n >= nodes_before.get(node).copied().unwrap_or(u64::MAX)
    };
    let mut timed_out = false;
    while !done(&sh) {
        if Instant::now() >= deadline {
            timed_out = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        if t0.elapsed().as_millis() % 500 < 20 {
            let moved: u64 = sh.closed_from.lock().expect("lock").values().sum();
            report::progress(&format!(
                "{:.1}s closed {moved} away {} failed attempts {}",
                t0.elapsed().as_secs_f64(),
                sh.c.away.load(Ordering::Relaxed),
                sh.c.failed_attempts.load(Ordering::Relaxed)
            ));
        }
    }
    let cpu_window = t0.elapsed();
    let cpu_seconds: BTreeMap<u32, f64> = a
        .watch_pid
        .iter()
        .zip(cpu_before)
        .filter_map(|(&p, before)| Some((p, cpu_seconds(p)? - before?)))
        .collect();
    report::end_progress();
    sh.stop.stop();

    let mut reconnect = report::histogram();
    let mut resume = report::histogram();
    let (mut moved, mut back, mut failed) = (0u64, 0u64, 0u64);
    let mut nodes_after: BTreeMap<String, u64> = BTreeMap::new();
    let (mut first_close, mut last_close, mut all_back) = (None::<Instant>, None::<Instant>, t0);
    while let Some(o) = out_rx.recv().await {
        if let Some(h) = &o.reconnect {
            reconnect.add(h)?;
        }
        if let Some(h) = &o.resume {
            resume.add(h)?;
        }
        if let (Some(f), Some(l)) = (o.closes.first(), o.closes.last()) {
            moved += 1;
            first_close = Some(first_close.map_or(*f, |x| x.min(*f)));
            last_close = Some(last_close.map_or(*l, |x| x.max(*l)));
            if o.away_at_end {
                failed += 1;
            } else {
                back += 1;
                *nodes_after.entry(o.node.clone()).or_default() += 1;
                all_back = all_back.max(o.back_at.unwrap_or(t0));
            }
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    let since = |t: Option<Instant>| t.map_or(0.0, |t| t.duration_since(t0).as_secs_f64());
    let closed_from = sh.closed_from.lock().expect("lock").clone();
    let drained_node = closed_from
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(k, _)| k.clone())
        .unwrap_or_default();
    let c = &sh.c;
    let rep = Report {
        scenario: "drain",
        api: a.api.clone(),
        viewers: a.viewers,
        messages: a.messages,
        on_drained_node: nodes_before.get(&drained_node).copied().unwrap_or(0),
        nodes_before,
        drained_node,
        moved,
        closes_1012: c.closes_1012.load(Ordering::Relaxed),
        closes_other: c.closes_other.load(Ordering::Relaxed),
        closes_before_drain: c.closes_before.load(Ordering::Relaxed),
        back,
        failed,
        failed_attempts: c.failed_attempts.load(Ordering::Relaxed),
        nodes_after,
        resumed: c.resumed.load(Ordering::Relaxed),
        not_recovered: c.not_recovered.load(Ordering::Relaxed),
        first_close_s: since(first_close),
        last_close_s: since(last_close),
        all_back_s: since(Some(all_back)),
        timed_out,
        reconnect: report::latency(&reconnect),
        resume: report::latency(&resume),
        cpu_seconds,
        cpu_window_s: cpu_window.as_secs_f64(),
    };
    println!("{}", summary(&rep));
    report::write_json(a.json.as_deref(), &rep)
}

fn summary(r: &Report) -> String {
    let l = &r.reconnect;
    let cpu: Vec<String> = r
        .cpu_seconds
        .iter()
        .map(|(p, s)| format!("{p}: {s:.2}s"))
        .collect();
    format!(
        "drain: {} of {} viewers moved off {} ({} there; 1012 {} other {}), back {} failed {} \
         (failed attempts {}, resumed {} not recovered {}); closes {:.2}-{:.2}s, all back {:.2}s \
         after the drain call{}; close->welcome ms p50 {:.1} p90 {:.1} p99 {:.1} max {:.1}; \
         moved to {:?}; CPU over {:.2}s [{}]",
        r.moved,
        r.viewers,
        r.drained_node,
        r.on_drained_node,
        r.closes_1012,
        r.closes_other,
        r.back,
        r.failed,
        r.failed_attempts,
        r.resumed,
        r.not_recovered,
        r.first_close_s,
        r.last_close_s,
        r.all_back_s,
        if r.timed_out { " (TIMED OUT)" } else { "" },
        l.p50_ms,
        l.p90_ms,
        l.p99_ms,
        l.max_ms,
        r.nodes_after,
        r.cpu_window_s,
        cpu.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_jitter_stays_under_the_doubling_cap() {
        let (base, max) = (Duration::from_millis(100), Duration::from_secs(5));
        assert_eq!(full_jitter(base, max, 0, 0.0), Duration::ZERO);
        assert_eq!(full_jitter(base, max, 0, 0.5), Duration::from_millis(50));
        assert_eq!(full_jitter(base, max, 3, 0.5), Duration::from_millis(400));
        // 100 ms × 2^10 is over the cap: the cap bounds it.
        assert_eq!(full_jitter(base, max, 10, 0.5), Duration::from_millis(2500));
        assert_eq!(full_jitter(base, max, 99, 1.0), max);
        let mut rng = Rng(3);
        assert!((0..1000).all(|k| full_jitter(base, max, k % 8, rng.unit()) <= max));
    }

    #[test]
    fn parses_welcome_node_and_proc_stat_times() {
        let w = r#"{"type":"welcome","stream":"s","node":"node2","conn_id":7,"last_seq":0}"#;
        assert_eq!(welcome_node(w).as_deref(), Some("node2"));
        assert_eq!(welcome_node(r#"{"type":"welcome"}"#), None);
        // A command name with spaces and a parenthesis; utime 1234, stime 56.
        let stat = "4242 (stream edge) (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1234 56 0 0 20 0 3 0 1 2 3";
        assert_eq!(stat_cpu_ticks(stat), Some(1290));
        assert_eq!(stat_cpu_ticks("4242 (x) S 1"), None);
        assert_eq!(
            seq_of(r#"{"type":"message","seq":41,"body":"hi"}"#),
            Some(41)
        );
    }
}
