//! HTTP plumbing shared by every route: the problem+json error type and the middleware
//! stack (request ids, tracing spans, request metrics).

pub mod client_ip;
pub mod extract;
pub mod middleware;
pub mod problem;
pub mod rate_limit;

pub use extract::{ApiJson, ApiQuery};
pub use problem::{ApiError, ErrorKind};
