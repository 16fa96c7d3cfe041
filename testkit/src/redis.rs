//! Redis for tests: the shared server `scripts/test` starts, and private servers a test
//! may stop and restart.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{free_port, RUN_THROUGH_SCRIPT};

/// The shared Redis that `scripts/test` started.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL")
        .unwrap_or_else(|_| panic!("REDIS_URL is not set: {RUN_THROUGH_SCRIPT}"))
}

/// The `redis-server` binary, for tests that stop and restart their own Redis.
pub fn redis_server_bin() -> PathBuf {
    std::env::var_os("REDIS_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("REDIS_SERVER_BIN is not set: {RUN_THROUGH_SCRIPT}"))
}

/// The environment for node processes on the shared Redis ([`redis_url`]) under a fresh
/// key prefix: processes spawned with the same environment share their state.
pub fn redis_env() -> Vec<(&'static str, String)> {
    vec![
        ("STREAMEDGE_REDIS__URL", redis_url()),
        (
            "STREAMEDGE_REDIS__KEY_PREFIX",
            crate::support::fresh_key_prefix(),
        ),
    ]
}

/// A private `redis-server` that a test may stop and restart on the same port.
pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// `appendonly yes` (what the docs require): a restart keeps the data.
    durable: bool,
}

impl RedisServer {
    /// With the append-only file on (`appendfsync everysec`), as production runs it: a
    /// restart keeps what Redis acknowledged.
    pub fn start() -> Self {
        Self::start_with(true)
    }

    /// Without persistence: a restart comes back empty (a node with persistence needs
    /// `persist.allow_volatile_redis` to use it).
    pub fn start_volatile() -> Self {
        Self::start_with(false)
    }

    fn start_with(durable: bool) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("se-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut s = Self {
            port,
            dir,
            child: None,
            durable,
        };
        s.restart();
        s
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts (again) on the same port and waits until it accepts connections.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new(redis_server_bin())
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(if self.durable {
                ["--appendonly", "yes", "--appendfsync", "everysec"]
            } else {
                ["--appendonly", "no", "--appendfsync", "everysec"]
            })
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not start on port {}", self.port);
    }

    /// Kills the server (as a crash would).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The seed nodes of the three-master Redis Cluster that `scripts/test` started.
pub fn redis_cluster_urls() -> Vec<String> {
    std::env::var("REDIS_CLUSTER_URLS")
        .unwrap_or_else(|_| panic!("REDIS_CLUSTER_URLS is not set: {RUN_THROUGH_SCRIPT}"))
        .split(',')
        .map(str::to_string)
        .collect()
}

/// The environment for node processes on the test Redis Cluster ([`redis_cluster_urls`])
/// under a fresh key prefix.
pub fn redis_cluster_env() -> Vec<(&'static str, String)> {
    let urls = redis_cluster_urls();
    let rest: Vec<String> = urls[1..].iter().map(|u| format!("\"{u}\"")).collect();
    vec![
        ("STREAMEDGE_REDIS__URL", urls[0].clone()),
        ("STREAMEDGE_REDIS__MODE", "cluster".into()),
        (
            "STREAMEDGE_REDIS__CLUSTER_NODES",
            format!("[{}]", rest.join(",")),
        ),
        (
            "STREAMEDGE_REDIS__KEY_PREFIX",
            crate::support::fresh_key_prefix(),
        ),
    ]
}
