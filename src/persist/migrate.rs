//! The schema: the SQL files in `supabase/migrations` (the Supabase CLI's project layout,
//! so `supabase db push` and `supabase start` apply the same files from the repository
//! root), embedded in the binary and applied in order by `streamedge migrate`, each once,
//! recorded in `streamedge.schema_migrations`.

use anyhow::Context;

/// `(version, SQL)`, oldest first. A test checks this lists every file in the directory.
pub const MIGRATIONS: &[(&str, &str)] = &[
    (
        "20261122000000_streamedge_init",
        include_str!("../../supabase/migrations/20261122000000_streamedge_init.sql"),
    ),
    (
        "20261130000000_read_policies_match_the_api",
        include_str!("../../supabase/migrations/20261130000000_read_policies_match_the_api.sql"),
    ),
];

/// The Supabase pieces (roles, `auth.uid()`) for a plain PostgreSQL. Outside
/// `supabase/migrations`, which the Supabase CLI would apply to a real project.
pub const AUTH_SHIM: &str = include_str!("../../supabase/auth_shim.sql");

/// What the migrations need from Supabase: its API roles and `auth.uid()`.
const SUPABASE_ROLES: [&str; 3] = ["anon", "authenticated", "service_role"];

/// Arbitrary key of the advisory lock that serialises concurrent `migrate` runs.
const LOCK_KEY: i64 = 0x5354_4544_4745;

/// Applies the migrations not applied yet; returns their versions. With `auth_shim`, first
/// creates the Supabase roles and `auth.uid()` when the `auth` schema is missing. Before
/// applying anything, checks that the database has what the migrations need from
/// Supabase, and says what to do when it does not (rather than PostgreSQL's bare
/// `role "anon" does not exist`).
pub async fn run(
    client: &mut tokio_postgres::Client,
    auth_shim: bool,
) -> anyhow::Result<Vec<String>> {
    let tx = client.transaction().await?;
    tx.execute("select pg_advisory_xact_lock($1)", &[&LOCK_KEY])
        .await?;
    tx.batch_execute(
        "create schema if not exists streamedge;
         create table if not exists streamedge.schema_migrations (
           version text primary key,
           applied_at timestamptz not null default now()
         );",
    )
    .await?;
    let mut pending = Vec::new();
    for (version, sql) in MIGRATIONS {
        let done: bool = tx
            .query_one(
                "select exists (select 1 from streamedge.schema_migrations where version = $1)",
                &[version],
            )
            .await?
            .get(0);
        if !done {
            pending.push((*version, *sql));
        }
    }
    if pending.is_empty() {
        tx.commit().await?;
        return Ok(Vec::new());
    }
    let mut shim_skipped = false;
    if auth_shim {
        let has_auth: bool = tx
            .query_one(
                "select exists (select 1 from pg_namespace where nspname = 'auth')",
                &[],
            )
            .await?
            .get(0);
        if has_auth {
            shim_skipped = true;
        } else {
            tx.batch_execute(AUTH_SHIM)
                .await
                .context("applying the auth shim")?;
        }
    }
    let missing: Vec<String> = tx
        .query(
            "select 'role ' || r from unnest($1::text[]) r
               where not exists (select 1 from pg_roles where rolname = r)
             union all
             select 'function auth.uid()' where to_regprocedure('auth.uid()') is null",
            &[&SUPABASE_ROLES.as_slice()],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if !missing.is_empty() {
        anyhow::bail!(missing_supabase_hint(&missing, auth_shim, shim_skipped));
    }
    let mut applied = Vec::new();
    for (version, sql) in pending {
        tx.batch_execute(sql)
            .await
            .with_context(|| format!("migration {version}"))?;
        tx.execute(
            "insert into streamedge.schema_migrations (version) values ($1)",
            &[&version],
        )
        .await?;
        applied.push(version.to_string());
    }
    tx.commit().await?;
    Ok(applied)
}

/// What to do about a database without the Supabase pieces the migrations use.
fn missing_supabase_hint(missing: &[String], auth_shim: bool, shim_skipped: bool) -> String {
    let what = format!(
        "this database has no Supabase roles and auth functions (missing: {})",
        missing.join(", ")
    );
    let todo = if !auth_shim {
        "on a Supabase project they exist, so check that the URL points at the project's \
         database; on a plain PostgreSQL run `streamedge migrate --auth-shim`, which creates \
         them first"
    } else if shim_skipped {
        "--auth-shim left the database alone because it already has an `auth` schema (the \
         shim only completes a database without one): create them yourself, or migrate a \
         database without an `auth` schema"
    } else {
        "the auth shim did not create them"
    };
    format!("{what}; {todo}. Nothing was applied.")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_hint_for_a_plain_postgresql_names_the_flag() {
        let missing = ["role anon".to_string(), "function auth.uid()".into()];
        let hint = super::missing_supabase_hint(&missing, false, false);
        assert!(
            hint.contains("missing: role anon, function auth.uid()"),
            "{hint}"
        );
        assert!(hint.contains("streamedge migrate --auth-shim"), "{hint}");
        let hint = super::missing_supabase_hint(&missing, true, true);
        assert!(hint.contains("already has an `auth` schema"), "{hint}");
        assert!(
            !hint.contains("run `streamedge migrate --auth-shim`"),
            "{hint}"
        );
    }

    #[test]
    fn every_migration_file_is_embedded_in_order() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/supabase/migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".sql"))
            .map(|n| n.trim_end_matches(".sql").to_string())
            .collect();
        files.sort();
        let embedded: Vec<String> = super::MIGRATIONS
            .iter()
            .map(|(v, _)| v.to_string())
            .collect();
        assert_eq!(files, embedded);
    }
}
