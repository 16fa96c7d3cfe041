//! The stream WebSocket's transport: the connection registry (admission, fan-out by
//! stream, shutdown), frames encoded once for every viewer ([`wire`]), bounded coalescing
//! outbound queues that write to the socket directly, the connection driver (keepalive,
//! frame limits), the per-stream hub that turns the stream's channel into frames for local
//! connections, and the chat side of a connection. Frames are typed in
//! [`crate::protocol`]; the upgrade handler is `http/routes/ws.rs`.

pub mod chat;
pub mod conn;
pub mod cursor;
pub mod guard;
pub mod hub;
pub mod queue;
pub mod registry;
pub mod wire;
pub mod writer;

pub use queue::close_code;
pub use registry::Registry;
