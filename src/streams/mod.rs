//! Streams and their owners: sellers create streams; everyone signed in can look them up
//! and browse them by state. The session lifecycle moves them between states.

pub mod model;
pub mod routes;
pub mod service;

pub use model::{Stream, StreamState};
pub use service::{StreamError, StreamService};
