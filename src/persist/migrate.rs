//! The schema: the SQL files in `deploy/supabase/migrations` (the Supabase CLI layout, so
//! `supabase db push` applies the same files), embedded in the binary and applied in order
//! by `streamedge migrate`, each once, recorded in `streamedge.schema_migrations`.

use anyhow::Context;

/// `(version, SQL)`, oldest first. A test checks this lists every file in the directory.
pub const MIGRATIONS: &[(&str, &str)] = &[(
    "20261122000000_streamedge_init",
    include_str!("../../deploy/supabase/migrations/20261122000000_streamedge_init.sql"),
)];

/// The Supabase pieces (roles, `auth.uid()`) for a plain PostgreSQL.
pub const AUTH_SHIM: &str = include_str!("../../deploy/supabase/auth_shim.sql");

/// Arbitrary key of the advisory lock that serialises concurrent `migrate` runs.
const LOCK_KEY: i64 = 0x5354_4544_4745;

/// Applies the migrations not applied yet; returns their versions. With `auth_shim`, first
/// creates the Supabase roles and `auth.uid()` when the `auth` schema is missing.
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
    if auth_shim {
        let has_auth: bool = tx
            .query_one(
                "select exists (select 1 from pg_namespace where nspname = 'auth')",
                &[],
            )
            .await?
            .get(0);
        if !has_auth {
            tx.batch_execute(AUTH_SHIM)
                .await
                .context("applying the auth shim")?;
        }
    }
    let mut applied = Vec::new();
    for (version, sql) in MIGRATIONS {
        let done: bool = tx
            .query_one(
                "select exists (select 1 from streamedge.schema_migrations where version = $1)",
                &[version],
            )
            .await?
            .get(0);
        if done {
            continue;
        }
        tx.batch_execute(sql)
            .await
            .with_context(|| format!("migration {version}"))?;
        tx.execute(
            "insert into streamedge.schema_migrations (version) values ($1)",
            &[version],
        )
        .await?;
        applied.push(version.to_string());
    }
    tx.commit().await?;
    Ok(applied)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_migration_file_is_embedded_in_order() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/supabase/migrations");
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
