//! The node's one Redis pub/sub connection: subscribes each channel once for all local
//! subscribers, reconnects with backoff, re-subscribes after a reconnect and then tells
//! every local subscriber to resync (messages published while it was away are lost to
//! pub/sub; the ordered log has them). And [`PubSub`] for the Redis backend on top of it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use redis::AsyncCommands;
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

pub(super) fn start(
    client: redis::Client,
    connect_timeout: Duration,
    stop: CancellationToken,
) -> (PubSubHandle, Arc<Fanout>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let unsub_tx = tx.clone();
    let fanout = Fanout::new(
        PUBSUB_CAPACITY,
        Some(Box::new(move |ch: &str| {
            let _ = unsub_tx.send(Cmd::Unsubscribe(ch.to_string()));
        })),
    );
    tokio::spawn(run(client, fanout.clone(), rx, connect_timeout, stop));
    (PubSubHandle { tx }, fanout)
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
        let ch = self.key(channel);
        self.run(async move { c.publish::<_, _, i64>(ch, &payload[..]).await })
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
