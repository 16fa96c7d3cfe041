//! Small pieces every kind of helper needs: free loopback ports, polling until a condition
//! holds, and the hint given when the environment `scripts/test` sets up is missing.

use std::future::Future;
use std::time::{Duration, Instant};

pub(crate) const RUN_THROUGH_SCRIPT: &str =
    "run the integration tests through `scripts/test`, which starts Redis and PostgreSQL";

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` until it returns true or `limit` passes; returns whether it did.
pub async fn eventually<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A key prefix no other test uses, so tests can share one Redis.
pub fn fresh_key_prefix() -> String {
    format!("t{}:", uuid::Uuid::new_v4().simple())
}
