//! Chat relay: ordered, gapless fan-out of messages to every viewer of a stream on every
//! node, with history, resume and idempotent sends.
//!
//! A message is sequenced by one atomic append to the stream's log (which publishes it to
//! every node); each node's stream hub checks the sequence for gaps (backfilling from the
//! log), builds the frame once and hands the same bytes to every local connection, each of
//! which takes only sequence numbers it has not seen.

pub mod service;

pub use service::ChatService;
