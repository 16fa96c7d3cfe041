//! The upgrade handler: checks, admission, tuned `WebSocketConfig`, then [`conn::drive`].

use std::sync::Arc;

use crate::auth::WsAuthenticated;
use crate::streams::routes::parse_stream_id;
use axum::extract::ws::{rejection::WebSocketUpgradeRejection, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::Response;

use super::conn::{self, ConnSettings};
use super::protocol::{ServerFrame, SUBPROTOCOL};
use super::queue::OutboundQueue;
use crate::app::AppState;
use crate::http::{ApiError, ErrorKind};

pub async fn stream_ws(
    State(app): State<AppState>,
    Path(stream_id): Path<String>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    WsAuthenticated(who): WsAuthenticated,
) -> Result<Response, ApiError> {
    let stream = parse_stream_id(&stream_id)?;
    let upgrade = upgrade.map_err(|e| {
        ApiError::new(
            ErrorKind::UpgradeRequired,
            "websocket_required",
            format!("this endpoint only accepts WebSocket upgrades: {e}"),
        )
    })?;
    if app.is_draining() {
        metrics::counter!("streamedge_ws_rejected_total", "reason" => "draining").increment(1);
        return Err(ApiError::new(
            ErrorKind::Unavailable,
            "draining",
            "this node is shutting down; connect to another node",
        )
        .with_retry_after(1));
    }
    // The stream must exist (any node may have created it).
    app.streams.get(&stream).await?;
    let Some(admission) = app.registry.try_admit() else {
        metrics::counter!("streamedge_ws_rejected_total", "reason" => "full").increment(1);
        return Err(ApiError::new(
            ErrorKind::Unavailable,
            "node_full",
            "this node holds its maximum number of connections",
        )
        .with_retry_after(1));
    };
    let ws = &app.config.ws;
    let settings = ConnSettings {
        ping_interval: ws.ping_interval,
        idle_timeout: ws.idle_timeout,
    };
    let queue_bytes = ws.send_queue_bytes;
    let upgrade = upgrade
        .read_buffer_size(ws.read_buffer_size)
        .write_buffer_size(ws.write_buffer_size)
        // The outbound queue bounds what waits; the socket buffer holds at most one batch.
        .max_write_buffer_size(ws.write_buffer_size + queue_bytes + ws.max_message_size)
        .max_message_size(ws.max_message_size)
        .max_frame_size(ws.max_message_size)
        .protocols([SUBPROTOCOL]);
    let app2 = app.clone();
    Ok(upgrade
        .on_failed_upgrade(|e| tracing::debug!(error = %e, "websocket upgrade failed"))
        .on_upgrade(move |socket| async move {
            let queue = Arc::new(OutboundQueue::new(queue_bytes));
            let registration = app2.registry.register(admission, stream, queue.clone());
            metrics::counter!("streamedge_ws_connections_total").increment(1);
            let welcome = ServerFrame::Welcome {
                stream,
                node: &app2.node_id,
                conn_id: registration.id,
                protocol: SUBPROTOCOL,
            }
            .encode();
            let _ = queue.push(welcome);
            let tracker = app2.registry.tracker().clone();
            let end = tracker
                .track_future(conn::drive(socket, queue, settings))
                .await;
            tracing::debug!(%stream, conn = registration.id, user = %who.user_id, ?end, "websocket closed");
            drop(registration);
        }))
}
