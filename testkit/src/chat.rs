//! Chat over the stream WebSocket: joining a stream and reading the welcome, sending
//! messages and waiting for their acks, collecting the messages others sent.

use std::fmt::Display;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

use crate::ws::{next_json, send_text, ws_connect, Ws};

/// The WebSocket URL of `stream` on the node whose API listens on `addr`, with `token` in
/// the query.
pub fn stream_ws_url(addr: SocketAddr, stream: impl Display, token: &str) -> String {
    format!("ws://{addr}/v1/streams/{stream}/ws?access_token={token}")
}

/// Joins a stream's WebSocket with `token`; returns the socket and the welcome frame.
pub async fn join_with(addr: SocketAddr, stream: impl Display, token: &str) -> (Ws, Value) {
    let mut ws = ws_connect(&stream_ws_url(addr, stream, token)).await;
    let welcome = next_json(&mut ws, Duration::from_secs(15)).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    (ws, welcome)
}

/// Sends one chat message and waits for its ack; returns the ack frame (an `error` frame
/// when refused).
pub async fn send_and_ack(ws: &mut Ws, client_msg_id: &str, body: &str) -> Value {
    send_chat(ws, client_msg_id, body).await;
    loop {
        let f = next_json(ws, Duration::from_secs(15)).await;
        if (f["type"] == "ack" && f["client_msg_id"] == client_msg_id) || f["type"] == "error" {
            return f;
        }
    }
}

/// Sends one chat message (a `send` frame), without waiting for anything.
pub async fn send_chat(ws: &mut Ws, client_msg_id: &str, body: &str) {
    send_text(
        ws,
        &serde_json::json!({"type": "send", "client_msg_id": client_msg_id, "body": body})
            .to_string(),
    )
    .await;
}

/// Reads `message` frames until `n` were received (skipping acks and other frames), each
/// within `limit`.
pub async fn messages(ws: &mut Ws, n: usize, limit: Duration) -> Vec<Value> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let f = next_json(ws, limit).await;
        if f["type"] == "message" {
            out.push(f);
        }
    }
    out
}
