//! One hub per stream with local connections: it subscribes the node to the stream's
//! event channel and hands every event frame (already encoded, once) to the local
//! connections, and pushes `viewers` frames when the counts change (checked every
//! `viewers.push_interval`). The first local connection starts it, the last one stops it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;
use tungstenite::Utf8Bytes;
use uuid::Uuid;

use std::time::Duration;

use super::Registry;
use crate::chat::ChatService;
use crate::domain::keys;
use crate::domain::ViewerCounts;
use crate::protocol::channel::{self, ChannelEvent};
use crate::protocol::ServerFrame;
use crate::store::PubSubEvent;
use crate::store::SharedState;
use crate::streams::StreamService;
use crate::viewers::ViewerService;
use chat::{backfill, deliver_chat, gather};

mod chat;

/// What a hub works with (cheap to clone).
#[derive(Clone)]
pub struct HubDeps {
    pub store: Arc<dyn SharedState>,
    pub registry: Arc<Registry>,
    pub chat: Arc<ChatService>,
    pub streams: Arc<StreamService>,
    pub viewers: Arc<ViewerService>,
    /// `viewers.push_interval`.
    pub push_interval: Duration,
}

/// A running hub: how many connections hold it, how to stop it, and whether it is
/// subscribed yet.
struct Running {
    holders: usize,
    stop: CancellationToken,
    ready: tokio::sync::watch::Receiver<bool>,
    version: Arc<AtomicU64>,
}

type RunningHubs = Arc<Mutex<HashMap<Uuid, Running>>>;

pub struct Hubs {
    deps: HubDeps,
    running: RunningHubs,
}

/// Keeps a stream's hub running while held.
pub struct HubGuard {
    stream: Uuid,
    running: RunningHubs,
    version: Arc<AtomicU64>,
}

impl HubGuard {
    /// The stream's lifecycle version as the hub knows it: read when it subscribed, then
    /// from each `state` frame it handed out (before handing it out). `u64::MAX` when that
    /// read failed (unknown).
    pub fn seen_version(&self) -> u64 {
        self.version.load(Ordering::SeqCst)
    }
}

impl Drop for HubGuard {
    fn drop(&mut self) {
        let mut map = self.running.lock().expect("hubs lock");
        if let Some(r) = map.get_mut(&self.stream) {
            r.holders -= 1;
            if r.holders == 0 {
                r.stop.cancel();
                map.remove(&self.stream);
            }
        }
    }
}

/// Longest a connection waits for a new hub to subscribe (the store may be down: it then
/// carries on and the hub catches up from the log once subscribed).
const READY_WAIT: Duration = Duration::from_secs(2);

impl Hubs {
    pub fn new(deps: HubDeps) -> Self {
        Self {
            deps,
            running: Arc::default(),
        }
    }

    /// Joins (starting if needed) the hub of `stream`, once it is subscribed to the
    /// stream's channel: a connection reads the stream's last sequence number for its
    /// `welcome` after this, so every later message reaches it through the hub. (A hub
    /// subscribed after a message was published would never deliver it.)
    pub async fn join(&self, stream: Uuid) -> HubGuard {
        let (mut ready, version) = {
            let mut map = self.running.lock().expect("hubs lock");
            let entry = map.entry(stream).or_insert_with(|| {
                let stop = CancellationToken::new();
                let (ready_tx, ready) = tokio::sync::watch::channel(false);
                let version = Arc::new(AtomicU64::new(0));
                let hub = Hub {
                    stream,
                    stop: stop.clone(),
                    ready: ready_tx,
                    version: version.clone(),
                };
                tokio::spawn(run(self.deps.clone(), hub));
                Running {
                    holders: 0,
                    stop,
                    ready,
                    version,
                }
            });
            entry.holders += 1;
            (entry.ready.clone(), entry.version.clone())
        };
        let guard = HubGuard {
            stream,
            running: self.running.clone(),
            version,
        };
        if tokio::time::timeout(READY_WAIT, ready.wait_for(|r| *r))
            .await
            .is_err()
        {
            tracing::warn!(%stream, "stream hub not subscribed yet; the connection carries on");
        }
        guard
    }

    pub fn running(&self) -> usize {
        self.running.lock().expect("hubs lock").len()
    }
}

/// The `viewers` frame.
pub fn viewers_frame(stream: &Uuid, c: &ViewerCounts) -> Utf8Bytes {
    ServerFrame::Viewers {
        stream: *stream,
        counts: *c,
    }
    .encode()
}

/// What a hub's task is given.
struct Hub {
    stream: Uuid,
    stop: CancellationToken,
    ready: tokio::sync::watch::Sender<bool>,
    version: Arc<AtomicU64>,
}

async fn run(app: HubDeps, hub: Hub) {
    let Hub {
        stream,
        stop,
        ready,
        version,
    } = hub;
    let channel = keys::stream_events(&stream);
    let mut sub = loop {
        match app.store.subscribe(&channel).await {
            Ok(s) => break s,
            Err(e) => {
                tracing::warn!(%stream, error = %e, "cannot subscribe to stream events; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
                }
            }
        }
    };
    let mut tick = tokio::time::interval(app.push_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_counts: Option<ViewerCounts> = None;
    // The last chat sequence number this node delivered for the stream.
    let mut chat_seq = app.chat.last_seq(&stream).await.unwrap_or(0);
    // Transitions before the subscription are in the record; later ones come as events.
    let known = app
        .streams
        .get(&stream)
        .await
        .map_or(u64::MAX, |s| s.version);
    version.fetch_max(known, Ordering::SeqCst);
    // Subscribed, and what came before is the connections' history: they may join.
    ready.send_replace(true);
    let mut last_session: Option<Uuid> = None;
    // Events that arrived while a fan-out ran, in order: handled before anything newer.
    let mut later: VecDeque<PubSubEvent> = VecDeque::new();
    loop {
        if let Some(ev) = later.pop_front() {
            if stop.is_cancelled() {
                return;
            }
            handle_event(
                &app,
                &stream,
                &mut chat_seq,
                &mut sub,
                &mut later,
                &version,
                ev,
            )
            .await;
            continue;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            ev = sub.recv() => {
                let Some(ev) = ev else { return };
                handle_event(&app, &stream, &mut chat_seq, &mut sub, &mut later, &version, ev).await;
            }
            _ = tick.tick() => {
                let Ok(s) = app.streams.get(&stream).await else { continue };
                let session = s.session.as_ref().map(|x| x.id);
                if session.is_some() && session != last_session && s.state != crate::streams::StreamState::Ended {
                    // A new session: the viewers already here count towards it.
                    for user in app.viewers.local_users(&stream) {
                        let _ = app.viewers.join_session(&s, &user).await;
                    }
                    last_session = session;
                }
                match app.viewers.counts(&s).await {
                    Ok(c) if Some(c) != last_counts => {
                        app.registry.broadcast(&stream, &viewers_frame(&stream, &c)).await;
                        last_counts = Some(c);
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(%stream, error = %e, "viewer counts failed"),
                }
            }
        }
    }
}

/// One event from the stream's channel. A chat publish goes out together with the chat
/// messages already waiting behind it (and those arriving while it goes out).
async fn handle_event(
    app: &HubDeps,
    stream: &Uuid,
    chat_seq: &mut u64,
    sub: &mut crate::store::Subscription,
    later: &mut VecDeque<PubSubEvent>,
    version: &AtomicU64,
    ev: PubSubEvent,
) {
    match ev {
        PubSubEvent::Message(bytes) if channel::is_chat(&bytes) => {
            let mut entries: Vec<_> = crate::store::decode_log_publish(&bytes)
                .into_iter()
                .collect();
            // Only when nothing older waits: what waits in `later` came first.
            if later.is_empty() {
                if let Some(next) = gather(sub, &mut entries) {
                    later.push_back(next);
                }
            }
            *chat_seq = deliver_chat(app, stream, *chat_seq, entries, Some((sub, later))).await;
        }
        other => on_event(app, stream, chat_seq, version, other).await,
    }
}

/// A stream event other than a chat publish.
async fn on_event(
    app: &HubDeps,
    stream: &Uuid,
    chat_seq: &mut u64,
    version: &AtomicU64,
    ev: PubSubEvent,
) {
    match ev {
        PubSubEvent::Message(bytes) => match channel::decode(bytes) {
            ChannelEvent::ViewerLeft(user) => {
                if let Err(e) = app.viewers.on_viewer_left(stream, &user).await {
                    tracing::debug!(error = %e, "viewer re-touch failed");
                }
            }
            ChannelEvent::Frame(bytes) => match Utf8Bytes::try_from(bytes) {
                Ok(frame) => {
                    match channel::state_version(frame.as_bytes()) {
                        Some(v) => {
                            // Known before any connection gets it (see `seen_version`).
                            version.fetch_max(v, Ordering::SeqCst);
                            app.registry.broadcast_state(stream, v, &frame).await
                        }
                        None => app.registry.broadcast(stream, &frame).await,
                    };
                }
                Err(_) => tracing::warn!(%stream, "non-UTF-8 event dropped"),
            },
            // Chat appends are batched before they get here.
            ChannelEvent::Chat(bytes) => {
                let entries = crate::store::decode_log_publish(&bytes)
                    .into_iter()
                    .collect();
                *chat_seq = deliver_chat(app, stream, *chat_seq, entries, None).await;
            }
            ChannelEvent::Unreadable => tracing::warn!(%stream, "unreadable event dropped"),
        },
        PubSubEvent::Resync => {
            // Messages may have been missed: catch up from the log.
            if let Ok(last) = app.chat.last_seq(stream).await {
                if last > *chat_seq {
                    *chat_seq = backfill(app, stream, *chat_seq, last).await;
                }
            }
            // Events may have been missed: send the current state.
            if let Ok(s) = app.streams.get(stream).await {
                let frame = ServerFrame::State {
                    stream: *stream,
                    session_id: s.session.as_ref().map(|x| x.id),
                    state: s.state,
                    from: None,
                    kind: "sync",
                    cause: None,
                    at: None,
                    version: s.version,
                };
                version.fetch_max(s.version, Ordering::SeqCst);
                app.registry
                    .broadcast_state(stream, s.version, &frame.encode())
                    .await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::ws::queue::OutboundQueue;
    use std::sync::Arc;

    /// A hub's dependencies on the embedded store, and a stream.
    struct Setup {
        store: Arc<dyn crate::store::SharedState>,
        chat: Arc<crate::chat::ChatService>,
        registry: Arc<crate::ws::registry::Registry>,
        hubs: super::Hubs,
        stream: uuid::Uuid,
    }

    async fn setup() -> Setup {
        let store: Arc<dyn crate::store::SharedState> =
            Arc::new(crate::store::memory::MemoryStore::new());
        let streams = Arc::new(crate::streams::StreamService::new(store.clone()));
        let moderation = Arc::new(crate::moderation::ModerationService::new(
            store.clone(),
            streams.clone(),
            None,
        ));
        let chat = Arc::new(crate::chat::ChatService::new(
            store.clone(),
            streams.clone(),
            moderation,
            Default::default(),
            None,
        ));
        let viewers = Arc::new(crate::viewers::ViewerService::new(
            store.clone(),
            Default::default(),
            Duration::from_secs(60),
        ));
        let registry = crate::ws::registry::Registry::new(10);
        let hubs = super::Hubs::new(super::HubDeps {
            store: store.clone(),
            registry: registry.clone(),
            chat: chat.clone(),
            streams: streams.clone(),
            viewers,
            push_interval: Duration::from_secs(60),
        });
        let (stream, _) = streams.create("seller-1", "a stream", None).await.unwrap();
        Setup {
            store,
            chat,
            registry,
            hubs,
            stream: stream.id,
        }
    }

    impl Setup {
        /// A connection registered on the stream (catching up until told otherwise).
        fn connect(&self) -> (Arc<OutboundQueue>, crate::ws::registry::Registration) {
            let queue = Arc::new(OutboundQueue::new(1 << 20));
            let admission = self.registry.try_admit().unwrap();
            let registration = self
                .registry
                .register(admission, self.stream, queue.clone());
            (queue, registration)
        }
    }

    /// Waits for a frame containing `needle` on `queue` (other frames may come first).
    async fn wait_for(queue: &OutboundQueue, needle: &str) -> bool {
        let found = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let mut out = Vec::new();
                queue.next_batch(&mut out).await;
                let texts = crate::ws::wire::texts_of(&out);
                if texts.iter().any(|t| t.contains(needle)) {
                    return;
                }
            }
        });
        found.await.is_ok()
    }

    /// The first connection's hub is started in the background; `join` returns only once
    /// it is subscribed. On one thread the hub's task runs only when the test waits, so
    /// without that wait the message below would be in the log before the hub subscribed
    /// and read its last sequence number — and would never be delivered live.
    #[tokio::test]
    async fn a_message_sent_right_after_the_first_viewer_joined_is_delivered() {
        use crate::auth::{Principal, Role};
        let t = setup().await;
        let (queue, registration) = t.connect();
        let _hub = t.hubs.join(t.stream).await;
        let last_seq = t.chat.last_seq(&t.stream).await.unwrap();
        registration.conn.finish_catch_up(last_seq, Vec::new());
        let buyer = Principal {
            user_id: "buyer-1".into(),
            role: Role::Buyer,
            anonymous: false,
        };
        let seq = t.chat.send(&t.stream, &buyer, "c1", "hello").await.unwrap();
        assert_eq!(seq, last_seq + 1);
        assert!(
            wait_for(&queue, "hello").await,
            "the message is delivered live"
        );
    }

    /// The hub knows the stream's version from its subscription on, and from each `state`
    /// frame before any connection gets it; a connection is not sent a version twice.
    #[tokio::test]
    async fn the_hub_knows_the_version_it_handed_out() {
        let t = setup().await;
        let (queue, registration) = t.connect();
        let hub = t.hubs.join(t.stream).await;
        assert_eq!(hub.seen_version(), 0, "a new stream");
        registration.conn.set_state_version(0);
        registration.conn.finish_catch_up(0, Vec::new());
        let state = |version: u64, kind: &'static str| {
            let frame = crate::protocol::server::ServerFrame::State {
                stream: t.stream,
                session_id: None,
                state: crate::domain::StreamState::Live,
                from: None,
                kind,
                cause: None,
                at: None,
                version,
            }
            .encode();
            bytes::Bytes::copy_from_slice(frame.as_bytes())
        };
        let channel = crate::domain::keys::stream_events(&t.stream);
        t.store.publish(&channel, state(3, "start")).await.unwrap();
        assert!(wait_for(&queue, r#""kind":"start""#).await);
        assert_eq!(hub.seen_version(), 3);
        // The same version again (a sync), then the next: only the next goes out.
        t.store.publish(&channel, state(3, "sync")).await.unwrap();
        t.store.publish(&channel, state(4, "pause")).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), queue.next_batch(&mut out))
            .await
            .unwrap();
        let texts = crate::ws::wire::texts_of(&out);
        assert!(texts.iter().all(|t| !t.contains("sync")), "{texts:?}");
        assert!(texts.iter().any(|t| t.contains("pause")), "{texts:?}");
        assert_eq!(hub.seen_version(), 4);
    }
}
