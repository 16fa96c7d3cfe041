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

/// Creates a stream on `api` as a seller; returns its id.
pub async fn create_stream(api: SocketAddr, secret: &str, title: &str) -> anyhow::Result<String> {
    let mut c = http1::Conn::connect(api).await?;
    let seller = token(secret, &format!("{title}-seller"), Role::Seller);
    let resp = c
        .send(&http1::request(
            "POST",
            api,
            "/v1/streams",
            &seller,
            &format!(r#"{{"title":"{title}"}}"#),
        ))
        .await?;
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
    pub senders: usize,
    /// Messages per second, all senders together.
    pub rate: f64,
    pub duration: Duration,
    pub body_bytes: usize,
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
        let mut tasks = Vec::new();
        for s in 0..plan.senders {
            let api = plan.apis[s % plan.apis.len()];
            let url = stream_ws_url(api, plan.stream, plan.jwt_secret, &format!("sender-{s}"));
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
                    counters.sent.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
                drain.abort();
            }));
        }
        Ok(Self { counters, tasks })
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
