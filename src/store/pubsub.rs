//! The publish/subscribe role: messages to every current subscriber of a channel on every
//! node. The local delivery to a node's subscribers is [`super::fanout`].

use async_trait::async_trait;
use bytes::Bytes;

use super::{StoreResult, Subscription};

/// Publish/subscribe across nodes.
#[async_trait]
pub trait PubSub: Send + Sync {
    /// Delivers `payload` to every current subscriber of `channel` on every node.
    async fn publish(&self, channel: &str, payload: Bytes) -> StoreResult<()>;
    /// Subscribes to `channel`. After this returns, every later publish is received, unless
    /// the subscription reports [`PubSubEvent::Resync`](super::PubSubEvent::Resync)
    /// (messages may have been missed).
    async fn subscribe(&self, channel: &str) -> StoreResult<Subscription>;
}
