//! A connection's outbound queue: bounded by bytes, drained in batches so that one socket
//! flush carries every frame that accumulated (write coalescing), and closable with a
//! close code that is sent after the frames already queued.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Instant;

use tokio::sync::Notify;
use tungstenite::Utf8Bytes;

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
    /// The connection is already closing.
    Closed,
}

/// Frames' room a queue keeps once drained.
const QUEUE_KEPT: usize = 8;

#[derive(Default)]
struct State {
    frames: VecDeque<Utf8Bytes>,
    bytes: usize,
    close: Option<CloseReason>,
    /// When the oldest queued chat frame was published (for the fan-out latency metric).
    oldest_publish: Option<Instant>,
}

/// See the module documentation.
pub struct OutboundQueue {
    state: Mutex<State>,
    notify: Notify,
    /// Signalled whenever the writer takes a batch.
    drained: Notify,
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

    /// Queues a text frame. If it does not fit, the queue closes itself with
    /// [`close_code::SLOW_CONSUMER`] and the frame is refused.
    pub fn push(&self, frame: Utf8Bytes) -> Result<(), PushError> {
        self.push_published(frame, None)
    }

    /// Queues a frame published at `published` (chat messages): the writer reports how
    /// long it took from publishing to the socket.
    pub fn push_published(
        &self,
        frame: Utf8Bytes,
        published: Option<Instant>,
    ) -> Result<(), PushError> {
        self.push_many(std::iter::once(frame), published)
    }

    /// Queues several frames at once (one lock, one wake-up): a fan-out batch.
    /// Stops at the first refusal (the queue is then closing).
    pub fn push_many(
        &self,
        frames: impl Iterator<Item = Utf8Bytes>,
        published: Option<Instant>,
    ) -> Result<(), PushError> {
        let mut st = self.state.lock().expect("queue lock");
        if st.close.is_some() {
            return Err(PushError::Closed);
        }
        let mut pushed = false;
        for frame in frames {
            if st.bytes + frame.len() > self.max_bytes {
                tracing::debug!(
                    queued = st.bytes,
                    frames = st.frames.len(),
                    frame = frame.len(),
                    max = self.max_bytes,
                    "outbound queue full"
                );
                st.close = Some(CloseReason {
                    code: close_code::SLOW_CONSUMER,
                    reason: "slow_consumer",
                });
                // Pending frames are dropped: the client resumes from its last seen
                // position.
                st.frames.clear();
                st.bytes = 0;
                drop(st);
                self.notify.notify_one();
                self.closing.notify_waiters();
                return Err(PushError::Full);
            }
            st.bytes += frame.len();
            st.frames.push_back(frame);
            pushed = true;
        }
        if pushed && st.oldest_publish.is_none() {
            st.oldest_publish = published;
        }
        drop(st);
        if pushed {
            self.notify.notify_one();
        }
        Ok(())
    }

    /// Asks for the connection to be closed after the frames already queued. The first
    /// reason given wins.
    pub fn close(&self, reason: CloseReason) {
        let mut st = self.state.lock().expect("queue lock");
        if st.close.is_none() {
            st.close = Some(reason);
        }
        drop(st);
        self.notify.notify_one();
        self.closing.notify_waiters();
    }

    /// Completes once the queue is closing, with the reason.
    pub async fn closed(&self) -> CloseReason {
        loop {
            let notified = self.closing.notified();
            if let Some(r) = self.state.lock().expect("queue lock").close.clone() {
                return r;
            }
            notified.await;
        }
    }

    pub fn is_closing(&self) -> bool {
        self.state.lock().expect("queue lock").close.is_some()
    }

    /// Waits until at most half the queue is in use (or it is closing). The connection's
    /// reader calls this before handling a client frame, so a client that sends in bursts
    /// is slowed down by its own replies (TCP pushes back on it) instead of overflowing
    /// its queue.
    pub async fn wait_for_room(&self) {
        loop {
            let drained = self.drained.notified();
            {
                let st = self.state.lock().expect("queue lock");
                if st.bytes <= self.max_bytes / 2 || st.close.is_some() {
                    return;
                }
            }
            drained.await;
        }
    }

    /// Bytes waiting to be written.
    pub fn queued_bytes(&self) -> usize {
        self.state.lock().expect("queue lock").bytes
    }

    /// Takes everything queued into `out` and returns the close reason once the queue is
    /// closing (after its frames). Waits while there is nothing to do.
    pub async fn next_batch(&self, out: &mut Vec<Utf8Bytes>) -> Option<CloseReason> {
        self.next_batch_published(out).await.0
    }

    /// [`Self::next_batch`], also returning when the batch's oldest chat frame was
    /// published.
    pub async fn next_batch_published(
        &self,
        out: &mut Vec<Utf8Bytes>,
    ) -> (Option<CloseReason>, Option<Instant>) {
        loop {
            let notified = self.notify.notified();
            {
                let mut st = self.state.lock().expect("queue lock");
                if !st.frames.is_empty() || st.close.is_some() {
                    out.extend(st.frames.drain(..));
                    if st.frames.capacity() > QUEUE_KEPT {
                        // A burst's room goes back (every idle viewer would keep it).
                        st.frames.shrink_to(QUEUE_KEPT);
                    }
                    st.bytes = 0;
                    let close = st.close.clone();
                    let published = st.oldest_publish.take();
                    drop(st);
                    self.drained.notify_waiters();
                    return (close, published);
                }
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn batches_everything_queued() {
        let q = OutboundQueue::new(100);
        q.push("a".into()).unwrap();
        q.push("bb".into()).unwrap();
        assert_eq!(q.queued_bytes(), 3);
        let mut out = Vec::new();
        assert_eq!(q.next_batch(&mut out).await, None);
        assert_eq!(out.len(), 2);
        assert_eq!(q.queued_bytes(), 0);
    }

    #[tokio::test]
    async fn a_batch_is_one_push_and_overflow_still_closes() {
        let q = OutboundQueue::new(6);
        q.push_many(["ab".into(), "cd".into()].into_iter(), None)
            .unwrap();
        assert_eq!(q.queued_bytes(), 4);
        assert_eq!(
            q.push_many(["ef".into(), "gh".into()].into_iter(), None),
            Err(PushError::Full)
        );
        let mut out = Vec::new();
        let reason = q.next_batch(&mut out).await.unwrap();
        assert_eq!(reason.code, close_code::SLOW_CONSUMER);
        assert!(
            out.is_empty(),
            "a slow consumer's pending frames are dropped"
        );
    }

    #[tokio::test]
    async fn overflow_closes_as_slow_consumer() {
        let q = OutboundQueue::new(4);
        q.push("abc".into()).unwrap();
        assert_eq!(q.push("de".into()), Err(PushError::Full));
        assert_eq!(q.push("x".into()), Err(PushError::Closed));
        let mut out = Vec::new();
        let reason = q.next_batch(&mut out).await.unwrap();
        assert_eq!(reason.code, close_code::SLOW_CONSUMER);
        assert!(out.is_empty());
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
        let q = std::sync::Arc::new(OutboundQueue::new(10));
        q.push("123456".into()).unwrap();
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.wait_for_room().await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        let mut out = Vec::new();
        q.next_batch(&mut out).await;
        waiter.await.unwrap();
    }

    #[tokio::test]
    async fn waits_until_something_arrives() {
        let q = std::sync::Arc::new(OutboundQueue::new(100));
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
