//! The node's lifecycle: build the state, serve the public and admin listeners, and on
//! the shutdown signal drain — readiness false at once, no new connections, WebSockets
//! closed with 1012, background work flushed — within `server.shutdown_grace`.
//!
//! [`run`] takes already-bound listeners and a shutdown future (mini-redis style), so
//! tests bind port 0 and stop the node without signals.

pub mod admin;
mod http;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::http::AppState;
use crate::store::{self, SharedState, StoreError};

/// The node's two listeners, bound by the caller.
pub struct Listeners {
    pub api: TcpListener,
    pub admin: TcpListener,
}

/// Accept backlog of the listeners: connection storms (every viewer of a stream
/// reconnecting after a node restart) should not overflow it and wait for SYN retries.
const LISTEN_BACKLOG: u32 = 4096;

fn bind_with_backlog(addr: SocketAddr, key: &str) -> std::io::Result<TcpListener> {
    let bind = || {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    bind().map_err(|e: std::io::Error| std::io::Error::new(e.kind(), format!("{key} {addr}: {e}")))
}

impl Listeners {
    /// Binds the addresses the configuration names.
    pub async fn bind(config: &Config) -> std::io::Result<Self> {
        let api = bind_with_backlog(config.server.listen, "server.listen")?;
        let admin = bind_with_backlog(config.server.admin_listen, "server.admin_listen")?;
        Ok(Self { api, admin })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("shared state: {0}")]
    Store(#[from] StoreError),
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    #[error("persistence: {0:#}")]
    Persist(anyhow::Error),
    #[error(
        "persistence needs a Redis that keeps what it acknowledges ({0}); enable the \
         append-only file (appendonly yes, appendfsync everysec) or set \
         persist.allow_volatile_redis = true to accept losing outbox records on a Redis restart"
    )]
    VolatileOutbox(String),
    #[error("shutdown did not finish within server.shutdown_grace ({0:?})")]
    GraceExceeded(std::time::Duration),
}

pub use crate::http::routes::{router as api_router, MAX_BODY_BYTES};

/// Runs a node until `shutdown` completes, then drains it.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunError> {
    let metrics = crate::telemetry::metrics::install();
    let mut config = config;
    if config.media.enabled && config.media.advertise_url.is_empty() {
        let addr = listeners.api.local_addr()?;
        if addr.ip().is_unspecified() {
            tracing::warn!("media.advertise_url is empty and the API listens on every interface: other nodes cannot relay this node's streams; set media.advertise_url");
        }
        config.media.advertise_url = format!("http://{addr}");
    }
    let config = Arc::new(config);
    let node_id = node_id(&config);
    let store: Arc<dyn SharedState> = store::from_config(&config).await?;
    if config.persist.enabled() {
        check_outbox_durability(store.as_ref(), &config).await?;
    }
    let persist = if config.persist.enabled() {
        let p = crate::persist::Persistence::new(&config.persist, store.clone(), &node_id)
            .map_err(RunError::Persist)?;
        if config.persist.migrate_on_start {
            match p.migrate().await {
                Ok(applied) => tracing::info!(?applied, "migrations applied"),
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "migrations not applied; writes are retried until the schema exists")
                }
            }
        }
        Some(p)
    } else {
        None
    };
    let app = AppState::with_persistence(
        config.clone(),
        store.clone(),
        node_id.clone(),
        persist.clone(),
    );

    let api_addr = listeners.api.local_addr()?;
    let admin_addr = listeners.admin.local_addr()?;
    let stopped = CancellationToken::new();
    metrics::gauge!("streamedge_draining").set(0.0);

    let api = tokio::spawn(http::serve(
        listeners.api,
        api_router(app.clone()),
        app.closing.clone(),
        http::Limits {
            max_head_bytes: config.server.max_request_head_bytes,
            ip_limits: app.ip_limits.clone(),
            trusted_proxies: app.trusted_proxies.clone(),
        },
    ));
    let admin = tokio::spawn({
        let router = admin::router(app.clone(), metrics);
        let stopped = stopped.clone();
        let listener = listeners.admin;
        async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(stopped.cancelled_owned())
                .await
        }
    });
    let background = CancellationToken::new();
    let tasks = tokio_util::task::TaskTracker::new();
    tasks.spawn(crate::sessions::service::run_sweeper(
        app.sessions.clone(),
        config.session.sweep_interval,
        background.clone(),
    ));
    tasks.spawn(crate::viewers::run_refresher(
        app.viewers.clone(),
        background.clone(),
    ));
    tasks.spawn(crate::admission::run_refresher(
        app.user_connections.clone(),
        background.clone(),
    ));
    tasks.spawn(crate::telemetry::memory::watch(background.clone()));
    if let Some(p) = &persist {
        for t in p.start(background.clone()) {
            tasks.spawn(async move {
                let _ = t.await;
            });
        }
    }
    tasks.close();
    tracing::info!(
        node = %node_id,
        api = %api_addr,
        admin = %admin_addr,
        backend = store.backend(),
        version = env!("CARGO_PKG_VERSION"),
        "streamedge started"
    );

    tokio::select! {
        _ = shutdown => {}
        _ = app.drain_requested.cancelled() => tracing::info!("drain requested on the admin listener"),
    }
    let result = drain(
        &app,
        &config,
        DrainParts {
            api,
            tasks,
            background,
            store: store.clone(),
        },
    )
    .await;
    stopped.cancel();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), admin).await;
    result
}

/// What the drain stops besides the connections.
struct DrainParts {
    api: tokio::task::JoinHandle<()>,
    tasks: tokio_util::task::TaskTracker,
    background: CancellationToken,
    store: Arc<dyn SharedState>,
}

/// Leaves the fleet without losing anything: readiness false; serving on for
/// `server.drain_delay` while the load balancer notices; then no new connections and every
/// WebSocket closed with 1012 spread over `server.drain_spread`; WHIP publishes kept until
/// their publishers move (or the grace period is nearly over); background work flushed.
/// All within `server.shutdown_grace`.
async fn drain(app: &AppState, config: &Config, parts: DrainParts) -> Result<(), RunError> {
    let s = &config.server;
    let grace = s.shutdown_grace;
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + grace;
    tracing::info!(
        connections = app.registry.connections(),
        drain_delay = ?s.drain_delay,
        drain_spread = ?s.drain_spread,
        grace = ?grace,
        "draining: readiness false, still serving"
    );
    metrics::gauge!("streamedge_draining").set(1.0);
    app.draining.cancel();
    tokio::time::sleep(s.drain_delay).await;
    tracing::info!(
        connections = app.registry.connections(),
        "draining: closing connections"
    );
    app.closing.cancel();
    app.registry.close_all_spread(s.drain_spread).await;
    app.registry.tracker().close();
    let drained = tokio::time::timeout_at(deadline, async {
        let _ = parts.api.await;
        app.registry.tracker().wait().await;
        if let Some(m) = &app.media {
            // A publisher moves by publishing to another node; keep its stream here until
            // then, leaving a second of the grace period to close.
            let keep_until = deadline - std::time::Duration::from_secs(1);
            while m.ingesting() > 0 && tokio::time::Instant::now() < keep_until {
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            m.close_all().await;
        }
        parts.background.cancel();
        parts.tasks.wait().await;
        parts.store.close().await;
    })
    .await;
    match drained {
        Ok(()) => {
            tracing::info!(elapsed = ?started.elapsed(), "shutdown complete");
            Ok(())
        }
        Err(_) => {
            tracing::error!(
                connections = app.registry.connections(),
                "shutdown grace period exceeded; stopping anyway"
            );
            Err(RunError::GraceExceeded(grace))
        }
    }
}

/// The outbox holds acknowledged records until they are in PostgreSQL: a backend that may
/// lose them on a restart is refused unless the operator accepts it.
async fn check_outbox_durability(store: &dyn SharedState, config: &Config) -> Result<(), RunError> {
    match store.durability().await {
        store::Durability::Durable => Ok(()),
        store::Durability::Volatile(why) if config.persist.allow_volatile_redis => {
            tracing::warn!(reason = %why, "persist.allow_volatile_redis: outbox records may be lost on a Redis restart");
            Ok(())
        }
        store::Durability::Volatile(why) => Err(RunError::VolatileOutbox(why)),
        store::Durability::Unknown(why) => {
            tracing::warn!(reason = %why, "cannot tell whether Redis persists what it acknowledges; make sure its append-only file is on (appendonly yes, appendfsync everysec)");
            Ok(())
        }
    }
}

fn node_id(config: &Config) -> String {
    if !config.server.node_id.is_empty() {
        return config.server.node_id.clone();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "node".to_string());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}", &suffix[..8])
}
