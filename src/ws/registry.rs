//! The node's registry of open stream WebSockets: admission against
//! `ws.max_connections`, connections grouped by stream for fan-out, and closing every
//! connection at shutdown. Fan-out hands the same frame bytes to every connection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio_util::task::TaskTracker;
use tungstenite::Utf8Bytes;
use uuid::Uuid;

use super::queue::{close_code, CloseReason, OutboundQueue};
use super::wire;

pub type ConnId = u64;

pub use super::cursor::Conn;

/// See the module documentation.
pub struct Registry {
    streams: RwLock<HashMap<Uuid, HashMap<ConnId, Arc<Conn>>>>,
    next_id: AtomicU64,
    open: AtomicUsize,
    /// Held while the gauge is set from `open`, so that a connection opening and another
    /// closing at once cannot leave an older count in the gauge.
    gauge: std::sync::Mutex<()>,
    max: usize,
    closing: AtomicBool,
    tracker: TaskTracker,
}

/// A reserved connection slot; released on drop.
pub struct Admission {
    registry: Arc<Registry>,
    _counted: crate::telemetry::memory::ConnectionSlot,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.registry.open.fetch_sub(1, Ordering::SeqCst);
        self.registry.set_gauge();
    }
}

/// A connection's place in the registry; removed on drop.
pub struct Registration {
    pub id: ConnId,
    pub stream: Uuid,
    pub conn: Arc<Conn>,
    registry: Arc<Registry>,
    _admission: Admission,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut streams = self.registry.streams.write().expect("registry lock");
        if let Some(conns) = streams.get_mut(&self.stream) {
            conns.remove(&self.id);
            if conns.is_empty() {
                streams.remove(&self.stream);
            }
        }
    }
}

impl Registry {
    pub fn new(max_connections: usize) -> Arc<Self> {
        Arc::new(Self {
            streams: RwLock::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            open: AtomicUsize::new(0),
            gauge: std::sync::Mutex::new(()),
            max: max_connections,
            closing: AtomicBool::new(false),
            tracker: TaskTracker::new(),
        })
    }

    /// Reserves a connection slot, or `None` when the node is full.
    pub fn try_admit(self: &Arc<Self>) -> Option<Admission> {
        self.open
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()?;
        self.set_gauge();
        Some(Admission {
            registry: Arc::clone(self),
            _counted: crate::telemetry::memory::ConnectionSlot::open(),
        })
    }

    /// `streamedge_ws_connections` from the count as it is now.
    fn set_gauge(&self) {
        let _one_at_a_time = self.gauge.lock().expect("gauge lock");
        metrics::gauge!("streamedge_ws_connections").set(self.open.load(Ordering::SeqCst) as f64);
    }

    /// Adds a connection to its stream. A connection registered after [`Self::close_all`]
    /// is closed at once.
    pub fn register(
        self: &Arc<Self>,
        admission: Admission,
        stream: Uuid,
        queue: Arc<OutboundQueue>,
    ) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn::new(queue.clone()));
        {
            let mut streams = self.streams.write().expect("registry lock");
            streams.entry(stream).or_default().insert(id, conn.clone());
        }
        if self.closing.load(Ordering::SeqCst) {
            queue.close(shutdown_reason());
        }
        Registration {
            id,
            stream,
            conn,
            registry: Arc::clone(self),
            _admission: admission,
        }
    }

    /// The connections of a stream, taken out of the lock: a fan-out writes to their
    /// sockets, and registering must not wait for that.
    fn conns_of(&self, stream: &Uuid) -> Vec<Arc<Conn>> {
        let streams = self.streams.read().expect("registry lock");
        streams
            .get(stream)
            .map(|c| c.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Sends the same frame (encoded once) to every connection of a stream; returns how
    /// many took it. Connections whose queue is full are closed as slow consumers.
    pub async fn broadcast(&self, stream: &Uuid, frame: &Utf8Bytes) -> usize {
        self.broadcast_event(stream, frame, None).await
    }

    /// [`Self::broadcast`] for a lifecycle `state` frame of `version`: connections that
    /// already have that version (from their `welcome`) skip it.
    pub async fn broadcast_state(&self, stream: &Uuid, version: u64, frame: &Utf8Bytes) -> usize {
        self.broadcast_event(stream, frame, Some(version)).await
    }

    async fn broadcast_event(
        &self,
        stream: &Uuid,
        frame: &Utf8Bytes,
        state_version: Option<u64>,
    ) -> usize {
        let conns = self.conns_of(stream);
        if conns.is_empty() {
            return 0;
        }
        let frame = wire::text(frame);
        let taken = Arc::new(AtomicUsize::new(0));
        let counted = taken.clone();
        let shards = spawn_shards(conns, move |chunk| {
            // A refusal closes the connection; its own task counts the close
            // (streamedge_ws_closed_total).
            let n = chunk
                .iter()
                .filter(|c| c.push_event(&frame, state_version).is_ok())
                .count();
            counted.fetch_add(n, Ordering::Relaxed);
        });
        FanOut { shards, taken }.wait().await
    }

    /// Hands a chat frame with sequence number `seq` to every connection of the stream,
    /// each of which takes it only if it is new to it.
    pub async fn deliver_chat(
        &self,
        stream: &Uuid,
        seq: u64,
        frame: &Utf8Bytes,
        published: Option<std::time::Instant>,
    ) -> usize {
        self.deliver_chat_batch(stream, &[(seq, frame.clone())], published)
            .await
    }

    /// [`Self::deliver_chat`] for a batch of frames in sequence order, encoded once.
    pub async fn deliver_chat_batch(
        &self,
        stream: &Uuid,
        batch: &[(u64, Utf8Bytes)],
        published: Option<std::time::Instant>,
    ) -> usize {
        let encoded = wire::Batch::encode(batch.iter().map(|(s, f)| (*s, f.as_str())));
        match self.start_fan_out(stream, Arc::new(LiveBatch::new(encoded, published))) {
            Some(fan) => fan.wait().await,
            None => 0,
        }
    }

    /// Starts handing `batch` to every connection of the stream (each takes the frames
    /// new to it), in shards on the runtime's workers; `None` if the stream has no
    /// connections here. The batch may grow while the fan-out runs: connections not yet
    /// written get the added frames in the same write.
    pub fn start_fan_out(&self, stream: &Uuid, batch: Arc<LiveBatch>) -> Option<FanOut> {
        let conns = self.conns_of(stream);
        if conns.is_empty() {
            return None;
        }
        let taken = Arc::new(AtomicUsize::new(0));
        let counted = taken.clone();
        let shards = spawn_shards(conns, move |chunk| {
            let b = batch.get();
            let n: usize = chunk
                .iter()
                .map(|c| c.deliver_batch(&b, batch.published))
                .sum();
            counted.fetch_add(n, Ordering::Relaxed);
        });
        Some(FanOut { shards, taken })
    }

    /// Closes every connection with 1012 (service restart) and refuses new ones.
    pub fn close_all(&self) {
        self.closing.store(true, Ordering::SeqCst);
        let streams = self.streams.read().expect("registry lock");
        for c in streams.values().flat_map(|c| c.values()) {
            c.queue.close(shutdown_reason());
        }
    }

    /// Closes every connection with 1012 (service restart), evenly over `spread` in at
    /// most 100 steps, and refuses new ones from the start: clients reconnect elsewhere
    /// without all arriving in the same instant.
    pub async fn close_all_spread(&self, spread: Duration) {
        self.closing.store(true, Ordering::SeqCst);
        let conns: Vec<Arc<Conn>> = {
            let streams = self.streams.read().expect("registry lock");
            streams.values().flat_map(|c| c.values()).cloned().collect()
        };
        if conns.is_empty() {
            return;
        }
        let per_step = conns.len().div_ceil(100);
        let steps = conns.len().div_ceil(per_step);
        let pause = spread / steps as u32;
        for (i, chunk) in conns.chunks(per_step).enumerate() {
            if i > 0 && !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            for c in chunk {
                c.queue.close(shutdown_reason());
            }
        }
        // Connections admitted while the first steps ran.
        self.close_all();
    }

    /// Open connections (admitted, including ones still being set up).
    pub fn connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Connections registered on one stream.
    pub fn stream_connections(&self, stream: &Uuid) -> usize {
        self.streams
            .read()
            .expect("registry lock")
            .get(stream)
            .map_or(0, |c| c.len())
    }

    /// Tracks the connection tasks, so shutdown can wait for them.
    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }
}

/// A fan-out's frames: they may grow while it runs (the stream hub adds the chat
/// messages that arrive meanwhile).
pub struct LiveBatch {
    current: std::sync::Mutex<Arc<wire::Batch>>,
    /// When the oldest frame was published (for the publish-to-socket latency).
    published: Option<std::time::Instant>,
}

impl LiveBatch {
    pub fn new(batch: wire::Batch, published: Option<std::time::Instant>) -> Self {
        Self {
            current: std::sync::Mutex::new(Arc::new(batch)),
            published,
        }
    }

    /// The frames as they are now.
    pub fn get(&self) -> Arc<wire::Batch> {
        self.current.lock().expect("batch lock").clone()
    }

    /// Adds frames (keys above the batch's).
    pub fn extend<'a>(&self, more: impl IntoIterator<Item = (u64, &'a str)> + Clone) {
        let mut cur = self.current.lock().expect("batch lock");
        *cur = Arc::new(cur.extended(more));
    }
}

/// A fan-out in progress.
pub struct FanOut {
    shards: Vec<tokio::task::JoinHandle<()>>,
    taken: Arc<AtomicUsize>,
}

impl FanOut {
    /// Waits until every connection has had its turn; returns how many frames they took.
    pub async fn wait(self) -> usize {
        for t in self.shards {
            if let Err(e) = t.await {
                tracing::error!(error = %e, "fan-out shard failed");
            }
        }
        self.taken.load(Ordering::Relaxed)
    }
}

/// Fewest connections a fan-out shard writes: a stream with more is written by several
/// of the runtime's workers at once.
const SHARD_MIN: usize = 1024;

/// Connections a shard hands frames to between two looks at a growing batch.
const CHUNK: usize = 64;

/// Runs `f` over every connection, in chunks, each connection exactly once. A large
/// stream is split into shards (at most one per runtime worker) that run in parallel.
/// Shards run outside tokio's cooperative budget: a socket write spends budget, and once
/// it is spent (128 per poll) writes would be refused and handed to the connections'
/// tasks.
fn spawn_shards<F>(conns: Vec<Arc<Conn>>, f: F) -> Vec<tokio::task::JoinHandle<()>>
where
    F: Fn(&[Arc<Conn>]) + Send + Sync + 'static,
{
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    let shards = (conns.len() / SHARD_MIN).clamp(1, workers);
    let conns = Arc::new(conns);
    let f = Arc::new(f);
    let per = conns.len().div_ceil(shards);
    // (A task spawned from a worker waits in that worker's next-task slot, where no other
    // worker can take it; the next spawn moves it to the queue other workers take from.)
    (0..shards)
        .map(|i| {
            let (conns, f) = (conns.clone(), f.clone());
            tokio::spawn(tokio::task::coop::unconstrained(async move {
                let end = ((i + 1) * per).min(conns.len());
                conns[i * per..end].chunks(CHUNK).for_each(|c| f(c));
            }))
        })
        .collect()
}

fn shutdown_reason() -> CloseReason {
    CloseReason {
        code: close_code::SERVICE_RESTART,
        reason: "service_restart",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A registry with one connection (a 1 MiB queue, catching up) on a new stream.
    fn one_connection() -> (Arc<Registry>, Uuid, Arc<OutboundQueue>, Registration) {
        let r = Registry::new(10);
        let s = Uuid::new_v4();
        let q = Arc::new(OutboundQueue::new(1 << 20));
        let reg = r.register(r.try_admit().unwrap(), s, q.clone());
        (r, s, q, reg)
    }

    #[tokio::test]
    async fn admission_is_bounded_and_released() {
        let r = Registry::new(2);
        let a = r.try_admit().unwrap();
        let _b = r.try_admit().unwrap();
        assert!(r.try_admit().is_none());
        drop(a);
        assert!(r.try_admit().is_some());
    }

    #[tokio::test]
    async fn broadcast_reaches_only_the_stream() {
        let r = Registry::new(10);
        let (s1, s2) = (Uuid::new_v4(), Uuid::new_v4());
        let q1 = Arc::new(OutboundQueue::new(1024));
        let q2 = Arc::new(OutboundQueue::new(1024));
        let reg1 = r.register(r.try_admit().unwrap(), s1, q1.clone());
        let reg2 = r.register(r.try_admit().unwrap(), s2, q2.clone());
        reg1.conn.finish_catch_up(0, Vec::new());
        reg2.conn.finish_catch_up(0, Vec::new());
        assert_eq!(r.broadcast(&s1, &"hi".into()).await, 1);
        assert_eq!(
            q1.queued_bytes(),
            4,
            "one text frame: two header bytes and \"hi\""
        );
        assert_eq!(q2.queued_bytes(), 0);
        drop(reg1);
        assert_eq!(r.stream_connections(&s1), 0);
        assert_eq!(r.connections(), 1);
    }

    #[tokio::test]
    async fn catch_up_delivers_history_then_held_frames_each_seq_once() {
        let (r, s, q, reg) = one_connection();
        // While catching up: live chat 5, 6 and an event arrive.
        r.deliver_chat(&s, 5, &"m5".into(), None).await;
        r.broadcast(&s, &"ev".into()).await;
        r.deliver_chat(&s, 6, &"m6".into(), None).await;
        assert_eq!(q.queued_bytes(), 0, "held back during the catch-up");
        // History after 3 holds 4 and 5.
        reg.conn
            .finish_catch_up(3, vec![(4, "m4".into()), (5, "m5".into())]);
        r.deliver_chat(&s, 6, &"m6".into(), None).await; // a duplicate
        r.deliver_chat(&s, 7, &"m7".into(), None).await;
        let mut out = Vec::new();
        q.next_batch(&mut out).await;
        assert_eq!(wire::texts_of(&out), vec!["m4", "m5", "ev", "m6", "m7"]);
    }

    #[tokio::test]
    async fn batches_keep_each_seq_once_and_in_order() {
        let (r, s, q, reg) = one_connection();
        // A batch during the catch-up is held like single frames.
        r.deliver_chat_batch(&s, &[(5, "m5".into()), (6, "m6".into())], None)
            .await;
        assert_eq!(q.queued_bytes(), 0);
        reg.conn.finish_catch_up(4, vec![(5, "m5".into())]);
        // A batch overlapping what the connection has: only the new one is taken.
        let n = r
            .deliver_chat_batch(&s, &[(6, "m6".into()), (7, "m7".into())], None)
            .await;
        assert_eq!(n, 1);
        // An all-stale batch adds nothing.
        let n = r
            .deliver_chat_batch(&s, &[(5, "m5".into()), (7, "m7".into())], None)
            .await;
        assert_eq!(n, 0);
        let mut out = Vec::new();
        q.next_batch(&mut out).await;
        assert_eq!(wire::texts_of(&out), vec!["m5", "m6", "m7"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_large_stream_is_written_by_shards_each_connection_once_in_order() {
        let r = Registry::new(5000);
        let s = Uuid::new_v4();
        let n = 3 * SHARD_MIN + 7;
        let queues: Vec<_> = (0..n)
            .map(|_| {
                let q = Arc::new(OutboundQueue::new(1 << 20));
                let reg = r.register(r.try_admit().unwrap(), s, q.clone());
                reg.conn.finish_catch_up(0, Vec::new());
                (q, reg)
            })
            .collect();
        for seq in 1..=5u64 {
            let frame: Utf8Bytes = format!("m{seq}").into();
            assert_eq!(r.deliver_chat(&s, seq, &frame, None).await, n);
        }
        assert_eq!(r.broadcast(&s, &"ev".into()).await, n);
        for (q, _) in &queues {
            let mut out = Vec::new();
            q.next_batch(&mut out).await;
            assert_eq!(
                wire::texts_of(&out),
                vec!["m1", "m2", "m3", "m4", "m5", "ev"]
            );
        }
    }

    #[tokio::test]
    async fn frames_added_while_a_fan_out_runs_go_out_in_the_same_write() {
        let (r, s, q, reg) = one_connection();
        reg.conn.finish_catch_up(4, Vec::new());
        let live = Arc::new(LiveBatch::new(wire::Batch::encode([(5, "m5")]), None));
        let fan = r.start_fan_out(&s, live.clone()).unwrap();
        // The shard has not run yet (one thread): m6 joins before it does.
        live.extend([(6, "m6")]);
        assert_eq!(fan.wait().await, 2);
        let mut out = Vec::new();
        q.next_batch(&mut out).await;
        assert_eq!(out.len(), 1, "one write");
        assert_eq!(wire::texts_of(&out), vec!["m5", "m6"]);
        // A next round with what joined: nothing new for this connection.
        let again = Arc::new(LiveBatch::new(live.get().tail(5), None));
        assert_eq!(r.start_fan_out(&s, again).unwrap().wait().await, 0);
    }

    #[tokio::test]
    async fn state_frames_the_welcome_already_stated_are_not_sent_again() {
        let (r, s, q, reg) = one_connection();
        // While the welcome is prepared: versions 2 and 3 arrive, and another event.
        r.broadcast_state(&s, 2, &"v2".into()).await;
        r.broadcast(&s, &"ev".into()).await;
        r.broadcast_state(&s, 3, &"v3".into()).await;
        // The welcome states version 2 (the record was read between the two).
        reg.conn.set_state_version(2);
        reg.conn.finish_catch_up(0, Vec::new());
        // Live: version 3 once more (the hub was behind the record), then 4.
        r.broadcast_state(&s, 3, &"v3 again".into()).await;
        r.broadcast_state(&s, 4, &"v4".into()).await;
        let mut out = Vec::new();
        q.next_batch(&mut out).await;
        assert_eq!(wire::texts_of(&out), vec!["ev", "v3", "v4"]);
    }

    #[tokio::test]
    async fn close_all_closes_existing_and_late_connections() {
        let r = Registry::new(10);
        let s = Uuid::new_v4();
        let q1 = Arc::new(OutboundQueue::new(1024));
        let _a = r.register(r.try_admit().unwrap(), s, q1.clone());
        r.close_all();
        assert!(q1.is_closing());
        let q2 = Arc::new(OutboundQueue::new(1024));
        let _b = r.register(r.try_admit().unwrap(), s, q2.clone());
        assert!(q2.is_closing());
    }
}
