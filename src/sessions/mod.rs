//! The seller session lifecycle: the pure state machine ([`model`]), applied atomically
//! across nodes with compare-and-swap ([`service`]), a sweeper for heartbeat and pause
//! timeouts, and the HTTP routes.

pub mod service;

pub use service::{SessionError, SessionService};
