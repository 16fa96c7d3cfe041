//! Applying lifecycle commands atomically in the shared state.
//!
//! Every change is read → pure [`model::apply`]/[`model::tick`] → compare-and-swap of the
//! stream record, with the `state` event published in the same atomic step. Two nodes
//! racing on one stream: exactly one swap wins, the loser re-reads and sees the result,
//! and each transition's event is published exactly once. The sweeper runs on every node
//! and relies on the same swap, so concurrent sweepers never double-transition.

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use crate::config::SessionConfig;
use crate::domain::clock::now_ms;
use crate::domain::clock::rfc3339;
use crate::domain::keys;
use crate::domain::session::{self as model, Command, NotAllowed, Outcome, Transition};
use crate::domain::SessionSummary;
use crate::protocol::ServerFrame;
use crate::store::{SharedState, StoreError};
use crate::streams::{Stream, StreamError, StreamService, StreamState};

/// Attempts before a contended stream gives up (each loser re-reads a newer record).
const MAX_ATTEMPTS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error("only the stream's seller can do this")]
    NotOwner,
    #[error("{0}")]
    NotAllowed(NotAllowed),
    #[error("too much contention on this stream; retry")]
    Contended,
    #[error("no such session")]
    SessionNotFound,
}

impl From<StoreError> for SessionError {
    fn from(e: StoreError) -> Self {
        SessionError::Stream(StreamError::Store(e))
    }
}

pub struct SessionService {
    store: Arc<dyn SharedState>,
    streams: Arc<StreamService>,
    viewers: Arc<crate::viewers::ViewerService>,
    cfg: SessionConfig,
    persist: Option<Arc<crate::persist::Persistence>>,
}

impl SessionService {
    pub fn new(
        store: Arc<dyn SharedState>,
        streams: Arc<StreamService>,
        viewers: Arc<crate::viewers::ViewerService>,
        cfg: SessionConfig,
        persist: Option<Arc<crate::persist::Persistence>>,
    ) -> Self {
        Self {
            store,
            streams,
            viewers,
            cfg,
            persist,
        }
    }

    /// Applies a seller's command. Returns the stream after it and the transition, if
    /// one happened (`None`: idempotent repeat or heartbeat bookkeeping).
    pub async fn command(
        &self,
        stream_id: &Uuid,
        user: &str,
        cmd: Command,
    ) -> Result<(Stream, Option<Transition>), SessionError> {
        let new_session = Uuid::new_v4();
        for _ in 0..MAX_ATTEMPTS {
            let (raw, stream) = self.streams.get_raw(stream_id).await?;
            if stream.owner_id != user {
                return Err(SessionError::NotOwner);
            }
            let outcome = model::apply(&stream, cmd, now_ms(), new_session)
                .map_err(SessionError::NotAllowed)?;
            let (mut next, transition) = match outcome {
                Outcome::Unchanged => return Ok((stream, None)),
                Outcome::Changed { stream, transition } => (*stream, transition),
            };
            if let Some(t) = &transition {
                self.mark_chat_seq(&mut next, t).await?;
            }
            if self.swap(&raw, &stream, &next, transition.as_ref()).await? {
                return Ok((next, transition));
            }
        }
        Err(SessionError::Contended)
    }

    /// Writes `next` over `raw` if nobody changed the record meanwhile, publishing the
    /// transition's event in the same step; then does the follow-up bookkeeping.
    async fn swap(
        &self,
        raw: &[u8],
        before: &Stream,
        next: &Stream,
        transition: Option<&Transition>,
    ) -> Result<bool, SessionError> {
        let bytes = serde_json::to_vec(next).expect("stream serialises");
        let frame = transition.map(|t| ServerFrame::transition(t).encode());
        let channel = keys::stream_events(&next.id);
        let publish = frame
            .as_ref()
            .map(|f| (channel.as_str(), f.as_str().as_bytes()));
        // Transitions are persisted: the record goes to the outbox in the same step.
        let tag = match (&self.persist, transition) {
            (Some(_), Some(_)) => Some(crate::persist::records::tag(
                crate::persist::records::STREAM,
                &next.id,
            )),
            _ => None,
        };
        let swapped = self
            .store
            .compare_and_swap(
                &keys::stream_record(&next.id),
                raw,
                &bytes,
                None,
                publish,
                tag.as_ref(),
            )
            .await?;
        if !swapped {
            return Ok(false);
        }
        if tag.is_some() {
            crate::persist::queued(crate::persist::records::STREAM);
        }
        if let Some(t) = transition {
            metrics::counter!(
                "streamedge_session_transitions_total",
                "kind" => t.kind.clone(),
                "cause" => t.cause.as_str(),
            )
            .increment(1);
            tracing::info!(
                stream = %t.stream,
                session = %t.session_id,
                from = t.from.as_str(),
                to = t.to.as_str(),
                kind = %t.kind,
                cause = t.cause.as_str(),
                version = t.version,
                "session transition"
            );
            if t.kind == "start" {
                if let Err(e) = self.viewers.session_started(next).await {
                    tracing::warn!(error = %e, stream = %next.id, "viewers not added to the new session");
                }
            }
            if let Err(e) = self.streams.reindex(next, before.state, next.state).await {
                tracing::warn!(error = %e, stream = %next.id, "state index not updated; lists will skip it");
            }
            if t.to == StreamState::Ended {
                if let Err(e) = self.store_summary(next).await {
                    tracing::warn!(error = %e, stream = %next.id, "session summary not stored; it is computed on demand");
                }
            }
        }
        Ok(true)
    }

    /// Records the chat position at a session's start and end (for its message count).
    async fn mark_chat_seq(&self, next: &mut Stream, t: &Transition) -> Result<(), StoreError> {
        if t.kind != "start" && t.to != StreamState::Ended {
            return Ok(());
        }
        let seq = self
            .store
            .log_last_seq(&crate::domain::keys::chat_log(&next.id))
            .await?;
        if let Some(sess) = next.session.as_mut() {
            if t.kind == "start" {
                sess.chat_seq_start = seq;
            } else {
                sess.chat_seq_end = Some(seq);
            }
        }
        Ok(())
    }

    /// The summary of one of the stream's sessions: stored when it ended, or computed
    /// from the current record.
    pub async fn summary(
        &self,
        stream_id: &Uuid,
        session_id: &Uuid,
    ) -> Result<SessionSummary, SessionError> {
        if let Some(raw) = self
            .store
            .get(&keys::session_summary(stream_id, session_id))
            .await?
        {
            if let Ok(s) = serde_json::from_slice(&raw) {
                return Ok(s);
            }
        }
        let stream = self.streams.get(stream_id).await?;
        match &stream.session {
            Some(s) if s.id == *session_id => Ok(self.compute_summary(&stream).await?),
            _ => Err(SessionError::SessionNotFound),
        }
    }

    async fn compute_summary(&self, stream: &Stream) -> Result<SessionSummary, StoreError> {
        let sess = stream.session.as_ref().expect("a session");
        let now = now_ms();
        let (live_ms, paused_ms) = sess.times(now);
        let end = sess.ended_at_ms.unwrap_or(now);
        let peak = self
            .store
            .get(&keys::session_peak(&stream.id, &sess.id))
            .await?
            .and_then(|b| std::str::from_utf8(&b).ok().and_then(|s| s.parse().ok()))
            .unwrap_or(0);
        let unique = self
            .store
            .distinct_count(&keys::session_unique(&stream.id, &sess.id))
            .await?;
        Ok(SessionSummary {
            stream_id: stream.id,
            session_id: sess.id,
            state: stream.state,
            started_at: rfc3339(sess.started_at_ms),
            ended_at: sess.ended_at_ms.map(rfc3339),
            end_reason: sess.end_reason,
            duration_ms: end.saturating_sub(sess.started_at_ms),
            live_ms,
            paused_ms,
            peak_viewers: peak,
            unique_viewers: unique,
            chat_messages: Some(
                sess.chat_seq_end
                    .map_or(
                        self.store
                            .log_last_seq(&crate::domain::keys::chat_log(&stream.id))
                            .await?,
                        |e| e,
                    )
                    .saturating_sub(sess.chat_seq_start),
            ),
        })
    }

    async fn store_summary(&self, stream: &Stream) -> Result<(), StoreError> {
        let summary = self.compute_summary(stream).await?;
        let sess = stream.session.as_ref().expect("a session");
        let json = serde_json::to_vec(&summary).expect("summary serialises");
        self.store
            .set(
                &keys::session_summary(&stream.id, &sess.id),
                &json,
                Some(self.cfg.summary_ttl),
            )
            .await?;
        if let Some(p) = &self.persist {
            let rec = crate::persist::records::SummaryRecord {
                owner_id: stream.owner_id.clone(),
                summary,
            };
            p.record(
                &crate::persist::records::tag(crate::persist::records::SESSION_SUMMARY, &stream.id),
                &serde_json::to_vec(&rec).expect("summary serialises"),
            )
            .await?;
        }
        Ok(())
    }

    /// Checks every live and paused stream's timeouts once. Returns the transitions made
    /// by this node.
    pub async fn sweep_once(&self) -> Result<usize, SessionError> {
        let hb = self.cfg.heartbeat_timeout.as_millis() as u64;
        let pause = self.cfg.pause_timeout.as_millis() as u64;
        let mut made = 0;
        for state in [StreamState::Live, StreamState::Paused] {
            let ids = self.streams.ids_in_state(state).await?;
            let gauge = if state == StreamState::Live {
                "streamedge_live_sessions"
            } else {
                "streamedge_paused_sessions"
            };
            metrics::gauge!(gauge).set(ids.len() as f64);
            for id in ids {
                let (raw, stream) = match self.streams.get_raw(&id).await {
                    Ok(x) => x,
                    Err(StreamError::NotFound) => continue,
                    Err(e) => return Err(e.into()),
                };
                if let Some((mut next, t)) = model::tick(&stream, now_ms(), hb, pause) {
                    self.mark_chat_seq(&mut next, &t).await?;
                    // Losing the swap means another node (or the seller) got there first.
                    if self.swap(&raw, &stream, &next, Some(&t)).await? {
                        made += 1;
                    }
                }
            }
        }
        Ok(made)
    }
}

/// Runs the sweeper until `stop` is cancelled.
pub async fn run_sweeper(
    service: Arc<SessionService>,
    every: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut ticker = crate::periodic::Ticker::new(every, stop);
    while ticker.next().await {
        metrics::counter!("streamedge_session_sweeps_total").increment(1);
        match service.sweep_once().await {
            Ok(_) => {}
            Err(e) => {
                metrics::counter!("streamedge_session_sweep_errors_total").increment(1);
                tracing::debug!(error = %e, "session sweep failed");
            }
        }
    }
}
