//! Rate limits per route, per user and per client IP, cluster-wide when Redis is the
//! backend (the shared GCRA in [`crate::store::KeyValue::rate_limit`]). A refused
//! request gets 429 with `Retry-After`. If the shared state cannot answer, the request is
//! let through (and counted): limits protect capacity, they must not add an outage.

use std::net::IpAddr;

use super::{ApiError, ErrorKind};
use crate::config::RouteLimit;
use crate::domain::keys;
use crate::http::AppState;

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
        match app.store.rate_limit(&key, rate, burst).await {
            Ok(d) if d.allowed => {}
            Ok(d) => {
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
            Err(e) => {
                metrics::counter!("streamedge_rate_limit_errors_total").increment(1);
                tracing::warn!(error = %e, route = route.name(), "rate limiter unavailable; allowing");
            }
        }
    }
    Ok(())
}
