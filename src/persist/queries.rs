//! Reads from PostgreSQL: what restores a stream the shared state lost (its record, its
//! chat tail and highest sequence number, its active bans), history pages older than the
//! shared history, and what a session export needs.

use std::time::Duration;

use uuid::Uuid;

use crate::store::LogEntry;

use super::*;

/// A message row of the archive.
#[derive(Debug, Clone)]
pub struct ArchivedMessage {
    pub seq: u64,
    pub id: Uuid,
    pub user: String,
    pub body: String,
    pub client_msg_id: String,
    pub sent_at_ms: u64,
    pub deleted: bool,
}

impl ArchivedMessage {
    /// The payload the shared state's log holds for this message.
    pub fn log_entry(&self) -> LogEntry {
        let m = crate::domain::chat::StoredMessage {
            id: self.id,
            user: self.user.clone(),
            body: self.body.clone(),
            ts: crate::domain::clock::rfc3339(self.sent_at_ms),
            client_msg_id: self.client_msg_id.clone(),
        };
        LogEntry {
            seq: self.seq,
            payload: serde_json::to_vec(&m).expect("message serialises").into(),
        }
    }
}

pub(super) const MESSAGE_COLUMNS: &str = "seq, id::text, user_id, body, client_msg_id,
     (extract(epoch from sent_at) * 1000)::int8, deleted_at is not null";

pub(super) fn message_row(r: &tokio_postgres::Row) -> ArchivedMessage {
    ArchivedMessage {
        seq: r.get::<_, i64>(0) as u64,
        id: Uuid::parse_str(r.get::<_, &str>(1)).unwrap_or_default(),
        user: r.get(2),
        body: r.get(3),
        client_msg_id: r.get(4),
        sent_at_ms: r.get::<_, i64>(5).max(0) as u64,
        deleted: r.get(6),
    }
}

impl Persistence {
    pub(super) async fn client(&self) -> Result<deadpool_postgres::Object, ReadError> {
        Ok(self.pool.get().await?)
    }

    /// The stream's record as last persisted.
    pub async fn stream_record(&self, id: &Uuid) -> Result<Option<String>, ReadError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "select record::text from public.streams where id = $1::text::uuid",
                &[&id.to_string()],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// The highest persisted sequence number of the stream's chat (0 when none).
    pub async fn chat_max_seq(&self, id: &Uuid) -> Result<u64, ReadError> {
        let c = self.client().await?;
        let row = c
            .query_one(
                "select coalesce(max(seq), 0) from public.chat_messages
                 where stream_id = $1::text::uuid",
                &[&id.to_string()],
            )
            .await?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    /// Messages with `seq < before`, newest first, at most `limit` (deleted ones left out).
    pub async fn chat_before(
        &self,
        id: &Uuid,
        before: u64,
        limit: usize,
    ) -> Result<Vec<ArchivedMessage>, ReadError> {
        let cond = "seq < $2 and deleted_at is null order by seq desc limit $3";
        self.messages(cond, &[&id.to_string(), &sql_seq(before), &(limit as i64)])
            .await
    }

    /// Messages with `after < seq <= upto`, oldest first, at most `limit`, deleted ones
    /// included (marked).
    pub async fn chat_range(
        &self,
        id: &Uuid,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<ArchivedMessage>, ReadError> {
        let cond = "seq > $2 and seq <= $3 order by seq limit $4";
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] = [
            &id.to_string(),
            &sql_seq(after),
            &sql_seq(upto),
            &(limit as i64),
        ];
        self.messages(cond, &params).await
    }

    /// The archived messages of stream `$1` that match `cond` (a condition on `seq` and the
    /// order and limit).
    async fn messages(
        &self,
        cond: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<ArchivedMessage>, ReadError> {
        let c = self.client().await?;
        let sql = format!(
            "select {MESSAGE_COLUMNS} from public.chat_messages
             where stream_id = $1::text::uuid and {cond}"
        );
        let rows = c.query(&sql, params).await?;
        Ok(rows.iter().map(message_row).collect())
    }

    /// Users banned from the stream's chat now, with the time left of a timeout.
    pub async fn active_bans(
        &self,
        id: &Uuid,
    ) -> Result<Vec<(String, Option<Duration>)>, ReadError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "select target_user_id,
                        (extract(epoch from (expires_at - now())) * 1000)::int8
                 from (
                   select distinct on (target_user_id) target_user_id, action, expires_at
                   from public.moderation_actions
                   where stream_id = $1::text::uuid and action in ('ban', 'unban')
                     and target_user_id is not null
                   order by target_user_id, created_at desc
                 ) latest
                 where action = 'ban' and (expires_at is null or expires_at > now())",
                &[&id.to_string()],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let left: Option<i64> = r.get(1);
                (
                    r.get::<_, String>(0),
                    left.map(|ms| Duration::from_millis(ms.max(1) as u64)),
                )
            })
            .collect())
    }

    /// For exporting an archived session of `stream`: its summary (`null` when it has
    /// none yet) and chat range `(start, end]`.
    pub async fn session_export_info(
        &self,
        stream: &Uuid,
        session: &Uuid,
    ) -> Result<Option<(serde_json::Value, (u64, u64))>, ReadError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "select summary::text, chat_seq_start, coalesce(chat_seq_end, chat_seq_start)
                 from public.stream_sessions
                 where id = $1::text::uuid and stream_id = $2::text::uuid",
                &[&session.to_string(), &stream.to_string()],
            )
            .await?;
        Ok(row.map(|r| {
            let summary = r
                .get::<_, Option<&str>>(0)
                .and_then(|s| serde_json::from_str(s).ok())
                .unwrap_or(serde_json::Value::Null);
            let start = r.get::<_, i64>(1).max(0) as u64;
            let end = r.get::<_, i64>(2).max(0) as u64;
            (summary, (start, end))
        }))
    }

    /// The persisted summary of a session, if any.
    pub async fn session_summary(
        &self,
        session: &Uuid,
    ) -> Result<Option<serde_json::Value>, ReadError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "select summary::text from public.stream_sessions
                 where id = $1::text::uuid and summary is not null",
                &[&session.to_string()],
            )
            .await?;
        Ok(row.and_then(|r| serde_json::from_str(r.get::<_, &str>(0)).ok()))
    }
}

/// A sequence number as PostgreSQL's `bigint` (`u64::MAX`, meaning "no bound", clamps).
fn sql_seq(seq: u64) -> i64 {
    seq.min(i64::MAX as u64) as i64
}
