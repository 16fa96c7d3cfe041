//! The Prometheus recorder and the metrics every node exports from the start.
//!
//! Metric names follow Prometheus conventions: `streamedge_` prefix, `_total` for
//! counters, `_seconds` and `_bytes` units. Histograms whose name ends in `_seconds` get
//! latency buckets from 100 µs to 10 s. Process metrics are read from `/proc/self` at
//! scrape time.

use std::fmt::Write;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the global recorder once per process and returns its handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .expect("valid buckets")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (an embedding application);
            // then metrics go there and /metrics shows what this handle has.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            metrics::gauge!(
                "streamedge_build_info",
                "version" => env!("CARGO_PKG_VERSION"),
            )
            .set(1.0);
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(
        "streamedge_build_info",
        "Always 1; labels carry the build version."
    );
    describe_counter!(
        "streamedge_http_requests_total",
        "HTTP requests by route, method and status."
    );
    describe_histogram!(
        "streamedge_http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request latency by route and method."
    );
    describe_gauge!(
        "streamedge_redis_up",
        "1 while Redis answers health checks."
    );
    describe_counter!(
        "streamedge_redis_disconnects_total",
        "Times Redis stopped answering."
    );
    describe_counter!(
        "streamedge_redis_pubsub_reconnects_total",
        "Times the pub/sub connection to Redis was re-established."
    );
    describe_counter!(
        "streamedge_pubsub_lagged_total",
        "Pub/sub messages a slow local subscriber missed (it resyncs)."
    );
    describe_gauge!("streamedge_ready", "1 while the node reports ready.");
    describe_gauge!("streamedge_ws_connections", "Open WebSocket connections.");
    describe_counter!(
        "streamedge_ws_connections_total",
        "WebSocket connections accepted."
    );
    describe_counter!(
        "streamedge_ws_rejected_total",
        "WebSocket upgrades refused, by reason."
    );
    describe_counter!(
        "streamedge_ws_closed_total",
        "WebSocket connections closed by the node, by reason."
    );
    describe_counter!(
        "streamedge_ws_frames_in_total",
        "WebSocket frames received from clients, by kind."
    );
    describe_counter!(
        "streamedge_ws_frames_out_total",
        "WebSocket data frames written to clients."
    );
    describe_counter!(
        "streamedge_ws_flushes_total",
        "Socket flushes (each carries one or more frames)."
    );
}

/// Renders the exposition text: the recorder's metrics plus process metrics.
pub fn render(handle: &PrometheusHandle) -> String {
    let mut out = handle.render();
    append_process_metrics(&mut out);
    out
}

fn append_process_metrics(out: &mut String) {
    let p = ProcessStats::read();
    let mut metric = |name: &str, kind: &str, help: &str, value: Option<f64>| {
        if let Some(v) = value {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        }
    };
    metric(
        "streamedge_process_resident_memory_bytes",
        "gauge",
        "Resident set size in bytes.",
        p.rss_bytes,
    );
    metric(
        "streamedge_process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
        p.vsize_bytes,
    );
    metric(
        "streamedge_process_open_fds",
        "gauge",
        "Open file descriptors.",
        p.open_fds,
    );
    metric(
        "streamedge_process_max_fds",
        "gauge",
        "Open file descriptor limit (soft).",
        p.max_fds,
    );
    metric(
        "streamedge_process_cpu_seconds_total",
        "counter",
        "User and system CPU time spent, in seconds.",
        p.cpu_seconds,
    );
    metric(
        "streamedge_process_threads",
        "gauge",
        "OS threads.",
        p.threads,
    );
}

/// What `/proc/self` says about this process (Linux); `None` where unavailable.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ProcessStats {
    pub rss_bytes: Option<f64>,
    pub vsize_bytes: Option<f64>,
    pub open_fds: Option<f64>,
    pub max_fds: Option<f64>,
    pub cpu_seconds: Option<f64>,
    pub threads: Option<f64>,
}

/// Clock ticks per second for `/proc/self/stat` times; 100 on every Linux we target.
const CLK_TCK: f64 = 100.0;

impl ProcessStats {
    pub fn read() -> Self {
        let mut s = ProcessStats::default();
        if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
            s.rss_bytes = status_kib(&status, "VmRSS:").map(|k| k * 1024.0);
            s.vsize_bytes = status_kib(&status, "VmSize:").map(|k| k * 1024.0);
            s.threads = status_kib(&status, "Threads:");
        }
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            s.cpu_seconds = parse_stat_cpu(&stat);
        }
        s.open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as f64);
        if let Ok(limits) = std::fs::read_to_string("/proc/self/limits") {
            s.max_fds = limits
                .lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse().ok());
        }
        s
    }
}

fn status_kib(status: &str, field: &str) -> Option<f64> {
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// utime + stime (fields 14 and 15) of `/proc/self/stat`, in seconds. The command name
/// (field 2) may contain spaces, so fields are counted after its closing parenthesis.
fn parse_stat_cpu(stat: &str) -> Option<f64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state), so field N is fields[N - 3].
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / CLK_TCK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_from_stat_with_spaces_in_name() {
        let stat = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0";
        assert_eq!(parse_stat_cpu(stat), Some(3.0));
    }

    #[test]
    fn reads_this_process() {
        let s = ProcessStats::read();
        assert!(s.rss_bytes.unwrap() > 0.0);
        assert!(s.open_fds.unwrap() >= 1.0);
        assert!(s.cpu_seconds.is_some());
    }
}
