//! One hub per stream with local connections: it subscribes the node to the stream's
//! event channel and hands every event frame (already encoded, once) to the local
//! connections, and pushes `viewers` frames when the counts change (checked every
//! `viewers.push_interval`). The first local connection starts it, the last one stops it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;
use tungstenite::Utf8Bytes;
use uuid::Uuid;

use std::time::Duration;

use super::registry::LiveBatch;
use super::wire;
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
        let mut ready = {
            let mut map = self.running.lock().expect("hubs lock");
            let entry = map.entry(stream).or_insert_with(|| {
                let stop = CancellationToken::new();
                let (ready_tx, ready) = tokio::sync::watch::channel(false);
                tokio::spawn(run(self.deps.clone(), stream, stop.clone(), ready_tx));
                Running {
                    holders: 0,
                    stop,
                    ready,
                }
            });
            entry.holders += 1;
            entry.ready.clone()
        };
        let guard = HubGuard {
            stream,
            running: self.running.clone(),
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

/// Most chat messages handed to the connections in one batch.
const MAX_BATCH: usize = 256;

/// While a fan-out runs: the stream's subscription, to take in the chat messages that
/// follow on, and where whatever else arrives waits (in order) to be handled after it.
type Live<'a> = Option<(
    &'a mut crate::store::Subscription,
    &'a mut VecDeque<PubSubEvent>,
)>;

/// Delivers published messages (in sequence order), first backfilling from the log any
/// sequence numbers between the last delivered one and them (publishes this node missed).
/// Every connection gets the batch with one write. Returns the new last delivered
/// sequence number.
async fn deliver_chat(
    app: &HubDeps,
    stream: &Uuid,
    last: u64,
    entries: Vec<crate::store::LogEntry>,
    mut live: Live<'_>,
) -> u64 {
    let started = std::time::Instant::now();
    let mut last = last;
    let mut batch: Vec<(u64, Utf8Bytes)> = Vec::with_capacity(entries.len());
    let mut published = None;
    for entry in entries {
        if entry.seq <= last {
            continue; // already delivered (e.g. by a backfill)
        }
        if entry.seq > last + 1 {
            // Keep the order: what is batched goes first, then the backfill.
            flush(app, stream, &mut batch, &mut published, &mut last, None).await;
            metrics::counter!("streamedge_chat_gaps_total").increment(1);
            last = backfill(app, stream, last, entry.seq - 1).await;
            if entry.seq <= last {
                continue;
            }
        }
        if let Some(frame) = crate::protocol::server::message(entry.seq, &entry.payload) {
            if published.is_none() {
                published = published_at(&entry.payload, started);
            }
            batch.push((entry.seq, frame.into()));
        }
        last = entry.seq;
    }
    let live = live.as_mut().map(|(sub, later)| (&mut **sub, &mut **later));
    flush(app, stream, &mut batch, &mut published, &mut last, live).await;
    metrics::histogram!("streamedge_chat_fanout_seconds").record(started.elapsed().as_secs_f64());
    last
}

/// Fans `batch` out to the stream's connections. While that runs, chat messages that
/// follow on (`last` + 1, …) join it: connections not written yet get them in the same
/// write, the others in another round right after (which writes only to them). So a
/// message waits at most for the rest of one round, not for a whole round to end. Other
/// events, and messages after a gap, wait in `live`'s queue.
async fn flush(
    app: &HubDeps,
    stream: &Uuid,
    batch: &mut Vec<(u64, Utf8Bytes)>,
    published: &mut Option<std::time::Instant>,
    last: &mut u64,
    mut live: Live<'_>,
) {
    if batch.is_empty() {
        return;
    }
    let mut round = wire::Batch::encode(batch.iter().map(|(s, f)| (*s, f.as_str())));
    batch.clear();
    let mut published = published.take();
    let mut open = true;
    for rounds in 1.. {
        // Under steady chat every round would have messages joining: after a few, new
        // ones wait for the hub's loop, so the viewer counts and `stop` get their turn.
        let joining = rounds <= MAX_JOINING_ROUNDS;
        let current = Arc::new(LiveBatch::new(round, published));
        let Some(fan) = app.registry.start_fan_out(stream, current.clone()) else {
            return;
        };
        let started_at = *last;
        let mut wait = std::pin::pin!(fan.wait());
        let taken = loop {
            let extend = match live.as_mut() {
                Some((sub, later)) if joining && open && later.is_empty() => Some(&mut **sub),
                _ => None,
            };
            tokio::select! {
                n = &mut wait => break n,
                ev = next_event(extend) => match ev {
                    Some(PubSubEvent::Message(bytes)) if channel::is_chat(&bytes) => {
                        match crate::store::decode_log_publish(&bytes) {
                            Some(e) if e.seq == *last + 1 => {
                                if let Some(frame) = crate::protocol::server::message(e.seq, &e.payload) {
                                    current.extend([(e.seq, frame.as_str())]);
                                }
                                *last = e.seq;
                            }
                            // Already delivered.
                            Some(e) if e.seq <= *last => {}
                            // After a gap (or unreadable): handled, with its backfill, after
                            // this fan-out.
                            _ => {
                                if let Some((_, later)) = live.as_mut() {
                                    later.push_back(PubSubEvent::Message(bytes));
                                }
                            }
                        }
                    }
                    Some(other) => {
                        if let Some((_, later)) = live.as_mut() {
                            later.push_back(other);
                        }
                    }
                    None => open = false,
                },
            }
        };
        metrics::counter!("streamedge_chat_deliveries_total").increment(taken as u64);
        if *last == started_at {
            return;
        }
        // Messages joined during the round: the connections written before they did
        // still need them.
        round = current.get().tail(started_at);
        published = None;
    }
}

/// Rounds of one fan-out that messages can join (the last round after them only writes
/// what joined).
const MAX_JOINING_ROUNDS: u32 = 4;

/// The subscription's next event, or never.
async fn next_event(sub: Option<&mut crate::store::Subscription>) -> Option<PubSubEvent> {
    match sub {
        Some(sub) => sub.recv().await,
        None => std::future::pending().await,
    }
}

/// When a stored message was accepted (its `ts`, set by the node that sequenced it), as
/// an instant of this node's clock: the start of the publish-to-socket latency. Node
/// clocks must agree (NTP); millisecond precision.
fn published_at(payload: &[u8], now: std::time::Instant) -> Option<std::time::Instant> {
    const KEY: &[u8] = b"\"ts\":\"";
    let at = payload.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let ts = std::str::from_utf8(payload.get(at..at + 24)?).ok()?;
    let ts_ms = crate::domain::clock::parse_rfc3339_ms(ts)?;
    let age = crate::domain::clock::now_ms().saturating_sub(ts_ms);
    now.checked_sub(std::time::Duration::from_millis(age))
}

/// Reads the log after `last` up to `until` and delivers it. Returns the new last.
async fn backfill(app: &HubDeps, stream: &Uuid, last: u64, until: u64) -> u64 {
    match app.chat.after(stream, last).await {
        Ok(entries) => {
            let mut last = last;
            for e in entries.into_iter().filter(|e| e.seq <= until) {
                if let Some(frame) = crate::protocol::server::message(e.seq, &e.payload) {
                    let published = published_at(&e.payload, std::time::Instant::now());
                    app.registry
                        .deliver_chat(stream, e.seq, &frame.into(), published)
                        .await;
                }
                last = e.seq;
            }
            metrics::counter!("streamedge_chat_backfilled_total").increment(1);
            last.max(until)
        }
        Err(e) => {
            tracing::warn!(%stream, error = %e, "chat backfill failed");
            last
        }
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

async fn run(
    app: HubDeps,
    stream: Uuid,
    stop: CancellationToken,
    ready: tokio::sync::watch::Sender<bool>,
) {
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
            handle_event(&app, &stream, &mut chat_seq, &mut sub, &mut later, ev).await;
            continue;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            ev = sub.recv() => {
                let Some(ev) = ev else { return };
                handle_event(&app, &stream, &mut chat_seq, &mut sub, &mut later, ev).await;
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
        other => on_event(app, stream, chat_seq, other).await,
    }
}

/// Adds to `entries` the chat messages already waiting (at most [`MAX_BATCH`]; never
/// waits). Returns the first non-chat event met, which must be handled after the batch.
fn gather(
    sub: &mut crate::store::Subscription,
    entries: &mut Vec<crate::store::LogEntry>,
) -> Option<PubSubEvent> {
    while entries.len() < MAX_BATCH {
        match sub.try_recv()? {
            PubSubEvent::Message(bytes) if channel::is_chat(&bytes) => {
                entries.extend(crate::store::decode_log_publish(&bytes));
            }
            other => return Some(other),
        }
    }
    None
}

/// A stream event other than a chat publish.
async fn on_event(app: &HubDeps, stream: &Uuid, chat_seq: &mut u64, ev: PubSubEvent) {
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
                        Some(v) => app.registry.broadcast_state(stream, v, &frame).await,
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
                app.registry
                    .broadcast_state(stream, s.version, &frame.encode())
                    .await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    #[test]
    fn published_at_reads_the_message_timestamp() {
        let now = Instant::now();
        let ts = crate::domain::clock::rfc3339(crate::domain::clock::now_ms() - 1500);
        let payload =
            format!(r#"{{"id":"x","user":"u","body":"b","ts":"{ts}","client_msg_id":"c"}}"#);
        let t = super::published_at(payload.as_bytes(), now).unwrap();
        let age = now - t;
        assert!(
            age >= Duration::from_millis(1400) && age <= Duration::from_millis(4000),
            "{age:?}"
        );
        assert!(super::published_at(br#"{"ts":"garbage"}"#, now).is_none());
        assert!(super::published_at(b"{}", now).is_none());
    }

    /// The first connection's hub is started in the background; `join` returns only once
    /// it is subscribed. On one thread the hub's task runs only when the test waits, so
    /// without that wait the message below would be in the log before the hub subscribed
    /// and read its last sequence number — and would never be delivered live.
    #[tokio::test]
    async fn a_message_sent_right_after_the_first_viewer_joined_is_delivered() {
        use crate::auth::{Principal, Role};
        use crate::ws::queue::OutboundQueue;
        use std::sync::Arc;

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
            store,
            registry: registry.clone(),
            chat: chat.clone(),
            streams: streams.clone(),
            viewers,
            push_interval: Duration::from_secs(60),
        });
        let (stream, _) = streams.create("seller-1", "a stream", None).await.unwrap();
        let queue = Arc::new(OutboundQueue::new(1 << 20));
        let registration =
            registry.register(registry.try_admit().unwrap(), stream.id, queue.clone());
        let _hub = hubs.join(stream.id).await;
        let last_seq = chat.last_seq(&stream.id).await.unwrap();
        registration.conn.finish_catch_up(last_seq, Vec::new());
        let buyer = Principal {
            user_id: "buyer-1".into(),
            role: Role::Buyer,
            anonymous: false,
        };
        let seq = chat.send(&stream.id, &buyer, "c1", "hello").await.unwrap();
        assert_eq!(seq, last_seq + 1);
        // Other frames (a viewer count) may come first.
        let delivered = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let mut out = Vec::new();
                queue.next_batch(&mut out).await;
                let texts = crate::ws::wire::texts_of(&out);
                if texts.iter().any(|t| t.contains("hello")) {
                    return;
                }
            }
        });
        delivered.await.expect("the message is delivered live");
    }
}
