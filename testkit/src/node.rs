//! Nodes under test: a node running inside the test process ([`TestNode`]) and the node
//! binary as a child process ([`NodeProcess`]), with the config both start from.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use streamedge::config::Config;
use streamedge::server::{self, Listeners, RunError};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::auth::{buyer, seller, TEST_JWT_SECRET};
use crate::chat::stream_ws_url;
use crate::http::{create_stream, metrics_page};
use crate::redis::redis_url;
use crate::support::free_port;

/// A config for tests: loopback, short grace, quiet logs, a fresh key prefix, the test
/// JWT secret, development Agora credentials and no connection limits.
pub fn test_config() -> Config {
    let mut c = Config::default();
    c.auth.jwt_secret = streamedge::config::Secret::new(TEST_JWT_SECRET);
    c.agora.app_id = streamedge::auth::dev::DEV_AGORA_APP_ID.into();
    c.agora.app_certificate =
        streamedge::config::Secret::new(streamedge::auth::dev::DEV_AGORA_APP_CERTIFICATE);
    c.server.shutdown_grace = Duration::from_secs(10);
    c.server.drain_delay = Duration::ZERO;
    c.server.drain_spread = Duration::ZERO;
    c.server.node_id = format!("test-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    c.redis.key_prefix = crate::support::fresh_key_prefix();
    c.redis.health_interval = Duration::from_millis(200);
    c.redis.connect_timeout = Duration::from_millis(500);
    c.redis.command_timeout = Duration::from_millis(1000);
    // Tests hold many connections from 127.0.0.1 as one user; tests/admission.rs turns
    // the limits on.
    c.admission.ip_connections = 0;
    c.admission.ip_connects_per_sec = 0.0;
    c.admission.user_websockets = 0;
    c
}

/// [`test_config`] on the shared Redis that `scripts/test` started ([`redis_url`]).
pub fn redis_test_config() -> Config {
    let mut c = test_config();
    c.redis.url = redis_url();
    c
}

/// A node running inside the test process.
pub struct TestNode {
    pub api: SocketAddr,
    pub admin: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), RunError>>,
}

impl TestNode {
    pub async fn start(config: Config) -> Self {
        let api = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (api_addr, admin_addr) = (api.local_addr().unwrap(), admin.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server::run(config, Listeners { api, admin }, async {
            let _ = rx.await;
        }));
        let node = Self {
            api: api_addr,
            admin: admin_addr,
            stop: Some(tx),
            task,
        };
        node.wait_http().await;
        node
    }

    /// Two nodes on `config` (so on the same Redis when it names one), the second with the
    /// node id `test-b`; started one after the other.
    pub async fn start_pair(mut config: Config) -> (Self, Self) {
        let a = Self::start(config.clone()).await;
        config.server.node_id = "test-b".into();
        let b = Self::start(config).await;
        (a, b)
    }

    async fn wait_http(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if reqwest::get(self.admin_url("/healthz")).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("node did not start");
    }

    pub fn api_url(&self, path: &str) -> String {
        format!("http://{}{}", self.api, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    /// The stream WebSocket URL, with a buyer's token in the query.
    pub fn ws_url(&self, stream: &uuid::Uuid) -> String {
        stream_ws_url(self.api, stream, &buyer("viewer"))
    }

    /// Creates a stream as `seller-1` and returns its id.
    pub async fn new_stream(&self) -> uuid::Uuid {
        create_stream(&self.api_url("/v1/streams"), &seller("seller-1")).await
    }

    /// The node's Prometheus text page (admin `/metrics`).
    pub async fn metrics(&self) -> String {
        metrics_page(&self.admin_url("/metrics")).await
    }

    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::new()
    }

    /// Triggers shutdown and returns what `run` returned.
    pub async fn shutdown(mut self) -> Result<(), RunError> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        (&mut self.task).await.expect("node task panicked")
    }
}

/// The node binary as a child process, configured through the environment.
pub struct NodeProcess {
    pub child: Child,
    pub api: SocketAddr,
    pub admin: SocketAddr,
}

impl NodeProcess {
    pub fn api_url(&self, path: &str) -> String {
        format!("http://{}{}", self.api, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    /// The node's Prometheus text page (admin `/metrics`).
    pub async fn metrics(&self) -> String {
        metrics_page(&self.admin_url("/metrics")).await
    }

    pub fn spawn(env: &[(&str, String)]) -> Self {
        let api: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        Self::spawn_on(api, admin, env)
    }

    /// [`NodeProcess::spawn`] on given listeners (a node restarted behind a balancer that
    /// knows its address).
    pub fn spawn_on(api: SocketAddr, admin: SocketAddr, env: &[(&str, String)]) -> Self {
        let mut cmd = Command::new(node_bin());
        cmd.arg("serve")
            .env_remove("RUST_LOG")
            .env("STREAMEDGE_SERVER__LISTEN", api.to_string())
            .env("STREAMEDGE_SERVER__ADMIN_LISTEN", admin.to_string())
            .env("STREAMEDGE_LOG__LEVEL", "warn")
            .env("STREAMEDGE_AUTH__JWT_SECRET", TEST_JWT_SECRET)
            // Tests that drain say so; the others stop at once.
            .env("STREAMEDGE_SERVER__DRAIN_DELAY", "0s")
            .env("STREAMEDGE_SERVER__DRAIN_SPREAD", "0s")
            // As in `test_config`: limits off unless the test's environment sets them.
            .env("STREAMEDGE_ADMISSION__IP_CONNECTIONS", "0")
            .env("STREAMEDGE_ADMISSION__IP_CONNECTS_PER_SEC", "0")
            .env("STREAMEDGE_ADMISSION__USER_WEBSOCKETS", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn streamedge");
        let p = Self { child, api, admin };
        p.wait_ready();
        p
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(self.admin).is_ok()
                && std::net::TcpStream::connect(self.api).is_ok()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("streamedge process did not start listening");
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Waits for the process to exit, up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `streamedge` binary Cargo built for the running test. `CARGO_BIN_EXE_streamedge` is
/// set only while compiling the node crate's own tests, not this library, so it is looked
/// up at run time: in the environment (as test runners may set it), else beside the test
/// executable's `deps/` folder, where Cargo puts the package's binaries.
fn node_bin() -> PathBuf {
    for var in ["CARGO_BIN_EXE_streamedge", "NEXTEST_BIN_EXE_streamedge"] {
        if let Some(p) = std::env::var_os(var) {
            return PathBuf::from(p);
        }
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join(format!("streamedge{}", std::env::consts::EXE_SUFFIX)))
        .expect("the test executable is in a target folder");
    assert!(
        bin.is_file(),
        "{} not found: the streamedge binary is built only for the node crate's tests",
        bin.display()
    );
    bin
}
