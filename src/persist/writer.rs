//! Writes batches of outbox records to PostgreSQL: each batch is one transaction of
//! multi-row statements (`unnest` of column arrays) with `ON CONFLICT DO NOTHING` on
//! natural keys or version-guarded upserts, so writing a record twice (a retry, a record
//! taken over from a dead node) changes nothing.

use std::collections::HashMap;

use uuid::Uuid;

use super::records::{self, ModerationRecord, SummaryRecord};
use crate::domain::chat::StoredMessage;
use crate::domain::stream::Stream;
use crate::store::OutboxEntry;

/// A batch decoded into columns.
#[derive(Default)]
pub struct Batch {
    chat: ChatCols,
    /// Newest record of each stream in the batch.
    streams: HashMap<Uuid, Stream>,
    summaries: HashMap<Uuid, SummaryRecord>,
    moderation: Vec<ModerationRecord>,
    /// Records per kind, for the metrics.
    pub counts: HashMap<&'static str, u64>,
}

#[derive(Default)]
struct ChatCols {
    stream: Vec<String>,
    seq: Vec<i64>,
    id: Vec<String>,
    user: Vec<String>,
    body: Vec<String>,
    client_msg_id: Vec<String>,
    /// Unix ms (parsed here: cheaper than a text cast per row in PostgreSQL).
    sent_at: Vec<i64>,
}

/// A record that cannot be read: logged, counted and dropped (retrying cannot fix it).
#[derive(Debug)]
pub struct Undecodable {
    pub id: String,
    pub kind: String,
    pub reason: String,
}

fn kind_name(kind: &str) -> &'static str {
    match kind {
        records::CHAT => records::CHAT,
        records::STREAM => records::STREAM,
        records::SESSION_SUMMARY => records::SESSION_SUMMARY,
        records::MODERATION => records::MODERATION,
        _ => "unknown",
    }
}

impl Batch {
    /// Decodes entries; returns the batch and the records that cannot be read.
    pub fn decode(entries: &[OutboxEntry]) -> (Batch, Vec<Undecodable>) {
        let mut b = Batch::default();
        let mut bad = Vec::new();
        for e in entries {
            if let Err(reason) = b.add(e) {
                bad.push(Undecodable {
                    id: e.id.clone(),
                    kind: e.kind.clone(),
                    reason,
                });
            } else {
                *b.counts.entry(kind_name(&e.kind)).or_default() += 1;
            }
        }
        (b, bad)
    }

    fn add(&mut self, e: &OutboxEntry) -> Result<(), String> {
        match e.kind.as_str() {
            records::CHAT => {
                let stream = Uuid::parse_str(&e.scope).map_err(|err| format!("scope: {err}"))?;
                let m: StoredMessage =
                    serde_json::from_slice(&e.data).map_err(|err| err.to_string())?;
                if e.seq == 0 || e.seq > i64::MAX as u64 {
                    return Err("chat record without a sequence number".into());
                }
                let sent_at = crate::domain::clock::parse_rfc3339_ms(&m.ts)
                    .ok_or_else(|| format!("bad timestamp {:?}", m.ts))?;
                let c = &mut self.chat;
                c.stream.push(stream.to_string());
                c.seq.push(e.seq as i64);
                c.id.push(m.id.to_string());
                c.user.push(m.user);
                c.body.push(m.body);
                c.client_msg_id.push(m.client_msg_id);
                c.sent_at.push(sent_at as i64);
            }
            records::STREAM => {
                let s: Stream = serde_json::from_slice(&e.data).map_err(|err| err.to_string())?;
                match self.streams.get(&s.id) {
                    Some(have) if have.version >= s.version => {}
                    _ => {
                        self.streams.insert(s.id, s);
                    }
                }
            }
            records::SESSION_SUMMARY => {
                let s: SummaryRecord =
                    serde_json::from_slice(&e.data).map_err(|err| err.to_string())?;
                self.summaries.insert(s.summary.session_id, s);
            }
            records::MODERATION => {
                let m: ModerationRecord =
                    serde_json::from_slice(&e.data).map_err(|err| err.to_string())?;
                self.moderation.push(m);
            }
            other => return Err(format!("unknown record kind {other:?}")),
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.chat.seq.is_empty()
            && self.streams.is_empty()
            && self.summaries.is_empty()
            && self.moderation.is_empty()
    }

    /// Writes the batch in one transaction.
    pub async fn write(
        &self,
        client: &mut tokio_postgres::Client,
    ) -> Result<(), tokio_postgres::Error> {
        let tx = client.transaction().await?;
        if !self.chat.seq.is_empty() {
            let c = &self.chat;
            tx.execute(
                "insert into public.chat_messages
                   (stream_id, seq, id, user_id, body, client_msg_id, sent_at)
                 select u.stream_id::uuid, u.seq, u.id::uuid, u.user_id, u.body, u.client_msg_id,
                        to_timestamp(u.sent_at / 1000.0)
                 from unnest($1::text[], $2::int8[], $3::text[], $4::text[], $5::text[],
                             $6::text[], $7::int8[])
                   as u(stream_id, seq, id, user_id, body, client_msg_id, sent_at)
                 on conflict (stream_id, seq) do nothing",
                &[
                    &c.stream,
                    &c.seq,
                    &c.id,
                    &c.user,
                    &c.body,
                    &c.client_msg_id,
                    &c.sent_at,
                ],
            )
            .await?;
        }
        if !self.streams.is_empty() {
            self.write_streams(&tx).await?;
        }
        if !self.summaries.is_empty() {
            self.write_summaries(&tx).await?;
        }
        for m in &self.moderation {
            write_moderation(&tx, m).await?;
        }
        tx.commit().await
    }

    async fn write_streams(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
    ) -> Result<(), tokio_postgres::Error> {
        let mut ids = Vec::new();
        let mut owners = Vec::new();
        let mut titles = Vec::new();
        let mut states = Vec::new();
        let mut versions = Vec::new();
        let mut created = Vec::new();
        let mut updated = Vec::new();
        let mut recs = Vec::new();
        // Sessions carried by the records.
        let mut s_ids = Vec::new();
        let mut s_streams = Vec::new();
        let mut s_owners = Vec::new();
        let mut s_states = Vec::new();
        let mut s_started = Vec::new();
        let mut s_ended: Vec<Option<i64>> = Vec::new();
        let mut s_reason: Vec<Option<String>> = Vec::new();
        let mut s_live = Vec::new();
        let mut s_paused = Vec::new();
        let mut s_seq_start = Vec::new();
        let mut s_seq_end: Vec<Option<i64>> = Vec::new();
        let mut s_version = Vec::new();
        for s in self.streams.values() {
            ids.push(s.id.to_string());
            owners.push(s.owner_id.clone());
            titles.push(s.title.clone());
            states.push(s.state.as_str().to_string());
            versions.push(s.version as i64);
            created.push(s.created_at_ms as i64);
            updated.push(s.updated_at_ms as i64);
            recs.push(serde_json::to_string(s).expect("stream serialises"));
            if let Some(sess) = &s.session {
                let (live, paused) = sess.times(s.updated_at_ms);
                s_ids.push(sess.id.to_string());
                s_streams.push(s.id.to_string());
                s_owners.push(s.owner_id.clone());
                s_states.push(s.state.as_str().to_string());
                s_started.push(sess.started_at_ms as i64);
                s_ended.push(sess.ended_at_ms.map(|t| t as i64));
                s_reason.push(sess.end_reason.map(|c| c.as_str().to_string()));
                s_live.push(live as i64);
                s_paused.push(paused as i64);
                s_seq_start.push(sess.chat_seq_start as i64);
                s_seq_end.push(sess.chat_seq_end.map(|t| t as i64));
                s_version.push(s.version as i64);
            }
        }
        tx.execute(
            "insert into public.streams
               (id, owner_id, title, state, version, created_at, updated_at, record)
             select u.id::uuid, u.owner_id, u.title, u.state, u.version,
                    to_timestamp(u.created / 1000.0), to_timestamp(u.updated / 1000.0),
                    u.record::jsonb
             from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[],
                         $6::int8[], $7::int8[], $8::text[])
               as u(id, owner_id, title, state, version, created, updated, record)
             on conflict (id) do update set
               title = excluded.title, state = excluded.state, version = excluded.version,
               updated_at = excluded.updated_at, record = excluded.record
             where public.streams.version < excluded.version",
            &[
                &ids, &owners, &titles, &states, &versions, &created, &updated, &recs,
            ],
        )
        .await?;
        if !s_ids.is_empty() {
            tx.execute(
                "insert into public.stream_sessions
                   (id, stream_id, owner_id, state, started_at, ended_at, end_reason, live_ms,
                    paused_ms, chat_seq_start, chat_seq_end, version)
                 select u.id::uuid, u.stream_id::uuid, u.owner_id, u.state,
                        to_timestamp(u.started / 1000.0), to_timestamp(u.ended / 1000.0),
                        u.reason, u.live, u.paused, u.seq_start, u.seq_end, u.version
                 from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[],
                             $6::int8[], $7::text[], $8::int8[], $9::int8[], $10::int8[],
                             $11::int8[], $12::int8[])
                   as u(id, stream_id, owner_id, state, started, ended, reason, live, paused,
                        seq_start, seq_end, version)
                 on conflict (id) do update set
                   state = excluded.state, ended_at = excluded.ended_at,
                   end_reason = excluded.end_reason, live_ms = excluded.live_ms,
                   paused_ms = excluded.paused_ms, chat_seq_start = excluded.chat_seq_start,
                   chat_seq_end = excluded.chat_seq_end, version = excluded.version
                 where public.stream_sessions.version < excluded.version",
                &[
                    &s_ids,
                    &s_streams,
                    &s_owners,
                    &s_states,
                    &s_started,
                    &s_ended,
                    &s_reason,
                    &s_live,
                    &s_paused,
                    &s_seq_start,
                    &s_seq_end,
                    &s_version,
                ],
            )
            .await?;
        }
        Ok(())
    }

    async fn write_summaries(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
    ) -> Result<(), tokio_postgres::Error> {
        for r in self.summaries.values() {
            let s = &r.summary;
            let json = serde_json::to_string(s).expect("summary serialises");
            let ended = s.ended_at.clone();
            // The session row may not be written yet (records arrive in any order): the
            // summary carries enough to create it; a later stream record updates the rest.
            tx.execute(
                "insert into public.stream_sessions
                   (id, stream_id, owner_id, state, started_at, ended_at, end_reason, live_ms,
                    paused_ms, version, summary)
                 values ($1::text::uuid, $2::text::uuid, $3, $4, $5::text::timestamptz,
                         $6::text::timestamptz, $7, $8, $9, 0, $10::text::jsonb)
                 on conflict (id) do update set summary = excluded.summary",
                &[
                    &s.session_id.to_string(),
                    &s.stream_id.to_string(),
                    &r.owner_id,
                    &s.state.as_str(),
                    &s.started_at,
                    &ended,
                    &s.end_reason.map(|c| c.as_str().to_string()),
                    &(s.live_ms as i64),
                    &(s.paused_ms as i64),
                    &json,
                ],
            )
            .await?;
            tx.execute(
                "insert into public.viewer_stats
                   (session_id, stream_id, owner_id, peak_viewers, unique_viewers,
                    chat_messages, duration_ms, recorded_at)
                 values ($1::text::uuid, $2::text::uuid, $3, $4, $5, $6, $7, now())
                 on conflict (session_id) do update set
                   peak_viewers = excluded.peak_viewers,
                   unique_viewers = excluded.unique_viewers,
                   chat_messages = excluded.chat_messages,
                   duration_ms = excluded.duration_ms",
                &[
                    &s.session_id.to_string(),
                    &s.stream_id.to_string(),
                    &r.owner_id,
                    &(s.peak_viewers as i64),
                    &(s.unique_viewers as i64),
                    &(s.chat_messages.unwrap_or(0) as i64),
                    &(s.duration_ms as i64),
                ],
            )
            .await?;
        }
        Ok(())
    }
}

async fn write_moderation(
    tx: &tokio_postgres::Transaction<'_>,
    m: &ModerationRecord,
) -> Result<(), tokio_postgres::Error> {
    let inserted = tx
        .execute(
            "insert into public.moderation_actions
               (id, stream_id, owner_id, actor_id, action, target_user_id, target_seq,
                expires_at, detail, created_at)
             values ($1::text::uuid, $2::text::uuid, $3, $4, $5, $6, $7,
                     to_timestamp($8::int8 / 1000.0), $9::text::jsonb,
                     to_timestamp($10::int8 / 1000.0))
             on conflict (id) do nothing",
            &[
                &m.id.to_string(),
                &m.stream_id.to_string(),
                &m.owner_id,
                &m.actor_id,
                &m.action,
                &m.target_user_id,
                &m.target_seq.map(|s| s as i64),
                &m.expires_at_ms.map(|t| t as i64),
                &m.detail.to_string(),
                &(m.created_at_ms as i64),
            ],
        )
        .await?;
    if inserted == 0 || m.action != "delete_message" {
        return Ok(());
    }
    let Some(seq) = m.target_seq else {
        return Ok(());
    };
    match &m.message {
        Some(msg) => {
            tx.execute(
                "insert into public.chat_messages
                   (stream_id, seq, id, user_id, body, client_msg_id, sent_at, deleted_at)
                 values ($1::text::uuid, $2, $3::text::uuid, $4, $5, $6, $7::text::timestamptz,
                         to_timestamp($8::int8 / 1000.0))
                 on conflict (stream_id, seq) do update set deleted_at = excluded.deleted_at
                 where public.chat_messages.deleted_at is null",
                &[
                    &m.stream_id.to_string(),
                    &(seq as i64),
                    &msg.id.to_string(),
                    &msg.user,
                    &msg.body,
                    &msg.client_msg_id,
                    &msg.ts,
                    &(m.created_at_ms as i64),
                ],
            )
            .await?;
        }
        None => {
            tx.execute(
                "update public.chat_messages set deleted_at = to_timestamp($3::int8 / 1000.0)
                 where stream_id = $1::text::uuid and seq = $2 and deleted_at is null",
                &[
                    &m.stream_id.to_string(),
                    &(seq as i64),
                    &(m.created_at_ms as i64),
                ],
            )
            .await?;
        }
    }
    Ok(())
}

/// Whether a failed write is the data's fault (retrying the same records cannot help)
/// rather than the database's or the connection's.
pub fn is_data_error(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|c| {
        let code = c.code();
        code.starts_with("22") || code.starts_with("23")
    })
}
