//! Chat hot paths, per message on one node:
//!
//! - `chat_message_frame`: building the `message` frame from the stored payload, as the
//!   stream hub does once per message per node (`ChatService::frame`, then the shared
//!   `Utf8Bytes` every connection gets a reference to).
//! - `chat_fanout_10k/registry`: handing that frame to 10,000 local connections of the
//!   stream through the node's registry (`Registry::deliver_chat`: the frame encoded once,
//!   each connection's sequence cursor and its bounded outbound queue, plus the writer
//!   wake-up signal), with no socket attached: every frame is queued.
//! - `chat_fanout_10k/direct_writes`: the same with a socket write half attached to every
//!   queue, as on a node: each push writes the encoded frame at once (here to
//!   `tokio::io::sink()`, so the system call itself is not measured), no task wakes up.
//!
//! `cargo bench --bench chat`

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures_util::FutureExt;
use streamedge::domain::chat::StoredMessage;
use streamedge::ws::queue::OutboundQueue;
use streamedge::ws::registry::Registration;
use streamedge::ws::Registry;
use tungstenite::Utf8Bytes;
use uuid::Uuid;

const SUBSCRIBERS: usize = 10_000;

/// A stored message as `ChatService::send` writes it, with a 64-character body (as in the
/// load tests).
fn payload() -> Bytes {
    let m = StoredMessage {
        id: Uuid::from_u128(0x7c9e_6679_7425_40de_944b_e07f_c1f9_0ae7),
        user: "6c1f3c1e-2b7a-4a8e-9d51-3f1a2b3c4d5e".into(),
        body: "Is it true to size? ".repeat(4)[..64].to_string(),
        ts: "2026-11-22T03:01:02.345Z".into(),
        client_msg_id: "m-17".into(),
    };
    serde_json::to_vec(&m).unwrap().into()
}

/// The frame the hub hands to the registry.
fn encode(seq: u64, payload: &Bytes) -> Utf8Bytes {
    streamedge::protocol::server::message(seq, payload)
        .expect("a stored message")
        .into()
}

/// `SUBSCRIBERS` live connections on one stream, with the node's default queue bound.
fn subscribers(registry: &Arc<Registry>, stream: Uuid) -> Vec<Registration> {
    (0..SUBSCRIBERS)
        .map(|_| {
            let queue = Arc::new(OutboundQueue::new(256 * 1024));
            let reg = registry.register(registry.try_admit().unwrap(), stream, queue);
            reg.conn.finish_catch_up(0, Vec::new());
            reg
        })
        .collect()
}

/// One message fanned out to the stream's connections; only the delivery is timed.
fn timed_delivery(
    rt: &tokio::runtime::Runtime,
    registry: &Registry,
    stream: Uuid,
    seq: u64,
    payload: &Bytes,
) -> Duration {
    let frame = encode(seq, payload);
    let t = Instant::now();
    black_box(rt.block_on(registry.deliver_chat(&stream, seq, &frame, None)));
    t.elapsed()
}

fn frame(c: &mut Criterion) {
    let payload = payload();
    let mut seq = 1_000_000u64;
    c.bench_function("chat_message_frame", |b| {
        b.iter(|| {
            seq += 1;
            encode(black_box(seq), black_box(&payload))
        })
    });
}

fn fanout(c: &mut Criterion) {
    let payload = payload();
    let mut g = c.benchmark_group("chat_fanout_10k");
    g.throughput(Throughput::Elements(SUBSCRIBERS as u64));
    g.sample_size(30);
    g.measurement_time(Duration::from_secs(8));

    // One worker: the fan-out runs in the caller, as for a stream smaller than a shard.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    // The registry's fan-out alone; queues are emptied between iterations, untimed.
    let registry = Registry::new(SUBSCRIBERS);
    let stream = Uuid::new_v4();
    let regs = subscribers(&registry, stream);
    let mut seq = 0u64;
    let mut drained = Vec::new();
    g.bench_function("registry", |b| {
        b.iter_custom(|iters| {
            let mut took = Duration::ZERO;
            for _ in 0..iters {
                seq += 1;
                took += timed_delivery(&rt, &registry, stream, seq, &payload);
                for r in &regs {
                    // Frames are queued: the batch is ready without waiting.
                    let close = r.conn.queue.next_batch(&mut drained).now_or_never();
                    assert_eq!(close, Some(None), "a queue closed");
                }
                assert_eq!(drained.len(), SUBSCRIBERS);
                drained.clear();
            }
            took
        })
    });
    drop(regs);

    // With a socket write half attached: the fan-out writes directly.
    let registry = Registry::new(SUBSCRIBERS);
    let stream = Uuid::new_v4();
    let regs = subscribers(&registry, stream);
    for r in &regs {
        r.conn.queue.attach(Box::new(tokio::io::sink()));
    }
    let mut seq = 0u64;
    g.bench_function("direct_writes", |b| {
        b.iter_custom(|iters| {
            let mut took = Duration::ZERO;
            for _ in 0..iters {
                seq += 1;
                took += timed_delivery(&rt, &registry, stream, seq, &payload);
            }
            for r in &regs {
                assert_eq!(r.conn.queue.queued_bytes(), 0, "written, not queued");
            }
            took
        })
    });
    g.finish();
    drop(regs);
}

criterion_group!(benches, frame, fanout);
criterion_main!(benches);
