//! Sending and reading chat: every message is sequenced by one atomic append to the
//! stream's log in the shared state, which also publishes it to every node and records its
//! `client_msg_id` for idempotent retries.

use std::sync::Arc;

use uuid::Uuid;

use crate::auth::Principal;
use crate::config::ChatConfig;
use crate::domain::chat::{self as model, Rejected, StoredMessage};
use crate::domain::clock::now_ms;
use crate::domain::clock::rfc3339;
use crate::domain::keys;
use crate::moderation::ModerationService;
use crate::persist::{records, Persistence};
use crate::store::{AppendOptions, LogEntry, SharedState, StoreError};
use crate::streams::{StreamError, StreamService, StreamState};

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("{0}")]
    Rejected(Rejected),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<Rejected> for ChatError {
    fn from(r: Rejected) -> Self {
        ChatError::Rejected(r)
    }
}

impl From<StreamError> for ChatError {
    fn from(e: StreamError) -> Self {
        match e {
            StreamError::NotFound => Rejected {
                code: "stream_not_found",
                message: "no such stream".into(),
            }
            .into(),
            StreamError::Store(s) => ChatError::Store(s),
            other => ChatError::Store(StoreError::Backend(other.to_string())),
        }
    }
}

pub struct ChatService {
    store: Arc<dyn SharedState>,
    streams: Arc<StreamService>,
    moderation: Arc<ModerationService>,
    cfg: ChatConfig,
    persist: Option<Arc<Persistence>>,
}

impl ChatService {
    pub fn new(
        store: Arc<dyn SharedState>,
        streams: Arc<StreamService>,
        moderation: Arc<ModerationService>,
        cfg: ChatConfig,
        persist: Option<Arc<Persistence>>,
    ) -> Self {
        Self {
            store,
            streams,
            moderation,
            cfg,
            persist,
        }
    }

    pub fn config(&self) -> &ChatConfig {
        &self.cfg
    }

    /// Sequences a message; returns its `seq` (the original one for a repeated
    /// `client_msg_id`).
    pub async fn send(
        &self,
        stream: &Uuid,
        who: &Principal,
        client_msg_id: &str,
        body: &str,
    ) -> Result<u64, ChatError> {
        model::validate_client_msg_id(client_msg_id)?;
        let body = model::validate_body(body, self.cfg.max_chars)?;
        if who.anonymous {
            return Err(Rejected {
                code: "forbidden",
                message: "anonymous viewers cannot chat".into(),
            }
            .into());
        }
        // The checks' reads go to the shared state together (one round trip's wait on
        // Redis instead of four); their verdicts are then taken in order.
        let limit_key = keys::chat_rate(stream, &who.user_id);
        let rate = async {
            if self.cfg.user_per_sec > 0.0 {
                self.store
                    .rate_limit(&limit_key, self.cfg.user_per_sec, self.cfg.user_burst)
                    .await
                    .map(Some)
            } else {
                Ok(None)
            }
        };
        let (s, banned, slow_secs, rate) = tokio::join!(
            self.streams.get(stream),
            self.moderation.ban_active(stream, &who.user_id),
            self.moderation.slow_mode_secs(stream),
            rate
        );
        let s = s?;
        if s.state == StreamState::Ended {
            return Err(Rejected {
                code: "stream_ended",
                message: "the stream has ended".into(),
            }
            .into());
        }
        let (banned, slow_secs, rate) = (banned?, slow_secs?, rate?);
        if s.owner_id != who.user_id && banned {
            return Err(Rejected {
                code: "banned",
                message: "you are banned from this stream's chat".into(),
            }
            .into());
        }
        let secs = slow_secs;
        if s.owner_id != who.user_id
            && secs > 0
            && !self
                .store
                .set_nx(
                    &keys::slow_mode_user(stream, &who.user_id),
                    b"1",
                    Some(std::time::Duration::from_secs(secs)),
                )
                .await?
        {
            return Err(Rejected {
                code: "slow_mode",
                message: format!("slow mode: one message every {secs} s"),
            }
            .into());
        }
        if let Some(d) = rate {
            if !d.allowed {
                metrics::counter!("streamedge_chat_rejected_total", "code" => "rate_limited")
                    .increment(1);
                return Err(Rejected {
                    code: "rate_limited",
                    message: format!(
                        "too many messages; retry in {} ms",
                        d.retry_after.as_millis().max(1)
                    ),
                }
                .into());
            }
        }
        if let Some(p) = &self.persist {
            if !p.accepting() {
                metrics::counter!("streamedge_chat_rejected_total", "code" => "persistence_backlog")
                    .increment(1);
                return Err(Rejected {
                    code: "persistence_backlog",
                    message: "chat is paused while the archive catches up; retry shortly".into(),
                }
                .into());
            }
        }
        let msg = StoredMessage {
            id: Uuid::new_v4(),
            user: who.user_id.clone(),
            body,
            ts: rfc3339(now_ms()),
            client_msg_id: client_msg_id.to_string(),
        };
        let payload = serde_json::to_vec(&msg).expect("message serialises");
        let seq = self
            .store
            .log_append(
                &keys::chat_log(stream),
                &payload,
                &AppendOptions {
                    max_len: self.cfg.history_size,
                    ttl: Some(self.cfg.history_ttl),
                    publish: Some(keys::stream_events(stream)),
                    once: Some((
                        keys::chat_sent(stream, &who.user_id, client_msg_id),
                        self.cfg.idempotency_window,
                    )),
                    outbox: self
                        .persist
                        .as_ref()
                        .map(|_| records::tag(records::CHAT, stream)),
                    // Numbering never restarts, also after the history expires.
                    keep_seq: true,
                },
            )
            .await?;
        metrics::counter!("streamedge_chat_messages_in_total").increment(1);
        if self.persist.is_some() {
            crate::persist::queued(records::CHAT);
        }
        Ok(seq)
    }

    /// Messages after `since`, oldest first (at most the history size).
    pub async fn after(&self, stream: &Uuid, since: u64) -> Result<Vec<LogEntry>, StoreError> {
        self.store
            .log_after(&keys::chat_log(stream), since, self.cfg.history_size)
            .await
    }

    /// Messages before `before`, newest first: from the shared history, continued from
    /// PostgreSQL (persistence on) where the history ends.
    pub async fn before(
        &self,
        stream: &Uuid,
        before: u64,
        limit: usize,
    ) -> Result<Vec<LogEntry>, StoreError> {
        let mut out = self
            .store
            .log_before(&keys::chat_log(stream), before, limit)
            .await?;
        if let (Some(p), true) = (&self.persist, out.len() < limit) {
            let from = out.last().map_or(before, |e| e.seq);
            if from > 1 {
                let older = p
                    .chat_before(stream, from, limit - out.len())
                    .await
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?;
                out.extend(older.iter().map(|m| m.log_entry()));
            }
        }
        Ok(out)
    }

    pub async fn last_seq(&self, stream: &Uuid) -> Result<u64, StoreError> {
        self.store.log_last_seq(&keys::chat_log(stream)).await
    }
}
