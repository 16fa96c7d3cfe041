//! A connection's outbound side: its socket's write half and a queue of encoded frames
//! ([`super::wire`]), bounded by bytes and closable with a close code that is sent after
//! the frames already queued.
//!
//! Whoever pushes a frame writes it to the socket at once when nothing is waiting before
//! it (a fan-out writes the same encoded bytes to every viewer from the hub's task, with
//! no wake-up of the connection's task). What the socket does not take right away waits
//! in the queue, and the connection's task writes it, everything that accumulated in one
//! write (write coalescing), when the socket has room ([`super::writer`]).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::Bytes;
use tokio::io::AsyncWrite;
use tokio::sync::Notify;
use tungstenite::Utf8Bytes;

use super::wire;

/// Why the node closes a connection, with its WebSocket close code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    pub code: u16,
    pub reason: &'static str,
}

/// Close codes the node sends (documented in `docs/protocol.md`).
pub mod close_code {
    /// The node is shutting down or draining: reconnect (to another node).
    pub const SERVICE_RESTART: u16 = 1012;
    /// A frame or message was larger than `ws.max_message_size`.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// The client broke the protocol (e.g. a malformed WebSocket frame).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text frame was not valid UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// The node failed internally.
    pub const INTERNAL_ERROR: u16 = 1011;
    /// Nothing (not even a pong) arrived for `ws.idle_timeout`.
    pub const IDLE_TIMEOUT: u16 = 4001;
    /// The client did not read fast enough and its outbound queue filled.
    pub const SLOW_CONSUMER: u16 = 4002;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The queue would exceed its byte bound; the connection is being closed.
    Full,
    /// The connection is already closing (or its socket failed).
    Closed,
}

/// A socket's write half.
pub type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// Frames' room a queue keeps once drained.
pub(super) const QUEUE_KEPT: usize = 8;

#[derive(Default)]
pub(super) struct State {
    /// Encoded frames not yet started, in order (a slow consumer's are dropped).
    pub(super) frames: VecDeque<Bytes>,
    /// Text frames in `frames` (for `streamedge_ws_frames_out_total`).
    pub(super) frame_count: u64,
    /// Bytes in `frames` and `partial`.
    pub(super) bytes: usize,
    /// The rest of a frame already partly written: it goes first and is never dropped.
    pub(super) partial: Option<Bytes>,
    /// Something was written that the writer may still hold (a TLS session): the
    /// connection's task must flush.
    pub(super) unflushed: bool,
    /// The socket's write half while nobody writes to it; `None` while the connection's
    /// task holds it (or before [`OutboundQueue::attach`]).
    pub(super) writer: Option<Writer>,
    pub(super) close: Option<CloseReason>,
    pub(super) close_sent: bool,
    /// Writing to the socket failed: the connection is gone.
    pub(super) failed: bool,
    /// When the oldest queued chat frame was published (for the fan-out latency metric).
    pub(super) oldest_publish: Option<Instant>,
}

impl State {
    pub(super) fn has_work(&self) -> bool {
        !self.frames.is_empty()
            || self.partial.is_some()
            || self.unflushed
            || (self.close.is_some() && !self.close_sent)
    }
}

/// Metric handles, registered once (they are updated per write).
static FRAMES_OUT: std::sync::LazyLock<metrics::Counter> =
    std::sync::LazyLock::new(|| metrics::counter!("streamedge_ws_frames_out_total"));
static FLUSHES: std::sync::LazyLock<metrics::Counter> =
    std::sync::LazyLock::new(|| metrics::counter!("streamedge_ws_flushes_total"));
static PUBLISH_TO_SOCKET: std::sync::LazyLock<metrics::Histogram> =
    std::sync::LazyLock::new(|| metrics::histogram!("streamedge_chat_publish_to_socket_seconds"));
static SAMPLED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// One write in this many records its publish-to-socket latency: the metric stays cheap
/// at 500k deliveries/s.
const SAMPLE_EVERY: u64 = 8;

/// A write of frames to the socket: counted, and its latency sampled.
pub(super) fn wrote(frames: u64, published: Option<Instant>) {
    if frames > 0 {
        FRAMES_OUT.increment(frames);
    }
    FLUSHES.increment(1);
    if let Some(t) = published {
        if SAMPLED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % SAMPLE_EVERY == 0 {
            PUBLISH_TO_SOCKET.record(t.elapsed().as_secs_f64());
        }
    }
}

/// Writes what the socket takes without waiting: how much it took, and whether that is
/// all flushed.
fn write_now(w: &mut Writer, data: &[u8]) -> std::io::Result<(usize, bool)> {
    let mut cx = Context::from_waker(Waker::noop());
    let mut off = 0;
    while off < data.len() {
        match Pin::new(&mut *w).poll_write(&mut cx, &data[off..]) {
            Poll::Ready(Ok(0)) => return Err(std::io::ErrorKind::WriteZero.into()),
            Poll::Ready(Ok(n)) => off += n,
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => return Ok((off, false)),
        }
    }
    match Pin::new(&mut *w).poll_flush(&mut cx) {
        Poll::Ready(Ok(())) => Ok((off, true)),
        Poll::Ready(Err(e)) => Err(e),
        Poll::Pending => Ok((off, false)),
    }
}

/// See the module documentation.
pub struct OutboundQueue {
    state: Mutex<State>,
    pub(super) notify: Notify,
    /// Signalled whenever the writer takes a batch.
    pub(super) drained: Notify,
    /// Signalled when the queue starts closing.
    closing: Notify,
    max_bytes: usize,
}

impl OutboundQueue {
    pub fn new(max_bytes: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            drained: Notify::new(),
            closing: Notify::new(),
            max_bytes,
        }
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("queue lock")
    }

    /// Gives the queue its socket's write half: from now on frames are written.
    pub fn attach(&self, writer: Writer) {
        let mut st = self.lock();
        st.writer = Some(writer);
        let work = st.has_work();
        drop(st);
        if work {
            self.notify.notify_one();
        }
    }

    /// Queues a text frame. If it does not fit, the queue closes itself with
    /// [`close_code::SLOW_CONSUMER`] and the frame is refused.
    pub fn push(&self, frame: Utf8Bytes) -> Result<(), PushError> {
        self.push_wire(wire::text(&frame), 1, None)
    }

    /// Queues encoded bytes holding `frames` text frames (or a control frame, with 0),
    /// the oldest of them published at `published` (chat messages: the writer reports
    /// how long it took from publishing to the socket). Written at once if nothing waits
    /// before them and the socket takes them.
    pub fn push_wire(
        &self,
        data: Bytes,
        frames: usize,
        published: Option<Instant>,
    ) -> Result<(), PushError> {
        if data.is_empty() {
            return Ok(());
        }
        let mut guard = self.lock();
        let st = &mut *guard;
        if st.close.is_some() || st.failed {
            return Err(PushError::Closed);
        }
        if st.bytes + data.len() > self.max_bytes {
            tracing::debug!(
                queued = st.bytes,
                frames = st.frames.len(),
                frame = data.len(),
                max = self.max_bytes,
                "outbound queue full"
            );
            st.close = Some(CloseReason {
                code: close_code::SLOW_CONSUMER,
                reason: "slow_consumer",
            });
            // Pending frames are dropped: the client resumes from its last seen position.
            // (The rest of a frame already started is still written, then the close.)
            st.frames.clear();
            st.frame_count = 0;
            st.bytes = st.partial.as_ref().map_or(0, |p| p.len());
            drop(guard);
            self.notify.notify_one();
            self.closing.notify_waiters();
            return Err(PushError::Full);
        }
        let idle = st.frames.is_empty() && st.partial.is_none() && !st.unflushed;
        if let (true, Some(w)) = (idle, st.writer.as_mut()) {
            match write_now(w, &data) {
                Ok((n, true)) if n == data.len() => {
                    drop(guard);
                    wrote(frames as u64, published);
                    return Ok(());
                }
                Ok((n, _)) => {
                    // The socket is full (or the writer holds bytes to flush): the
                    // connection's task finishes when it has room.
                    if n < data.len() {
                        let rest = data.slice(n..);
                        st.bytes += rest.len();
                        if n > 0 {
                            st.partial = Some(rest);
                        } else {
                            st.frames.push_back(rest);
                            st.frame_count += frames as u64;
                        }
                    }
                    if n > 0 {
                        FRAMES_OUT.increment(frames as u64);
                    }
                    st.unflushed = true;
                    if st.oldest_publish.is_none() {
                        st.oldest_publish = published;
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "websocket write failed");
                    st.failed = true;
                    drop(guard);
                    self.notify.notify_one();
                    self.closing.notify_waiters();
                    return Err(PushError::Closed);
                }
            }
        } else {
            st.bytes += data.len();
            st.frames.push_back(data);
            st.frame_count += frames as u64;
            if st.oldest_publish.is_none() {
                st.oldest_publish = published;
            }
        }
        drop(guard);
        self.notify.notify_one();
        Ok(())
    }

    /// Asks for the connection to be closed after the frames already queued. The first
    /// reason given wins.
    pub fn close(&self, reason: CloseReason) {
        let mut st = self.lock();
        if st.close.is_none() {
            st.close = Some(reason);
        }
        drop(st);
        self.notify.notify_one();
        self.closing.notify_waiters();
    }

    /// Completes once the queue is closing (or its socket failed), with the reason.
    pub async fn closed(&self) -> CloseReason {
        loop {
            let notified = self.closing.notified();
            {
                let st = self.lock();
                if let Some(r) = st.close.clone() {
                    return r;
                }
                if st.failed {
                    return CloseReason {
                        code: close_code::INTERNAL_ERROR,
                        reason: "write_failed",
                    };
                }
            }
            notified.await;
        }
    }

    pub fn is_closing(&self) -> bool {
        self.lock().close.is_some()
    }

    /// Waits until at most half the queue is in use (or it is closing). The connection's
    /// reader calls this before handling a client frame, so a client that sends in bursts
    /// is slowed down by its own replies (TCP pushes back on it) instead of overflowing
    /// its queue.
    pub async fn wait_for_room(&self) {
        loop {
            let drained = self.drained.notified();
            {
                let st = self.lock();
                if st.bytes <= self.max_bytes / 2 || st.close.is_some() || st.failed {
                    return;
                }
            }
            drained.await;
        }
    }

    /// Bytes waiting to be written.
    pub fn queued_bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Takes everything queued (encoded frames) into `out`, as the writer would, and
    /// returns the close reason once the queue is closing. For tests and benchmarks of
    /// what is queued, on a queue with no socket attached.
    pub async fn next_batch(&self, out: &mut Vec<Bytes>) -> Option<CloseReason> {
        loop {
            let notified = self.notify.notified();
            {
                let mut st = self.lock();
                if !st.frames.is_empty() || st.close.is_some() {
                    out.extend(st.frames.drain(..));
                    st.bytes = 0;
                    st.frame_count = 0;
                    let close = st.close.clone();
                    drop(st);
                    self.drained.notify_waiters();
                    return close;
                }
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::writer::Written;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, DuplexStream};

    /// A queue writing into an in-memory socket whose buffer holds `room` bytes.
    fn attached(max: usize, room: usize) -> (Arc<OutboundQueue>, DuplexStream) {
        let q = Arc::new(OutboundQueue::new(max));
        let (ours, theirs) = tokio::io::duplex(room);
        q.attach(Box::new(ours));
        (q, theirs)
    }

    async fn read_exactly(s: &mut DuplexStream, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        s.read_exact(&mut buf).await.unwrap();
        buf
    }

    #[tokio::test]
    async fn batches_everything_queued() {
        let q = OutboundQueue::new(100);
        q.push("a".into()).unwrap();
        q.push("bb".into()).unwrap();
        assert_eq!(q.queued_bytes(), 7);
        let mut out = Vec::new();
        assert_eq!(q.next_batch(&mut out).await, None);
        assert_eq!(wire::texts_of(&out), vec!["a", "bb"]);
        assert_eq!(q.queued_bytes(), 0);
    }

    #[tokio::test]
    async fn overflow_closes_as_slow_consumer() {
        let q = OutboundQueue::new(6);
        q.push("abc".into()).unwrap();
        assert_eq!(q.push("de".into()), Err(PushError::Full));
        assert_eq!(q.push("x".into()), Err(PushError::Closed));
        let mut out = Vec::new();
        let reason = q.next_batch(&mut out).await.unwrap();
        assert_eq!(reason.code, close_code::SLOW_CONSUMER);
        assert!(
            out.is_empty(),
            "a slow consumer's pending frames are dropped"
        );
    }

    #[tokio::test]
    async fn close_comes_after_queued_frames_and_first_reason_wins() {
        let q = OutboundQueue::new(100);
        q.push("a".into()).unwrap();
        q.close(CloseReason {
            code: close_code::SERVICE_RESTART,
            reason: "service_restart",
        });
        q.close(CloseReason {
            code: close_code::IDLE_TIMEOUT,
            reason: "idle_timeout",
        });
        let mut out = Vec::new();
        let reason = q.next_batch(&mut out).await.unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(reason.code, close_code::SERVICE_RESTART);
    }

    #[tokio::test]
    async fn room_waits_for_the_writer() {
        let q = Arc::new(OutboundQueue::new(20));
        q.push("123456789".into()).unwrap();
        q.push("12".into()).unwrap();
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.wait_for_room().await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        let mut out = Vec::new();
        q.next_batch(&mut out).await;
        waiter.await.unwrap();
    }

    #[tokio::test]
    async fn a_push_is_written_at_once_when_the_socket_has_room() {
        let (q, mut client) = attached(1000, 1000);
        q.push("hello".into()).unwrap();
        // No task wrote it: the push did.
        assert_eq!(q.queued_bytes(), 0);
        assert_eq!(
            wire::texts(&read_exactly(&mut client, 7).await),
            vec!["hello"]
        );
    }

    #[tokio::test]
    async fn what_the_socket_does_not_take_waits_for_the_task_in_order() {
        let (q, mut client) = attached(1000, 10);
        q.push("0123456789abcdef".into()).unwrap(); // 18 bytes: 10 written, 8 wait
        q.push("next".into()).unwrap();
        assert_eq!(q.queued_bytes(), 8 + 6);
        let writer = {
            let q = q.clone();
            tokio::spawn(async move { q.write_queued().await })
        };
        let got = read_exactly(&mut client, 24).await;
        assert_eq!(wire::texts(&got), vec!["0123456789abcdef", "next"]);
        assert_eq!(writer.await.unwrap(), Written::Idle);
        // Idle again: the next push goes straight to the socket.
        q.push("x".into()).unwrap();
        assert_eq!(q.queued_bytes(), 0);
        assert_eq!(wire::texts(&read_exactly(&mut client, 3).await), vec!["x"]);
    }

    #[tokio::test]
    async fn a_slow_consumer_gets_the_rest_of_a_started_frame_then_the_close() {
        let (q, mut client) = attached(40, 10);
        q.push("0123456789abcdef".into()).unwrap(); // 10 of 18 bytes written
        q.push("later".into()).unwrap();
        assert_eq!(q.push("x".repeat(30).into()), Err(PushError::Full));
        let writer = {
            let q = q.clone();
            tokio::spawn(async move {
                let w = q.write_queued().await;
                q.finish().await;
                w
            })
        };
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert!(matches!(writer.await.unwrap(), Written::Closed(r) if r.code == 4002));
        let frames = wire::texts(&got[..18]);
        assert_eq!(frames, vec!["0123456789abcdef"]);
        assert_eq!(&got[18..], &wire::close(4002, "slow_consumer")[..]);
    }

    #[tokio::test]
    async fn a_close_interrupting_a_blocked_write_is_finished_by_finish() {
        let (q, mut client) = attached(1000, 4);
        q.push("0123456789".into()).unwrap(); // 4 of 12 written
        let writer = {
            let q = q.clone();
            tokio::spawn(async move { q.write_queued().await })
        };
        tokio::task::yield_now().await;
        q.close(CloseReason {
            code: close_code::SERVICE_RESTART,
            reason: "service_restart",
        });
        assert!(matches!(writer.await.unwrap(), Written::Closed(r) if r.code == 1012));
        let finish = {
            let q = q.clone();
            tokio::spawn(async move { q.finish().await })
        };
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        finish.await.unwrap();
        assert_eq!(wire::texts(&got[..12]), vec!["0123456789"]);
        assert_eq!(&got[12..], &wire::close(1012, "service_restart")[..]);
    }

    #[tokio::test]
    async fn a_failed_socket_refuses_pushes_and_ends_the_writer() {
        let (q, client) = attached(1000, 100);
        drop(client);
        assert_eq!(q.push("a".into()), Err(PushError::Closed));
        assert_eq!(q.write_queued().await, Written::Failed);
    }

    #[tokio::test]
    async fn waits_until_something_arrives() {
        let q = Arc::new(OutboundQueue::new(100));
        let q2 = q.clone();
        let t = tokio::spawn(async move {
            let mut out = Vec::new();
            q2.next_batch(&mut out).await;
            out.len()
        });
        tokio::task::yield_now().await;
        q.push("x".into()).unwrap();
        assert_eq!(t.await.unwrap(), 1);
    }
}
