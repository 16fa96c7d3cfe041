//! One registered connection's place in its stream: its outbound queue, the last chat
//! sequence number and lifecycle version it was handed, and the live frames held back
//! while it catches up — so each message and each transition reaches it once, in order.

use bytes::{Bytes, BytesMut};
use std::sync::Arc;
use tungstenite::Utf8Bytes;

use super::queue::{close_code, OutboundQueue};
use super::wire;

/// Most chat frames a connection buffers while it catches up from history.
const MAX_CATCH_UP_BUFFER: usize = 10_000;

/// A registered connection: its outbound queue and its position in the stream's chat.
pub struct Conn {
    pub queue: Arc<OutboundQueue>,
    cursor: std::sync::Mutex<Cursor>,
}

struct Cursor {
    /// The last chat sequence number handed to this connection.
    last_seq: u64,
    /// The stream's lifecycle version this connection has been told (its `welcome`, then
    /// each `state` frame): a `state` frame at or below it is not sent again.
    state_version: u64,
    /// While catching up (on connect, or on `resume`), live frames wait here (encoded).
    buffer: Option<Vec<(Held, Bytes)>>,
}

/// What a frame held back during a catch-up is.
#[derive(Clone, Copy)]
enum Held {
    /// A chat message with its sequence number.
    Chat(u64),
    /// A lifecycle `state` frame with its version.
    State(u64),
    /// Another event.
    Event,
}

impl Held {
    fn chat_seq(self) -> Option<u64> {
        match self {
            Held::Chat(seq) => Some(seq),
            _ => None,
        }
    }
}

impl Conn {
    pub(super) fn new(queue: Arc<OutboundQueue>) -> Self {
        Self {
            queue,
            cursor: std::sync::Mutex::new(Cursor {
                last_seq: 0,
                state_version: 0,
                buffer: Some(Vec::new()),
            }),
        }
    }

    /// Live chat frames in sequence order (a fan-out batch, encoded once for every
    /// connection): the ones new to this connection are written (duplicates and stale
    /// frames are dropped), or buffered while the connection catches up; one push for the
    /// lot.
    /// Returns how many frames it took.
    pub fn deliver_batch(
        &self,
        batch: &wire::Batch,
        published: Option<std::time::Instant>,
    ) -> usize {
        let mut c = self.cursor.lock().expect("cursor lock");
        let from = c.last_seq;
        if let Some(buf) = c.buffer.as_mut() {
            let held_seq = buf.iter().rev().find_map(|(h, _)| h.chat_seq());
            let new = batch.tail(held_seq.unwrap_or(from));
            if buf.len() + new.len() > MAX_CATCH_UP_BUFFER {
                drop(c);
                self.queue.close(super::queue::CloseReason {
                    code: close_code::SLOW_CONSUMER,
                    reason: "slow_consumer",
                });
                return 0;
            }
            buf.extend(new.frames().map(|(s, f)| (Held::Chat(s), f)));
            return new.len();
        }
        let (bytes, n) = batch.after(from);
        if n == 0 {
            return 0;
        }
        c.last_seq = batch.last_key().unwrap_or(from);
        drop(c);
        let _ = self.queue.push_wire(bytes, n, published);
        n
    }

    /// A non-chat event (state, viewers, deleted), encoded: queued, or held back in order
    /// while the connection catches up (so `welcome` is always the first frame). A `state`
    /// frame comes with its version and is dropped if the connection already has it.
    pub fn push_event(
        &self,
        frame: &Bytes,
        state_version: Option<u64>,
    ) -> Result<(), super::queue::PushError> {
        let mut c = self.cursor.lock().expect("cursor lock");
        if let Some(buf) = c.buffer.as_mut() {
            if buf.len() < MAX_CATCH_UP_BUFFER {
                let held = state_version.map_or(Held::Event, Held::State);
                buf.push((held, frame.clone()));
            }
            return Ok(());
        }
        if let Some(v) = state_version {
            if v <= c.state_version {
                return Ok(());
            }
            c.state_version = v;
        }
        drop(c);
        self.queue.push_wire(frame.clone(), 1, None)
    }

    /// The lifecycle version the connection's `welcome` states: `state` frames at or below
    /// it are not sent after it.
    pub fn set_state_version(&self, version: u64) {
        let mut c = self.cursor.lock().expect("cursor lock");
        c.state_version = c.state_version.max(version);
    }

    /// Starts holding live chat frames back (before reading history).
    pub fn start_catch_up(&self) {
        let mut c = self.cursor.lock().expect("cursor lock");
        if c.buffer.is_none() {
            c.buffer = Some(Vec::new());
        }
    }

    /// Ends a catch-up: hands over everything after `since` — first `history` (ascending),
    /// then the held-back live frames — each sequence number once, in order, in one push.
    pub fn finish_catch_up(&self, since: u64, history: Vec<(u64, Utf8Bytes)>) {
        let mut c = self.cursor.lock().expect("cursor lock");
        c.last_seq = since;
        let held = c.buffer.take().unwrap_or_default();
        let mut out = BytesMut::new();
        let mut frames = 0;
        let history = history
            .into_iter()
            .map(|(s, f)| (Held::Chat(s), wire::text(&f)));
        for (held, frame) in history.chain(held) {
            match held {
                Held::Chat(seq) if seq <= c.last_seq => continue,
                Held::Chat(seq) => c.last_seq = seq,
                Held::State(v) if v <= c.state_version => continue,
                Held::State(v) => c.state_version = v,
                Held::Event => {}
            }
            out.extend_from_slice(&frame);
            frames += 1;
        }
        let _ = self.queue.push_wire(out.freeze(), frames, None);
    }
}
