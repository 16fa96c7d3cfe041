//! Local fan-out of pub/sub messages to the subscribers inside this node.
//!
//! Each backend subscribes to a channel once per node, however many local subscribers it
//! has, and hands every message to them through a bounded `broadcast` queue. A subscriber
//! that falls behind the queue, or a backend that lost its connection, gets
//! [`PubSubEvent::Resync`] instead of silently missing messages.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use tokio::sync::broadcast;

/// What a subscription yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PubSubEvent {
    Message(Bytes),
    /// Messages may have been missed (the subscriber lagged, or the backend reconnected):
    /// re-read whatever state the channel announces.
    Resync,
}

type OnEmpty = Box<dyn Fn(&str) + Send + Sync>;

/// Channel name → local subscribers.
pub struct Fanout {
    channels: RwLock<HashMap<String, broadcast::Sender<PubSubEvent>>>,
    capacity: usize,
    on_empty: Option<OnEmpty>,
}

impl Fanout {
    /// `capacity` bounds each channel's queue; `on_empty` runs (under the fan-out's lock)
    /// when a channel loses its last local subscriber.
    pub fn new(capacity: usize, on_empty: Option<OnEmpty>) -> Arc<Self> {
        Arc::new(Self {
            channels: RwLock::new(HashMap::new()),
            capacity,
            on_empty,
        })
    }

    /// Adds a local subscriber; the flag says whether it is the channel's first.
    pub fn subscribe(self: &Arc<Self>, channel: &str) -> (Subscription, bool) {
        let mut map = self.channels.write().expect("fanout lock");
        let (rx, first) = match map.get(channel) {
            Some(tx) => (tx.subscribe(), false),
            None => {
                let (tx, rx) = broadcast::channel(self.capacity);
                map.insert(channel.to_string(), tx);
                (rx, true)
            }
        };
        (
            Subscription {
                channel: channel.to_string(),
                rx: Some(rx),
                fanout: Arc::clone(self),
            },
            first,
        )
    }

    /// Hands an event to the channel's local subscribers; returns how many there were.
    pub fn deliver(&self, channel: &str, event: PubSubEvent) -> usize {
        let map = self.channels.read().expect("fanout lock");
        match map.get(channel) {
            Some(tx) => tx.send(event).unwrap_or(0),
            None => 0,
        }
    }

    /// Tells every subscriber that messages may have been missed.
    pub fn resync_all(&self) {
        let map = self.channels.read().expect("fanout lock");
        for tx in map.values() {
            let _ = tx.send(PubSubEvent::Resync);
        }
    }

    /// Channels with at least one local subscriber.
    pub fn channels(&self) -> Vec<String> {
        self.channels
            .read()
            .expect("fanout lock")
            .keys()
            .cloned()
            .collect()
    }

    fn release(&self, channel: &str, rx: broadcast::Receiver<PubSubEvent>) {
        let mut map = self.channels.write().expect("fanout lock");
        drop(rx);
        if let Some(tx) = map.get(channel) {
            if tx.receiver_count() == 0 {
                map.remove(channel);
                if let Some(cb) = &self.on_empty {
                    cb(channel);
                }
            }
        }
    }
}

/// One local subscriber of a channel. Dropping it unsubscribes.
pub struct Subscription {
    channel: String,
    rx: Option<broadcast::Receiver<PubSubEvent>>,
    fanout: Arc<Fanout>,
}

impl Subscription {
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The next event if one is already waiting (never waits).
    pub fn try_recv(&mut self) -> Option<PubSubEvent> {
        let rx = self.rx.as_mut()?;
        match rx.try_recv() {
            Ok(ev) => Some(ev),
            Err(broadcast::error::TryRecvError::Lagged(n)) => {
                metrics::counter!("streamedge_pubsub_lagged_total").increment(n);
                Some(PubSubEvent::Resync)
            }
            Err(_) => None,
        }
    }

    /// The next event; `None` once the backend is closed.
    pub async fn recv(&mut self) -> Option<PubSubEvent> {
        let rx = self.rx.as_mut()?;
        match rx.recv().await {
            Ok(ev) => Some(ev),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                metrics::counter!("streamedge_pubsub_lagged_total").increment(n);
                Some(PubSubEvent::Resync)
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(rx) = self.rx.take() {
            self.fanout.release(&self.channel, rx);
        }
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("channel", &self.channel)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn last_drop_unsubscribes_once() {
        let emptied = Arc::new(AtomicUsize::new(0));
        let e2 = emptied.clone();
        let f = Fanout::new(
            8,
            Some(Box::new(move |_| {
                e2.fetch_add(1, Ordering::SeqCst);
            })),
        );
        let (mut a, first_a) = f.subscribe("c");
        let (b, first_b) = f.subscribe("c");
        assert!(first_a && !first_b);
        assert_eq!(
            f.deliver("c", PubSubEvent::Message(Bytes::from_static(b"x"))),
            2
        );
        assert_eq!(
            a.recv().await,
            Some(PubSubEvent::Message(Bytes::from_static(b"x")))
        );
        drop(b);
        assert_eq!(emptied.load(Ordering::SeqCst), 0);
        drop(a);
        assert_eq!(emptied.load(Ordering::SeqCst), 1);
        assert!(f.channels().is_empty());
    }

    #[tokio::test]
    async fn lagging_subscriber_gets_resync() {
        let f = Fanout::new(2, None);
        let (mut a, _) = f.subscribe("c");
        for i in 0..5u8 {
            f.deliver("c", PubSubEvent::Message(Bytes::from(vec![i])));
        }
        assert_eq!(a.recv().await, Some(PubSubEvent::Resync));
        assert_eq!(
            a.recv().await,
            Some(PubSubEvent::Message(Bytes::from(vec![3])))
        );
    }
}
