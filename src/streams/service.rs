//! Streams in the shared state: creation (idempotent on a client-chosen id), lookup and
//! browsing by state with cursor pagination.
//!
//! A stream is one JSON record under `stream:{id}`. Listing uses byte-ordered indexes
//! (`streams:all`, `streams:state:{state}`) whose members sort newest first; an index is a
//! hint that the lifecycle keeps up to date, and every listed record is re-read so a stale
//! index entry never shows a stream in the wrong state.

use std::sync::Arc;

use uuid::Uuid;

use std::time::Duration;

use crate::config::ChatConfig;
use crate::domain::clock::now_ms;
use crate::domain::keys;
use crate::domain::stream::{self as model, Stream, StreamState, TitleError};
use crate::persist::{records, Persistence};
use crate::store::{AppendOptions, LogEntry, SharedState, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("no such stream")]
    NotFound,
    #[error("invalid title: {0}")]
    InvalidTitle(#[from] TitleError),
    #[error("a stream with this id belongs to another seller")]
    IdTaken,
    #[error("invalid cursor")]
    InvalidCursor,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored stream record is unreadable: {0}")]
    Corrupt(String),
}

/// Most streams one list page returns.
pub const MAX_PAGE: usize = 100;

pub struct StreamService {
    store: Arc<dyn SharedState>,
    persist: Option<Arc<Persistence>>,
    chat: ChatConfig,
}

/// How long a stream id that neither the shared state nor PostgreSQL knows is remembered
/// as unknown, so lookups of made-up ids do not each cost a query.
const RESTORE_MISS_TTL: Duration = Duration::from_secs(10);

impl StreamService {
    pub fn new(store: Arc<dyn SharedState>) -> Self {
        Self {
            store,
            persist: None,
            chat: ChatConfig::default(),
        }
    }

    /// A service that records streams for persistence and restores them from it.
    pub fn with_persistence(
        store: Arc<dyn SharedState>,
        persist: Option<Arc<Persistence>>,
        chat: ChatConfig,
    ) -> Self {
        Self {
            store,
            persist,
            chat,
        }
    }

    /// Adds the stream's record to the outbox (persistence on).
    async fn record(&self, stream: &Stream) -> Result<(), StreamError> {
        if let Some(p) = &self.persist {
            let json = serde_json::to_vec(stream).expect("stream serialises");
            p.record(&records::tag(records::STREAM, &stream.id), &json)
                .await?;
        }
        Ok(())
    }

    /// The record under `stream:{id}`, rebuilt from PostgreSQL when the shared state lost
    /// it (persistence on, `persist.restore`).
    async fn fetch(&self, id: &Uuid) -> Result<Option<bytes::Bytes>, StreamError> {
        if let Some(raw) = self.store.get(&keys::stream_record(id)).await? {
            return Ok(Some(raw));
        }
        match &self.persist {
            Some(p) if p.config().restore => {
                if self.restore(p, id).await? {
                    Ok(self.store.get(&keys::stream_record(id)).await?)
                } else {
                    Ok(None)
                }
            }
            _ => Ok(None),
        }
    }

    /// Rebuilds a stream the shared state no longer has: its chat history (the last
    /// `chat.history_size` messages, the sequence continuing after the highest persisted
    /// one), its bans, then the record itself and its index entries — in that order, so
    /// nobody can send a message before the sequence is restored.
    async fn restore(&self, p: &Persistence, id: &Uuid) -> Result<bool, StreamError> {
        let miss_key = keys::stream_restore_miss(id);
        if self.store.get(&miss_key).await?.is_some() {
            return Ok(false);
        }
        let unavailable = |e: crate::persist::ReadError| StoreError::Unavailable(e.to_string());
        let Some(record) = p.stream_record(id).await.map_err(unavailable)? else {
            self.store
                .set(&miss_key, b"1", Some(RESTORE_MISS_TTL))
                .await?;
            return Ok(false);
        };
        let stream: Stream =
            serde_json::from_str(&record).map_err(|e| StreamError::Corrupt(e.to_string()))?;
        let max_seq = p.chat_max_seq(id).await.map_err(unavailable)?;
        let mut tail: Vec<LogEntry> = p
            .chat_before(id, u64::MAX, self.chat.history_size)
            .await
            .map_err(unavailable)?
            .iter()
            .map(|m| m.log_entry())
            .collect();
        tail.reverse();
        self.store
            .log_restore(
                &keys::chat_log(id),
                &tail,
                max_seq,
                &AppendOptions {
                    max_len: self.chat.history_size,
                    ttl: Some(self.chat.history_ttl),
                    keep_seq: true,
                    ..Default::default()
                },
            )
            .await?;
        let bans = p.active_bans(id).await.map_err(unavailable)?;
        for (user, left) in &bans {
            self.store.set_nx(&keys::ban(id, user), b"1", *left).await?;
        }
        if self
            .store
            .set_nx(&keys::stream_record(id), record.as_bytes(), None)
            .await?
        {
            let member = model::index_member(&stream);
            self.store.index_add(keys::STREAMS_ALL, &member).await?;
            self.store
                .index_add(&keys::streams_in_state(stream.state), &member)
                .await?;
            metrics::counter!("streamedge_persist_restored_streams_total").increment(1);
            tracing::info!(
                stream = %id,
                messages = tail.len(),
                last_seq = max_seq,
                bans = bans.len(),
                "stream restored from PostgreSQL"
            );
        }
        Ok(true)
    }

    /// Creates a stream owned by `owner`. With a client-chosen `id`, repeating the call
    /// returns the existing stream (`created == false`) instead of creating another.
    pub async fn create(
        &self,
        owner: &str,
        title: &str,
        id: Option<Uuid>,
    ) -> Result<(Stream, bool), StreamError> {
        let title = model::validate_title(title)?;
        let id = id.unwrap_or_else(Uuid::new_v4);
        let now = now_ms();
        let stream = Stream {
            id,
            owner_id: owner.to_string(),
            title,
            state: StreamState::Idle,
            created_at_ms: now,
            updated_at_ms: now,
            session: None,
            version: 0,
        };
        let json = serde_json::to_vec(&stream).expect("stream serialises");
        if !self
            .store
            .set_nx(&keys::stream_record(&id), &json, None)
            .await?
        {
            let existing = self.get(&id).await?;
            if existing.owner_id != owner {
                return Err(StreamError::IdTaken);
            }
            // The first call may have stopped before recording it: recording twice is
            // harmless.
            if existing.version == 0 {
                self.record(&existing).await?;
            }
            return Ok((existing, false));
        }
        self.record(&stream).await?;
        let member = model::index_member(&stream);
        self.store.index_add(keys::STREAMS_ALL, &member).await?;
        self.store
            .index_add(&keys::streams_in_state(StreamState::Idle), &member)
            .await?;
        tracing::info!(stream = %id, owner, "stream created");
        Ok((stream, true))
    }

    /// The stored record's bytes (for compare-and-swap) and the stream.
    pub async fn get_raw(&self, id: &Uuid) -> Result<(bytes::Bytes, Stream), StreamError> {
        let raw = self.fetch(id).await?.ok_or(StreamError::NotFound)?;
        let s = serde_json::from_slice(&raw).map_err(|e| StreamError::Corrupt(e.to_string()))?;
        Ok((raw, s))
    }

    /// Moves a stream between the state indexes after a transition.
    pub async fn reindex(
        &self,
        stream: &Stream,
        from: StreamState,
        to: StreamState,
    ) -> Result<(), StreamError> {
        let member = model::index_member(stream);
        self.store
            .index_add(&keys::streams_in_state(to), &member)
            .await?;
        self.store
            .index_remove(&keys::streams_in_state(from), &member)
            .await?;
        Ok(())
    }

    /// Ids of streams in `state`, newest first, all pages.
    pub async fn ids_in_state(&self, state: StreamState) -> Result<Vec<Uuid>, StreamError> {
        let mut out = Vec::new();
        let mut before: Option<String> = None;
        loop {
            let page = self
                .store
                .index_page_desc(&keys::streams_in_state(state), before.as_deref(), 500)
                .await?;
            let done = page.len() < 500;
            out.extend(page.iter().filter_map(|m| model::id_from_member(m)));
            before = page.last().cloned();
            if done {
                return Ok(out);
            }
        }
    }

    pub async fn get(&self, id: &Uuid) -> Result<Stream, StreamError> {
        let raw = self.fetch(id).await?.ok_or(StreamError::NotFound)?;
        serde_json::from_slice(&raw).map_err(|e| StreamError::Corrupt(e.to_string()))
    }

    /// A page of streams, newest first, optionally only in `state`. Returns the page and
    /// the cursor of the next one.
    pub async fn list(
        &self,
        state: Option<StreamState>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<(Vec<Stream>, Option<String>), StreamError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let mut before = match cursor {
            Some(c) => Some(model::decode_cursor(c).ok_or(StreamError::InvalidCursor)?),
            None => None,
        };
        let index = state.map_or_else(|| keys::STREAMS_ALL.to_string(), keys::streams_in_state);
        let mut out = Vec::with_capacity(limit);
        // Stale entries are skipped, so a page may take more than one read.
        loop {
            let members = self
                .store
                .index_page_desc(&index, before.as_deref(), limit + 1)
                .await?;
            let exhausted = members.len() <= limit;
            for m in &members {
                if out.len() == limit {
                    let next = before.as_deref().map(model::encode_cursor);
                    return Ok((out, next));
                }
                before = Some(m.clone());
                let Some(id) = model::id_from_member(m) else {
                    continue;
                };
                match self.get(&id).await {
                    Ok(s) if state.is_none_or(|st| s.state == st) => out.push(s),
                    Ok(_) | Err(StreamError::NotFound) => {}
                    Err(e) => return Err(e),
                }
            }
            if exhausted {
                return Ok((out, None));
            }
        }
    }
}
