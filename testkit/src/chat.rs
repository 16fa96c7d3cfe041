//! Chat over the stream WebSocket: joining a stream and reading the welcome, sending a
//! message and waiting for its ack.

use std::net::SocketAddr;
use std::time::Duration;

use crate::ws::{next_json, send_text, ws_connect, Ws};

/// Joins a stream's WebSocket with `token`; returns the socket and the welcome frame.
pub async fn join_with(
    addr: SocketAddr,
    stream: &uuid::Uuid,
    token: &str,
) -> (Ws, serde_json::Value) {
    let mut ws = ws_connect(&format!(
        "ws://{addr}/v1/streams/{stream}/ws?access_token={token}"
    ))
    .await;
    let welcome = next_json(&mut ws, Duration::from_secs(15)).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    (ws, welcome)
}

/// Sends one chat message and waits for its ack; returns the ack frame (an `error` frame
/// when refused).
pub async fn send_and_ack(ws: &mut Ws, client_msg_id: &str, body: &str) -> serde_json::Value {
    send_text(
        ws,
        &serde_json::json!({"type": "send", "client_msg_id": client_msg_id, "body": body})
            .to_string(),
    )
    .await;
    loop {
        let f = next_json(ws, Duration::from_secs(15)).await;
        if (f["type"] == "ack" && f["client_msg_id"] == client_msg_id) || f["type"] == "error" {
            return f;
        }
    }
}
