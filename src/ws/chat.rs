//! The chat side of a stream WebSocket: `send` and `resume` frames, handed to the chat
//! service; the answers (`ack`, `error`, `resumed` and the missed messages) go back on the
//! connection's queue.

use std::sync::Arc;

use tungstenite::Utf8Bytes;
use uuid::Uuid;

use super::conn::FrameHandler;
use super::registry::Conn;
use crate::auth::Principal;
use crate::chat::service::{ChatError, ChatService};
use crate::protocol::{ClientFrame, ServerFrame};

pub struct ChatHandler {
    pub chat: Arc<ChatService>,
    pub stream: Uuid,
    pub who: Principal,
    pub conn: Arc<Conn>,
}

fn error_frame(code: &str, message: &str, reference: Option<&str>) -> Utf8Bytes {
    ServerFrame::Error {
        code,
        message,
        reference,
    }
    .encode()
}

/// History entries as `(seq, frame)`.
pub fn frames(entries: Vec<crate::store::LogEntry>) -> Vec<(u64, Utf8Bytes)> {
    entries
        .into_iter()
        .filter_map(|e| {
            crate::protocol::server::message(e.seq, &e.payload).map(|f| (e.seq, f.into()))
        })
        .collect()
}

impl FrameHandler for ChatHandler {
    async fn on_frame(&mut self, frame: ClientFrame) {
        let queue = &self.conn.queue;
        match frame {
            ClientFrame::Ping { .. } => {}
            ClientFrame::Send {
                client_msg_id,
                body,
            } => {
                match self
                    .chat
                    .send(&self.stream, &self.who, &client_msg_id, &body)
                    .await
                {
                    Ok(seq) => {
                        let _ = queue.push(
                            ServerFrame::Ack {
                                client_msg_id: &client_msg_id,
                                seq,
                            }
                            .encode(),
                        );
                    }
                    Err(ChatError::Rejected(r)) => {
                        let _ = queue.push(error_frame(r.code, &r.message, Some(&client_msg_id)));
                    }
                    Err(ChatError::Store(e)) => {
                        tracing::warn!(stream = %self.stream, error = %e, "chat send failed");
                        let _ = queue.push(error_frame(
                            "unavailable",
                            "the message was not sent; retry with the same client_msg_id",
                            Some(&client_msg_id),
                        ));
                    }
                }
            }
            ClientFrame::Resume {
                since_seq,
                reference,
            } => {
                self.conn.start_catch_up();
                resume(
                    &self.chat,
                    &self.stream,
                    &self.conn,
                    since_seq,
                    reference.as_deref(),
                )
                .await;
            }
        }
    }
}

/// Sends `resumed` and every message after `since_seq`, then releases the live frames held
/// since [`Conn::start_catch_up`] (or since the connection opened).
pub async fn resume(
    chat: &ChatService,
    stream: &Uuid,
    conn: &Conn,
    since_seq: u64,
    reference: Option<&str>,
) {
    let queue = &conn.queue;
    let result = async {
        let last = chat.last_seq(stream).await?;
        let entries = chat.after(stream, since_seq).await?;
        Ok::<_, crate::store::StoreError>((last, entries))
    }
    .await;
    match result {
        Ok((last, entries)) => {
            let window = chat.config().history_size as u64;
            let recovered = since_seq >= last.saturating_sub(window);
            let _ = queue.push(
                ServerFrame::Resumed {
                    since_seq,
                    recovered,
                    last_seq: last,
                    reference,
                }
                .encode(),
            );
            conn.finish_catch_up(since_seq.min(last), frames(entries));
        }
        Err(e) => {
            tracing::warn!(%stream, error = %e, "resume failed");
            let _ = queue.push(error_frame(
                "unavailable",
                "history is unavailable; retry the resume",
                reference,
            ));
            // Carry on live from where the stream is.
            let last = chat.last_seq(stream).await.unwrap_or(0);
            conn.finish_catch_up(last, Vec::new());
        }
    }
}
