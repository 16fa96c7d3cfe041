//! The Prometheus recorder and the metrics every node exports from the start.
//!
//! Metric names follow Prometheus conventions: `streamedge_` prefix, `_total` for
//! counters, `_seconds` and `_bytes` units. Histograms whose name ends in `_seconds` get
//! latency buckets from 100 µs to 10 s. Process metrics (`streamedge_process_*`: CPU,
//! memory, file descriptors, threads, start time) come from the `metrics-process` crate,
//! collected at scrape time; CPU seconds are a float gauge (the crate's counter form counts
//! whole seconds only).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

fn process_collector() -> &'static metrics_process::Collector {
    static COLLECTOR: OnceLock<metrics_process::Collector> = OnceLock::new();
    COLLECTOR.get_or_init(|| metrics_process::Collector::new("streamedge_"))
}

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
            process_collector().describe();
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
    describe_counter!(
        "streamedge_media_deletes_forwarded_total",
        "WHIP/WHEP DELETEs forwarded to the node that holds the session."
    );
    describe_gauge!(
        "streamedge_draining",
        "1 once the node has started draining (SIGTERM, SIGINT or POST /drain)."
    );
    describe_gauge!("streamedge_ws_connections", "Open WebSocket connections.");
    describe_counter!(
        "streamedge_memory_releases_total",
        "Times worker threads were asked to return free memory after many connections closed."
    );
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

/// Renders the exposition text: the recorder's metrics, process metrics collected now.
pub fn render(handle: &PrometheusHandle) -> String {
    process_collector().collect();
    handle.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_metrics_are_rendered() {
        let text = render(&install());
        for name in [
            "streamedge_process_resident_memory_bytes",
            "streamedge_process_open_fds",
            "streamedge_process_max_fds",
            "streamedge_process_cpu_seconds_total",
            "streamedge_process_threads",
        ] {
            let line = text
                .lines()
                .find(|l| l.starts_with(name) && !l.starts_with('#'))
                .unwrap_or_else(|| panic!("{name} missing:\n{text}"));
            let v: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
            assert!(v >= 0.0, "{line}");
        }
        assert!(text.contains("# HELP streamedge_process_open_fds"));
    }
}
