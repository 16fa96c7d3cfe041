//! The connection's task's side of its [`OutboundQueue`]: it writes what the socket did
//! not take when it was pushed — everything waiting, in one system call — when the socket
//! has room, then the close frame; and at the end what is left.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::Poll;

use bytes::Bytes;

use super::queue::{close_code, wrote, CloseReason, OutboundQueue, Writer, QUEUE_KEPT};
use super::wire;

/// Most queued frames written with one system call.
const MAX_SLICES: usize = 64;

/// How a round of writing by the connection's task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// Everything is written; the queue is idle.
    Idle,
    /// The queue is closing with this reason (its close frame is written, unless the
    /// close interrupted a blocked write: [`OutboundQueue::finish`] sends it then).
    Closed(CloseReason),
    /// Writing to the socket failed.
    Failed,
}

/// The socket's write half, held by the connection's task while it writes, with what it
/// has taken from the queue and not written yet. Dropped half-way (the task's write was
/// interrupted), it puts both back: the rest of a started frame goes first.
struct Lease<'a> {
    queue: &'a OutboundQueue,
    writer: Option<Writer>,
    pending: VecDeque<Bytes>,
    /// Bytes of `pending`'s first frame already written.
    offset: usize,
}

impl Lease<'_> {
    /// Writes everything pending (in one system call for up to [`MAX_SLICES`] frames)
    /// and flushes.
    async fn write_pending(&mut self) -> std::io::Result<()> {
        std::future::poll_fn(|cx| {
            while !self.pending.is_empty() {
                let w = self.writer.as_mut().expect("lease holds the writer");
                let r = if self.pending.len() == 1 {
                    Pin::new(&mut **w).poll_write(cx, &self.pending[0][self.offset..])
                } else {
                    let mut bufs = [std::io::IoSlice::new(&[]); MAX_SLICES];
                    let mut k = 0;
                    for (slot, b) in bufs.iter_mut().zip(&self.pending) {
                        let b = if k == 0 { &b[self.offset..] } else { &b[..] };
                        *slot = std::io::IoSlice::new(b);
                        k += 1;
                    }
                    Pin::new(&mut **w).poll_write_vectored(cx, &bufs[..k])
                };
                match r {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()))
                    }
                    Poll::Ready(Ok(n)) => self.advance(n),
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                }
            }
            let w = self.writer.as_mut().expect("lease holds the writer");
            Pin::new(&mut **w).poll_flush(cx)
        })
        .await
    }

    /// `n` more bytes of `pending` are written.
    fn advance(&mut self, mut n: usize) {
        while let Some(front) = self.pending.front() {
            let rest = front.len() - self.offset;
            if n < rest {
                self.offset += n;
                return;
            }
            n -= rest;
            self.pending.pop_front();
            self.offset = 0;
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let Some(writer) = self.writer.take() else {
            return;
        };
        let mut st = self.queue.lock();
        // Interrupted: whatever was written may still sit in the writer (a TLS session).
        st.unflushed = true;
        if let Some(front) = self.pending.pop_front() {
            let rest = front.slice(self.offset..);
            st.bytes += rest.len();
            if self.offset > 0 {
                st.partial = Some(rest);
            } else {
                st.frames.push_front(rest);
            }
            for f in self.pending.drain(..).rev() {
                st.bytes += f.len();
                st.frames.push_front(f);
            }
        }
        st.writer = Some(writer);
    }
}

impl OutboundQueue {
    /// The connection's task: waits until something waits to be written and writes it
    /// (everything that accumulated, in one go), until the queue is idle again; then the
    /// close frame if the queue is closing. A close while the socket is blocked ends the
    /// round at once.
    pub async fn write_queued(&self) -> Written {
        let mut lease = loop {
            let notified = self.notify.notified();
            {
                let mut st = self.lock();
                if st.failed {
                    return Written::Failed;
                }
                if st.has_work() {
                    if let Some(writer) = st.writer.take() {
                        break Lease {
                            queue: self,
                            writer: Some(writer),
                            pending: VecDeque::new(),
                            offset: 0,
                        };
                    }
                }
            }
            notified.await;
        };
        loop {
            let (frames, published, close) = {
                let mut st = self.lock();
                if !st.has_work() {
                    // Idle: the writer goes back for direct writes.
                    st.writer = lease.writer.take();
                    return Written::Idle;
                }
                lease.pending.extend(st.partial.take());
                lease.pending.extend(st.frames.drain(..));
                if st.frames.capacity() > QUEUE_KEPT {
                    // A burst's room goes back (every idle viewer would keep it).
                    st.frames.shrink_to(QUEUE_KEPT);
                }
                st.bytes = 0;
                st.unflushed = false;
                let frames = std::mem::take(&mut st.frame_count);
                let close = st.close.clone().filter(|_| !st.close_sent);
                (frames, st.oldest_publish.take(), close)
            };
            self.drained.notify_waiters();
            // A client that does not read blocks the write; if its queue overflows
            // meanwhile (or the node shuts down), give up on it at once rather than wait.
            let r = tokio::select! {
                r = lease.write_pending() => r,
                reason = self.closed(), if close.is_none() => {
                    return if self.lock().failed { Written::Failed } else { Written::Closed(reason) };
                }
            };
            if let Err(e) = r {
                tracing::debug!(error = %e, "websocket write failed");
                self.lock().failed = true;
                return Written::Failed;
            }
            wrote(frames, published);
            if lease.pending.capacity() > QUEUE_KEPT {
                lease.pending.shrink_to(QUEUE_KEPT);
            }
            if let Some(reason) = close {
                lease
                    .pending
                    .push_back(wire::close(reason.code, reason.reason));
                self.lock().close_sent = true;
                if lease.write_pending().await.is_err() {
                    return Written::Failed;
                }
                return Written::Closed(reason);
            }
        }
    }

    /// The end of a connection: writes what is left (the rest of a started frame, then —
    /// unless the client was too slow — the queued frames), the close frame if the queue
    /// is closing and has not sent it, and shuts the write half down.
    pub async fn finish(&self) {
        let (mut writer, pending) = {
            let mut st = self.lock();
            let Some(writer) = st.writer.take() else {
                return;
            };
            if st.failed {
                return;
            }
            let slow = st
                .close
                .as_ref()
                .is_some_and(|c| c.code == close_code::SLOW_CONSUMER);
            let mut pending: Vec<Bytes> = st.partial.take().into_iter().collect();
            if !slow {
                pending.extend(st.frames.drain(..));
            }
            if let Some(c) = st.close.as_ref().filter(|_| !st.close_sent) {
                pending.push(wire::close(c.code, c.reason));
                st.close_sent = true;
            }
            (writer, pending)
        };
        use tokio::io::AsyncWriteExt;
        for p in pending {
            if writer.write_all(&p).await.is_err() {
                return;
            }
        }
        let _ = writer.shutdown().await;
    }
}
