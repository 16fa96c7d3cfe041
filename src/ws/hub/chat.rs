//! A hub's chat side: published messages go to the stream's local connections in
//! sequence order, in batches encoded once; messages that arrive while a batch goes out
//! join it; sequence numbers this node missed are read back from the log first.

use std::collections::VecDeque;
use std::sync::Arc;

use tungstenite::Utf8Bytes;
use uuid::Uuid;

use super::HubDeps;
use crate::protocol::channel;
use crate::store::PubSubEvent;
use crate::ws::registry::LiveBatch;
use crate::ws::wire;

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
pub(super) async fn deliver_chat(
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
pub(super) async fn backfill(app: &HubDeps, stream: &Uuid, last: u64, until: u64) -> u64 {
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

/// Adds to `entries` the chat messages already waiting (at most [`MAX_BATCH`]; never
/// waits). Returns the first non-chat event met, which must be handled after the batch.
pub(super) fn gather(
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
}
