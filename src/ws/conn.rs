//! One WebSocket connection: a send loop that drains the outbound queue in batches (one
//! flush per batch) and pings, and a receive loop that enforces the idle timeout and
//! answers client frames, under one `select!`. Generic over `Sink`/`Stream` so tests can
//! drive it with channels.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Error as WsError, Message};

use super::queue::{close_code, CloseReason, OutboundQueue};
use crate::protocol::{self, ClientFrame, FrameError, ServerFrame};

/// Timing settings of a connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnSettings {
    pub ping_interval: Duration,
    pub idle_timeout: Duration,
}

/// How a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnEnd {
    /// The client closed or went away.
    Client,
    /// The node closed it with this reason.
    Closed(CloseReason),
    /// Writing to the socket failed.
    WriteFailed,
}

/// What a connection does with the application frames it receives (`ping` is answered
/// by the connection itself). Replies go to the connection's queue.
pub trait FrameHandler: Send {
    fn on_frame(&mut self, frame: ClientFrame) -> impl std::future::Future<Output = ()> + Send;
}

/// Drives a connection until it ends. Frames the node wants to send are pushed to
/// `queue` by anyone (fan-out, replies); this function writes them.
pub async fn drive<S, H>(
    socket: S,
    queue: Arc<OutboundQueue>,
    settings: ConnSettings,
    mut handler: H,
) -> ConnEnd
where
    S: Sink<Message, Error = WsError> + Stream<Item = Result<Message, WsError>> + Send,
    H: FrameHandler,
{
    let (mut sink, mut stream) = socket.split();
    let end = tokio::select! {
        end = send_loop(&mut sink, &queue, settings.ping_interval) => end,
        end = recv_loop(&mut stream, &queue, settings.idle_timeout, &mut handler) => end,
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
    if let ConnEnd::Closed(reason) = &end {
        metrics::counter!("streamedge_ws_closed_total", "reason" => reason.reason).increment(1);
    }
    end
}

/// Metric handles, registered once (the writer runs per frame batch).
static FRAMES_OUT: std::sync::LazyLock<metrics::Counter> =
    std::sync::LazyLock::new(|| metrics::counter!("streamedge_ws_frames_out_total"));
static FLUSHES: std::sync::LazyLock<metrics::Counter> =
    std::sync::LazyLock::new(|| metrics::counter!("streamedge_ws_flushes_total"));
static PUBLISH_TO_SOCKET: std::sync::LazyLock<metrics::Histogram> =
    std::sync::LazyLock::new(|| metrics::histogram!("streamedge_chat_publish_to_socket_seconds"));
static SAMPLED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
const SAMPLE_EVERY: u64 = 8;
/// Frames' room a connection keeps between batches.
const BATCH_KEPT: usize = 8;

async fn send_loop<K>(sink: &mut K, queue: &OutboundQueue, ping_every: Duration) -> ConnEnd
where
    K: Sink<Message, Error = WsError> + Unpin,
{
    // Grows with the batches a busy stream brings and gives the room back afterwards: it
    // is part of every idle viewer's memory.
    let mut batch = Vec::new();
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
                        (close, published) = queue.next_batch_published(&mut batch) => {
                let n = batch.len() as u64;
                // A client that does not read blocks the write; if its queue overflows
                // meanwhile, give up on it at once rather than wait for the socket.
                let write = async {
                    for frame in batch.drain(..) {
                        sink.feed(Message::Text(frame)).await?;
                    }
                    Ok::<(), WsError>(())
                };
                tokio::select! {
                    r = write => if r.is_err() {
                        return ConnEnd::WriteFailed;
                    },
                    reason = queue.closed(), if close.is_none() => {
                        return ConnEnd::Closed(reason);
                    }
                }
                if n > 0 {
                    FRAMES_OUT.increment(n);
                }
                if batch.capacity() > BATCH_KEPT {
                    batch.shrink_to(BATCH_KEPT);
                }
                if let Some(reason) = close {
                    let frame = CloseFrame { code: CloseCode::from(reason.code), reason: reason.reason.into() };
                    let _ = sink.send(Message::Close(Some(frame))).await;
                    return ConnEnd::Closed(reason);
                }
                                tokio::select! {
                    r = sink.flush() => if r.is_err() {
                        return ConnEnd::WriteFailed;
                    },
                    reason = queue.closed() => {
                        return ConnEnd::Closed(reason);
                    }
                }
                FLUSHES.increment(1);
                if let Some(t) = published {
                    // One batch in SAMPLE_EVERY: the metric stays cheap at 500k deliveries/s.
                    if SAMPLED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % SAMPLE_EVERY == 0 {
                        PUBLISH_TO_SOCKET.record(t.elapsed().as_secs_f64());
                    }
                }
            }
            _ = ping.tick() => {
                if sink.send(Message::Ping(Default::default())).await.is_err() {
                    return ConnEnd::WriteFailed;
                }
            }
        }
    }
}

async fn recv_loop<T, H>(
    stream: &mut T,
    queue: &OutboundQueue,
    idle: Duration,
    handler: &mut H,
) -> ConnEnd
where
    T: Stream<Item = Result<Message, WsError>> + Unpin,
    H: FrameHandler,
{
    loop {
        let msg = match tokio::time::timeout(idle, stream.next()).await {
            Err(_) => {
                return close_then_wait(queue, close_code::IDLE_TIMEOUT, "idle_timeout").await
            }
            Ok(None) => return ConnEnd::Client,
            Ok(Some(Err(e))) => {
                return match classify_read_error(&e) {
                    Some((code, reason)) => close_then_wait(queue, code, reason).await,
                    None => {
                        tracing::debug!(error = %e, "websocket read failed");
                        ConnEnd::Client
                    }
                };
            }
            Ok(Some(Ok(msg))) => msg,
        };
        match msg {
            Message::Text(text) => {
                metrics::counter!("streamedge_ws_frames_in_total", "kind" => "text").increment(1);
                queue.wait_for_room().await;
                match protocol::parse_client(&text) {
                    Ok(ClientFrame::Ping { reference }) => {
                        let pong = ServerFrame::Pong {
                            reference: reference.as_deref(),
                        };
                        let _ = queue.push(pong.encode());
                    }
                    // Boxed: a send's state is large and lives only while it runs; inline
                    // it would be part of every idle connection's task.
                    Ok(frame) => Box::pin(handler.on_frame(frame)).await,
                    Err(e) => {
                        let _ = queue.push(e.to_frame().encode());
                    }
                }
            }
            Message::Binary(_) => {
                metrics::counter!("streamedge_ws_frames_in_total", "kind" => "binary").increment(1);
                let _ = queue.push(FrameError::binary().to_frame().encode());
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            Message::Close(_) => return ConnEnd::Client,
        }
    }
}

/// Asks the send loop to close with `code`, then waits for it to do so.
async fn close_then_wait(queue: &OutboundQueue, code: u16, reason: &'static str) -> ConnEnd {
    queue.close(CloseReason { code, reason });
    std::future::pending().await
}

/// The close code for a read error caused by what the client sent, if any (I/O errors
/// and resets have none: the connection is already gone).
fn classify_read_error(e: &WsError) -> Option<(u16, &'static str)> {
    match e {
        WsError::Capacity(_) => Some((close_code::MESSAGE_TOO_BIG, "message_too_big")),
        WsError::Utf8(_) => Some((close_code::INVALID_PAYLOAD, "invalid_utf8")),
        // The client dropped its TCP connection without a close frame: it is gone, not
        // misbehaving.
        WsError::Protocol(tungstenite::error::ProtocolError::ResetWithoutClosingHandshake) => None,
        WsError::Protocol(_) => Some((close_code::PROTOCOL_ERROR, "protocol_error")),
        // A message split into more frames than `ws.max_fragments` (see `guard`).
        WsError::Io(io) if super::guard::is_too_many_fragments(io) => {
            Some((close_code::MESSAGE_TOO_BIG, "too_many_fragments"))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(e: tungstenite::Error) -> Option<(u16, &'static str)> {
        classify_read_error(&e)
    }

    #[test]
    fn a_dropped_connection_is_not_a_protocol_error() {
        use tungstenite::error::ProtocolError;
        assert_eq!(
            classify(tungstenite::Error::Protocol(
                ProtocolError::ResetWithoutClosingHandshake
            )),
            None
        );
        assert_eq!(
            classify(tungstenite::Error::Protocol(
                ProtocolError::UnmaskedFrameFromClient
            )),
            Some((close_code::PROTOCOL_ERROR, "protocol_error"))
        );
        assert_eq!(classify(tungstenite::Error::ConnectionClosed), None);
    }
}
