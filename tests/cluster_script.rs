//! `scripts/cluster up|status|down`, as an operator runs it: the local fleet (Redis,
//! PostgreSQL, three nodes, nginx) comes up on its documented port layout (moved by
//! `SE_CLUSTER_PORT_BASE`, so a developer's own node on 18080 does not get in the way),
//! serves through nginx, reports its state, and goes away; a port held by another program
//! is refused with a clear error.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The ports of a fleet on `base` (scripts/cluster's layout: nginx, nodes, admin, Redis,
/// PostgreSQL).
fn fleet_ports(base: u16) -> [u16; 9] {
    [
        base,
        base + 1,
        base + 2,
        base + 3,
        base + 1011,
        base + 1012,
        base + 1013,
        base + 299,
        base + 352,
    ]
}

/// A base whose every port is free now, from `thousands` (each test its own range: they
/// run at the same time).
fn free_base(thousands: std::ops::Range<u16>) -> u16 {
    thousands
        .map(|k| k * 1000 + 80)
        .find(|&base| {
            fleet_ports(base)
                .iter()
                .all(|&p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
        })
        .expect("a free port base")
}

fn cluster(dir: &Path, base: u16, verb: &str) -> Output {
    Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cluster"))
        .arg(verb)
        .env("SE_CLUSTER_BIN", env!("CARGO_BIN_EXE_streamedge"))
        .env("SE_CLUSTER_DIR", dir)
        .env("SE_CLUSTER_PORT_BASE", base.to_string())
        .output()
        .expect("run scripts/cluster")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Stops whatever `up` started, even when an assertion fails.
struct Down(PathBuf, u16);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = cluster(&self.0, self.1, "down");
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn the_local_fleet_comes_up_serves_through_nginx_and_goes_down() {
    let dir = std::env::temp_dir().join(format!("se-cluster-{}", std::process::id()));
    let base = free_base(20..40);
    let nginx = format!("http://127.0.0.1:{base}");
    let guard = Down(dir.clone(), base);
    let up = cluster(&dir, base, "up");
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
        .post(format!("{nginx}/v1/streams"))
        .bearer_auth(&seller)
        .json(&serde_json::json!({"title": "fleet"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // Every node sees it (shared Redis), whichever one nginx picks.
    for _ in 0..6 {
        let r = client
            .get(format!("{nginx}/v1/streams"))
            .bearer_auth(&seller)
            .send()
            .await
            .unwrap();
        let page: serde_json::Value = r.json().await.unwrap();
        assert_eq!(page["streams"].as_array().unwrap().len(), 1, "{page}");
    }

    let down = cluster(&dir, base, "down");
    assert!(down.status.success(), "{}", text(&down));
    let status = cluster(&dir, base, "status");
    assert!(
        !text(&status).contains("running"),
        "still running after down:\n{}",
        text(&status)
    );
    assert!(std::net::TcpStream::connect(("127.0.0.1", base)).is_err());
    drop(guard);
}

#[test]
fn a_port_held_by_another_program_is_refused_with_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("se-cluster-busy-{}", std::process::id()));
    let base = free_base(40..60);
    let _guard = Down(dir.clone(), base);
    // Another program on the first node's API port.
    let _other = std::net::TcpListener::bind(("127.0.0.1", base + 1)).unwrap();
    let up = cluster(&dir, base, "up");
    assert!(!up.status.success(), "{}", text(&up));
    let out = text(&up);
    assert!(
        out.contains(&format!("{}", base + 1)) && out.contains("SE_CLUSTER_PORT_BASE"),
        "{out}"
    );
    // Nothing was started.
    let status = text(&cluster(&dir, base, "status"));
    assert!(!status.contains("running"), "{status}");
}
