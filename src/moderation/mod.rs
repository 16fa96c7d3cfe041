//! Who may do what to a stream: the seller's ownership, bans and timeouts (checked by the
//! chat, the RTC-token and the media paths), slow mode, and deleting a message (gone from
//! history and resumed feeds, a `deleted` event everywhere). Every action is recorded for
//! persistence.

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use crate::domain::chat::StoredMessage;
use crate::domain::keys;
use crate::domain::Stream;
use crate::persist::records::{self, ModerationRecord};
use crate::persist::Persistence;
use crate::protocol::ServerFrame;
use crate::store::{SharedState, StoreError};
use crate::streams::{StreamError, StreamService};

/// Longest timeout; longer means a permanent ban.
pub const MAX_TIMEOUT_SECS: u64 = 30 * 24 * 3600;
/// Longest slow-mode interval.
pub const MAX_SLOW_MODE_SECS: u64 = 3600;

#[derive(Debug, thiserror::Error)]
pub enum ModerationError {
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// Only the seller may do this; the text names what ("moderate its chat").
    #[error("only the stream's seller can {0}")]
    NotOwner(&'static str),
    #[error("you are banned from this stream")]
    Banned,
    #[error("{0}")]
    InvalidUserId(&'static str),
    #[error("{0}")]
    InvalidSetting(String),
    #[error("no such message in the stream's history")]
    MessageNotFound,
    #[error("the user is not banned")]
    BanNotFound,
    #[error("the stream has ended")]
    Ended,
}

/// `Err(NotOwner)` unless `user` is the stream's seller; `what` completes "only the
/// stream's seller can …".
pub fn require_owner(
    stream: &Stream,
    user: &str,
    what: &'static str,
) -> Result<(), ModerationError> {
    if stream.owner_id != user {
        return Err(ModerationError::NotOwner(what));
    }
    Ok(())
}

/// `Err(Ended)` for a stream that has ended (nothing more can be published, watched or
/// issued for it).
pub fn require_not_ended(stream: &Stream) -> Result<(), ModerationError> {
    if stream.state == crate::domain::StreamState::Ended {
        return Err(ModerationError::Ended);
    }
    Ok(())
}

impl From<StoreError> for ModerationError {
    fn from(e: StoreError) -> Self {
        ModerationError::Stream(StreamError::Store(e))
    }
}

pub struct ModerationService {
    store: Arc<dyn SharedState>,
    streams: Arc<StreamService>,
    persist: Option<Arc<Persistence>>,
}

fn valid_user_id(user: &str) -> Result<(), ModerationError> {
    if !crate::domain::text::valid_user_id(user) {
        return Err(ModerationError::InvalidUserId(
            "user id must be at most 128 bytes with a visible character, and no line break, \
             control, bidirectional or tag character",
        ));
    }
    Ok(())
}

impl ModerationService {
    pub fn new(
        store: Arc<dyn SharedState>,
        streams: Arc<StreamService>,
        persist: Option<Arc<Persistence>>,
    ) -> Self {
        Self {
            store,
            streams,
            persist,
        }
    }

    /// The stream, if `user` is its seller; `what` completes "only the stream's seller
    /// can …" in the refusal.
    pub async fn owned(
        &self,
        stream: &Uuid,
        user: &str,
        what: &'static str,
    ) -> Result<Stream, ModerationError> {
        let s = self.streams.get(stream).await?;
        require_owner(&s, user, what)?;
        Ok(s)
    }

    /// Whether `user` is banned (or timed out) from the stream. The seller never is.
    pub async fn is_banned(&self, stream: &Stream, user: &str) -> Result<bool, StoreError> {
        if stream.owner_id == user {
            return Ok(false);
        }
        self.ban_active(&stream.id, user).await
    }

    /// Whether a ban or timeout of `user` is in force (whoever the seller is: callers that
    /// read the stream at the same time apply the seller's exemption themselves).
    pub async fn ban_active(&self, stream: &Uuid, user: &str) -> Result<bool, StoreError> {
        Ok(self.store.get(&keys::ban(stream, user)).await?.is_some())
    }

    /// `Err(Banned)` for a banned user.
    pub async fn check_not_banned(
        &self,
        stream: &Stream,
        user: &str,
    ) -> Result<(), ModerationError> {
        if self.is_banned(stream, user).await? {
            return Err(ModerationError::Banned);
        }
        Ok(())
    }

    /// The stream's slow-mode interval in seconds (0: off).
    pub async fn slow_mode_secs(&self, stream: &Uuid) -> Result<u64, StoreError> {
        Ok(self
            .store
            .get(&keys::slow_mode(stream))
            .await?
            .and_then(|raw| std::str::from_utf8(&raw).ok().and_then(|s| s.parse().ok()))
            .unwrap_or(0))
    }

    /// Adds a moderation action to the outbox (persistence on).
    async fn record(&self, rec: &ModerationRecord) -> Result<(), StoreError> {
        if let Some(p) = &self.persist {
            p.record(
                &records::tag(records::MODERATION, &rec.stream_id),
                &serde_json::to_vec(rec).expect("record serialises"),
            )
            .await?;
        }
        Ok(())
    }

    /// Deletes message `seq` (by the seller `by`): from the shared history, from the
    /// archive when it is older than that, and announced to every viewer.
    pub async fn delete_message(
        &self,
        id: &Uuid,
        by: &str,
        seq: u64,
    ) -> Result<(), ModerationError> {
        self.owned(id, by, "moderate its chat").await?;
        let log = keys::chat_log(id);
        let message: Option<StoredMessage> = self
            .store
            .log_after(&log, seq.saturating_sub(1), 1)
            .await?
            .into_iter()
            .find(|e| e.seq == seq)
            .and_then(|e| serde_json::from_slice(&e.payload).ok());
        let removed = self.store.log_remove(&log, seq).await?;
        // Older than the shared history: it may still be in the archive.
        let archived = match (&self.persist, removed) {
            (Some(p), false) => p
                .chat_range(id, seq.saturating_sub(1), seq, 1)
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))?
                .iter()
                .any(|m| !m.deleted),
            _ => false,
        };
        if !removed && !archived {
            return Err(ModerationError::MessageNotFound);
        }
        let mut rec = ModerationRecord::new(*id, by, by, "delete_message");
        rec.target_seq = Some(seq);
        rec.target_user_id = message.as_ref().map(|m| m.user.clone());
        rec.message = message;
        self.record(&rec).await?;
        let frame = ServerFrame::Deleted { stream: *id, seq }.encode();
        self.store
            .publish(
                &keys::stream_events(id),
                bytes::Bytes::copy_from_slice(frame.as_str().as_bytes()),
            )
            .await?;
        metrics::counter!("streamedge_chat_moderation_total", "action" => "delete").increment(1);
        tracing::info!(stream = %id, seq, by, "message deleted");
        Ok(())
    }

    /// Bans `user` (for `duration_secs`, or until lifted).
    pub async fn ban(
        &self,
        id: &Uuid,
        by: &str,
        user: &str,
        duration_secs: Option<u64>,
    ) -> Result<(), ModerationError> {
        self.owned(id, by, "moderate its chat").await?;
        valid_user_id(user)?;
        if user == by {
            return Err(ModerationError::InvalidUserId(
                "sellers cannot ban themselves",
            ));
        }
        if let Some(d) = duration_secs {
            if !(1..=MAX_TIMEOUT_SECS).contains(&d) {
                return Err(ModerationError::InvalidSetting(format!(
                    "duration_secs must be between 1 and {MAX_TIMEOUT_SECS}"
                )));
            }
        }
        self.store
            .set(
                &keys::ban(id, user),
                b"1",
                duration_secs.map(Duration::from_secs),
            )
            .await?;
        let mut rec = ModerationRecord::new(*id, by, by, "ban");
        rec.target_user_id = Some(user.to_string());
        rec.expires_at_ms = duration_secs.map(|d| rec.created_at_ms + d * 1000);
        self.record(&rec).await?;
        metrics::counter!("streamedge_chat_moderation_total", "action" => "ban").increment(1);
        tracing::info!(stream = %id, user, ?duration_secs, by, "user banned");
        Ok(())
    }

    /// Lifts a ban or timeout.
    pub async fn unban(&self, id: &Uuid, by: &str, user: &str) -> Result<(), ModerationError> {
        self.owned(id, by, "moderate its chat").await?;
        valid_user_id(user)?;
        if !self.store.delete(&keys::ban(id, user)).await? {
            return Err(ModerationError::BanNotFound);
        }
        let mut rec = ModerationRecord::new(*id, by, by, "unban");
        rec.target_user_id = Some(user.to_string());
        self.record(&rec).await?;
        metrics::counter!("streamedge_chat_moderation_total", "action" => "unban").increment(1);
        Ok(())
    }

    /// Sets slow mode (0 turns it off).
    pub async fn set_slow_mode(
        &self,
        id: &Uuid,
        by: &str,
        secs: u64,
    ) -> Result<(), ModerationError> {
        self.owned(id, by, "moderate its chat").await?;
        if secs > MAX_SLOW_MODE_SECS {
            return Err(ModerationError::InvalidSetting(format!(
                "slow_mode_secs must be at most {MAX_SLOW_MODE_SECS}"
            )));
        }
        let mut rec = ModerationRecord::new(*id, by, by, "slow_mode");
        rec.detail = serde_json::json!({"slow_mode_secs": secs});
        self.record(&rec).await?;
        if secs == 0 {
            self.store.delete(&keys::slow_mode(id)).await?;
        } else {
            self.store
                .set(&keys::slow_mode(id), secs.to_string().as_bytes(), None)
                .await?;
        }
        Ok(())
    }
}
