//! HTTP plumbing shared by every route: the problem+json error type and the middleware
//! stack (request ids, tracing spans, request metrics).

pub mod middleware;
pub mod problem;

pub use problem::{ApiError, ErrorKind};
