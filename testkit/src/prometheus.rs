//! A real Prometheus (Debian's `prometheus`) scraping test nodes under `job="streamedge"`,
//! with the repository's `deploy/prometheus/alerts.yml` loaded, queried over its HTTP API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::free_port;

/// The prometheus binary: `PROMETHEUS_BIN`, else `prometheus` on the PATH.
fn prometheus_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("PROMETHEUS_BIN") {
        return PathBuf::from(p);
    }
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join("prometheus");
        if p.exists() {
            return p;
        }
    }
    panic!("prometheus is not installed: scripts/test installs it (Debian package prometheus)");
}

/// The repository's alert rules.
pub fn alert_rules_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus/alerts.yml")
}

/// A private Prometheus, stopped on drop.
pub struct Prometheus {
    pub port: u16,
    dir: PathBuf,
    child: Child,
    http: reqwest::Client,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (admin listeners) every second and evaluating
    /// the shipped alert rules every second.
    pub async fn start(targets: &[SocketAddr]) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("se-prom-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - '{}'\n\
             scrape_configs:\n  - job_name: streamedge\n    static_configs:\n      - targets: [{}]\n",
            alert_rules_file().canonicalize().unwrap().display(),
            targets.join(", ")
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let child = Command::new(prometheus_bin())
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn prometheus");
        let p = Self {
            port,
            dir,
            child,
            http: reqwest::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = p
                .http
                .get(p.url("/-/ready"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "prometheus did not become ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        p
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    async fn api(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let body: Value = self
            .http
            .get(self.url(path))
            .query(query)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body
    }

    /// Evaluates `expr` now: `Ok(result vector)`, or `Err(Prometheus' error)`.
    pub async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let body = self.api("/api/v1/query", &[("query", expr)]).await;
        if body["status"] != "success" {
            return Err(format!("{}: {}", body["errorType"], body["error"]));
        }
        Ok(body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// The scrape targets' health (`up`, `down`, `unknown`).
    pub async fn target_health(&self) -> Vec<String> {
        let body = self.api("/api/v1/targets", &[]).await;
        body["data"]["activeTargets"]
            .as_array()
            .map(|ts| {
                ts.iter()
                    .map(|t| t["health"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The loaded alerting rules: `(alert name, expression)`.
    pub async fn alert_rules(&self) -> Vec<(String, String)> {
        let body = self.api("/api/v1/rules", &[("type", "alert")]).await;
        let mut out = Vec::new();
        for g in body["data"]["groups"].as_array().into_iter().flatten() {
            for r in g["rules"].as_array().into_iter().flatten() {
                out.push((
                    r["name"].as_str().unwrap_or("").to_string(),
                    r["query"].as_str().unwrap_or("").to_string(),
                ));
            }
        }
        out
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The series selectors in a PromQL expression: every `streamedge_*` metric name and
/// `up`, each with its label matchers when it has them (`name{...}`).
pub fn selectors(expr: &str) -> Vec<String> {
    let bytes = expr.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let mut in_string = false;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'"' {
            in_string = !in_string;
            i += 1;
            continue;
        }
        if in_string || !ident(c) || (i > 0 && ident(bytes[i - 1])) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && ident(bytes[i]) {
            i += 1;
        }
        let name = &expr[start..i];
        if !(name.starts_with("streamedge_") || name == "up") {
            continue;
        }
        // `up` is a selector only when followed by `{` (not e.g. in a label value).
        let mut sel = name.to_string();
        if i < bytes.len() && bytes[i] == b'{' {
            let close = expr[i..]
                .find('}')
                .map(|n| i + n + 1)
                .unwrap_or(bytes.len());
            sel.push_str(&expr[i..close]);
            i = close;
        } else if name == "up" {
            continue;
        }
        if !out.contains(&sel) {
            out.push(sel);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::selectors;

    #[test]
    fn selectors_are_found_with_their_matchers() {
        assert_eq!(
            selectors(
                r#"sum by (instance) (rate(streamedge_http_requests_total{status=~"5.."}[5m])) / sum by (instance) (rate(streamedge_http_requests_total[5m])) > 0.05"#
            ),
            vec![
                r#"streamedge_http_requests_total{status=~"5.."}"#.to_string(),
                "streamedge_http_requests_total".to_string()
            ]
        );
        assert_eq!(
            selectors(r#"absent(up{job="streamedge"})"#),
            vec![r#"up{job="streamedge"}"#.to_string()]
        );
        assert_eq!(
            selectors("streamedge_ready == 0 unless on (instance) streamedge_draining == 1"),
            vec!["streamedge_ready", "streamedge_draining"]
        );
    }
}
