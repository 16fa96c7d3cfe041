//! The rules a configuration must meet that its types alone cannot express; every error
//! names the key.

use super::*;

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
        if !(8192..=1024 * 1024).contains(&self.server.max_request_head_bytes) {
            return invalid(
                "server.max_request_head_bytes",
                "must be between 8192 and 1048576",
            );
        }
        if self.server.worker_threads > MAX_WORKER_THREADS {
            return invalid(
                "server.worker_threads",
                &format!("must be at most {MAX_WORKER_THREADS} (0: one per CPU)"),
            );
        }
        for (i, o) in self.server.cors_origins.iter().enumerate() {
            let key = format!("server.cors_origins[{i}]");
            if o == "*" {
                if !self.dev_mode {
                    return invalid(
                        &key,
                        "\"*\" (any origin) is accepted only with --dev; list the origins",
                    );
                }
            } else if !valid_origin(o) {
                return invalid(
                    &key,
                    "must be an origin: scheme://host[:port] (http or https, no path), or \"*\" with --dev",
                );
            }
        }
        if self.auth.dev_login && self.auth.jwt_secret.is_empty() {
            return invalid(
                "auth.dev_login",
                "needs auth.jwt_secret (the development login signs tokens with it)",
            );
        }
        if self.server.listen == self.server.admin_listen && self.server.listen.port() != 0 {
            return invalid("server.admin_listen", "must differ from server.listen");
        }
        if !self.redis.url.is_empty() && !redis_url_ok(&self.redis.url) {
            return invalid("redis.url", "must be a redis://, rediss:// or unix:// URL");
        }
        match self.redis.mode {
            RedisMode::Standalone if !self.redis.cluster_nodes.is_empty() => {
                return invalid("redis.cluster_nodes", "needs redis.mode = \"cluster\"");
            }
            RedisMode::Cluster => {
                if self.redis.url.is_empty() {
                    return invalid(
                        "redis.url",
                        "redis.mode = \"cluster\" needs a seed node in redis.url",
                    );
                }
                let unix = |u: &str| u.starts_with("unix://") || u.starts_with("redis+unix://");
                if unix(&self.redis.url) {
                    return invalid("redis.url", "a Redis Cluster is reached over TCP");
                }
                let tls = self.redis.url.starts_with("rediss://");
                for n in &self.redis.cluster_nodes {
                    if !redis_url_ok(n) || unix(n) {
                        return invalid(
                            "redis.cluster_nodes",
                            "each must be a redis:// or rediss:// URL",
                        );
                    }
                    if n.starts_with("rediss://") != tls {
                        return invalid(
                            "redis.cluster_nodes",
                            "must all use TLS (rediss://) or none, as redis.url does",
                        );
                    }
                }
            }
            RedisMode::Standalone => {}
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
        if self.ws.max_fragments == 0 {
            return invalid("ws.max_fragments", "must be at least 1");
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
        let a = &self.admission;
        if !(0.0..=1_000_000.0).contains(&a.ip_connects_per_sec) || a.ip_connects_per_sec.is_nan() {
            return invalid(
                "admission.ip_connects_per_sec",
                "must be between 0 and 1000000",
            );
        }
        if a.ip_connects_per_sec > 0.0 && a.ip_connects_burst == 0 {
            return invalid(
                "admission.ip_connects_burst",
                "must be at least 1 when the rate is set",
            );
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
}

/// A URL the Redis client accepts, in a scheme the node supports.
fn redis_url_ok(url: &str) -> bool {
    let scheme = ["redis://", "rediss://", "unix://", "redis+unix://"]
        .iter()
        .any(|s| url.starts_with(s));
    scheme && redis::Client::open(url).is_ok()
}

/// `scheme://host[:port]` with an http(s) scheme, no path, query, user info or trailing
/// slash: what a browser sends in `Origin`.
pub fn valid_origin(o: &str) -> bool {
    let Some(rest) = o
        .strip_prefix("https://")
        .or_else(|| o.strip_prefix("http://"))
    else {
        return false;
    };
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return false;
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || rest.starts_with('[') => (h, Some(p)),
        _ => (rest, None),
    };
    if host.is_empty() || port.is_some_and(|p| p.parse::<u16>().is_err()) {
        return false;
    }
    o == o.to_ascii_lowercase()
}

#[cfg(test)]
mod origin_tests {
    use super::valid_origin;
    use crate::config::Config;

    #[test]
    fn any_origin_only_in_dev_mode() {
        let mut c = Config::default();
        c.server.cors_origins = vec!["*".into()];
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("server.cors_origins[0]") && e.contains("--dev"),
            "{e}"
        );
        c.dev_mode = true;
        c.validate().unwrap();
        c.server.cors_origins = vec!["https://shop.example.com".into(), "shop".into()];
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("server.cors_origins[1]"), "{e}");
        c.server.cors_origins.pop();
        c.auth.dev_login = true;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("auth.dev_login"), "{e}");
    }

    #[test]
    fn origins() {
        for ok in [
            "https://shop.example.com",
            "http://127.0.0.1:5173",
            "http://[::1]:8080",
            "http://localhost",
        ] {
            assert!(valid_origin(ok), "{ok}");
        }
        for bad in [
            "shop.example.com",
            "https://shop.example.com/",
            "https://shop.example.com/app",
            "ftp://x",
            "https://",
            "https://x:99999",
            "https://Shop.example.com",
            "https://u@x",
        ] {
            assert!(!valid_origin(bad), "{bad}");
        }
    }
}
