//! [`PubSub`] for the memory backend: straight to the node's
//! [`Fanout`](crate::store::fanout::Fanout).

use async_trait::async_trait;
use bytes::Bytes;

use super::MemoryStore;
use crate::store::{PubSub, PubSubEvent, StoreResult, Subscription};

#[async_trait]
impl PubSub for MemoryStore {
    async fn publish(&self, channel: &str, payload: Bytes) -> StoreResult<()> {
        self.fanout.deliver(channel, PubSubEvent::Message(payload));
        Ok(())
    }

    async fn subscribe(&self, channel: &str) -> StoreResult<Subscription> {
        Ok(self.fanout.subscribe(channel).0)
    }
}
