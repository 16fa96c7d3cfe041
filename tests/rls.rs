//! Row Level Security of the Supabase schema (supabase/migrations) against the real
//! PostgreSQL `scripts/test` starts: what each kind of caller reads and writes through
//! Supabase, checked against what the node's API serves the same caller (docs/api.md).
//!
//! Callers are impersonated the way PostgREST runs a request: `set local role <role>` and
//! the token's claims in `request.jwt.claims`, which `auth.uid()` reads (in Supabase and in
//! supabase/auth_shim.sql alike).

use streamedge_testkit as common;

use std::collections::HashMap;

use serde_json::json;
use uuid::Uuid;

/// A request as Supabase runs it.
#[derive(Clone, Copy, Debug)]
enum Caller {
    /// The anon key: no user.
    Anon,
    /// A signed-in user's access token (role `authenticated`).
    User(Uuid),
    /// An anonymous sign-in: role `authenticated`, `is_anonymous: true`.
    AnonymousSignIn(Uuid),
    /// The service-role key.
    ServiceRole,
}

const PERMISSION_DENIED: &str = "42501";

/// Runs `sql` as `caller` in a transaction that is rolled back; returns the first column
/// of every row (as text, sorted) or the SQLSTATE of the error.
async fn run_as(db: &str, caller: Caller, sql: &str) -> Result<Vec<String>, String> {
    let (role, claims) = match caller {
        Caller::Anon => ("anon", json!({"role": "anon"})),
        Caller::User(sub) => (
            "authenticated",
            json!({"sub": sub, "role": "authenticated", "is_anonymous": false}),
        ),
        Caller::AnonymousSignIn(sub) => (
            "authenticated",
            json!({"sub": sub, "role": "authenticated", "is_anonymous": true}),
        ),
        Caller::ServiceRole => ("service_role", json!({"role": "service_role"})),
    };
    let mut c = common::pg(db).await;
    let tx = c.transaction().await.unwrap();
    tx.batch_execute(&format!("set local role {role}"))
        .await
        .unwrap();
    tx.execute(
        "select set_config('request.jwt.claims', $1, true)",
        &[&claims.to_string()],
    )
    .await
    .unwrap();
    let result = match tx.query(sql, &[]).await {
        Ok(rows) => {
            let mut v: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
            v.sort();
            Ok(v)
        }
        Err(e) => Err(e
            .as_db_error()
            .map(|d| d.code().code().to_string())
            .unwrap_or_else(|| e.to_string())),
    };
    tx.rollback().await.unwrap();
    result
}

/// A seller with a stream in every state, another seller with a live stream, a buyer who
/// chatted in all of them (one message of each deleted by its seller) and was banned by
/// the other seller, and a stranger who never did anything.
struct World {
    db: String,
    seller: Uuid,
    other_seller: Uuid,
    buyer: Uuid,
    stranger: Uuid,
    /// Stream id → its name (`live`, `paused`, `ended`, `idle`: the seller's; `other`).
    names: HashMap<String, &'static str>,
}

impl World {
    async fn new() -> Self {
        let db = common::fresh_database().await;
        let (seller, other_seller, buyer, stranger) = (
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
        );
        let streams = [
            ("live", seller, "live"),
            ("paused", seller, "paused"),
            ("ended", seller, "ended"),
            ("idle", seller, "idle"),
            ("other", other_seller, "live"),
        ];
        let mut names = HashMap::new();
        let mut sql = String::new();
        for (name, owner, state) in streams {
            let id = Uuid::new_v4();
            names.insert(id.to_string(), name);
            sql += &format!(
                "insert into streams (id, owner_id, title, state, created_at, updated_at, record)
                   values ('{id}', '{owner}', '{name}', '{state}', now(), now(), '{{}}');"
            );
            if name == "idle" {
                continue;
            }
            sql += &format!(
                "insert into chat_messages (stream_id, seq, id, user_id, body, client_msg_id, sent_at, deleted_at)
                   values ('{id}', 1, gen_random_uuid(), '{buyer}', '{name}:hello', 'c1', now(), null),
                          ('{id}', 2, gen_random_uuid(), '{buyer}', '{name}:deleted', 'c2', now(), now());
                 insert into stream_sessions (id, stream_id, owner_id, state, started_at)
                   values (gen_random_uuid(), '{id}', '{owner}', '{state}', now());
                 insert into moderation_actions (id, stream_id, owner_id, actor_id, action, target_user_id, target_seq, created_at)
                   values (gen_random_uuid(), '{id}', '{owner}', '{owner}', 'delete_message', '{buyer}', 2, now());"
            );
            if name == "ended" || name == "other" {
                sql += &format!(
                    "insert into viewer_stats values
                       (gen_random_uuid(), '{id}', '{owner}', 10, 20, 2, 60000, now());"
                );
            }
            if name == "other" {
                sql += &format!(
                    "insert into moderation_actions (id, stream_id, owner_id, actor_id, action, target_user_id, created_at)
                       values (gen_random_uuid(), '{id}', '{owner}', '{owner}', 'ban', '{buyer}', now());"
                );
            }
        }
        // As the tables' owner, like the node: Row Level Security does not apply.
        common::pg(&db).await.batch_execute(&sql).await.unwrap();
        Self {
            db,
            seller,
            other_seller,
            buyer,
            stranger,
            names,
        }
    }

    /// What `caller` reads with `sql` (its first column a stream id), as stream names.
    async fn streams_seen(&self, caller: Caller, sql: &str) -> Result<Vec<String>, String> {
        let ids = run_as(&self.db, caller, sql).await?;
        let mut v: Vec<String> = ids.iter().map(|id| self.names[id].to_string()).collect();
        v.sort();
        Ok(v)
    }
}

fn list(items: &[&str]) -> Result<Vec<String>, String> {
    let mut v: Vec<String> = items.iter().map(|s| s.to_string()).collect();
    v.sort();
    Ok(v)
}

const ALL_STREAMS: [&str; 5] = ["ended", "idle", "live", "other", "paused"];
const STREAMS_WITH_CHAT: [&str; 4] = ["ended", "live", "other", "paused"];

#[tokio::test]
async fn streams_sessions_and_statistics_are_read_by_everyone_signed_in() {
    let w = World::new().await;
    let signed_in = [
        ("buyer", Caller::User(w.buyer)),
        ("stranger", Caller::User(w.stranger)),
        ("seller", Caller::User(w.seller)),
        ("other seller", Caller::User(w.other_seller)),
        ("service role", Caller::ServiceRole),
    ];
    // The API serves any stream in any state (GET /v1/streams, /v1/streams/{id}), any
    // session's summary (GET …/sessions/{id}) and its peak/unique viewers to anyone
    // signed in.
    for (who, caller) in signed_in {
        assert_eq!(
            w.streams_seen(caller, "select id::text from streams").await,
            list(&ALL_STREAMS),
            "{who}: streams"
        );
        assert_eq!(
            w.streams_seen(caller, "select stream_id::text from stream_sessions")
                .await,
            list(&STREAMS_WITH_CHAT),
            "{who}: sessions"
        );
        assert_eq!(
            w.streams_seen(caller, "select stream_id::text from viewer_stats")
                .await,
            list(&["ended", "other"]),
            "{who}: viewer statistics"
        );
    }
    // The API refuses anon-key tokens and anonymous sign-ins (auth.allow_anonymous_viewers
    // is off by default): the anon role has no privileges, an anonymous user sees no row.
    for table in [
        "streams",
        "stream_sessions",
        "viewer_stats",
        "chat_messages",
        "moderation_actions",
    ] {
        let column = if table == "streams" {
            "id"
        } else {
            "stream_id"
        };
        let sql = format!("select {column}::text from {table}");
        assert_eq!(
            run_as(&w.db, Caller::Anon, &sql).await,
            Err(PERMISSION_DENIED.into()),
            "anon: {table}"
        );
        assert_eq!(
            run_as(&w.db, Caller::AnonymousSignIn(Uuid::new_v4()), &sql).await,
            Ok(vec![]),
            "anonymous sign-in: {table}"
        );
    }
}

#[tokio::test]
async fn chat_is_read_in_every_stream_state_and_deleted_messages_by_their_seller_only() {
    let w = World::new().await;
    let chat = "select body from chat_messages";
    let undeleted: Vec<String> = STREAMS_WITH_CHAT
        .iter()
        .map(|s| format!("{s}:hello"))
        .collect();
    let with = |deleted: &[&str]| {
        let mut v = undeleted.clone();
        v.extend(deleted.iter().map(|s| format!("{s}:deleted")));
        v.sort();
        Ok::<_, String>(v)
    };
    // Buyers (the author of every message, banned in one stream) and strangers: the
    // undeleted chat of live, paused and ended streams alike, as GET …/messages serves it.
    assert_eq!(run_as(&w.db, Caller::User(w.buyer), chat).await, with(&[]));
    assert_eq!(
        run_as(&w.db, Caller::User(w.stranger), chat).await,
        with(&[])
    );
    // A seller: also the deleted messages of their own streams (the session export), in
    // every state, and not those of another seller's stream.
    assert_eq!(
        run_as(&w.db, Caller::User(w.seller), chat).await,
        with(&["ended", "live", "paused"])
    );
    assert_eq!(
        run_as(&w.db, Caller::User(w.other_seller), chat).await,
        with(&["other"])
    );
    assert_eq!(
        run_as(&w.db, Caller::ServiceRole, chat).await,
        with(&STREAMS_WITH_CHAT)
    );
    assert_eq!(
        run_as(&w.db, Caller::AnonymousSignIn(w.buyer), chat).await,
        Ok(vec![])
    );
}

#[tokio::test]
async fn moderation_records_are_read_by_the_stream_seller_only() {
    let w = World::new().await;
    let sql = "select stream_id::text || ' ' || action from moderation_actions";
    let seen = |caller| {
        let w = &w;
        async move {
            run_as(&w.db, caller, sql).await.map(|rows| {
                let mut v: Vec<String> = rows
                    .iter()
                    .map(|r| {
                        let (id, action) = r.split_once(' ').unwrap();
                        format!("{} {action}", w.names[id])
                    })
                    .collect();
                v.sort();
                v
            })
        }
    };
    assert_eq!(
        seen(Caller::User(w.seller)).await,
        list(&[
            "ended delete_message",
            "live delete_message",
            "paused delete_message"
        ])
    );
    assert_eq!(
        seen(Caller::User(w.other_seller)).await,
        list(&["other ban", "other delete_message"])
    );
    // The buyer they are about (banned, messages deleted) and a stranger: nothing; the API
    // lists moderation to nobody.
    assert_eq!(seen(Caller::User(w.buyer)).await, Ok(vec![]));
    assert_eq!(seen(Caller::User(w.stranger)).await, Ok(vec![]));
    assert_eq!(seen(Caller::ServiceRole).await.unwrap().len(), 5);
}

#[tokio::test]
async fn only_the_node_and_the_service_role_write() {
    let w = World::new().await;
    let live = w
        .names
        .iter()
        .find(|(_, n)| **n == "live")
        .map(|(id, _)| id.clone())
        .unwrap();
    let seller = w.seller;
    // One insert, update and delete per table; `returning` counts the rows touched.
    let writes: Vec<(&str, String)> = vec![
        (
            "streams insert",
            format!(
                "insert into streams (id, owner_id, title, state, created_at, updated_at, record)
                   values (gen_random_uuid(), '{seller}', 'forged', 'live', now(), now(), '{{}}')
                   returning 'x'::text"
            ),
        ),
        (
            "streams update",
            format!("update streams set title = 'renamed' where id = '{live}' returning 'x'::text"),
        ),
        (
            "streams delete",
            format!("delete from streams where id = '{live}' returning 'x'::text"),
        ),
        (
            "chat insert",
            format!(
                "insert into chat_messages (stream_id, seq, id, user_id, body, client_msg_id, sent_at)
                   values ('{live}', 99, gen_random_uuid(), '{seller}', 'forged', 'f', now())
                   returning 'x'::text"
            ),
        ),
        (
            "chat update",
            format!(
                "update chat_messages set deleted_at = null where stream_id = '{live}' returning 'x'::text"
            ),
        ),
        (
            "chat delete",
            format!("delete from chat_messages where stream_id = '{live}' returning 'x'::text"),
        ),
        (
            "sessions insert",
            format!(
                "insert into stream_sessions (id, stream_id, owner_id, state, started_at)
                   values (gen_random_uuid(), '{live}', '{seller}', 'live', now()) returning 'x'::text"
            ),
        ),
        (
            "sessions update",
            format!("update stream_sessions set live_ms = 1 where stream_id = '{live}' returning 'x'::text"),
        ),
        (
            "sessions delete",
            format!("delete from stream_sessions where stream_id = '{live}' returning 'x'::text"),
        ),
        (
            "statistics insert",
            format!(
                "insert into viewer_stats values
                   (gen_random_uuid(), '{live}', '{seller}', 1, 1, 1, 1, now()) returning 'x'::text"
            ),
        ),
        (
            "statistics update",
            "update viewer_stats set peak_viewers = 9999 returning 'x'::text".into(),
        ),
        (
            "statistics delete",
            "delete from viewer_stats returning 'x'::text".into(),
        ),
        (
            "moderation insert",
            format!(
                "insert into moderation_actions (id, stream_id, owner_id, actor_id, action, created_at)
                   values (gen_random_uuid(), '{live}', '{seller}', '{seller}', 'unban', now())
                   returning 'x'::text"
            ),
        ),
        (
            "moderation update",
            "update moderation_actions set expires_at = now() returning 'x'::text".into(),
        ),
        (
            "moderation delete",
            "delete from moderation_actions returning 'x'::text".into(),
        ),
    ];
    let refused = [
        ("anon", Caller::Anon),
        ("anonymous sign-in", Caller::AnonymousSignIn(w.buyer)),
        ("buyer", Caller::User(w.buyer)),
        ("stranger", Caller::User(w.stranger)),
        ("the stream's seller", Caller::User(w.seller)),
    ];
    for (what, sql) in &writes {
        for (who, caller) in refused {
            assert_eq!(
                run_as(&w.db, caller, sql).await,
                Err(PERMISSION_DENIED.into()),
                "{who}: {what}"
            );
        }
        let done = run_as(&w.db, Caller::ServiceRole, sql).await;
        assert!(
            done.as_ref().is_ok_and(|rows| !rows.is_empty()),
            "service role: {what}: {done:?}"
        );
    }
    // Nor can anyone signed in truncate a table or hang a trigger on it.
    for sql in [
        "truncate chat_messages",
        "create trigger t before update on chat_messages
           for each row execute function suppress_redundant_updates_trigger()",
    ] {
        assert_eq!(
            run_as(&w.db, Caller::User(w.seller), sql).await,
            Err(PERMISSION_DENIED.into()),
            "{sql}"
        );
    }
}

#[tokio::test]
async fn every_table_has_row_level_security_and_only_read_policies() {
    let db = common::fresh_database().await;
    let c = common::pg(&db).await;
    // A table added to the schema must be added to the tests above.
    let tables: Vec<(String, bool)> = c
        .query(
            "select tablename::text, rowsecurity from pg_tables
             where schemaname = 'public' order by 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        tables,
        [
            "chat_messages",
            "moderation_actions",
            "stream_sessions",
            "streams",
            "viewer_stats"
        ]
        .map(|t| (t.to_string(), true))
    );
    let policies: Vec<String> = c
        .query(
            "select tablename || ' ' || policyname || ' ' || cmd || ' ' || array_to_string(roles, ',')
             from pg_policies where schemaname = 'public' order by 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        policies,
        [
            "chat_messages chat_messages_read SELECT authenticated",
            "chat_messages chat_messages_seller_read SELECT authenticated",
            "moderation_actions moderation_actions_owner_read SELECT authenticated",
            "stream_sessions stream_sessions_read SELECT authenticated",
            "streams streams_read SELECT authenticated",
            "viewer_stats viewer_stats_read SELECT authenticated",
        ]
    );
}

/// A database migrated before the read policies were fixed gets them from `streamedge
/// migrate` (the Supabase CLI likewise applies only the newer file on `db push`).
#[tokio::test]
async fn an_existing_database_gets_the_new_policies_by_migrating_again() {
    use streamedge::persist::migrate::{AUTH_SHIM, MIGRATIONS};
    let db = common::empty_database_on(&common::database_url()).await;
    let (first, first_sql) = MIGRATIONS[0];
    // As the first release's `streamedge migrate --auth-shim` left it.
    common::pg(&db)
        .await
        .batch_execute(&format!(
            "{AUTH_SHIM}
             create schema streamedge;
             create table streamedge.schema_migrations (
               version text primary key, applied_at timestamptz not null default now());
             {first_sql}
             insert into streamedge.schema_migrations (version) values ('{first}');"
        ))
        .await
        .unwrap();
    let (seller, buyer, stream) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    common::pg(&db)
        .await
        .batch_execute(&format!(
            "insert into streams (id, owner_id, title, state, created_at, updated_at, record)
               values ('{stream}', '{seller}', 'paused one', 'paused', now(), now(), '{{}}');
             insert into chat_messages (stream_id, seq, id, user_id, body, client_msg_id, sent_at, deleted_at)
               values ('{stream}', 1, gen_random_uuid(), 'u', 'hello', 'c1', now(), null),
                      ('{stream}', 2, gen_random_uuid(), 'u', 'deleted', 'c2', now(), now());"
        ))
        .await
        .unwrap();
    let chat = "select body from chat_messages";
    // The old policies: a paused stream's chat hidden from buyers, deleted messages from
    // the seller.
    assert_eq!(run_as(&db, Caller::User(buyer), chat).await, Ok(vec![]));
    assert_eq!(
        run_as(&db, Caller::User(seller), chat).await,
        list(&["hello"])
    );

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_streamedge"))
        .args(["migrate", "--database-url", &db])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let applied: Vec<&str> = stdout.lines().collect();
    let newer: Vec<String> = MIGRATIONS[1..]
        .iter()
        .map(|(v, _)| format!("applied {v}"))
        .collect();
    assert_eq!(applied, newer);

    assert_eq!(
        run_as(&db, Caller::User(buyer), chat).await,
        list(&["hello"])
    );
    assert_eq!(
        run_as(&db, Caller::User(seller), chat).await,
        list(&["deleted", "hello"])
    );
}
