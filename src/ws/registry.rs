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

use super::queue::{close_code, CloseReason, OutboundQueue, PushError};

pub type ConnId = u64;

/// Most chat frames a connection buffers while it catches up from history.
const MAX_CATCH_UP_BUFFER: usize = 10_000;

/// A registered connection: its outbound queue and its position in the stream's chat.
pub struct Conn {
    pub queue: Arc<OutboundQueue>,
    cursor: std::sync::Mutex<Cursor>,
}

struct Cursor {
    /// The last chat sequence number handed to this connection.
    last_seq: u64,
    /// While catching up (on connect, or on `resume`), live frames wait here: chat frames
    /// with their sequence number, other events with `None`.
    buffer: Option<Vec<(Option<u64>, Utf8Bytes)>>,
}

impl Conn {
    fn new(queue: Arc<OutboundQueue>) -> Self {
        Self {
            queue,
            cursor: std::sync::Mutex::new(Cursor {
                last_seq: 0,
                buffer: Some(Vec::new()),
            }),
        }
    }

    /// Live chat frames in sequence order (a fan-out batch): each queued if it is new to
    /// this connection (duplicates and stale frames are dropped), or buffered while the
    /// connection catches up; one lock and one wake-up for the lot.
    pub fn deliver_batch(&self, batch: &[(u64, Utf8Bytes)], published: Option<std::time::Instant>) {
        let mut c = self.cursor.lock().expect("cursor lock");
        if let Some(buf) = c.buffer.as_mut() {
            if buf.len() + batch.len() > MAX_CATCH_UP_BUFFER {
                drop(c);
                self.queue.close(super::queue::CloseReason {
                    code: close_code::SLOW_CONSUMER,
                    reason: "slow_consumer",
                });
                return;
            }
            buf.extend(batch.iter().map(|(s, f)| (Some(*s), f.clone())));
            return;
        }
        let from = c.last_seq;
        let Some(newest) = batch.last().map(|(s, _)| *s).filter(|s| *s > from) else {
            return;
        };
        c.last_seq = newest;
        drop(c);
        let _ = self.queue.push_many(
            batch
                .iter()
                .filter(|(s, _)| *s > from)
                .map(|(_, f)| f.clone()),
            published,
        );
    }

    /// A non-chat event (state, viewers, deleted): queued, or held back in order while
    /// the connection catches up (so `welcome` is always the first frame).
    pub fn push_event(&self, frame: &Utf8Bytes) -> Result<(), super::queue::PushError> {
        let mut c = self.cursor.lock().expect("cursor lock");
        if let Some(buf) = c.buffer.as_mut() {
            if buf.len() < MAX_CATCH_UP_BUFFER {
                buf.push((None, frame.clone()));
            }
            return Ok(());
        }
        drop(c);
        self.queue.push(frame.clone())
    }

    /// Starts holding live chat frames back (before reading history).
    pub fn start_catch_up(&self) {
        let mut c = self.cursor.lock().expect("cursor lock");
        if c.buffer.is_none() {
            c.buffer = Some(Vec::new());
        }
    }

    /// Ends a catch-up: hands over everything after `since` — first `history` (ascending),
    /// then the held-back live frames — each sequence number once, in order.
    pub fn finish_catch_up(&self, since: u64, history: Vec<(u64, Utf8Bytes)>) {
        let mut c = self.cursor.lock().expect("cursor lock");
        c.last_seq = since;
        let held = c.buffer.take().unwrap_or_default();
        let history = history.into_iter().map(|(s, f)| (Some(s), f));
        for (seq, frame) in history.chain(held) {
            match seq {
                Some(seq) if seq <= c.last_seq => {}
                Some(seq) => {
                    c.last_seq = seq;
                    let _ = self.queue.push(frame);
                }
                None => {
                    let _ = self.queue.push(frame);
                }
            }
        }
    }
}

/// See the module documentation.
pub struct Registry {
    streams: RwLock<HashMap<Uuid, HashMap<ConnId, Arc<Conn>>>>,
    next_id: AtomicU64,
    open: AtomicUsize,
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
        let n = self.registry.open.fetch_sub(1, Ordering::SeqCst) - 1;
        metrics::gauge!("streamedge_ws_connections").set(n as f64);
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
            max: max_connections,
            closing: AtomicBool::new(false),
            tracker: TaskTracker::new(),
        })
    }

    /// Reserves a connection slot, or `None` when the node is full.
    pub fn try_admit(self: &Arc<Self>) -> Option<Admission> {
        let prev = self
            .open
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()?;
        metrics::gauge!("streamedge_ws_connections").set((prev + 1) as f64);
        Some(Admission {
            registry: Arc::clone(self),
            _counted: crate::telemetry::memory::ConnectionSlot::open(),
        })
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

    /// Queues the same frame on every connection of a stream; returns how many took it.
    /// Connections whose queue is full are closed as slow consumers.
    pub fn broadcast(&self, stream: &Uuid, frame: &Utf8Bytes) -> usize {
        let streams = self.streams.read().expect("registry lock");
        let Some(conns) = streams.get(stream) else {
            return 0;
        };
        let mut delivered = 0;
        for c in conns.values() {
            match c.push_event(frame) {
                Ok(()) => delivered += 1,
                // The connection's own task counts the close (streamedge_ws_closed_total).
                Err(PushError::Full) | Err(PushError::Closed) => {}
            }
        }
        delivered
    }

    /// Hands a chat frame with sequence number `seq` to every connection of the stream,
    /// each of which takes it only if it is new to it.
    pub fn deliver_chat(
        &self,
        stream: &Uuid,
        seq: u64,
        frame: &Utf8Bytes,
        published: Option<std::time::Instant>,
    ) -> usize {
        self.deliver_chat_batch(stream, &[(seq, frame.clone())], published)
    }

    /// [`Self::deliver_chat`] for a batch of frames in sequence order.
    pub fn deliver_chat_batch(
        &self,
        stream: &Uuid,
        batch: &[(u64, Utf8Bytes)],
        published: Option<std::time::Instant>,
    ) -> usize {
        let streams = self.streams.read().expect("registry lock");
        let Some(conns) = streams.get(stream) else {
            return 0;
        };
        for c in conns.values() {
            c.deliver_batch(batch, published);
        }
        conns.len() * batch.len()
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

fn shutdown_reason() -> CloseReason {
    CloseReason {
        code: close_code::SERVICE_RESTART,
        reason: "service_restart",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(r.broadcast(&s1, &"hi".into()), 1);
        assert_eq!(q1.queued_bytes(), 2);
        assert_eq!(q2.queued_bytes(), 0);
        drop(reg1);
        assert_eq!(r.stream_connections(&s1), 0);
        assert_eq!(r.connections(), 1);
    }

    #[tokio::test]
    async fn catch_up_delivers_history_then_held_frames_each_seq_once() {
        let r = Registry::new(10);
        let s = Uuid::new_v4();
        let q = Arc::new(OutboundQueue::new(1 << 20));
        let reg = r.register(r.try_admit().unwrap(), s, q.clone());
        // While catching up: live chat 5, 6 and an event arrive.
        r.deliver_chat(&s, 5, &"m5".into(), None);
        r.broadcast(&s, &"ev".into());
        r.deliver_chat(&s, 6, &"m6".into(), None);
        assert_eq!(q.queued_bytes(), 0, "held back during the catch-up");
        // History after 3 holds 4 and 5.
        reg.conn
            .finish_catch_up(3, vec![(4, "m4".into()), (5, "m5".into())]);
        r.deliver_chat(&s, 6, &"m6".into(), None); // a duplicate
        r.deliver_chat(&s, 7, &"m7".into(), None);
        let mut out = Vec::new();
        q.next_batch(&mut out).await;
        let got: Vec<&str> = out.iter().map(|f| f.as_str()).collect();
        assert_eq!(got, vec!["m4", "m5", "ev", "m6", "m7"]);
    }

    #[tokio::test]
    async fn batches_keep_each_seq_once_and_in_order() {
        let r = Registry::new(10);
        let s = Uuid::new_v4();
        let q = Arc::new(OutboundQueue::new(1 << 20));
        let reg = r.register(r.try_admit().unwrap(), s, q.clone());
        // A batch during the catch-up is held like single frames.
        r.deliver_chat_batch(&s, &[(5, "m5".into()), (6, "m6".into())], None);
        assert_eq!(q.queued_bytes(), 0);
        reg.conn.finish_catch_up(4, vec![(5, "m5".into())]);
        // A batch overlapping what the connection has: only the new ones.
        let n = r.deliver_chat_batch(&s, &[(6, "m6".into()), (7, "m7".into())], None);
        assert_eq!(n, 2);
        // An all-stale batch adds nothing.
        r.deliver_chat_batch(&s, &[(5, "m5".into()), (7, "m7".into())], None);
        let mut out = Vec::new();
        q.next_batch(&mut out).await;
        let got: Vec<&str> = out.iter().map(|f| f.as_str()).collect();
        assert_eq!(got, vec!["m5", "m6", "m7"]);
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
