//! `GET /v1/streams/{stream_id}/ws`, the upgrade handler: checks, admission, tuned
//! `WebSocketConfig`, then [`conn::drive`] with the chat handler.

use std::sync::Arc;

use crate::admission::{IpGuard, Refusal, UserGuard};
use crate::http::extract::{parse_stream_id, ApiPath};
use crate::http::upgrade::{NotAnUpgrade, WsSocket, WsUpgrade};
use crate::http::{ClientIp, WsAuthenticated};
use axum::extract::{rejection::QueryRejection, ConnectInfo, Query, State};
use axum::response::Response;

use crate::http::AppState;
use crate::http::{ApiError, ErrorKind};
use crate::protocol::{ServerFrame, SUBPROTOCOL};
use crate::ws::conn::{self, ConnSettings};
use crate::ws::queue::OutboundQueue;

/// Query parameters of the stream WebSocket (besides `access_token`, read by the
/// authentication).
#[derive(serde::Deserialize)]
pub struct WsParams {
    /// Reconnecting: the last chat `seq` the client saw. The connection then starts with
    /// `welcome`, `resumed` and every message after it, and only then the live feed.
    since_seq: Option<u64>,
}

pub async fn stream_ws(
    State(app): State<AppState>,
    ApiPath(stream_id): ApiPath<String>,
    params: Result<Query<WsParams>, QueryRejection>,
    upgrade: Result<WsUpgrade, NotAnUpgrade>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    ClientIp(client): ClientIp,
    WsAuthenticated(who): WsAuthenticated,
) -> Result<Response, ApiError> {
    let stream = parse_stream_id(&stream_id)?;
    let Query(params) = params.map_err(|e| {
        ApiError::new(
            ErrorKind::Invalid,
            "invalid_query",
            format!("since_seq must be a non-negative integer: {e}"),
        )
    })?;
    let upgrade = upgrade.map_err(|e| {
        ApiError::new(
            ErrorKind::UpgradeRequired,
            "websocket_required",
            format!("this endpoint only accepts WebSocket upgrades: {e}"),
        )
    })?;
    if app.closing.is_cancelled() {
        metrics::counter!("streamedge_ws_rejected_total", "reason" => "draining").increment(1);
        return Err(ApiError::new(
            ErrorKind::Unavailable,
            "draining",
            "this node is shutting down; connect to another node",
        )
        .with_retry_after(1));
    }
    // Behind a trusted proxy the listener could not count the client: count its
    // WebSockets here, by the forwarded address.
    let ip_slot = if client != peer.ip() {
        Some(app.ip_limits.admit(client).map_err(refused)?)
    } else {
        None
    };
    // The stream must exist (any node may have created it).
    let record = app.streams.get(&stream).await?;
    let user_slot = app
        .user_connections
        .admit(&who.user_id)
        .await
        .map_err(refused)?;
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
    // The outbound queue bounds what waits; the socket buffer holds at most one batch.
    let codec = tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(ws.read_buffer_size)
        .write_buffer_size(ws.write_buffer_size)
        .max_write_buffer_size(ws.write_buffer_size + queue_bytes + ws.max_message_size)
        .max_message_size(Some(ws.max_message_size))
        .max_frame_size(Some(ws.max_message_size));
    let max_fragments = ws.max_fragments;
    let accepted = Accepted {
        stream,
        record,
        who,
        admission,
        slots: (ip_slot, user_slot),
        since_seq: params.since_seq,
        queue_bytes,
        settings,
    };
    Ok(upgrade.on_upgrade(codec, max_fragments, move |socket| {
        serve(app, Box::new((socket, accepted)))
    }))
}

/// A connection refused by admission control: `429` with `Retry-After`.
fn refused(r: Refusal) -> ApiError {
    r.record();
    ApiError::new(ErrorKind::RateLimited, r.code(), r.detail())
        .with_retry_after(r.retry_after_secs())
}

/// What the upgrade handler checked and admitted, for the connection's life.
struct Accepted {
    stream: uuid::Uuid,
    record: crate::domain::Stream,
    who: crate::auth::Principal,
    admission: crate::ws::registry::Admission,
    /// The client IP's and the user's connection slots, held while the socket is open.
    slots: (Option<IpGuard>, UserGuard),
    since_seq: Option<u64>,
    queue_bytes: usize,
    settings: ConnSettings,
}

/// One stream WebSocket from welcome to close: registered with the node, counted as a
/// viewer (or, for the seller, heartbeating the session), caught up, then driven.
///
/// This future is each connection's task for its whole life, so its size is memory per
/// viewer. Opening (registering, joining, the welcome, catching up) runs boxed and hands
/// over only what the connection keeps ([`Open`]); leaving and the seller's heartbeats are
/// boxed too, so their state is allocated only while they run.
///
/// An async fn keeps its arguments' storage for its whole life: the socket and what was
/// accepted come boxed, and move out at once.
async fn serve(app: AppState, start: Box<(WsSocket, Accepted)>) {
    let (socket, a) = *start;
    let open = Box::pin(open(&app, a)).await;
    let Open {
        stream,
        who,
        is_seller,
        queue,
        registration,
        hub: _hub,
        slots: _slots,
        settings,
    } = open;
    let handler = crate::ws::chat::ChatHandler {
        chat: app.chat.clone(),
        stream,
        who: who.clone(),
        conn: registration.conn.clone(),
    };
    let tracker = app.registry.tracker().clone();
    let end = tracker
        .track_future(async {
            if is_seller {
                // The seller's open connection is their heartbeat.
                tokio::select! {
                    end = conn::drive(socket.io, socket.config, queue, settings, handler) => end,
                    never = Box::pin(seller_heartbeats(&app, stream, &who.user_id)) => match never {},
                }
            } else {
                conn::drive(socket.io, socket.config, queue, settings, handler).await
            }
        })
        .await;
    if !is_seller {
        if let Err(e) = Box::pin(app.viewers.leave(&stream, &who.user_id)).await {
            tracing::debug!(%stream, error = %e, "viewer leave not recorded; it expires");
        }
    }
    let id = registration.id;
    tracing::debug!(%stream, conn = id, user = %who.user_id, ?end, "websocket closed");
    drop(registration);
}

/// What an open connection keeps for its life (the stream record and the rest of
/// [`Accepted`] are dropped once it is open).
struct Open {
    stream: uuid::Uuid,
    who: crate::auth::Principal,
    is_seller: bool,
    queue: Arc<OutboundQueue>,
    registration: crate::ws::registry::Registration,
    hub: crate::ws::hub::HubGuard,
    slots: (Option<IpGuard>, UserGuard),
    settings: ConnSettings,
}

/// Registers the connection, counts the viewer, queues `welcome` and catches up
/// (`since_seq`); live chat frames are held back until then.
async fn open(app: &AppState, a: Accepted) -> Open {
    let Accepted {
        stream,
        record,
        who,
        admission,
        slots,
        since_seq,
        queue_bytes,
        settings,
    } = a;
    let queue = Arc::new(OutboundQueue::new(queue_bytes));
    let registration = app.registry.register(admission, stream, queue.clone());
    let hub = app.hubs.join(stream).await;
    // A transition the hub handed out before this connection was registered, after the
    // upgrade read the stream, is in neither: then the welcome states the stream as it is
    // now. (`state` frames at or below the welcome's version are not sent after it.)
    let record = if hub.seen_version() > record.version {
        match app.streams.get(&stream).await {
            Ok(now) => now,
            Err(e) => {
                tracing::debug!(%stream, error = %e, "stream not read again; welcome from the upgrade's read");
                record
            }
        }
    } else {
        record
    };
    registration.conn.set_state_version(record.version);
    metrics::counter!("streamedge_ws_connections_total").increment(1);
    let is_seller = record.owner_id == who.user_id;
    if !is_seller {
        if let Err(e) = app.viewers.join(&record, &who.user_id).await {
            tracing::warn!(%stream, error = %e, "viewer not recorded");
        }
    }
    let viewers = app.viewers.counts(&record).await.ok();
    // Live chat frames are held back until the welcome is queued: the client gets every
    // message after `last_seq`, live, with nothing missing in between.
    let last_seq = app.chat.last_seq(&stream).await.unwrap_or(0);
    let welcome = ServerFrame::Welcome {
        stream,
        node: &app.node_id,
        conn_id: registration.id,
        protocol: SUBPROTOCOL,
        state: record.state.as_str(),
        session_id: record.session.as_ref().map(|s| s.id),
        version: record.version,
        last_seq,
        viewers,
    }
    .encode();
    let _ = queue.push(welcome);
    let conn = &registration.conn;
    match since_seq {
        None => conn.finish_catch_up(last_seq, Vec::new()),
        // A reconnect: what was missed, then live, in one go (live frames are still held
        // back).
        Some(since) => crate::ws::chat::resume(&app.chat, &stream, conn, since, None).await,
    }
    Open {
        stream,
        who,
        is_seller,
        queue,
        registration,
        hub,
        slots,
        settings,
    }
}

/// Sends a heartbeat for the seller's session every third of the heartbeat timeout, for
/// as long as the seller's connection is open.
async fn seller_heartbeats(
    app: &AppState,
    stream: uuid::Uuid,
    user: &str,
) -> std::convert::Infallible {
    let every = app.config.session.heartbeat_timeout / 3;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match app
            .sessions
            .command(&stream, user, crate::domain::session::Command::Heartbeat)
            .await
        {
            Ok(_) | Err(crate::sessions::SessionError::NotAllowed(_)) => {}
            Err(e) => tracing::debug!(%stream, error = %e, "seller heartbeat failed"),
        }
    }
}
