//! The Prometheus recorder and the metrics every node exports from the start.
//!
//! Metric names follow Prometheus conventions: `streamedge_` prefix, `_total` for
//! counters, `_seconds` and `_bytes` units. Histograms whose name ends in `_seconds` get
//! latency buckets from 100 µs to 10 s, those ending in `_bps` bit-rate buckets from
//! 64 kbit/s to 20 Mbit/s. Process metrics (`streamedge_process_*`: CPU,
//! memory, file descriptors, threads, start time) come from the `metrics-process` crate,
//! collected at scrape time; CPU seconds are a float gauge (the crate's counter form counts
//! whole seconds only).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Bit rates from 64 kbit/s to 20 Mbit/s (histograms whose name ends in `_bps`).
const BITRATE_BUCKETS: &[f64] = &[
    64e3, 128e3, 256e3, 512e3, 768e3, 1e6, 1.5e6, 2e6, 3e6, 5e6, 8e6, 12e6, 20e6,
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
                .set_buckets_for_metric(Matcher::Suffix("_bps".into()), BITRATE_BUCKETS)
                .expect("valid buckets")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (an embedding application);
            // then metrics go there and /metrics shows what this handle has.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            register_at_zero();
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

/// What kind of metric a [`CATALOG`] entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric the node exports: its name, kind, HELP text, and the label sets registered
/// at zero when the node starts (so that `increase()` and `rate()` see the first event and
/// dashboards and alerts have a series before anything happened). An entry with no label
/// sets and `zero` false appears when first set.
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    /// Register the unlabelled series at zero at start.
    pub zero: bool,
    /// Labelled series registered at zero at start: `(label, [values])`.
    pub zero_labels: Option<(&'static str, &'static [&'static str])>,
}

const fn m(name: &'static str, kind: Kind, help: &'static str) -> Metric {
    Metric {
        name,
        kind,
        help,
        zero: false,
        zero_labels: None,
    }
}

const fn zero(name: &'static str, kind: Kind, help: &'static str) -> Metric {
    Metric {
        name,
        kind,
        help,
        zero: true,
        zero_labels: None,
    }
}

const fn zero_by(
    name: &'static str,
    kind: Kind,
    help: &'static str,
    label: &'static str,
    values: &'static [&'static str],
) -> Metric {
    Metric {
        name,
        kind,
        help,
        zero: false,
        zero_labels: Some((label, values)),
    }
}

use Kind::{Counter, Gauge, Histogram};

/// Every metric of the node except the process ones (`streamedge_process_*`, described by
/// `metrics-process`). docs/operations.md ("Metrics") lists the same; a test checks that
/// each name used in the source is here.
#[rustfmt::skip]
pub const CATALOG: &[Metric] = &[
    m("streamedge_build_info", Gauge, "Always 1; the version label carries the build version."),
    m("streamedge_ready", Gauge, "1 while the node reports ready (as of the last readiness check)."),
    m("streamedge_draining", Gauge, "1 once the node has started draining (SIGTERM, SIGINT or POST /drain)."),
    m("streamedge_http_requests_total", Counter, "HTTP requests by listener, route, method and status."),
    m("streamedge_http_request_duration_seconds", Histogram, "HTTP request latency by listener, route and method."),
    zero_by("streamedge_admission_refused_total", Counter, "Connections refused by admission control, by reason (ip_connections, ip_rate, user_websockets).", "reason", &["ip_connections", "ip_rate", "user_websockets"]),
    zero("streamedge_memory_releases_total", Counter, "Times worker threads were asked to return free memory after many connections closed."),
    m("streamedge_redis_up", Gauge, "1 while Redis answers health checks (absent on the embedded backend)."),
    zero("streamedge_redis_disconnects_total", Counter, "Times Redis stopped answering."),
    zero("streamedge_redis_pubsub_reconnects_total", Counter, "Times the pub/sub connection to Redis was re-established."),
    zero("streamedge_pubsub_lagged_total", Counter, "Pub/sub messages a slow local subscriber missed (it resyncs from the log)."),
    m("streamedge_postgres_up", Gauge, "1 while PostgreSQL answers the persistence writers' health check (absent without persistence)."),
    zero("streamedge_ws_connections", Gauge, "Open WebSocket connections on this node."),
    zero("streamedge_ws_connections_total", Counter, "WebSocket connections accepted."),
    zero_by("streamedge_ws_rejected_total", Counter, "WebSocket upgrades refused, by reason (full = node_full, draining).", "reason", &["full", "draining"]),
    zero_by("streamedge_ws_closed_total", Counter, "WebSocket connections closed by the node, by reason.", "reason", &["slow_consumer", "idle_timeout", "message_too_big", "too_many_fragments", "invalid_utf8", "protocol_error", "service_restart"]),
    zero_by("streamedge_ws_frames_in_total", Counter, "WebSocket data frames received from clients, by kind (text, binary).", "kind", &["text", "binary"]),
    zero("streamedge_ws_frames_out_total", Counter, "WebSocket data frames written to clients."),
    zero("streamedge_ws_flushes_total", Counter, "Socket writes of WebSocket frames (each carries one or more frames)."),
    m("streamedge_auth_failures_total", Counter, "Access tokens refused, by problem code."),
    zero_by("streamedge_jwks_refreshes_total", Counter, "JWKS fetches, by result (ok, error).", "result", &["ok", "error"]),
    m("streamedge_rate_limited_total", Counter, "Requests refused with 429 by the route rate limits, by route and scope (user, ip)."),
    zero("streamedge_rate_limit_errors_total", Counter, "Shared rate-limiter calls that failed; each such request was judged by the node's own limiter."),
    zero_by("streamedge_rtc_tokens_issued_total", Counter, "RTC tokens issued, by role (publisher, subscriber).", "role", &["publisher", "subscriber"]),
    m("streamedge_session_transitions_total", Counter, "Seller session transitions made by this node, by kind and cause."),
    m("streamedge_live_sessions", Gauge, "Sessions live, cluster-wide, as of this node's last sweep."),
    m("streamedge_paused_sessions", Gauge, "Sessions paused, cluster-wide, as of this node's last sweep."),
    zero("streamedge_session_sweeps_total", Counter, "Session timeout sweeps run."),
    zero("streamedge_session_sweep_errors_total", Counter, "Session timeout sweeps that failed."),
    zero("streamedge_viewers", Gauge, "Viewer connections on this node."),
    zero("streamedge_chat_messages_in_total", Counter, "Chat messages sequenced by this node."),
    zero("streamedge_chat_deliveries_total", Counter, "Chat frames handed to local connections."),
    zero("streamedge_chat_fanout_seconds", Histogram, "Time to hand one fan-out batch to every local connection's queue."),
    zero("streamedge_chat_publish_to_socket_seconds", Histogram, "From a chat message being sequenced to its frame written to a client socket (sampled)."),
    zero("streamedge_chat_gaps_total", Counter, "Chat sequence gaps seen by this node."),
    zero("streamedge_chat_backfilled_total", Counter, "Chat messages backfilled from the log after a gap."),
    zero_by("streamedge_chat_rejected_total", Counter, "Chat sends refused, by code.", "code", &["rate_limited", "persistence_backlog"]),
    zero_by("streamedge_chat_moderation_total", Counter, "Moderation actions, by action (delete, ban, unban).", "action", &["delete", "ban", "unban"]),
    zero_by("streamedge_persist_records_queued_total", Counter, "Records added to the persistence outbox, by kind.", "kind", &["chat", "stream", "session_summary", "moderation"]),
    zero_by("streamedge_persist_records_written_total", Counter, "Records written to PostgreSQL, by kind.", "kind", &["chat", "stream", "session_summary", "moderation"]),
    zero_by("streamedge_persist_records_failed_total", Counter, "Records PostgreSQL refused as invalid (dropped and logged), by kind.", "kind", &["chat", "stream", "session_summary", "moderation", "unknown"]),
    zero("streamedge_persist_retries_total", Counter, "Persistence batch writes retried after a failure."),
    zero("streamedge_persist_reclaimed_total", Counter, "Outbox records taken over from a writer that stopped."),
    zero("streamedge_persist_batch_records", Histogram, "Records per persistence batch."),
    zero("streamedge_persist_batch_seconds", Histogram, "Time to write one persistence batch."),
    zero("streamedge_persist_lag_seconds", Histogram, "Per batch written: time from its oldest record entering the outbox to the commit."),
    m("streamedge_persist_outbox_depth", Gauge, "Records not yet written to PostgreSQL (cluster-wide with Redis)."),
    m("streamedge_persist_oldest_age_seconds", Gauge, "Age of the oldest record not yet written to PostgreSQL."),
    m("streamedge_persist_outbox_full", Gauge, "1 while chat sends are refused because the outbox is full."),
    zero("streamedge_persist_restored_streams_total", Counter, "Streams rebuilt from PostgreSQL after the shared state lost them."),
    zero("streamedge_media_publishers", Gauge, "WHIP publications on this node."),
    zero("streamedge_media_viewers", Gauge, "WHEP viewers on this node."),
    zero_by("streamedge_media_sessions_total", Counter, "Media sessions started, by kind (whip, whep).", "kind", &["whip", "whep"]),
    zero("streamedge_media_packets_in_total", Counter, "RTP packets received from publishers."),
    zero("streamedge_media_bytes_in_total", Counter, "RTP payload bytes received from publishers."),
    zero("streamedge_media_packets_out_total", Counter, "RTP packets forwarded to viewers."),
    zero("streamedge_media_bytes_out_total", Counter, "RTP payload bytes forwarded to viewers."),
    zero_by("streamedge_media_keyframe_requests_total", Counter, "Keyframe requests (PLI) sent to publishers, by reason (join, viewer, switch).", "reason", &["join", "viewer", "switch"]),
    zero_by("streamedge_media_layer_viewers", Gauge, "WHEP viewers by the video layer they receive (low, mid, high; single without simulcast).", "layer", &["low", "mid", "high", "single"]),
    zero_by("streamedge_media_layer_switches_total", Counter, "Simulcast layer switches of WHEP viewers, by direction (up, down).", "direction", &["up", "down"]),
    zero("streamedge_media_viewer_bandwidth_bps", Histogram, "WHEP viewers' estimated bandwidth in bit/s (REMB and receiver-report loss), one sample per viewer every 5 s."),
    zero("streamedge_media_freezes_total", Counter, "Gaps of more than 500 ms in the video forwarded to a WHEP viewer."),
    zero("streamedge_media_forward_seconds", Histogram, "From a packet's arrival from the publisher to its hand-off to a viewer's connection (sampled)."),
    zero("streamedge_media_udp_ports_leased", Gauge, "Ports of media.udp_port_range held by media connections."),
    zero("streamedge_media_viewers_dropped_total", Counter, "Media viewers dropped for falling behind."),
    zero("streamedge_media_relays_total", Counter, "Streams this node pulled from another node for its viewers."),
    zero("streamedge_media_deletes_forwarded_total", Counter, "WHIP/WHEP DELETEs forwarded to the node that holds the session."),
];

fn describe() {
    for metric in CATALOG {
        let help = metric.help;
        match metric.kind {
            Counter => metrics::describe_counter!(metric.name, help),
            Gauge => metrics::describe_gauge!(metric.name, help),
            Histogram if metric.name.ends_with("_seconds") => {
                metrics::describe_histogram!(metric.name, metrics::Unit::Seconds, help)
            }
            Histogram => metrics::describe_histogram!(metric.name, help),
        }
    }
}

/// Registers the series [`CATALOG`] asks for at zero.
fn register_at_zero() {
    fn one(kind: Kind, name: &'static str, labels: &[(&'static str, &'static str)]) {
        match kind {
            Counter => metrics::counter!(name, labels).increment(0),
            Gauge => metrics::gauge!(name, labels).increment(0.0),
            // Registered without a sample: rendered with empty buckets.
            Histogram => drop(metrics::histogram!(name, labels)),
        }
    }
    for metric in CATALOG {
        if metric.zero {
            one(metric.kind, metric.name, &[]);
        }
        if let Some((label, values)) = metric.zero_labels {
            for v in values {
                one(metric.kind, metric.name, &[(label, *v)]);
            }
        }
    }
}

/// Renders the exposition text: the recorder's metrics, process metrics collected now.
pub fn render(handle: &PrometheusHandle) -> String {
    process_collector().collect();
    handle.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `streamedge_*` name in the source is in the catalog (so it has HELP text),
    /// and every catalog entry is documented in docs/operations.md.
    #[test]
    fn every_metric_is_described_and_documented() {
        fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    out.push(p);
                }
            }
        }
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        walk(&root.join("src"), &mut files);
        let known: std::collections::HashSet<&str> = CATALOG.iter().map(|m| m.name).collect();
        let mut missing = std::collections::BTreeSet::new();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            for (i, _) in text.match_indices("\"streamedge_") {
                let name: String = text[i + 1..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let base = ["_count", "_sum", "_bucket"]
                    .iter()
                    .find_map(|x| name.strip_suffix(x))
                    .unwrap_or(&name);
                if !known.contains(name.as_str())
                    && !known.contains(base)
                    && !name.starts_with("streamedge_process_")
                {
                    missing.insert(name);
                }
            }
        }
        // Prefixes passed to other crates, not metric names.
        missing.remove("streamedge_");
        assert!(missing.is_empty(), "not in CATALOG: {missing:?}");
        let ops = std::fs::read_to_string(root.join("docs/operations.md")).unwrap();
        // Rows may shorten a second name of the same family: `a_b_total` / `_c_total`.
        let undocumented: Vec<_> = CATALOG
            .iter()
            .filter(|m| {
                let tail = m.name.splitn(3, '_').nth(2).unwrap_or("");
                !ops.contains(&format!("`{}", m.name)) && !ops.contains(&format!("`_{tail}`"))
            })
            .map(|m| m.name)
            .collect();
        assert!(
            undocumented.is_empty(),
            "not in docs/operations.md: {undocumented:?}"
        );
    }

    #[test]
    fn zero_series_are_rendered_with_help() {
        let text = render(&install());
        for line in [
            "# HELP streamedge_chat_rejected_total",
            "streamedge_persist_records_failed_total{kind=\"chat\"} 0",
            "streamedge_ws_rejected_total{reason=\"full\"} 0",
            "streamedge_admission_refused_total{reason=\"ip_rate\"} 0",
            "streamedge_chat_publish_to_socket_seconds_count 0",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

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
