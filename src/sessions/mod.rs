//! The seller session lifecycle across nodes: the pure state machine
//! ([`crate::domain::session`]) applied atomically with compare-and-swap ([`service`]),
//! session summaries, and a sweeper for heartbeat and pause timeouts. The HTTP routes are in
//! `http/routes/sessions.rs`.

pub mod service;

pub use service::{SessionError, SessionService};
