//! The node's one Redis pub/sub connection: subscribes each channel once for all local
//! subscribers, reconnects with backoff, re-subscribes after a reconnect and then tells
//! every local subscriber to resync (messages published while it was away are lost to
//! pub/sub; the ordered log has them). And [`PubSub`] for the Redis backend on top of it.
//!
//! On a Redis Cluster the channels are sharded (`SSUBSCRIBE`): a channel lives on the master
//! of its hash tag's slot, and the cluster connection keeps one subscribing connection per
//! master it needs ([`start_cluster`]).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, PushKind};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::RedisStore;
use crate::store::fanout::{Fanout, PubSubEvent};
use crate::store::{PubSub, StoreResult, Subscription};

const PUBSUB_CAPACITY: usize = 4096;
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(2);

enum Cmd {
    Subscribe(String, oneshot::Sender<()>),
    Unsubscribe(String),
}

pub(super) struct PubSubHandle {
    tx: mpsc::UnboundedSender<Cmd>,
}

impl PubSubHandle {
    /// Subscribes the node to `channel`, waiting (briefly) for Redis to confirm. While Redis
    /// is unreachable it returns at once; the subscription is made on reconnect and its
    /// subscribers get a resync.
    pub(super) async fn subscribe(&self, channel: String) {
        let (ack, done) = oneshot::channel();
        if self.tx.send(Cmd::Subscribe(channel, ack)).is_ok() {
            let _ = tokio::time::timeout(SUBSCRIBE_WAIT, done).await;
        }
    }
}

/// The handle and the fan-out, with the command channel the pub/sub task reads.
fn handle() -> (PubSubHandle, Arc<Fanout>, mpsc::UnboundedReceiver<Cmd>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let unsub_tx = tx.clone();
    let fanout = Fanout::new(
        PUBSUB_CAPACITY,
        Some(Box::new(move |ch: &str| {
            let _ = unsub_tx.send(Cmd::Unsubscribe(ch.to_string()));
        })),
    );
    (PubSubHandle { tx }, fanout, rx)
}

pub(super) fn start(
    client: redis::Client,
    connect_timeout: Duration,
    stop: CancellationToken,
) -> (PubSubHandle, Arc<Fanout>) {
    let (handle, fanout, rx) = handle();
    tokio::spawn(run(client, fanout.clone(), rx, connect_timeout, stop));
    (handle, fanout)
}

/// Sharded pub/sub on a Redis Cluster: `conn` speaks RESP3 and its pushes (messages,
/// subscription confirmations, disconnections) arrive on `pushes`.
pub(super) fn start_cluster(
    conn: ClusterConnection,
    pushes: mpsc::UnboundedReceiver<PushInfo>,
    stop: CancellationToken,
) -> (PubSubHandle, Arc<Fanout>) {
    let (handle, fanout, rx) = handle();
    tokio::spawn(run_cluster(conn, pushes, fanout.clone(), rx, stop));
    (handle, fanout)
}

async fn run_cluster(
    mut conn: ClusterConnection,
    mut pushes: mpsc::UnboundedReceiver<PushInfo>,
    fanout: Arc<Fanout>,
    mut rx: mpsc::UnboundedReceiver<Cmd>,
    stop: CancellationToken,
) {
    // After a lost connection (or a refused subscribe) every channel is subscribed again
    // once the cluster answers, then local subscribers resync from the log.
    let mut repair: Option<(tokio::time::Instant, Duration)> = None;
    loop {
        let repair_at = repair.map(|(at, _)| at);
        tokio::select! {
            _ = stop.cancelled() => return,
            cmd = rx.recv() => match cmd {
                None => return,
                Some(Cmd::Subscribe(ch, ack)) => {
                    if conn.ssubscribe(&ch).await.is_err() && repair.is_none() {
                        repair = Some((tokio::time::Instant::now() + MIN_BACKOFF, MIN_BACKOFF));
                    }
                    let _ = ack.send(());
                }
                Some(Cmd::Unsubscribe(ch)) => {
                    let _ = conn.sunsubscribe(&ch).await;
                }
            },
            push = pushes.recv() => match push {
                None => return,
                Some(p) => match p.kind {
                    PushKind::SMessage | PushKind::Message => {
                        if let [channel, payload, ..] = &p.data[..] {
                            if let (Some(ch), Some(bytes)) = (bulk(channel), bulk(payload)) {
                                if let Ok(ch) = std::str::from_utf8(ch) {
                                    fanout.deliver(
                                        ch,
                                        PubSubEvent::Message(Bytes::copy_from_slice(bytes)),
                                    );
                                }
                            }
                        }
                    }
                    PushKind::Disconnection => {
                        metrics::counter!("streamedge_redis_pubsub_reconnects_total").increment(1);
                        tracing::warn!("redis cluster pub/sub connection lost; resubscribing");
                        if repair.is_none() {
                            repair = Some((tokio::time::Instant::now() + MIN_BACKOFF, MIN_BACKOFF));
                        }
                    }
                    _ => {}
                },
            },
            _ = sleep_until_opt(repair_at) => {
                // One channel per command: a sharded subscription names channels of one slot.
                let channels = fanout.channels();
                let mut ok = true;
                for ch in &channels {
                    if conn.ssubscribe(ch).await.is_err() {
                        ok = false;
                        break;
                    }
                }
                if ok {
                    repair = None;
                    if !channels.is_empty() {
                        fanout.resync_all();
                    }
                    tracing::debug!(channels = channels.len(), "redis cluster pub/sub resubscribed");
                } else if let Some((_, wait)) = repair {
                    let wait = (wait * 2).min(MAX_BACKOFF);
                    repair = Some((tokio::time::Instant::now() + wait, wait));
                }
            }
        }
    }
}

fn bulk(v: &redis::Value) -> Option<&[u8]> {
    match v {
        redis::Value::BulkString(b) => Some(b),
        _ => None,
    }
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn run(
    client: redis::Client,
    fanout: Arc<Fanout>,
    mut rx: mpsc::UnboundedReceiver<Cmd>,
    connect_timeout: Duration,
    stop: CancellationToken,
) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let connected = tokio::select! {
            _ = stop.cancelled() => return,
            r = tokio::time::timeout(connect_timeout, client.get_async_pubsub()) => r,
        };
        if let Ok(Ok(conn)) = connected {
            let (mut sink, mut stream) = conn.split();
            let channels = fanout.channels();
            let resubscribed = channels.is_empty() || sink.subscribe(&channels).await.is_ok();
            if resubscribed {
                backoff = MIN_BACKOFF;
                if !channels.is_empty() {
                    fanout.resync_all();
                }
                tracing::debug!(channels = channels.len(), "redis pub/sub connected");
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        cmd = rx.recv() => match cmd {
                            None => return,
                            Some(Cmd::Subscribe(ch, ack)) => {
                                if sink.subscribe(&ch).await.is_err() {
                                    break;
                                }
                                let _ = ack.send(());
                            }
                            Some(Cmd::Unsubscribe(ch)) => {
                                if sink.unsubscribe(&ch).await.is_err() {
                                    break;
                                }
                            }
                        },
                        msg = stream.next() => match msg {
                            Some(m) => {
                                fanout.deliver(
                                    m.get_channel_name(),
                                    PubSubEvent::Message(Bytes::copy_from_slice(m.get_payload_bytes())),
                                );
                            }
                            None => break,
                        },
                    }
                }
                metrics::counter!("streamedge_redis_pubsub_reconnects_total").increment(1);
                tracing::warn!("redis pub/sub connection lost; reconnecting");
            }
        }
        // Disconnected: answer subscribe requests at once (they are registered in the
        // fan-out and will be subscribed on reconnect), and wait before trying again.
        let wait = tokio::time::sleep(backoff);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = &mut wait => break,
                cmd = rx.recv() => match cmd {
                    None => return,
                    Some(Cmd::Subscribe(_, ack)) => { let _ = ack.send(()); }
                    Some(Cmd::Unsubscribe(_)) => {}
                },
            }
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[async_trait]
impl PubSub for RedisStore {
    async fn publish(&self, channel: &str, payload: Bytes) -> StoreResult<()> {
        let mut c = self.conn();
        let mut cmd = redis::cmd(self.publish_command());
        cmd.arg(self.key(channel)).arg(&payload[..]);
        self.run(async move { cmd.query_async::<i64>(&mut c).await })
            .await
            .map(|_| ())
    }

    async fn subscribe(&self, channel: &str) -> StoreResult<Subscription> {
        let (sub, first) = self.fanout.subscribe(&self.key(channel));
        if first {
            self.pubsub.subscribe(self.key(channel)).await;
        }
        Ok(sub)
    }
}
