//! Node configuration: the typed settings, loaded from `config/default.toml`-shaped TOML,
//! an optional `--config` file and `STREAMEDGE_*` environment overrides.
//!
//! Every key is known: an unknown key or a value of the wrong shape is a [`ConfigError`]
//! that names the key, and `main` turns it into exit code 2.

mod load;
mod parse;
mod persist;
mod security;

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

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
    pub session: SessionConfig,
    pub viewers: ViewersConfig,
    pub chat: ChatConfig,
    pub persist: PersistConfig,
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

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port/db` (`rediss://` for TLS, `#insecure` at the end
    /// to skip certificate checks in test setups); empty selects the embedded in-memory
    /// backend.
    pub url: String,
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
            send_queue_bytes: 256 * 1024,
            read_buffer_size: 1024,
            write_buffer_size: 8 * 1024,
            ping_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

impl Config {
    /// Checks rules that the types alone cannot express. Errors name the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, msg: &str| {
            Err(ConfigError::Invalid {
                key: key.to_string(),
                message: msg.to_string(),
            })
        };
        if self.server.shutdown_grace.is_zero() {
            return invalid("server.shutdown_grace", "must be greater than zero");
        }
        if self.server.drain_delay + self.server.drain_spread >= self.server.shutdown_grace {
            return invalid(
                "server.shutdown_grace",
                "must be longer than server.drain_delay + server.drain_spread",
            );
        }
        if self.server.worker_threads > MAX_WORKER_THREADS {
            return invalid(
                "server.worker_threads",
                &format!("must be at most {MAX_WORKER_THREADS} (0: one per CPU)"),
            );
        }
        if self.server.listen == self.server.admin_listen && self.server.listen.port() != 0 {
            return invalid("server.admin_listen", "must differ from server.listen");
        }
        if !self.redis.url.is_empty() {
            let ok = self.redis.url.starts_with("redis://")
                || self.redis.url.starts_with("rediss://")
                || self.redis.url.starts_with("unix://")
                || self.redis.url.starts_with("redis+unix://");
            if !ok || redis::Client::open(self.redis.url.as_str()).is_err() {
                return invalid("redis.url", "must be a redis://, rediss:// or unix:// URL");
            }
        }
        if !self.redis.tls_ca_file.is_empty() {
            if !self.redis.url.starts_with("rediss://") {
                return invalid("redis.tls_ca_file", "needs a rediss:// redis.url");
            }
            if std::fs::metadata(&self.redis.tls_ca_file).is_err() {
                return invalid("redis.tls_ca_file", "cannot read that file");
            }
        }
        for (key, d) in [
            ("redis.connect_timeout", self.redis.connect_timeout),
            ("redis.command_timeout", self.redis.command_timeout),
            ("redis.health_interval", self.redis.health_interval),
            ("ws.ping_interval", self.ws.ping_interval),
            ("ws.idle_timeout", self.ws.idle_timeout),
        ] {
            if d.is_zero() {
                return invalid(key, "must be greater than zero");
            }
        }
        if self.ws.idle_timeout <= self.ws.ping_interval {
            return invalid("ws.idle_timeout", "must be longer than ws.ping_interval");
        }
        if self.ws.max_connections == 0 {
            return invalid("ws.max_connections", "must be at least 1");
        }
        if !(256..=16 * 1024 * 1024).contains(&self.ws.max_message_size) {
            return invalid(
                "ws.max_message_size",
                "must be between 256 and 16777216 bytes",
            );
        }
        if self.ws.send_queue_bytes < self.ws.max_message_size {
            return invalid(
                "ws.send_queue_bytes",
                "must be at least ws.max_message_size",
            );
        }
        if !(512..=1024 * 1024).contains(&self.ws.read_buffer_size) {
            return invalid(
                "ws.read_buffer_size",
                "must be between 512 and 1048576 bytes",
            );
        }
        if !(512..=1024 * 1024).contains(&self.ws.write_buffer_size) {
            return invalid(
                "ws.write_buffer_size",
                "must be between 512 and 1048576 bytes",
            );
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return invalid("log.level", "is not a valid tracing filter (e.g. `info`)");
        }
        for (i, p) in self.server.trusted_proxies.iter().enumerate() {
            if parse_net(p).is_none() {
                return invalid(
                    &format!("server.trusted_proxies[{i}]"),
                    "must be an IP address or CIDR (e.g. 10.0.0.0/8)",
                );
            }
        }
        self.validate_security()
    }

    fn validate_security(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, msg: &str| {
            Err(ConfigError::Invalid {
                key: key.to_string(),
                message: msg.to_string(),
            })
        };
        let a = &self.auth;
        if !a.jwt_secret.is_empty() && a.jwt_secret.expose().len() < 32 {
            return invalid("auth.jwt_secret", "must be at least 32 characters");
        }
        let url_ok = a.jwks_url.is_empty()
            || a.jwks_url.starts_with("https://")
            || a.jwks_url.starts_with("http://");
        if !url_ok {
            return invalid("auth.jwks_url", "must be an http:// or https:// URL");
        }
        for (key, d) in [
            ("auth.jwks_timeout", a.jwks_timeout),
            ("auth.jwks_min_refresh", a.jwks_min_refresh),
            ("agora.token_ttl", self.agora.token_ttl),
            ("agora.privilege_ttl", self.agora.privilege_ttl),
            ("media.token_ttl", self.media.token_ttl),
            ("media.relay_idle_timeout", self.media.relay_idle_timeout),
        ] {
            if d.is_zero() {
                return invalid(key, "must be greater than zero");
            }
        }
        if a.leeway > Duration::from_secs(300) {
            return invalid("auth.leeway", "must be at most 5m");
        }
        let path_ok = !a.role_claim.is_empty()
            && a.role_claim
                .split('.')
                .all(|p| !p.is_empty() && p.len() <= 64);
        if !path_ok {
            return invalid(
                "auth.role_claim",
                "must be a dotted claim path like app_metadata.role",
            );
        }
        let hex32 = |s: &str| s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit());
        let g = &self.agora;
        if !g.app_id.is_empty() && !hex32(&g.app_id) {
            return invalid("agora.app_id", "must be 32 hexadecimal characters");
        }
        if !g.app_certificate.is_empty() && !hex32(g.app_certificate.expose()) {
            return invalid("agora.app_certificate", "must be 32 hexadecimal characters");
        }
        if g.app_id.is_empty() != g.app_certificate.is_empty() {
            return invalid(
                "agora.app_certificate",
                "agora.app_id and agora.app_certificate must be set together",
            );
        }
        for (key, d) in [
            ("agora.token_ttl", g.token_ttl),
            ("agora.privilege_ttl", g.privilege_ttl),
        ] {
            if d > Duration::from_secs(24 * 3600) {
                return invalid(key, "must be at most 24h");
            }
        }
        for (key, d) in [
            ("session.heartbeat_timeout", self.session.heartbeat_timeout),
            ("session.pause_timeout", self.session.pause_timeout),
            ("session.sweep_interval", self.session.sweep_interval),
            ("session.summary_ttl", self.session.summary_ttl),
            ("viewers.ttl", self.viewers.ttl),
            ("viewers.push_interval", self.viewers.push_interval),
        ] {
            if d.is_zero() {
                return invalid(key, "must be greater than zero");
            }
        }
        if self.session.sweep_interval > self.session.heartbeat_timeout {
            return invalid(
                "session.sweep_interval",
                "must not be longer than session.heartbeat_timeout",
            );
        }
        let c = &self.chat;
        if !(1..=100_000).contains(&c.history_size) {
            return invalid("chat.history_size", "must be between 1 and 100000");
        }
        if !(1..=10_000).contains(&c.max_chars) {
            return invalid("chat.max_chars", "must be between 1 and 10000");
        }
        if c.max_chars * 4 + 256 > self.ws.max_message_size {
            return invalid(
                "chat.max_chars",
                "a message of chat.max_chars characters must fit in ws.max_message_size",
            );
        }
        for (key, d) in [
            ("chat.history_ttl", c.history_ttl),
            ("chat.idempotency_window", c.idempotency_window),
        ] {
            if d.is_zero() {
                return invalid(key, "must be greater than zero");
            }
        }
        if !(0.0..=10_000.0).contains(&c.user_per_sec)
            || (c.user_per_sec > 0.0 && c.user_burst == 0)
        {
            return invalid(
                "chat.user_per_sec",
                "must be 0–10000 with chat.user_burst at least 1",
            );
        }
        let p = &self.persist;
        if p.enabled() {
            let url = p.database_url.expose();
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return invalid(
                    "persist.database_url",
                    "must be a postgres:// or postgresql:// URL",
                );
            }
        }
        for (key, n) in [
            ("persist.pool_size", p.pool_size),
            ("persist.writers", p.writers),
            ("persist.batch_max_records", p.batch_max_records),
        ] {
            if !(1..=100_000).contains(&n) {
                return invalid(key, "must be between 1 and 100000");
            }
        }
        if p.writers >= p.pool_size {
            return invalid(
                "persist.writers",
                "must be smaller than persist.pool_size (restores and exports need a connection)",
            );
        }
        for (key, d) in [
            ("persist.connect_timeout", p.connect_timeout),
            ("persist.poll_interval", p.poll_interval),
            ("persist.reclaim_after", p.reclaim_after),
            ("persist.retry_initial", p.retry_initial),
            ("persist.retry_max", p.retry_max),
            ("persist.local_fsync_interval", p.local_fsync_interval),
        ] {
            if d.is_zero() {
                return invalid(key, "must be greater than zero");
            }
        }
        if p.outbox_max_records == 0 {
            return invalid("persist.outbox_max_records", "must be greater than zero");
        }
        if self.viewers.ttl < Duration::from_millis(300) {
            return invalid("viewers.ttl", "must be at least 300ms");
        }
        if self.media.enabled && self.media.node_key.expose().len() < 32 {
            return invalid(
                "media.node_key",
                "must be at least 32 characters when media.enabled",
            );
        }
        let range = parse_port_range(&self.media.udp_port_range).map_err(|message| {
            ConfigError::Invalid {
                key: "media.udp_port_range".into(),
                message,
            }
        })?;
        match self.media.udp_addr.parse::<std::net::SocketAddr>() {
            Err(_) => return invalid("media.udp_addr", "must be IP:PORT (e.g. \"0.0.0.0:0\")"),
            Ok(a) if range.is_some() && a.port() != 0 => {
                return invalid(
                    "media.udp_addr",
                    "must have port 0 when media.udp_port_range is set",
                )
            }
            Ok(_) => {}
        }
        let r = &self.rate_limit;
        for (name, l) in [
            ("rtc_token", &r.rtc_token),
            ("streams_write", &r.streams_write),
            ("streams_read", &r.streams_read),
        ] {
            for (field, rate, burst) in [
                ("user", l.user_per_sec, l.user_burst),
                ("ip", l.ip_per_sec, l.ip_burst),
            ] {
                if !(0.0..=1_000_000.0).contains(&rate) || rate.is_nan() {
                    return invalid(
                        &format!("rate_limit.{name}.{field}_per_sec"),
                        "must be between 0 and 1000000",
                    );
                }
                if rate > 0.0 && burst == 0 {
                    return invalid(
                        &format!("rate_limit.{name}.{field}_burst"),
                        "must be at least 1 when the rate is set",
                    );
                }
            }
        }
        Ok(())
    }

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
