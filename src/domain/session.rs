//! The session lifecycle as a pure state machine: idle → live → paused ⇄ live → ended,
//! with seller heartbeats, auto-pause when they stop and auto-end after a long pause.
//! Time is passed in (Unix milliseconds); nothing here does I/O.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use super::stream::{Cause, Session};
use super::stream::{Stream, StreamState};

/// What the seller (or the node on their behalf) asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Start,
    Pause,
    Resume,
    End,
    Heartbeat,
}

impl Command {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "start" => Command::Start,
            "pause" => Command::Pause,
            "resume" => Command::Resume,
            "end" => Command::End,
            "heartbeat" => Command::Heartbeat,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Start => "start",
            Command::Pause => "pause",
            Command::Resume => "resume",
            Command::End => "end",
            Command::Heartbeat => "heartbeat",
        }
    }
}

/// A state change, as broadcast to every subscriber of the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub stream: Uuid,
    pub session_id: Uuid,
    pub from: StreamState,
    pub to: StreamState,
    /// `start`, `pause`, `resume`, `end`, `auto_pause`, `auto_resume`, `auto_end`.
    pub kind: String,
    pub cause: Cause,
    pub at_ms: u64,
    /// The stream's transition counter after this one: 1, 2, 3, … with no gaps.
    pub version: u64,
}

/// The result of applying a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to change (e.g. `start` on a live stream): idempotent.
    Unchanged,
    /// The record changes; `transition` is `None` for bookkeeping (heartbeats).
    Changed {
        stream: Box<Stream>,
        transition: Option<Transition>,
    },
}

/// A command that the current state does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {command} a stream that is {state}")]
pub struct NotAllowed {
    pub command: &'static str,
    pub state: &'static str,
}

fn changed(mut s: Stream, to: StreamState, kind: &str, cause: Cause, now_ms: u64) -> Outcome {
    let from = s.state;
    s.state = to;
    s.version += 1;
    s.updated_at_ms = now_ms;
    let session_id = s.session.as_ref().map(|x| x.id).unwrap_or_default();
    let t = Transition {
        stream: s.id,
        session_id,
        from,
        to,
        kind: kind.to_string(),
        cause,
        at_ms: now_ms,
        version: s.version,
    };
    Outcome::Changed {
        stream: Box::new(s),
        transition: Some(t),
    }
}

fn go_live(sess: &mut Session, now_ms: u64) {
    if let Some(p) = sess.paused_at_ms.take() {
        sess.paused_ms += now_ms.saturating_sub(p);
    }
    sess.pause_reason = None;
    sess.live_since_ms = Some(now_ms);
    sess.last_heartbeat_ms = now_ms;
}

fn go_paused(sess: &mut Session, now_ms: u64, reason: Cause) {
    if let Some(l) = sess.live_since_ms.take() {
        sess.live_ms += now_ms.saturating_sub(l);
    }
    sess.paused_at_ms = Some(now_ms);
    sess.pause_reason = Some(reason);
}

fn go_ended(sess: &mut Session, now_ms: u64, reason: Cause) {
    if let Some(l) = sess.live_since_ms.take() {
        sess.live_ms += now_ms.saturating_sub(l);
    }
    if let Some(p) = sess.paused_at_ms.take() {
        sess.paused_ms += now_ms.saturating_sub(p);
    }
    sess.pause_reason = None;
    sess.ended_at_ms = Some(now_ms);
    sess.end_reason = Some(reason);
}

/// Applies a seller command at `now_ms`. `new_session` is the id a `start` uses.
pub fn apply(
    stream: &Stream,
    cmd: Command,
    now_ms: u64,
    new_session: Uuid,
) -> Result<Outcome, NotAllowed> {
    use StreamState::*;
    let not_allowed = || NotAllowed {
        command: cmd.as_str(),
        state: stream.state.as_str(),
    };
    let mut s = stream.clone();
    match (stream.state, cmd) {
        (Idle | Ended, Command::Start) => {
            s.session = Some(Session {
                id: new_session,
                started_at_ms: now_ms,
                live_since_ms: Some(now_ms),
                paused_at_ms: None,
                pause_reason: None,
                last_heartbeat_ms: now_ms,
                live_ms: 0,
                paused_ms: 0,
                ended_at_ms: None,
                end_reason: None,
                chat_seq_start: 0,
                chat_seq_end: None,
            });
            Ok(changed(s, Live, "start", Cause::Seller, now_ms))
        }
        (Live, Command::Start) | (Live, Command::Resume) | (Paused, Command::Pause) => {
            Ok(Outcome::Unchanged)
        }
        (Ended, Command::End) => Ok(Outcome::Unchanged),
        (Live, Command::Pause) => {
            go_paused(
                s.session.as_mut().ok_or_else(not_allowed)?,
                now_ms,
                Cause::Seller,
            );
            Ok(changed(s, Paused, "pause", Cause::Seller, now_ms))
        }
        (Paused, Command::Resume) => {
            go_live(s.session.as_mut().ok_or_else(not_allowed)?, now_ms);
            Ok(changed(s, Live, "resume", Cause::Seller, now_ms))
        }
        (Live | Paused, Command::End) => {
            go_ended(
                s.session.as_mut().ok_or_else(not_allowed)?,
                now_ms,
                Cause::Seller,
            );
            Ok(changed(s, Ended, "end", Cause::Seller, now_ms))
        }
        (Live, Command::Heartbeat) => {
            let sess = s.session.as_mut().ok_or_else(not_allowed)?;
            sess.last_heartbeat_ms = sess.last_heartbeat_ms.max(now_ms);
            Ok(Outcome::Changed {
                stream: Box::new(s),
                transition: None,
            })
        }
        (Paused, Command::Heartbeat) => {
            let sess = s.session.as_mut().ok_or_else(not_allowed)?;
            if sess.pause_reason == Some(Cause::SellerDisconnected) {
                go_live(sess, now_ms);
                Ok(changed(
                    s,
                    Live,
                    "auto_resume",
                    Cause::SellerReconnected,
                    now_ms,
                ))
            } else {
                sess.last_heartbeat_ms = sess.last_heartbeat_ms.max(now_ms);
                Ok(Outcome::Changed {
                    stream: Box::new(s),
                    transition: None,
                })
            }
        }
        (Paused, Command::Start)
        | (Idle, Command::Pause | Command::Resume | Command::End | Command::Heartbeat)
        | (Ended, Command::Pause | Command::Resume | Command::Heartbeat) => Err(not_allowed()),
    }
}

/// Timeouts checked by the sweeper at `now_ms`: a live session without heartbeats for
/// `heartbeat_timeout_ms` is auto-paused; a session paused for `pause_timeout_ms` is
/// auto-ended.
pub fn tick(
    stream: &Stream,
    now_ms: u64,
    heartbeat_timeout_ms: u64,
    pause_timeout_ms: u64,
) -> Option<(Stream, Transition)> {
    let mut s = stream.clone();
    let sess = s.session.as_mut()?;
    let outcome = match stream.state {
        StreamState::Live
            if now_ms.saturating_sub(sess.last_heartbeat_ms) > heartbeat_timeout_ms =>
        {
            go_paused(sess, now_ms, Cause::SellerDisconnected);
            changed(
                s,
                StreamState::Paused,
                "auto_pause",
                Cause::SellerDisconnected,
                now_ms,
            )
        }
        StreamState::Paused
            if sess
                .paused_at_ms
                .is_some_and(|p| now_ms.saturating_sub(p) > pause_timeout_ms) =>
        {
            go_ended(sess, now_ms, Cause::PauseTimeout);
            changed(
                s,
                StreamState::Ended,
                "auto_end",
                Cause::PauseTimeout,
                now_ms,
            )
        }
        _ => return None,
    };
    match outcome {
        Outcome::Changed {
            stream,
            transition: Some(t),
        } => Some((*stream, t)),
        _ => None,
    }
}

/// What is kept about a finished session.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SessionSummary {
    pub stream_id: Uuid,
    pub session_id: Uuid,
    pub state: StreamState,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub end_reason: Option<Cause>,
    pub duration_ms: u64,
    pub live_ms: u64,
    pub paused_ms: u64,
    pub peak_viewers: u64,
    pub unique_viewers: u64,
    /// Messages sequenced in the stream's chat during the session (deleted ones included).
    pub chat_messages: Option<u64>,
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
