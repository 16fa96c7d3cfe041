//! The state every handler shares: configuration, the shared-state backend, the
//! WebSocket registry and the node's draining flag.

use std::ops::Deref;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::store::SharedState;
use crate::ws::Registry;

/// Cheap to clone; one per node.
#[derive(Clone)]
pub struct AppState(Arc<AppInner>);

pub struct AppInner {
    pub config: Arc<Config>,
    pub store: Arc<dyn SharedState>,
    pub registry: Arc<Registry>,
    pub node_id: String,
    /// Cancelled when the node starts shutting down.
    pub draining: CancellationToken,
}

impl AppState {
    pub fn new(config: Arc<Config>, store: Arc<dyn SharedState>, node_id: String) -> Self {
        let registry = Registry::new(config.ws.max_connections);
        Self(Arc::new(AppInner {
            config,
            store,
            registry,
            node_id,
            draining: CancellationToken::new(),
        }))
    }

    pub fn is_draining(&self) -> bool {
        self.draining.is_cancelled()
    }

    /// Ready to take traffic: not draining and the shared state answers.
    pub fn is_ready(&self) -> bool {
        !self.is_draining() && self.store.is_healthy()
    }
}

impl Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}
