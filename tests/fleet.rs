//! A fleet behind a real load balancer: three node processes sharing Redis, behind nginx
//! configured by `deploy/nginx/`. 300 WebSocket clients watch one stream, 10 of them
//! sending; one node is drained (SIGTERM) and another is killed (SIGKILL) and restarted
//! while they talk. Every client must end with the whole sequence — in order, no gap, no
//! duplicate — and every acknowledged `client_msg_id` must appear exactly once. Clients
//! reconnect the way docs/protocol.md ("Reconnecting") tells them to.

use streamedge_testkit as common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Nginx, NodeProcess};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const VIEWERS: usize = 300;
const SENDERS: usize = 10;
/// Each sender sends one message per this interval.
const SEND_EVERY: Duration = Duration::from_millis(150);

/// What one client saw.
#[derive(Default)]
struct Seen {
    /// `(seq, client_msg_id)` of every `message`, in arrival order.
    messages: Vec<(u64, String)>,
    /// Out-of-order, repeated or missing sequence numbers (none expected).
    faults: Vec<String>,
    /// From an unexpected close to the next `welcome`.
    reconnects: Vec<Duration>,
}

/// What a sender knows about its messages.
#[derive(Default)]
struct Sent {
    /// `client_msg_id` → seq, once acknowledged.
    acked: HashMap<String, u64>,
    /// Sent, not yet acknowledged (resent after every reconnect).
    pending: Vec<(String, String)>,
}

struct Shared {
    url_base: String,
    stream: uuid::Uuid,
    /// No new messages after this.
    stop_sending: AtomicBool,
    /// Clients welcomed at least once: senders start when all are, so every client sees
    /// the stream from its first message.
    joined: std::sync::atomic::AtomicUsize,
    /// The clients may hang up once they have seen this seq (0: not known yet).
    final_seq: AtomicU64,
}

fn node_env() -> Vec<(&'static str, String)> {
    let mut env = common::redis_env();
    env.extend([
        ("STREAMEDGE_RATE_LIMIT__ENABLED", "false".to_string()),
        ("STREAMEDGE_CHAT__USER_PER_SEC", "0".to_string()),
        ("STREAMEDGE_SERVER__SHUTDOWN_GRACE", "15s".to_string()),
        ("STREAMEDGE_SERVER__DRAIN_DELAY", "1s".to_string()),
        ("STREAMEDGE_SERVER__DRAIN_SPREAD", "2s".to_string()),
    ]);
    env
}

fn addr() -> SocketAddr {
    format!("127.0.0.1:{}", common::free_port())
        .parse()
        .unwrap()
}

async fn connect(url: &str) -> Option<common::Ws> {
    let mut req = url.into_client_request().ok()?;
    req.headers_mut()
        .insert("sec-websocket-protocol", "streamedge.v1".parse().unwrap());
    let (ws, _) = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::connect_async(req),
    )
    .await
    .ok()?
    .ok()?;
    Some(ws)
}

/// Full jitter: a random delay in `[0, min(cap, base × 2^attempt))`.
fn backoff(attempt: u32) -> Duration {
    let cap = 2_000u64.min(50u64 << attempt.min(10));
    let r = u64::from(uuid::Uuid::new_v4().as_u128() as u32) % cap.max(1);
    Duration::from_millis(r)
}

/// One client: watches the stream (and sends, when `sender` is set) until it has seen the
/// final sequence number; reconnects with `since_seq` and resends unacknowledged messages.
async fn client(
    i: usize,
    shared: Arc<Shared>,
    seen: Arc<Mutex<Seen>>,
    sender: Option<Arc<Mutex<Sent>>>,
) {
    let token = common::buyer(&format!("fleet-{i}"));
    let mut last = 0u64;
    let mut attempt = 0u32;
    let mut closed_at: Option<Instant> = None;
    let mut n = 0u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = |last: u64| {
            let f = shared.final_seq.load(Ordering::SeqCst);
            f > 0 && last >= f
        };
        if done(last) || Instant::now() > deadline {
            return;
        }
        let since = if last > 0 {
            format!("&since_seq={last}")
        } else {
            String::new()
        };
        let url = format!(
            "{}/v1/streams/{}/ws?access_token={token}{since}",
            shared.url_base, shared.stream
        );
        let Some(ws) = connect(&url).await else {
            tokio::time::sleep(backoff(attempt)).await;
            attempt += 1;
            continue;
        };
        let (mut tx, mut rx) = ws.split();
        let mut tick = tokio::time::interval(SEND_EVERY);
        let mut resend = true;
        let mut close_code = None;
        loop {
            tokio::select! {
                frame = rx.next() => {
                    let text = match frame {
                        Some(Ok(Message::Text(t))) => t,
                        Some(Ok(Message::Close(c))) => {
                            close_code = c.map(|c| u16::from(c.code));
                            break;
                        }
                        Some(Ok(_)) => continue,
                        Some(Err(_)) | None => break,
                    };
                    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                    match v["type"].as_str().unwrap_or("") {
                        "welcome" => {
                            attempt = 0;
                            if closed_at.is_none() && last == 0 && v["last_seq"] == 0 {
                                shared.joined.fetch_add(1, Ordering::SeqCst);
                            }
                            if let Some(t) = closed_at.take() {
                                seen.lock().unwrap().reconnects.push(t.elapsed());
                            }
                        }
                        "message" => {
                            let seq = v["seq"].as_u64().unwrap();
                            let id = v["client_msg_id"].as_str().unwrap_or("").to_string();
                            let mut s = seen.lock().unwrap();
                            if seq != last + 1 {
                                s.faults.push(format!("client {i}: seq {seq} after {last}"));
                            }
                            if seq > last {
                                last = seq;
                            }
                            s.messages.push((seq, id));
                        }
                        "ack" => {
                            if let Some(sent) = &sender {
                                let id = v["client_msg_id"].as_str().unwrap().to_string();
                                let seq = v["seq"].as_u64().unwrap();
                                let mut s = sent.lock().unwrap();
                                s.pending.retain(|(p, _)| *p != id);
                                if let Some(prev) = s.acked.insert(id.clone(), seq) {
                                    assert_eq!(prev, seq, "{id} acknowledged with two seqs");
                                }
                            }
                        }
                        "error" => {
                            // A refused send (the node lost Redis for a moment, say) is
                            // resent with the same client_msg_id.
                            resend = true;
                        }
                        _ => {}
                    }
                    if done(last) {
                        let _ = tx.send(Message::Close(None)).await;
                        return;
                    }
                }
                _ = tick.tick() => {
                    // Quiet now: the last message may have come before the final seq was
                    // known.
                    if done(last) {
                        let _ = tx.send(Message::Close(None)).await;
                        return;
                    }
                    let Some(sent) = sender.as_ref() else { continue };
                    let mut out = Vec::new();
                    {
                        let mut s = sent.lock().unwrap();
                        if resend {
                            out.extend(s.pending.iter().cloned());
                            resend = false;
                        }
                        let everyone = shared.joined.load(Ordering::SeqCst) >= VIEWERS;
                        if everyone && !shared.stop_sending.load(Ordering::SeqCst) {
                            n += 1;
                            let id = format!("s{i}-{n}");
                            let body = format!("message {n} from sender {i}");
                            s.pending.push((id.clone(), body.clone()));
                            out.push((id, body));
                        }
                    }
                    for (id, body) in out {
                        let f = serde_json::json!({"type": "send", "client_msg_id": id, "body": body});
                        if tx.send(Message::Text(f.to_string().into())).await.is_err() {
                            break;
                        }
                    }
                }
            }
        }
        closed_at = Some(Instant::now());
        // 1012: the node is leaving; the balancer already routes elsewhere.
        if close_code != Some(1012) {
            tokio::time::sleep(backoff(attempt)).await;
            attempt += 1;
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_behind_nginx_lose_nothing_through_a_drain_and_a_kill() {
    let env = node_env();
    let addrs: Vec<(SocketAddr, SocketAddr)> = (0..3).map(|_| (addr(), addr())).collect();
    let mut nodes: Vec<Option<NodeProcess>> = addrs
        .iter()
        .map(|(api, admin)| Some(NodeProcess::spawn_on(*api, *admin, &env)))
        .collect();
    let nginx = Nginx::start(&addrs.iter().map(|(a, _)| a.port()).collect::<Vec<_>>());
    let stream = common::create_stream(&nginx.url("/v1/streams"), &common::seller("fleet")).await;
    let shared = Arc::new(Shared {
        url_base: format!("ws://{}", nginx.addr()),
        stream,
        stop_sending: AtomicBool::new(false),
        joined: Default::default(),
        final_seq: AtomicU64::new(0),
    });
    let mut tasks = Vec::new();
    let mut seens = Vec::new();
    let mut sents = Vec::new();
    for i in 0..VIEWERS {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let sent = (i < SENDERS).then(|| Arc::new(Mutex::new(Sent::default())));
        seens.push(seen.clone());
        if let Some(s) = &sent {
            sents.push(s.clone());
        }
        tasks.push(tokio::spawn(client(i, shared.clone(), seen, sent)));
    }

    let all_in = common::eventually(Duration::from_secs(30), || async {
        shared.joined.load(Ordering::SeqCst) >= VIEWERS
    })
    .await;
    assert!(all_in, "not every client connected");
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Node 0 leaves the fleet gracefully…
    nodes[0].as_ref().unwrap().signal("TERM");
    tokio::time::sleep(Duration::from_secs(4)).await;
    // …node 1 dies, and comes back on the same address a moment later.
    // (Killing and starting a process wait on it: off the runtime's two workers, which the
    // clients need meanwhile.)
    let killed = nodes[1].take();
    tokio::task::spawn_blocking(move || drop(killed))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (api, admin, again) = (addrs[1].0, addrs[1].1, env.clone());
    nodes[1] = Some(
        tokio::task::spawn_blocking(move || NodeProcess::spawn_on(api, admin, &again))
            .await
            .unwrap(),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Stop sending; every sent message must be acknowledged (resent as needed).
    shared.stop_sending.store(true, Ordering::SeqCst);
    let acked_all = common::eventually(Duration::from_secs(60), || async {
        sents.iter().all(|s| s.lock().unwrap().pending.is_empty())
    })
    .await;
    assert!(acked_all, "some messages were never acknowledged");
    let acked: HashMap<String, u64> = sents
        .iter()
        .flat_map(|s| s.lock().unwrap().acked.clone())
        .collect();
    let final_seq = acked.values().copied().max().unwrap();
    shared.final_seq.store(final_seq, Ordering::SeqCst);
    for (i, t) in tasks.into_iter().enumerate() {
        if tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .is_err()
        {
            let s = seens[i].lock().unwrap();
            panic!(
                "client {i} never caught up to {final_seq}: last {:?}, faults {:?}",
                s.messages.last(),
                s.faults
            );
        }
    }

    // Every acknowledged message has its own seq, and together they are 1..=final.
    let seqs: HashSet<u64> = acked.values().copied().collect();
    assert_eq!(seqs.len(), acked.len(), "two messages share a seq");
    assert_eq!(
        seqs.len() as u64,
        final_seq,
        "sequenced messages nobody acknowledged"
    );
    let mut reconnects = Vec::new();
    for (i, seen) in seens.iter().enumerate() {
        let s = seen.lock().unwrap();
        assert!(s.faults.is_empty(), "{:?}", s.faults);
        let got: Vec<u64> = s.messages.iter().map(|(q, _)| *q).collect();
        assert_eq!(got, (1..=final_seq).collect::<Vec<_>>(), "client {i}");
        let mut ids = HashSet::new();
        for (seq, id) in &s.messages {
            assert!(ids.insert(id.clone()), "client {i} got {id} twice");
            assert_eq!(acked.get(id), Some(seq), "client {i}: {id} at {seq}");
        }
        reconnects.extend(s.reconnects.iter().copied());
    }
    reconnects.sort();
    assert!(!reconnects.is_empty(), "no client was moved");
    eprintln!(
        "fleet: {final_seq} messages, {} reconnects, reconnect p50 {:?} p99 {:?} max {:?}",
        reconnects.len(),
        percentile(&reconnects, 0.5),
        percentile(&reconnects, 0.99),
        reconnects.last().unwrap()
    );
    let mut drained = nodes[0].take().unwrap();
    let exit = tokio::task::spawn_blocking(move || drained.wait_exit(Duration::from_secs(20)))
        .await
        .unwrap()
        .expect("the drained node did not exit");
    assert!(exit.success(), "drained node exit {exit:?}");
}
