//! Rate limits per route, per user and per client IP, cluster-wide when Redis is the
//! backend (the shared GCRA in [`crate::store::KeyValue::rate_limit`]). A refused
//! request gets 429 with `Retry-After`.
//!
//! If the shared state cannot answer, the same limits are applied by this node alone
//! ([`LocalLimiter`], the same GCRA in memory): the fleet then allows at most the limit
//! times the number of nodes, instead of nothing (an outage on top of the outage) or
//! everything (no protection while it is most needed). Each fallback decision counts in
//! `streamedge_rate_limit_errors_total`, which an alert watches.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use super::{ApiError, ErrorKind};
use crate::config::RouteLimit;
use crate::domain::keys;
use crate::http::AppState;

/// The node-local GCRA used while the shared state is unreachable.
pub struct LocalLimiter {
    start: Instant,
    tats: Mutex<HashMap<String, u64>>,
}

/// Keys a local limiter holds before it forgets those whose state has run out.
const LOCAL_KEYS: usize = 100_000;

impl Default for LocalLimiter {
    fn default() -> Self {
        Self {
            start: Instant::now(),
            tats: Mutex::new(HashMap::new()),
        }
    }
}

impl LocalLimiter {
    /// One request against `key`'s limit, now.
    pub fn check(&self, key: &str, per_sec: f64, burst: u32) -> crate::store::RateDecision {
        let now_us = self.start.elapsed().as_micros() as u64;
        let mut tats = self.tats.lock().expect("limiter lock");
        let (decision, tat) = crate::store::gcra(now_us, tats.get(key).copied(), per_sec, burst);
        if let Some(t) = tat {
            if tats.len() >= LOCAL_KEYS {
                // A TAT in the past is the same as no entry.
                tats.retain(|_, t| *t > now_us);
            }
            tats.insert(key.to_string(), t);
        }
        decision
    }
}

/// The rate-limited routes (`[rate_limit.<route>]` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    RtcToken,
    StreamsWrite,
    StreamsRead,
}

impl Route {
    pub fn name(self) -> &'static str {
        match self {
            Route::RtcToken => "rtc_token",
            Route::StreamsWrite => "streams_write",
            Route::StreamsRead => "streams_read",
        }
    }

    fn limits(self, app: &AppState) -> &RouteLimit {
        let r = &app.config.rate_limit;
        match self {
            Route::RtcToken => &r.rtc_token,
            Route::StreamsWrite => &r.streams_write,
            Route::StreamsRead => &r.streams_read,
        }
    }
}

/// Counts a request; `Err` (429) when the user or the client IP is over its limit.
pub async fn check(
    app: &AppState,
    route: Route,
    user: Option<&str>,
    ip: IpAddr,
) -> Result<(), ApiError> {
    if !app.config.rate_limit.enabled {
        return Ok(());
    }
    let l = route.limits(app);
    let mut checks = Vec::with_capacity(2);
    if let (Some(u), true) = (user, l.user_per_sec > 0.0) {
        let key = keys::route_rate_user(route.name(), u);
        checks.push(("user", key, l.user_per_sec, l.user_burst));
    }
    if l.ip_per_sec > 0.0 {
        let key = keys::route_rate_ip(route.name(), ip);
        checks.push(("ip", key, l.ip_per_sec, l.ip_burst));
    }
    for (scope, key, rate, burst) in checks {
        let decision = match app.store.rate_limit(&key, rate, burst).await {
            Ok(d) => d,
            Err(e) => {
                metrics::counter!("streamedge_rate_limit_errors_total").increment(1);
                tracing::warn!(error = %e, route = route.name(), "shared rate limiter unavailable; limiting on this node");
                app.local_limits.check(&key, rate, burst)
            }
        };
        match decision {
            d if d.allowed => {}
            d => {
                metrics::counter!("streamedge_rate_limited_total", "route" => route.name(), "scope" => scope)
                    .increment(1);
                let secs = d.retry_after.as_secs_f64().ceil().max(1.0) as u64;
                return Err(ApiError::new(
                    ErrorKind::RateLimited,
                    "rate_limited",
                    format!("too many requests for this {scope}; retry in {secs} s"),
                )
                .with_retry_after(secs));
            }
        }
    }
    Ok(())
}
