//! Node configuration: the typed settings, loaded from `config/default.toml`-shaped TOML,
//! an optional `--config` file and `STREAMEDGE_*` environment overrides.
//!
//! Every key is known: an unknown key or a value of the wrong shape is a [`ConfigError`]
//! that names the key, and `main` turns it into exit code 2.

mod admission;
mod load;
mod parse;
mod persist;
mod security;
mod validate;

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use admission::AdmissionConfig;
pub use load::{load, load_unvalidated, ConfigError, ConfigSource, ENV_PREFIX};
pub use parse::{parse_net, parse_port_range};
pub use persist::PersistConfig;
pub use security::{
    AgoraConfig, AuthConfig, ChatConfig, MediaConfig, RateLimitConfig, RouteLimit, Secret,
    SessionConfig, UidMode, ViewersConfig,
};

/// The whole node configuration. Defaults are the embedded single-node setup.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub log: LogConfig,
    pub redis: RedisConfig,
    pub ws: WsConfig,
    pub auth: AuthConfig,
    pub agora: AgoraConfig,
    pub media: MediaConfig,
    pub rate_limit: RateLimitConfig,
    pub admission: AdmissionConfig,
    pub session: SessionConfig,
    pub viewers: ViewersConfig,
    pub chat: ChatConfig,
    pub persist: PersistConfig,
    pub console: ConsoleConfig,
    /// Set by `--dev` (not a key): development-only values are accepted.
    #[serde(skip)]
    pub dev_mode: bool,
}

/// The web console (`/` on the API listener).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// Serve the seller/buyer console at `/` (on with `--dev`).
    pub enabled: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Public API listener (HTTP + WebSocket).
    pub listen: SocketAddr,
    /// Admin listener: `/metrics`, `/healthz`, `/readyz`.
    pub admin_listen: SocketAddr,
    /// How long a graceful shutdown may take before the node stops anyway.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Draining: how long the node keeps serving after readiness goes false, so the load
    /// balancer stops routing to it before connections are closed.
    #[serde(with = "humantime_serde")]
    pub drain_delay: Duration,
    /// Draining: WebSockets are closed (1012) evenly over this long, so their clients do
    /// not all reconnect in the same instant.
    #[serde(with = "humantime_serde")]
    pub drain_spread: Duration,
    /// This node's name in logs, metrics and the shared state; empty means generated.
    pub node_id: String,
    /// Peers (IPs or CIDRs) whose `X-Forwarded-For` is believed when finding a client's
    /// IP for rate limits. Empty: the peer address is the client.
    pub trusted_proxies: Vec<String>,
    /// Browser origins (`https://shop.example.com`) allowed to call the REST API and open
    /// the stream WebSocket. Empty: none (same-origin pages and non-browser clients only);
    /// `["*"]`: any, accepted only with `--dev`.
    pub cors_origins: Vec<String>,
    /// Largest request head (request line and headers) the API listener reads, in bytes;
    /// larger ones get `431` and the connection closes. Bounds what an unauthenticated
    /// connection can make the node buffer.
    pub max_request_head_bytes: usize,
    /// Runtime worker threads; 0 means one per CPU the process may use (tokio's default,
    /// which also honours `TOKIO_WORKER_THREADS`).
    pub worker_threads: usize,
}

/// Most runtime worker threads `server.worker_threads` accepts.
pub const MAX_WORKER_THREADS: usize = 1024;

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            shutdown_grace: Duration::from_secs(30),
            drain_delay: Duration::from_secs(5),
            drain_spread: Duration::from_secs(5),
            node_id: String::new(),
            trusted_proxies: Vec::new(),
            cors_origins: Vec::new(),
            max_request_head_bytes: 32 * 1024,
            worker_threads: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter directive (`info`, `streamedge=debug,tower_http=info`, ...).
    /// `RUST_LOG`, when set, wins.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// How the node talks to Redis.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RedisMode {
    /// One Redis server (or one address in front of a primary that fails over).
    Standalone,
    /// A Redis Cluster: keys spread over slots by their `{stream id}` hash tag, sharded
    /// pub/sub (`SSUBSCRIBE`/`SPUBLISH`).
    Cluster,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port/db` (`rediss://` for TLS, `#insecure` at the end
    /// to skip certificate checks in test setups); empty selects the embedded in-memory
    /// backend.
    pub url: String,
    /// `standalone` (one Redis, or a managed primary behind one address) or `cluster`
    /// (Redis Cluster ≥ 7: `url` and `cluster_nodes` are seed nodes).
    pub mode: RedisMode,
    /// More seed nodes of a Redis Cluster besides `url` (same URL form); any reachable one
    /// is enough to discover the others.
    pub cluster_nodes: Vec<String>,
    /// PEM file with the CA certificate(s) that sign the Redis server's TLS certificate;
    /// empty: the system's roots. Only with `rediss://`.
    pub tls_ca_file: String,
    /// Prefix of every key and channel this node uses, so several deployments can share one
    /// Redis.
    pub key_prefix: String,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    /// How often the node pings Redis to decide readiness.
    #[serde(with = "humantime_serde")]
    pub health_interval: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            mode: RedisMode::Standalone,
            cluster_nodes: Vec::new(),
            tls_ca_file: String::new(),
            key_prefix: "streamedge:".into(),
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(2),
            health_interval: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WsConfig {
    /// Most WebSocket connections this node holds; upgrades beyond it get 503.
    pub max_connections: usize,
    /// Largest accepted client message (and frame), in bytes.
    pub max_message_size: usize,
    /// Most frames one client message may be split into (fragmentation); more closes the
    /// connection with 1009.
    pub max_fragments: u32,
    /// Per-connection outbound queue bound, in bytes; a client that lets it fill is
    /// disconnected as a slow consumer.
    pub send_queue_bytes: usize,
    /// Per-connection socket read buffer (tungstenite's default is 128 KiB).
    pub read_buffer_size: usize,
    /// Per-connection write buffer before a flush is forced.
    pub write_buffer_size: usize,
    /// Interval between server pings.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// A connection that sends nothing (not even a pong) for this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
}

impl Default for WsConfig {
    fn default() -> Self {
        Self {
            max_connections: 18_000,
            max_message_size: 16 * 1024,
            max_fragments: 64,
            send_queue_bytes: 256 * 1024,
            read_buffer_size: 1024,
            write_buffer_size: 8 * 1024,
            ping_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

impl Config {
    /// A copy safe to print or log: passwords and secrets replaced by `<redacted>`.
    pub fn redacted(&self) -> Config {
        let mut c = self.clone();
        c.redis.url = redact_url_password(&c.redis.url);
        c.auth.jwt_secret = c.auth.jwt_secret.redacted();
        c.agora.app_certificate = c.agora.app_certificate.redacted();
        c.media.node_key = c.media.node_key.redacted();
        c.persist.database_url = Secret::new(redact_url_password(c.persist.database_url.expose()));
        c
    }
}

/// Replaces the password of a URL (`scheme://user:password@host`) with `<redacted>`.
pub fn redact_url_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let userinfo = &authority[..at];
    let user = userinfo.split(':').next().unwrap_or("");
    format!(
        "{}://{}:<redacted>@{}",
        &url[..scheme_end],
        user,
        &rest[at + 1..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn redacts_password_only() {
        assert_eq!(
            redact_url_password("redis://:s3cret@10.0.0.1:6379/0"),
            "redis://:<redacted>@10.0.0.1:6379/0"
        );
        assert_eq!(
            redact_url_password("redis://app:pw@host/1"),
            "redis://app:<redacted>@host/1"
        );
        assert_eq!(
            redact_url_password("redis://127.0.0.1:6379/"),
            "redis://127.0.0.1:6379/"
        );
        assert_eq!(redact_url_password(""), "");
    }

    #[test]
    fn worker_threads_are_bounded() {
        let mut c = Config::default();
        c.server.worker_threads = 1;
        c.validate().unwrap();
        c.server.worker_threads = MAX_WORKER_THREADS + 1;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("server.worker_threads"), "{err}");
    }

    #[test]
    fn idle_timeout_must_exceed_ping_interval() {
        let mut c = Config::default();
        c.ws.idle_timeout = c.ws.ping_interval;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("ws.idle_timeout"), "{err}");
    }

    #[test]
    fn media_ports_are_checked() {
        let check = |addr: &str, range: &str| {
            let mut c = Config::default();
            c.media.udp_addr = addr.into();
            c.media.udp_port_range = range.into();
            c.validate().err().map(|e| e.to_string())
        };
        assert_eq!(check("0.0.0.0:0", "50000-50099"), None);
        assert_eq!(check("10.0.0.5:4000", ""), None);
        let err = check("0.0.0.0:0", "50099-50000").unwrap();
        assert!(err.contains("media.udp_port_range"), "{err}");
        let err = check("0.0.0.0:4000", "50000-50099").unwrap();
        assert!(
            err.contains("media.udp_addr") && err.contains("port 0"),
            "{err}"
        );
        let err = check("localhost", "").unwrap();
        assert!(err.contains("media.udp_addr"), "{err}");
    }
}
