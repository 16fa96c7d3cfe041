//! `scripts/cluster up|status|down`, as an operator runs it: the local fleet (Redis,
//! PostgreSQL, three nodes, nginx) comes up on its documented ports, serves through nginx,
//! reports its state, and goes away.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The fleet's documented client port (nginx).
const NGINX: &str = "http://127.0.0.1:18080";

fn cluster(dir: &Path, verb: &str) -> Output {
    Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cluster"))
        .arg(verb)
        .env("SE_CLUSTER_BIN", env!("CARGO_BIN_EXE_streamedge"))
        .env("SE_CLUSTER_DIR", dir)
        .output()
        .expect("run scripts/cluster")
}

/// Stops whatever `up` started, even when an assertion fails.
struct Down(PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = cluster(&self.0, "down");
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn the_local_fleet_comes_up_serves_through_nginx_and_goes_down() {
    let dir = std::env::temp_dir().join(format!("se-cluster-{}", std::process::id()));
    let guard = Down(dir.clone());
    let up = cluster(&dir, "up");
    let text = |o: &Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    assert!(up.status.success(), "{}", text(&up));
    for name in ["redis", "node1", "node2", "node3", "nginx", "postgres"] {
        assert!(
            text(&up)
                .lines()
                .any(|l| l.starts_with(name) && l.contains("running")),
            "{name} not running:\n{}",
            text(&up)
        );
    }

    // The nodes run `serve --dev`: a development token works through nginx.
    let mint = Command::new(env!("CARGO_BIN_EXE_streamedge"))
        .args([
            "token", "mint", "--dev", "--user", "alice", "--role", "seller",
        ])
        .output()
        .unwrap();
    assert!(mint.status.success());
    let seller = String::from_utf8(mint.stdout).unwrap().trim().to_string();
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{NGINX}/v1/streams"))
        .bearer_auth(&seller)
        .json(&serde_json::json!({"title": "fleet"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // Every node sees it (shared Redis), whichever one nginx picks.
    for _ in 0..6 {
        let r = client
            .get(format!("{NGINX}/v1/streams"))
            .bearer_auth(&seller)
            .send()
            .await
            .unwrap();
        let page: serde_json::Value = r.json().await.unwrap();
        assert_eq!(page["streams"].as_array().unwrap().len(), 1, "{page}");
    }

    let down = cluster(&dir, "down");
    assert!(down.status.success(), "{}", text(&down));
    let status = cluster(&dir, "status");
    assert!(
        !text(&status).contains("running"),
        "still running after down:\n{}",
        text(&status)
    );
    assert!(std::net::TcpStream::connect("127.0.0.1:18080").is_err());
    drop(guard);
}
