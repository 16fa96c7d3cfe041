//! The stream WebSocket endpoint `GET /v1/streams/{stream_id}/ws`: admission, the
//! connection registry (fan-out by stream, shutdown), bounded coalescing outbound queues,
//! keepalive and the frame protocol.

pub mod chat;
pub mod conn;
pub mod hub;
pub mod queue;
pub mod registry;

pub use queue::close_code;
pub use registry::Registry;
