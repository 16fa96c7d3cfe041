//! The HTTP transport: the state every handler shares ([`AppState`]), the problem+json
//! error type and how every service's errors map onto it, extractors (JSON, query, the
//! caller, the stream id) and how integer body fields are read, the middleware stack,
//! client IPs and per-route rate limits, and the route handlers themselves (`routes/`, one
//! file per capability). Handlers extract, call a service and map its error; nothing else.

pub mod client_ip;
pub mod cors;
pub mod errors;
pub mod extract;
pub mod integer;
pub mod middleware;
pub mod problem;
pub mod rate_limit;
pub mod routes;
pub mod state;
pub mod upgrade;

pub use extract::{ApiJson, ApiQuery, Authenticated, ClientIp, StreamId, WsAuthenticated};
pub use problem::{ApiError, ErrorKind};
pub use state::AppState;
