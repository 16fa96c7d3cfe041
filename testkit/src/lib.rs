//! Helpers for streamedge's integration tests (the node crate's `tests/` and the load
//! generator's): nodes started in-process on port 0 and the node binary as a child
//! process, private Redis and PostgreSQL servers, access tokens, HTTP calls and WebSocket
//! clients.
//!
//! Tests use it as `use streamedge_testkit as common;` and call everything at the crate
//! root (`common::TestNode`, `common::join_with`, …).
//!
//! Integration tests need the real Redis and PostgreSQL that `scripts/test` starts; run
//! without them, they fail with a message that says so (they never skip).

mod auth;
mod chat;
mod http;
mod nginx;
mod node;
mod postgres;
mod prometheus;
mod raw_ws;
mod redis;
mod support;
mod ws;

pub use auth::*;
pub use chat::*;
pub use http::*;
pub use nginx::*;
pub use node::*;
pub use postgres::*;
pub use prometheus::*;
pub use raw_ws::*;
pub use redis::*;
pub use support::*;
pub use ws::*;
