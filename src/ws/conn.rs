//! One WebSocket connection: the socket's write half goes to the connection's
//! [`OutboundQueue`] (frames are written by whoever pushes them, or by this task when the
//! socket was full), and one task runs, under one `select!`, the queue's writer with the
//! pings, and a receive loop that enforces the idle timeout and answers client frames.
//! The WebSocket codec reads the client's frames; what it writes itself (pong and close
//! replies) goes through the queue, in order with everything else.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::{Error as WsError, Message};

use super::queue::{close_code, CloseReason, OutboundQueue};
use super::wire;
use super::writer::Written;
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

/// The read half of the socket as the WebSocket codec sees it: reads come from the
/// socket; what the codec writes (pong and close replies) is queued behind the frames
/// already waiting.
struct ReadSide<R> {
    read: R,
    queue: Arc<OutboundQueue>,
}

impl<R: AsyncRead + Unpin> AsyncRead for ReadSide<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl<R: Unpin> AsyncWrite for ReadSide<R> {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        // A closing connection drops it: its close frame is on its way.
        let _ = self.queue.push_wire(Bytes::copy_from_slice(buf), 0, None);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Drives a connection until it ends. Frames the node wants to send are pushed to
/// `queue` by anyone (fan-out, replies); `config` is the codec's (message size limits).
pub async fn drive<IO, H>(
    io: IO,
    config: WebSocketConfig,
    queue: Arc<OutboundQueue>,
    settings: ConnSettings,
    mut handler: H,
) -> ConnEnd
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
    H: FrameHandler,
{
    let (read, write) = tokio::io::split(io);
    queue.attach(Box::new(write));
    let read = ReadSide {
        read,
        queue: queue.clone(),
    };
    let mut stream = WebSocketStream::from_raw_socket(read, Role::Server, Some(config)).await;
    let end = tokio::select! {
        end = send_loop(&queue, settings.ping_interval) => end,
        end = recv_loop(&mut stream, &queue, settings.idle_timeout, &mut handler) => end,
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), queue.finish()).await;
    if let ConnEnd::Closed(reason) = &end {
        metrics::counter!("streamedge_ws_closed_total", "reason" => reason.reason).increment(1);
    }
    end
}

async fn send_loop(queue: &OutboundQueue, ping_every: Duration) -> ConnEnd {
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            written = queue.write_queued() => match written {
                Written::Idle => {}
                Written::Closed(reason) => return ConnEnd::Closed(reason),
                Written::Failed => return ConnEnd::WriteFailed,
            },
            _ = ping.tick() => {
                // Refused only when closing or failed: the writer ends the connection.
                let _ = queue.push_wire(Bytes::from_static(wire::PING), 0, None);
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
    T: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin,
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
            Message::Close(_) => {
                // The codec answers with a close frame when flushed: it goes through the
                // queue, after what is already waiting, and `drive` writes it out.
                let _ = stream.flush().await;
                return ConnEnd::Client;
            }
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
