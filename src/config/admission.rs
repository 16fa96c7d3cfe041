//! `[admission]`: how many connections one client may hold and open.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdmissionConfig {
    /// Connections (HTTP and WebSocket) one client IP (an IPv6 /64) may hold on this node;
    /// more get `429 too_many_connections`. 0: no limit. Behind `server.trusted_proxies`
    /// the limit applies to the stream WebSockets of the forwarded client address.
    pub ip_connections: u32,
    /// New connections per second one client IP may open on this node (on average);
    /// faster gets `429 connection_rate_limited`. 0: no limit.
    pub ip_connects_per_sec: f64,
    /// How many connections over that rate one client IP may open at once.
    pub ip_connects_burst: u32,
    /// Stream WebSockets one user (token `sub`) may hold across the cluster; more get
    /// `429 too_many_connections`. 0: no limit.
    pub user_websockets: u32,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            ip_connections: 1000,
            ip_connects_per_sec: 100.0,
            ip_connects_burst: 500,
            user_websockets: 20,
        }
    }
}
