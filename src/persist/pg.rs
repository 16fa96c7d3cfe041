//! Connections to PostgreSQL: a pool over TLS (rustls; the public web roots plus
//! `persist.ca_file`) or plain TCP, as the URL's `sslmode` says.
//!
//! Supabase's pooler (Supavisor) in transaction mode hands a server connection out per
//! transaction, so named prepared statements must not outlive one: every write here runs
//! inside an explicit transaction and nothing uses a statement cache.

use std::sync::Arc;

use anyhow::Context;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::config::PersistConfig;

/// The TLS connector: web PKI roots and the certificates in `ca_file`.
pub fn tls(ca_file: &str) -> anyhow::Result<tokio_postgres_rustls::MakeRustlsConnect> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if !ca_file.is_empty() {
        let mut n = 0;
        for cert in CertificateDer::pem_file_iter(ca_file)
            .with_context(|| format!("persist.ca_file {ca_file}"))?
        {
            let cert = cert.with_context(|| format!("persist.ca_file {ca_file}"))?;
            roots
                .add(cert)
                .with_context(|| format!("persist.ca_file {ca_file}"))?;
            n += 1;
        }
        anyhow::ensure!(n > 0, "persist.ca_file {ca_file}: no certificates");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// Parses the URL (naming the key on error, never echoing the password).
pub fn pg_config(cfg: &PersistConfig) -> anyhow::Result<tokio_postgres::Config> {
    let mut pg: tokio_postgres::Config = cfg
        .database_url
        .expose()
        .parse()
        .map_err(|e| anyhow::anyhow!("persist.database_url: {e}"))?;
    pg.connect_timeout(cfg.connect_timeout);
    if pg.get_application_name().is_none() {
        pg.application_name("streamedge");
    }
    Ok(pg)
}

/// A pool that connects lazily: the node starts while PostgreSQL is down.
pub fn pool(cfg: &PersistConfig) -> anyhow::Result<Pool> {
    let mgr = Manager::from_config(
        pg_config(cfg)?,
        tls(&cfg.ca_file)?,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(mgr)
        .max_size(cfg.pool_size)
        .runtime(Runtime::Tokio1)
        .create_timeout(Some(cfg.connect_timeout))
        .wait_timeout(Some(cfg.connect_timeout * 2))
        .build()
        .context("PostgreSQL pool")
}

/// One connection outside the pool (the `migrate` command).
pub async fn connect(cfg: &PersistConfig) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) = pg_config(cfg)?
        .connect(tls(&cfg.ca_file)?)
        .await
        .context("connecting to PostgreSQL")?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::warn!(error = %e, "PostgreSQL connection ended");
        }
    });
    Ok(client)
}
