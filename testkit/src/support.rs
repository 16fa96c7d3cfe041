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

/// Runs a load-generator scenario (`cmd`: the `streamedge-load` binary with its scenario and
/// arguments), asks it for its JSON report, checks that it exited 0 and returns the report.
pub async fn load_report(cmd: &mut tokio::process::Command) -> serde_json::Value {
    let out = std::env::temp_dir().join(format!(
        "load-report-{}-{}.json",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    let status = cmd.arg("--json").arg(&out).status().await.unwrap();
    assert!(status.success(), "the load generator failed: {status:?}");
    let report = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let _ = std::fs::remove_file(&out);
    report
}

/// A count in a load-generator report, failing with the report when it is missing.
pub fn report_count(report: &serde_json::Value, key: &str) -> u64 {
    report[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {report:#}"))
}
