//! The domain: what a stream, a session, a chat message and a viewer count are, the pure
//! rules about them, the names of every shared-state key, and the clock. Nothing here does
//! I/O or knows about HTTP, WebSockets or a backend; every layer above builds on it.

pub mod chat;
pub mod clock;
pub mod keys;
pub mod session;
pub mod stream;
pub mod text;
pub mod viewers;

pub use session::SessionSummary;
pub use stream::{Stream, StreamState};
pub use viewers::ViewerCounts;
