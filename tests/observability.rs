//! The shipped alert rules and dashboard against a real Prometheus (Debian's
//! `prometheus`, installed by scripts/test) scraping a node on Redis and PostgreSQL: every
//! alert expression is valid, and every series an alert or a dashboard panel queries
//! exists — the test lists any that returns nothing.

use streamedge_testkit as common;

use std::time::Duration;

use common::{NodeProcess, Prometheus};
use serde_json::Value;

/// The dashboard's expressions with Grafana's variables as a query would see them.
fn dashboard_exprs() -> Vec<(String, String)> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/streamedge.json");
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "1m")
                .replace("$instance", ".*");
            out.push((panel["title"].as_str().unwrap().to_string(), expr));
        }
    }
    out
}

/// Some of everything a node does, so that series that appear with their first event
/// (per route, per session transition) exist.
async fn traffic(node: &NodeProcess) {
    let api = node.api_url("");
    let stream = common::live_stream(&api, "obs-seller").await;
    let buyer = common::buyer("obs-buyer");
    let (mut ws, _) = common::join_with(node.api, stream, &buyer).await;
    common::send_and_ack(&mut ws, "obs-1", "hello").await;
    let r = reqwest::Client::new()
        .post(format!("{api}/v1/streams/{stream}/rtc-token"))
        .bearer_auth(&buyer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (st, _) = common::get(&node.api_url("/v1/streams"), "not-a-token").await;
    assert_eq!(st, 401);
    drop(ws);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_alert_and_dashboard_expression_finds_its_series() {
    let db = common::fresh_database().await;
    let mut env = common::redis_env();
    env.push(("STREAMEDGE_PERSIST__DATABASE_URL", db));
    env.push((
        "STREAMEDGE_AGORA__APP_ID",
        streamedge::auth::dev::DEV_AGORA_APP_ID.into(),
    ));
    env.push((
        "STREAMEDGE_AGORA__APP_CERTIFICATE",
        streamedge::auth::dev::DEV_AGORA_APP_CERTIFICATE.into(),
    ));
    let node = NodeProcess::spawn(&env);
    traffic(&node).await;

    let prom = Prometheus::start(&[node.admin]).await;
    // Rates over 1m need two scrapes; the PostgreSQL check and the session sweep run
    // within seconds of the start.
    let ok = common::eventually(Duration::from_secs(30), || async {
        prom.target_health().await == ["up"]
            && prom
                .query("rate(streamedge_process_cpu_seconds_total[1m])")
                .await
                .is_ok_and(|r| !r.is_empty())
            && prom
                .query("streamedge_postgres_up == 1")
                .await
                .is_ok_and(|r| !r.is_empty())
    })
    .await;
    assert!(
        ok,
        "prometheus never scraped the node: {:?}",
        prom.target_health().await
    );

    // Series that exist only once their event happened, where that cannot hide an alert:
    // the 5xx ratio needs ten minutes of 5xx responses to fire, and its first one brings
    // the series. (Every counter an `increase()` watches is registered at zero instead.)
    let after_first_event = [(
        "StreamedgeHttp5xx",
        r#"streamedge_http_requests_total{status=~"5.."}"#,
    )];
    let rules = prom.alert_rules().await;
    assert!(rules.len() >= 20, "alert rules not loaded: {rules:?}");
    let exprs = dashboard_exprs();
    assert!(exprs.len() >= 50, "{} dashboard expressions", exprs.len());
    // One slow scrape (1 s is also the scrape timeout) marks every series stale until the
    // next: a few tries before calling an expression empty.
    let mut nothing = Vec::new();
    for attempt in 0..5 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        nothing.clear();
        for (name, expr) in &rules {
            if let Err(e) = prom.query(expr).await {
                panic!("alert {name}: {expr}: {e}");
            }
            for sel in common::selectors(expr) {
                if after_first_event.contains(&(name.as_str(), sel.as_str())) {
                    continue;
                }
                if prom.query(&sel).await.unwrap().is_empty() {
                    nothing.push(format!("alert {name}: {sel}"));
                }
            }
        }
        for (panel, expr) in &exprs {
            match prom.query(expr).await {
                Ok(r) if r.is_empty() => nothing.push(format!("panel {panel:?}: {expr}")),
                Ok(_) => {}
                Err(e) => panic!("panel {panel:?}: {expr}: {e}"),
            }
        }
        if nothing.is_empty() {
            break;
        }
    }
    assert!(
        nothing.is_empty(),
        "{} expressions return nothing:\n{}",
        nothing.len(),
        nothing.join("\n")
    );
}
