//! Streams and their owners: sellers create streams; everyone signed in can look them up
//! and browse them by state. The session lifecycle moves them between states.
//! The record and its pure rules live in [`crate::domain::stream`]; the HTTP routes in
//! `http/routes/streams.rs`.

pub mod service;

pub use crate::domain::stream::{Stream, StreamState};
pub use service::{StreamError, StreamService};
