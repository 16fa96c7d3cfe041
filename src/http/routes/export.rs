//! `GET /v1/streams/{stream_id}/sessions/{session_id}/export?format=json|csv` (the owner):
//! the session summary and its chat transcript, streamed page by page (1,000 messages at a
//! time) instead of built in memory. Messages come from PostgreSQL merged with the shared
//! state's history, so messages not persisted yet are included too.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use uuid::Uuid;

use crate::http::extract::ApiQuery;
use crate::http::extract::{parse_stream_id, ApiPath};
use crate::http::AppState;
use crate::http::Authenticated;
use crate::http::{ApiError, ErrorKind};
use crate::persist::{ArchivedMessage, Persistence};
use crate::store::SharedState;

const PAGE: usize = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    pub format: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Csv,
}

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        ErrorKind::Unavailable,
        "persistence_unavailable",
        format!("the archive cannot be read now: {e}"),
    )
}

pub async fn export(
    State(app): State<AppState>,
    ApiPath((stream_id, session_id)): ApiPath<(String, String)>,
    Authenticated(who): Authenticated,
    ApiQuery(q): ApiQuery<ExportQuery>,
) -> Result<Response, ApiError> {
    let id = parse_stream_id(&stream_id)?;
    let sid = Uuid::parse_str(&session_id).map_err(|_| {
        ApiError::new(
            ErrorKind::Invalid,
            "invalid_session_id",
            "session id must be a UUID",
        )
    })?;
    let format = match q.format.as_deref().unwrap_or("json") {
        "json" => Format::Json,
        "csv" => Format::Csv,
        _ => {
            return Err(ApiError::new(
                ErrorKind::Invalid,
                "invalid_format",
                "format must be json or csv",
            ))
        }
    };
    let stream = app.streams.get(&id).await?;
    if stream.owner_id != who.user_id {
        return Err(ApiError::new(
            ErrorKind::Forbidden,
            "not_owner",
            "only the stream's owner can export its sessions",
        ));
    }
    let persist = app.persist.clone();
    // The summary and the session's chat range: from the current record, or the archive.
    let (summary, range) = match stream.session.as_ref().filter(|s| s.id == sid) {
        Some(sess) => {
            let summary = serde_json::to_value(app.sessions.summary(&id, &sid).await?)
                .expect("summary serialises");
            let end = match sess.chat_seq_end {
                Some(e) => e,
                None => app.chat.last_seq(&id).await?,
            };
            (summary, (sess.chat_seq_start, end))
        }
        None => {
            let Some(p) = &persist else {
                return Err(session_not_found());
            };
            let row = p
                .session_export_info(&id, &sid)
                .await
                .map_err(unavailable)?
                .ok_or_else(session_not_found)?;
            row
        }
    };
    let source = Source {
        persist,
        store: app.store.clone(),
        log: crate::domain::keys::chat_log(&id),
        stream: id,
        upto: range.1,
    };
    let head = match format {
        Format::Json => {
            let mut h = String::from("{\"summary\":");
            h.push_str(&summary.to_string());
            h.push_str(",\"messages\":[");
            h
        }
        Format::Csv => "seq,id,user_id,sent_at,deleted,body\r\n".to_string(),
    };
    let body = futures_util::stream::unfold(
        Some((source, range.0, true, Some(head))),
        move |state| async move {
            let (source, after, first, head) = state?;
            if let Some(h) = head {
                return Some((Ok(Bytes::from(h)), Some((source, after, first, None))));
            }
            let page = match source.page(after).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, stream = %source.stream, "export stopped: archive unreadable");
                    return Some((Err(std::io::Error::other(e.to_string())), None));
                }
            };
            if page.is_empty() {
                return match format {
                    Format::Json => Some((Ok(Bytes::from_static(b"]}\n")), None)),
                    Format::Csv => None,
                };
            }
            let last = page.last().map_or(after, |m| m.seq);
            let mut out = String::with_capacity(page.len() * 128);
            let mut first = first;
            for m in &page {
                match format {
                    Format::Json => {
                        if !first {
                            out.push(',');
                        }
                        out.push_str(&json_row(m));
                    }
                    Format::Csv => csv_row(&mut out, m),
                }
                first = false;
            }
            Some((Ok(Bytes::from(out)), Some((source, last, first, None))))
        },
    );
    let (ctype, ext) = match format {
        Format::Json => ("application/json", "json"),
        Format::Csv => ("text/csv; charset=utf-8", "csv"),
    };
    Ok((
        [
            (header::CONTENT_TYPE, ctype.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"session-{sid}.{ext}\""),
            ),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

fn session_not_found() -> ApiError {
    ApiError::new(
        ErrorKind::NotFound,
        "session_not_found",
        "no such session of this stream",
    )
}

struct Source {
    persist: Option<Arc<Persistence>>,
    store: Arc<dyn SharedState>,
    log: String,
    stream: Uuid,
    upto: u64,
}

impl Source {
    /// The next messages after `after` (up to the session's end), oldest first: the
    /// archive's and the shared history's, merged by seq.
    async fn page(&self, after: u64) -> anyhow::Result<Vec<ArchivedMessage>> {
        if after >= self.upto {
            return Ok(Vec::new());
        }
        let mut merged: BTreeMap<u64, ArchivedMessage> = BTreeMap::new();
        let mut bound = self.upto;
        if let Some(p) = &self.persist {
            let rows = p.chat_range(&self.stream, after, self.upto, PAGE).await?;
            if rows.len() == PAGE {
                bound = bound.min(rows.last().unwrap().seq);
            }
            merged.extend(rows.into_iter().map(|m| (m.seq, m)));
        }
        let entries = self.store.log_after(&self.log, after, PAGE).await?;
        if entries.len() == PAGE {
            bound = bound.min(entries.last().unwrap().seq);
        }
        for e in entries {
            if e.seq > self.upto || merged.contains_key(&e.seq) {
                continue;
            }
            if let Ok(m) = serde_json::from_slice::<crate::domain::chat::StoredMessage>(&e.payload)
            {
                merged.insert(
                    e.seq,
                    ArchivedMessage {
                        seq: e.seq,
                        id: m.id,
                        user: m.user,
                        body: m.body,
                        client_msg_id: m.client_msg_id,
                        sent_at_ms: 0,
                        deleted: false,
                    }
                    .with_ts(&m.ts),
                );
            }
        }
        Ok(merged.into_values().filter(|m| m.seq <= bound).collect())
    }
}

impl ArchivedMessage {
    fn with_ts(mut self, ts: &str) -> Self {
        self.sent_at_ms = crate::domain::clock::parse_rfc3339_ms(ts).unwrap_or(0);
        self
    }
}

fn json_row(m: &ArchivedMessage) -> String {
    serde_json::json!({
        "seq": m.seq,
        "id": m.id,
        "user": m.user,
        "body": m.body,
        "sent_at": crate::domain::clock::rfc3339(m.sent_at_ms),
        "deleted": m.deleted,
    })
    .to_string()
}

/// RFC 4180: a field with a comma, quote, CR or LF is quoted, quotes doubled.
pub fn csv_field(out: &mut String, s: &str) {
    if s.contains([',', '"', '\r', '\n']) {
        out.push('"');
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(s);
    }
}

fn csv_row(out: &mut String, m: &ArchivedMessage) {
    use std::fmt::Write;
    let _ = write!(out, "{},{},", m.seq, m.id);
    csv_field(out, &m.user);
    out.push(',');
    out.push_str(&crate::domain::clock::rfc3339(m.sent_at_ms));
    out.push(',');
    out.push_str(if m.deleted { "true" } else { "false" });
    out.push(',');
    csv_field(out, &m.body);
    out.push_str("\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_only_what_needs_it() {
        let mut s = String::new();
        csv_field(&mut s, "plain");
        s.push('|');
        csv_field(&mut s, "a,b");
        s.push('|');
        csv_field(&mut s, "say \"hi\"");
        s.push('|');
        csv_field(&mut s, "two\nlines");
        assert_eq!(s, "plain|\"a,b\"|\"say \"\"hi\"\"\"|\"two\nlines\"");
    }
}
