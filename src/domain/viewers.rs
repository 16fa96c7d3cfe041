//! What a stream's viewer numbers look like, wherever they are shown.

use serde::{Deserialize, Serialize};

/// Counts shown on `GET /v1/streams/{id}` and pushed as `viewers` frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewerCounts {
    pub current: u64,
    /// Highest concurrent count of the current (or last) session.
    pub peak: u64,
    /// Distinct viewers of the current (or last) session (HyperLogLog with Redis).
    pub unique: u64,
}
