//! What the API sees of a WHEP viewer's simulcast layer: its cap (`max_layer`, changed
//! while watching; the forwarding task watches it) and the layer it receives.

use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::layers::Cap;

/// A viewer's layer, as the API sees it: its cap (changed while watching) and the layer
/// it receives.
pub struct LayerControl {
    pub(super) cap: watch::Sender<Cap>,
    current: Mutex<Option<CurrentLayer>>,
}

/// The layer a viewer receives.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CurrentLayer {
    /// `low`, `mid`, `high` (`single` without simulcast).
    pub layer: &'static str,
    /// The publisher's rid (empty without simulcast).
    pub rid: String,
    /// Layers the publisher sends.
    pub layers: usize,
    /// The viewer's estimated bandwidth (bit/s), when it reports one.
    pub estimate_bps: Option<u64>,
}

impl LayerControl {
    pub fn new(cap: Cap) -> Arc<Self> {
        Arc::new(LayerControl {
            cap: watch::Sender::new(cap),
            current: Mutex::new(None),
        })
    }

    pub fn set_cap(&self, cap: Cap) {
        self.cap.send_replace(cap);
    }

    pub fn cap(&self) -> Cap {
        self.cap.borrow().clone()
    }

    pub fn current(&self) -> Option<CurrentLayer> {
        self.current.lock().unwrap().clone()
    }

    pub(super) fn set_current(&self, c: CurrentLayer) {
        *self.current.lock().unwrap() = Some(c);
    }
}
