//! Admission control: how many connections one client may hold and open, so no single
//! client can take a node's connection budget (`ws.max_connections`, file descriptors) or
//! its memory.
//!
//! - **Per client IP, on this node** ([`IpLimits`], `[admission]` `ip_*`): concurrent
//!   connections and new connections per second. Checked where it is cheapest: at `accept`
//!   for a direct client (before a byte of the request is read), and at the WebSocket
//!   upgrade for a client behind a trusted proxy (`server.trusted_proxies`, the address
//!   from `X-Forwarded-For`), where the TCP peer is the proxy. IPv6 clients are counted per
//!   /64, the block one subscriber usually holds.
//! - **Per user, across the cluster** ([`UserConnections`], `admission.user_websockets`):
//!   stream WebSockets of one token subject, counted in a presence set in the shared state
//!   so every node sees the same total.
//!
//! Refusals answer `429` with `Retry-After` and a `code` ([`Refusal::code`]), and count in
//! `streamedge_admission_refused_total{reason}`.

mod ip;
mod users;

pub use ip::{IpGuard, IpLimits};
pub use users::{run_refresher, UserConnections, UserGuard};

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The client IP holds `admission.ip_connections` connections already.
    IpConnections,
    /// The client IP opened connections faster than `admission.ip_connects_per_sec`.
    IpRate { retry_after_secs: u64 },
    /// The user holds `admission.user_websockets` stream WebSockets already.
    UserWebsockets,
}

impl Refusal {
    /// The problem `code` of the `429` answer (docs/api.md).
    pub fn code(self) -> &'static str {
        match self {
            Refusal::IpConnections | Refusal::UserWebsockets => "too_many_connections",
            Refusal::IpRate { .. } => "connection_rate_limited",
        }
    }

    /// The `reason` label of `streamedge_admission_refused_total`.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::IpConnections => "ip_connections",
            Refusal::IpRate { .. } => "ip_rate",
            Refusal::UserWebsockets => "user_websockets",
        }
    }

    /// A safe explanation for the client.
    pub fn detail(self) -> &'static str {
        match self {
            Refusal::IpConnections => "too many connections from this address; close some first",
            Refusal::IpRate { .. } => "connecting too fast from this address; retry later",
            Refusal::UserWebsockets => {
                "this user holds too many stream connections; close one first"
            }
        }
    }

    /// Seconds for `Retry-After`.
    pub fn retry_after_secs(self) -> u64 {
        match self {
            Refusal::IpConnections => 1,
            Refusal::IpRate { retry_after_secs } => retry_after_secs.max(1),
            Refusal::UserWebsockets => 5,
        }
    }

    /// Counts the refusal.
    pub fn record(self) {
        metrics::counter!("streamedge_admission_refused_total", "reason" => self.reason())
            .increment(1);
    }
}
