//! What the chat scenarios (`chat-fanout`, `reconnect`) share: creating the stream, the
//! stream WebSocket URL of a simulated user, send timestamps, the per-sequence ordering
//! check, a stop signal for viewer tasks, and the paced senders.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use streamedge::auth::Role;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::conn::token;
use crate::http1;
use crate::proto::Protocol;

/// Microseconds since the Unix epoch: the send stamp carried in message bodies.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as u64
}

/// `ws://…/v1/streams/{stream}/ws` with an access token for `user` as a buyer.
pub fn stream_ws_url(api: SocketAddr, stream: &str, secret: &str, user: &str) -> String {
    format!(
        "ws://{api}/v1/streams/{stream}/ws?access_token={}",
        token(secret, user, Role::Buyer)
    )
}

/// Creates a stream on `api` as a seller; returns its id. Over the node's rate limit for
/// stream creation (`429`), it waits and tries again, as a client would.
pub async fn create_stream(api: SocketAddr, secret: &str, title: &str) -> anyhow::Result<String> {
    let mut c = http1::Conn::connect(api).await?;
    let seller = token(secret, &format!("{title}-seller"), Role::Seller);
    let mut tries = 0;
    let resp = loop {
        let resp = c
            .send(&http1::request(
                "POST",
                api,
                "/v1/streams",
                &seller,
                &format!(r#"{{"title":"{title}"}}"#),
            ))
            .await?;
        tries += 1;
        if resp.status != 429 || tries >= 300 {
            break resp;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    anyhow::ensure!(resp.status == 201, "create stream: {}", resp.status);
    let stream: serde_json::Value = serde_json::from_slice(&resp.body)?;
    Ok(stream["id"].as_str().unwrap_or_default().to_string())
}

/// Ordering faults seen by viewers, summed over all of them.
#[derive(Default)]
pub struct OrderCounters {
    pub gaps: AtomicU64,
    pub dups: AtomicU64,
    pub ooo: AtomicU64,
}

impl OrderCounters {
    /// Checks one delivery against the last sequence number seen on its sequence (0: none
    /// yet); returns whether it was the next one (or the first).
    pub fn check(&self, last: &mut u64, seq: u64) -> bool {
        let mut next = true;
        if *last != 0 {
            if seq == *last {
                self.dups.fetch_add(1, Ordering::Relaxed);
                next = false;
            } else if seq < *last {
                self.ooo.fetch_add(1, Ordering::Relaxed);
                next = false;
            } else if seq > *last + 1 {
                self.gaps.fetch_add(seq - *last - 1, Ordering::Relaxed);
                next = false;
            }
        }
        *last = (*last).max(seq);
        next
    }
}

/// A tiny stop signal shared by tasks.
#[derive(Clone)]
pub struct Stop(
    Arc<tokio::sync::watch::Sender<bool>>,
    tokio::sync::watch::Receiver<bool>,
);

impl Stop {
    pub fn new() -> Self {
        let (tx, rx) = tokio::sync::watch::channel(false);
        Self(Arc::new(tx), rx)
    }
    pub fn stop(&self) {
        let _ = self.0.send(true);
    }
    pub fn is_stopped(&self) -> bool {
        *self.1.borrow()
    }
    pub async fn wait(&self) {
        let mut rx = self.1.clone();
        let _ = rx.wait_for(|v| *v).await;
    }
}

/// splitmix64: a small deterministic generator (drop schedules, Poisson arrivals).
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Exponentially distributed with the given mean.
    pub fn exp(&mut self, mean: Duration) -> Duration {
        mean.mul_f64(-(1.0 - self.unit()).ln())
    }
}

/// How the senders' messages are spread in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arrivals {
    /// Evenly spaced: sender `s` of `M` is offset by `s/M` of its interval, so the total
    /// rate is constant (R messages per second, one every 1/R s).
    Uniform,
    /// Independent senders: exponential gaps with the same mean (a Poisson process at
    /// rate R in total), so messages sometimes arrive close together, as in a real chat.
    Poisson,
}

/// When one sender sends, as offsets from the start of the run. Senders are connected one
/// after another but their schedules all count from the same start, so they do not fire
/// in step (which would turn R evenly spaced messages per second into clumps of M).
pub struct Schedule {
    interval: Duration,
    arrivals: Arrivals,
    rng: Rng,
    next: Duration,
}

impl Schedule {
    /// Sender `sender` of `senders`, each sending `per_sender` messages per second.
    pub fn new(sender: usize, senders: usize, per_sender: f64, arrivals: Arrivals) -> Self {
        let interval = Duration::from_secs_f64(1.0 / per_sender);
        let mut rng = Rng(0x5eed ^ (sender as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
        let next = match arrivals {
            Arrivals::Uniform => interval.mul_f64(sender as f64 / senders.max(1) as f64),
            Arrivals::Poisson => rng.exp(interval),
        };
        Self {
            interval,
            arrivals,
            rng,
            next,
        }
    }

    /// The offset of the next send (each call moves on by one).
    pub fn next_offset(&mut self) -> Duration {
        let at = self.next;
        self.next += match self.arrivals {
            Arrivals::Uniform => self.interval,
            Arrivals::Poisson => self.rng.exp(self.interval),
        };
        at
    }
}

/// What the senders did, updated while they run.
#[derive(Default)]
pub struct SendCounters {
    /// Frames written.
    pub sent: AtomicU64,
    /// streamedge only: `ack` frames received (messages the node sequenced).
    pub acked: AtomicU64,
    /// streamedge only: the highest `seq` acknowledged.
    pub max_seq: AtomicU64,
    /// streamedge only: `error` frames received (messages refused).
    pub refused: AtomicU64,
}

/// The paced senders of a chat scenario.
pub struct Senders {
    pub counters: Arc<SendCounters>,
    tasks: Vec<JoinHandle<()>>,
}

/// What the senders send and where.
pub struct SenderPlan<'a> {
    pub protocol: Protocol,
    pub apis: &'a [SocketAddr],
    /// streamedge: the stream id.
    pub stream: &'a str,
    pub jwt_secret: &'a str,
    /// Sender `s` signs in as `<user_prefix>-<s>`.
    pub user_prefix: &'a str,
    pub senders: usize,
    /// Messages per second, all senders together.
    pub rate: f64,
    pub duration: Duration,
    pub body_bytes: usize,
    pub arrivals: Arrivals,
}

impl Senders {
    /// Connects `plan.senders` senders (spread over the APIs) and starts them: each sends
    /// at `rate / senders` per second until `duration` after `started`, stamping every
    /// message with its send time.
    pub async fn start(plan: SenderPlan<'_>, started: Instant) -> anyhow::Result<Self> {
        let proto = plan.protocol;
        let pad = "x".repeat(plan.body_bytes);
        let per_sender = plan.rate / plan.senders as f64;
        let counters = Arc::new(SendCounters::default());
        let (senders, arrivals) = (plan.senders, plan.arrivals);
        let mut tasks = Vec::new();
        for s in 0..plan.senders {
            let api = plan.apis[s % plan.apis.len()];
            let url = stream_ws_url(
                api,
                plan.stream,
                plan.jwt_secret,
                &format!("{}-{s}", plan.user_prefix),
            );
            let ws = proto
                .open_sender(api, &url)
                .await
                .map_err(|e| anyhow::anyhow!("sender {s}: {e}"))?;
            let (mut tx, mut rx) = ws.split();
            let pad = pad.clone();
            let counters = counters.clone();
            let duration = plan.duration;
            tasks.push(tokio::spawn(async move {
                // Senders read to keep their sockets drained (streamedge echoes messages to
                // them; a NATS server only PINGs every two minutes, longer than any run), and
                // count streamedge's acks and refusals.
                let reader_counters = counters.clone();
                let drain = tokio::spawn(async move {
                    while let Some(Ok(m)) = rx.next().await {
                        if proto != Protocol::Streamedge {
                            continue;
                        }
                        let Message::Text(t) = m else { continue };
                        if let Some(seq) = crate::proto::parse_ack(&t) {
                            reader_counters.acked.fetch_add(1, Ordering::Relaxed);
                            reader_counters.max_seq.fetch_max(seq, Ordering::Relaxed);
                        } else if t.starts_with(r#"{"type":"error""#) {
                            reader_counters.refused.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
                let base = tokio::time::Instant::from_std(started);
                let mut schedule = Schedule::new(s, senders, per_sender, arrivals);
                let mut next = base + schedule.next_offset();
                let mut i = 1u64;
                while started.elapsed() < duration {
                    tokio::time::sleep_until(next).await;
                    next = base + schedule.next_offset();
                    if tx
                        .send(proto.publish_frame(s, i, now_us(), &pad))
                        .await
                        .is_err()
                    {
                        break;
                    }
                    counters.sent.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
                drain.abort();
            }));
        }
        Ok(Self { counters, tasks })
    }

    /// Stops every sender now.
    pub fn abort(self) {
        for t in self.tasks {
            t.abort();
        }
    }

    /// Waits for every sender to finish (its send window plus 2 s for the last acks).
    pub async fn finish(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_senders_interleave_evenly_and_poisson_keeps_the_mean_rate() {
        // 10 senders at 100 msgs/s in total: one message every 10 ms, none at the same time.
        let mut all: Vec<Duration> = (0..10)
            .flat_map(|s| {
                let mut sch = Schedule::new(s, 10, 10.0, Arrivals::Uniform);
                (0..10).map(move |_| sch.next_offset())
            })
            .collect();
        all.sort();
        for (k, at) in all.iter().enumerate() {
            let want = Duration::from_millis(10 * k as u64);
            assert!(at.abs_diff(want) < Duration::from_micros(1), "{k}: {at:?}");
        }
        // Poisson: 20,000 gaps of one sender at 10/s average 100 ms (within 5 %); two
        // senders do not share a schedule.
        let mut a = Schedule::new(0, 2, 10.0, Arrivals::Poisson);
        let mut b = Schedule::new(1, 2, 10.0, Arrivals::Poisson);
        let n = 20_000;
        let last = (0..n).map(|_| a.next_offset()).last().unwrap_or_default();
        let mean = last / n;
        assert!(
            mean > Duration::from_millis(95) && mean < Duration::from_millis(105),
            "{mean:?}"
        );
        let mut a2 = Schedule::new(0, 2, 10.0, Arrivals::Poisson);
        assert_ne!(a2.next_offset(), b.next_offset());
    }

    #[test]
    fn sequence_check_counts_gaps_duplicates_and_reordering() {
        let c = OrderCounters::default();
        let mut last = 0;
        let next: Vec<bool> = [5, 6, 6, 9, 7, 10]
            .into_iter()
            .map(|seq| c.check(&mut last, seq))
            .collect();
        // 6 twice: one duplicate; 6 -> 9: two missing; 7 after 9: reordered.
        assert_eq!(c.dups.load(Ordering::Relaxed), 1);
        assert_eq!(c.gaps.load(Ordering::Relaxed), 2);
        assert_eq!(c.ooo.load(Ordering::Relaxed), 1);
        assert_eq!(last, 10);
        assert_eq!(next, [true, true, false, false, false, true]);
    }
}
