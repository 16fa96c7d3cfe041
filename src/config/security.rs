//! Configuration of authentication, RTC tokens, media tokens and rate limits.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A secret value: printed as `<redacted>` by `Debug` and by `Config::redacted`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub(crate) fn redacted(&self) -> Self {
        if self.0.is_empty() {
            Self::default()
        } else {
            Self("<redacted>".into())
        }
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str("<redacted>")
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The Supabase project's JWT secret (HS256). Empty: HS256 tokens are refused.
    pub jwt_secret: Secret,
    /// JWKS with the project's asymmetric signing keys (ES256/RS256). Empty: none.
    pub jwks_url: String,
    #[serde(with = "humantime_serde")]
    pub jwks_timeout: Duration,
    /// Least time between two JWKS fetches (doubles after failures, up to 5 min).
    #[serde(with = "humantime_serde")]
    pub jwks_min_refresh: Duration,
    /// Required `aud`; empty skips the check.
    pub audience: String,
    /// Required `iss`; empty skips the check.
    pub issuer: String,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// Dotted path of the claim holding `seller` or `buyer`.
    pub role_claim: String,
    /// Accept Supabase anonymous sign-ins (and anon-key tokens) as viewers.
    pub allow_anonymous_viewers: bool,
    /// `POST /v1/dev/login` mints access tokens for any user with `jwt_secret`.
    /// Development only (on with `--dev`); the node logs a warning when it is on.
    pub dev_login: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt_secret: Secret::default(),
            jwks_url: String::new(),
            jwks_timeout: Duration::from_secs(5),
            jwks_min_refresh: Duration::from_secs(30),
            audience: "authenticated".into(),
            issuer: String::new(),
            leeway: Duration::from_secs(30),
            role_claim: "app_metadata.role".into(),
            allow_anonymous_viewers: false,
            dev_login: false,
        }
    }
}

/// How the RTC uid of a user is formed.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum UidMode {
    /// A 32-bit number derived stably from the user id.
    Numeric,
    /// The user id itself as an Agora user account.
    Account,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AgoraConfig {
    /// Agora App ID (32 hex characters). Empty: RTC tokens are not issued.
    pub app_id: String,
    /// Agora App Certificate (32 hex characters).
    pub app_certificate: Secret,
    /// Token lifetime.
    #[serde(with = "humantime_serde")]
    pub token_ttl: Duration,
    /// Lifetime of the join/publish privileges inside the token.
    #[serde(with = "humantime_serde")]
    pub privilege_ttl: Duration,
    pub uid_mode: UidMode,
}

impl Default for AgoraConfig {
    fn default() -> Self {
        Self {
            app_id: String::new(),
            app_certificate: Secret::default(),
            token_ttl: Duration::from_secs(3600),
            privilege_ttl: Duration::from_secs(3600),
            uid_mode: UidMode::Numeric,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// Serve the node's own WebRTC media path (WHIP/WHEP) and issue media tokens.
    pub enabled: bool,
    /// Key signing the node's media tokens (HS256, at least 32 characters when enabled).
    pub node_key: Secret,
    #[serde(with = "humantime_serde")]
    pub token_ttl: Duration,
    /// Local UDP address each media connection binds (`0.0.0.0:0`: every interface,
    /// ephemeral ports; a concrete IP binds only it).
    pub udp_addr: String,
    /// UDP ports media connections bind, `"FIRST-LAST"` inclusive, one port per connection
    /// (empty: ephemeral ports). `udp_addr` then gives only the IP and must have port 0.
    pub udp_port_range: String,
    /// Public IPs advertised instead of the local ones (the node behind 1:1 NAT).
    pub public_ips: Vec<String>,
    /// STUN/TURN URLs offered to clients in WHIP/WHEP `Link` headers.
    pub ice_servers: Vec<String>,
    /// The base URL other nodes reach this node's API at, to relay streams it ingests
    /// (empty: `http://` + the API listener's address).
    pub advertise_url: String,
    /// Streams this node ingests at once, and viewers it serves at once.
    pub max_publishers: usize,
    pub max_viewers: usize,
    /// Fewest time between two keyframe requests sent to a publisher per track.
    #[serde(with = "humantime_serde")]
    pub keyframe_interval: Duration,
    /// A relay (this node pulling another node's stream for its viewers) that no viewer
    /// has used for this long is closed.
    #[serde(with = "humantime_serde")]
    pub relay_idle_timeout: Duration,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            node_key: Secret::default(),
            token_ttl: Duration::from_secs(3600),
            udp_addr: "0.0.0.0:0".into(),
            udp_port_range: String::new(),
            public_ips: Vec::new(),
            ice_servers: Vec::new(),
            advertise_url: String::new(),
            max_publishers: 16,
            max_viewers: 500,
            keyframe_interval: Duration::from_secs(1),
            relay_idle_timeout: Duration::from_secs(30),
        }
    }
}

/// One route's limits: a sustained rate and a burst, per user and per client IP.
/// A rate of 0 disables that limit.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RouteLimit {
    pub user_per_sec: f64,
    pub user_burst: u32,
    pub ip_per_sec: f64,
    pub ip_burst: u32,
}

impl RouteLimit {
    const fn new(user_per_sec: f64, user_burst: u32, ip_per_sec: f64, ip_burst: u32) -> Self {
        Self {
            user_per_sec,
            user_burst,
            ip_per_sec,
            ip_burst,
        }
    }
}

impl Default for RouteLimit {
    fn default() -> Self {
        Self::new(10.0, 20, 100.0, 200)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Master switch.
    pub enabled: bool,
    /// `POST /v1/streams/{id}/rtc-token`.
    pub rtc_token: RouteLimit,
    /// `POST /v1/streams`.
    pub streams_write: RouteLimit,
    /// `GET /v1/streams`, `GET /v1/streams/{id}`.
    pub streams_read: RouteLimit,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            rtc_token: RouteLimit::new(2.0, 10, 50.0, 200),
            streams_write: RouteLimit::new(1.0, 5, 10.0, 50),
            streams_read: RouteLimit::new(20.0, 40, 200.0, 400),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// A live session without a seller heartbeat for this long is auto-paused.
    #[serde(with = "humantime_serde")]
    pub heartbeat_timeout: Duration,
    /// A session paused for this long is auto-ended.
    #[serde(with = "humantime_serde")]
    pub pause_timeout: Duration,
    /// How often every node checks the timeouts.
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
    /// How long session summaries are kept in the shared state.
    #[serde(with = "humantime_serde")]
    pub summary_ttl: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            heartbeat_timeout: Duration::from_secs(15),
            pause_timeout: Duration::from_secs(600),
            sweep_interval: Duration::from_secs(1),
            summary_ttl: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ViewersConfig {
    /// A viewer whose node stops refreshing it (the node died) disappears after this long.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// How often counts are checked and, when they changed, pushed to subscribers.
    #[serde(with = "humantime_serde")]
    pub push_interval: Duration,
}

impl Default for ViewersConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(30),
            push_interval: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ChatConfig {
    /// Messages per stream kept in the shared state for history and resume.
    pub history_size: usize,
    /// How long a stream's chat history is kept after its last message.
    #[serde(with = "humantime_serde")]
    pub history_ttl: Duration,
    /// Longest message body, in characters.
    pub max_chars: usize,
    /// A `client_msg_id` repeated within this window returns the original ack.
    #[serde(with = "humantime_serde")]
    pub idempotency_window: Duration,
    /// Messages per second each user may send to one stream (sustained), and at once.
    pub user_per_sec: f64,
    pub user_burst: u32,
}

impl Default for ChatConfig {
    fn default() -> Self {
        Self {
            history_size: 1000,
            history_ttl: Duration::from_secs(7 * 24 * 3600),
            max_chars: 500,
            idempotency_window: Duration::from_secs(600),
            user_per_sec: 2.0,
            user_burst: 10,
        }
    }
}
