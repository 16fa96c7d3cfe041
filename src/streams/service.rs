//! Streams in the shared state: creation (idempotent on a client-chosen id), lookup and
//! browsing by state with cursor pagination.
//!
//! A stream is one JSON record under `stream:{id}`. Listing uses byte-ordered indexes
//! (`streams:all`, `streams:state:{state}`) whose members sort newest first; an index is a
//! hint that the lifecycle keeps up to date, and every listed record is re-read so a stale
//! index entry never shows a stream in the wrong state.

use std::sync::Arc;

use uuid::Uuid;

use super::model::{self, Stream, StreamState, TitleError};
use crate::store::{SharedState, StoreError};

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

impl From<StreamError> for crate::http::ApiError {
    fn from(e: StreamError) -> Self {
        use crate::http::{ApiError, ErrorKind};
        match e {
            StreamError::NotFound => {
                ApiError::new(ErrorKind::NotFound, "stream_not_found", e.to_string())
            }
            StreamError::InvalidTitle(t) => {
                ApiError::new(ErrorKind::Invalid, "invalid_title", t.to_string())
            }
            StreamError::IdTaken => {
                ApiError::new(ErrorKind::Conflict, "stream_id_taken", e.to_string())
            }
            StreamError::InvalidCursor => {
                ApiError::new(ErrorKind::Invalid, "invalid_cursor", e.to_string())
            }
            StreamError::Store(s) => s.into(),
            StreamError::Corrupt(_) => ApiError::internal(e),
        }
    }
}

/// Most streams one list page returns.
pub const MAX_PAGE: usize = 100;

pub struct StreamService {
    store: Arc<dyn SharedState>,
}

pub fn record_key(id: &Uuid) -> String {
    format!("stream:{id}")
}

/// The pub/sub channel carrying a stream's events (already encoded as WebSocket frames)
/// to every node with subscribers.
pub fn events_channel(id: &Uuid) -> String {
    format!("stream:{id}:events")
}

fn state_index(state: StreamState) -> String {
    format!("streams:state:{}", state.as_str())
}

const ALL_INDEX: &str = "streams:all";

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl StreamService {
    pub fn new(store: Arc<dyn SharedState>) -> Self {
        Self { store }
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
        if !self.store.set_nx(&record_key(&id), &json, None).await? {
            let existing = self.get(&id).await?;
            if existing.owner_id != owner {
                return Err(StreamError::IdTaken);
            }
            return Ok((existing, false));
        }
        let member = model::index_member(&stream);
        self.store.index_add(ALL_INDEX, &member).await?;
        self.store
            .index_add(&state_index(StreamState::Idle), &member)
            .await?;
        tracing::info!(stream = %id, owner, "stream created");
        Ok((stream, true))
    }

    /// The stored record's bytes (for compare-and-swap) and the stream.
    pub async fn get_raw(&self, id: &Uuid) -> Result<(bytes::Bytes, Stream), StreamError> {
        let raw = self
            .store
            .get(&record_key(id))
            .await?
            .ok_or(StreamError::NotFound)?;
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
        self.store.index_add(&state_index(to), &member).await?;
        self.store.index_remove(&state_index(from), &member).await?;
        Ok(())
    }

    /// Ids of streams in `state`, newest first, all pages.
    pub async fn ids_in_state(&self, state: StreamState) -> Result<Vec<Uuid>, StreamError> {
        let mut out = Vec::new();
        let mut before: Option<String> = None;
        loop {
            let page = self
                .store
                .index_page_desc(&state_index(state), before.as_deref(), 500)
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
        let raw = self
            .store
            .get(&record_key(id))
            .await?
            .ok_or(StreamError::NotFound)?;
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
        let index = state.map_or_else(|| ALL_INDEX.to_string(), state_index);
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
