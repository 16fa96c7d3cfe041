//! Helpers for integration tests: nodes started in-process on port 0, the node binary as a
//! child process, private Redis servers, and WebSocket clients.
//!
//! Integration tests need the real Redis and PostgreSQL that `scripts/test` starts; run
//! without them, they fail with a message that says so (they never skip).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use streamedge::config::Config;
use streamedge::server::{self, Listeners, RunError};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const RUN_THROUGH_SCRIPT: &str =
    "run the integration tests through `scripts/test`, which starts Redis and PostgreSQL";

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

/// The HS256 secret test nodes verify access tokens with.
pub const TEST_JWT_SECRET: &str = "streamedge-test-secret-0123456789abcdef";

/// A Supabase-style access token for `user` signed with [`TEST_JWT_SECRET`].
pub fn token(user: &str, role: streamedge::auth::Role) -> String {
    token_with(user, role, Duration::from_secs(3600), false)
}

pub fn token_with(
    user: &str,
    role: streamedge::auth::Role,
    ttl: Duration,
    anonymous: bool,
) -> String {
    streamedge::auth::dev::mint(
        TEST_JWT_SECRET.as_bytes(),
        &streamedge::auth::dev::MintRequest {
            user_id: user,
            role,
            ttl,
            audience: "authenticated",
            issuer: "",
            role_claim: "app_metadata.role",
            anonymous,
        },
        jsonwebtoken::get_current_timestamp(),
    )
}

pub fn seller(user: &str) -> String {
    token(user, streamedge::auth::Role::Seller)
}

pub fn buyer(user: &str) -> String {
    token(user, streamedge::auth::Role::Buyer)
}

/// A config for tests: loopback, short grace, quiet logs, a fresh key prefix, the test
/// JWT secret and development Agora credentials.
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
    c.redis.key_prefix = format!("t{}:", uuid::Uuid::new_v4().simple());
    c.redis.health_interval = Duration::from_millis(200);
    c.redis.connect_timeout = Duration::from_millis(500);
    c.redis.command_timeout = Duration::from_millis(1000);
    c
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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
        format!(
            "ws://{}/v1/streams/{}/ws?access_token={}",
            self.api,
            stream,
            buyer("viewer")
        )
    }

    /// Creates a stream as `seller-1` and returns its id.
    pub async fn new_stream(&self) -> uuid::Uuid {
        create_stream(&self.api_url("/v1/streams"), &seller("seller-1")).await
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

    pub fn spawn(env: &[(&str, String)]) -> Self {
        let api: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        // `option_env!`: these helpers are also compiled into the load generator's tests,
        // where the node binary is not a target of the package.
        let Some(bin) = option_env!("CARGO_BIN_EXE_streamedge") else {
            panic!("the streamedge binary is built only for the node crate's tests");
        };
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .env_remove("RUST_LOG")
            .env("STREAMEDGE_SERVER__LISTEN", api.to_string())
            .env("STREAMEDGE_SERVER__ADMIN_LISTEN", admin.to_string())
            .env("STREAMEDGE_LOG__LEVEL", "warn")
            .env("STREAMEDGE_AUTH__JWT_SECRET", TEST_JWT_SECRET)
            // Tests that drain say so; the others stop at once.
            .env("STREAMEDGE_SERVER__DRAIN_DELAY", "0s")
            .env("STREAMEDGE_SERVER__DRAIN_SPREAD", "0s")
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

/// A private `redis-server` that a test may stop and restart on the same port.
pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    pub fn start() -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("se-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut s = Self {
            port,
            dir,
            child: None,
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
            .args(["--save", "", "--appendonly", "no"])
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

/// Creates a stream through the API (`url` is the `/v1/streams` endpoint).
pub async fn create_stream(url: &str, seller_token: &str) -> uuid::Uuid {
    let r = reqwest::Client::new()
        .post(url)
        .bearer_auth(seller_token)
        .json(&serde_json::json!({"title": "test stream"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        201,
        "create stream: {}",
        r.text().await.unwrap()
    );
    let v: serde_json::Value = r.json().await.unwrap();
    v["id"].as_str().unwrap().parse().unwrap()
}

/// Opens a stream WebSocket offering the `streamedge.v1` subprotocol.
pub async fn ws_connect(url: &str) -> Ws {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", "streamedge.v1".parse().unwrap());
    let (ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("websocket connect");
    assert_eq!(
        resp.headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap()),
        Some("streamedge.v1")
    );
    ws
}

/// The next text frame as JSON, skipping pings and the periodic `viewers` frames
/// (use [`next_of_type`] to wait for those), failing after `limit`.
pub async fn next_json(ws: &mut Ws, limit: Duration) -> serde_json::Value {
    loop {
        let v = next_any_json(ws, limit).await;
        if v["type"] != "viewers" {
            return v;
        }
    }
}

/// The next frame of type `kind`, skipping others, failing after `limit`.
pub async fn next_of_type(ws: &mut Ws, kind: &str, limit: Duration) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let v = next_any_json(ws, left).await;
        if v["type"] == kind {
            return v;
        }
    }
}

/// The next text frame as JSON (skipping pings), failing after `limit`.
pub async fn next_any_json(ws: &mut Ws, limit: Duration) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("timed out waiting for a frame")
            .expect("connection ended")
            .expect("websocket error");
        match msg {
            Message::Text(t) => return serde_json::from_str(&t).expect("server sent JSON"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// Reads until the close frame and returns its code (skipping other frames).
pub async fn close_code(ws: &mut Ws, limit: Duration) -> u16 {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("timed out waiting for close")
        {
            Some(Ok(Message::Close(Some(f)))) => return f.code.into(),
            Some(Ok(Message::Close(None))) => panic!("close frame without a code"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("connection failed before a close frame: {e}"),
            None => panic!("connection ended without a close frame"),
        }
    }
}

pub async fn send_text(ws: &mut Ws, text: &str) {
    ws.send(Message::Text(text.into())).await.unwrap();
}

/// The Prometheus text page at `url` (a node's admin `/metrics`).
pub async fn metrics_page(url: &str) -> String {
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

/// Polls `f` until it returns true or `limit` passes; returns whether it did.
pub async fn eventually<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
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

/// A WebSocket client that never answers anything: the handshake by hand, then raw
/// frames read off the socket. For tests of what the node does to silent clients (a
/// tungstenite client would answer pings as soon as it reads).
pub struct RawWs {
    tcp: tokio::net::TcpStream,
    buf: Vec<u8>,
}

impl RawWs {
    pub async fn connect(addr: SocketAddr, path: &str) -> Self {
        Self::connect_with_recv_buffer(addr, path, None).await
    }

    /// Like [`RawWs::connect`], with a fixed socket receive buffer (which also turns off
    /// the kernel's receive-buffer autotuning, up to 32 MB on loopback here): a client that
    /// stops reading then pushes back on the node after kilobytes, not megabytes.
    pub async fn connect_with_recv_buffer(
        addr: SocketAddr,
        path: &str,
        recv_buffer: Option<u32>,
    ) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        if let Some(n) = recv_buffer {
            socket.set_recv_buffer_size(n).unwrap();
        }
        let mut tcp = socket.connect(addr).await.unwrap();
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let end = loop {
            let n = tcp.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed during handshake");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        assert!(
            head.starts_with("HTTP/1.1 101"),
            "handshake refused: {head}"
        );
        buf.drain(..end);
        Self { tcp, buf }
    }

    /// Reads frames until a close frame (returning its code) or EOF (`None`).
    pub async fn read_until_close(&mut self, limit: Duration) -> Option<u16> {
        use tokio::io::AsyncReadExt;
        let deadline = tokio::time::Instant::now() + limit;
        let mut chunk = [0u8; 4096];
        loop {
            while let Some((opcode, payload, used)) = parse_server_frame(&self.buf) {
                self.buf.drain(..used);
                if opcode == 0x8 {
                    return payload.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]));
                }
            }
            let n = tokio::time::timeout_at(deadline, self.tcp.read(&mut chunk))
                .await
                .expect("timed out waiting for close")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// One unmasked server frame: (opcode, payload, bytes used), if complete.
fn parse_server_frame(b: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    if b.len() < 2 {
        return None;
    }
    let opcode = b[0] & 0x0f;
    let (len, mut at) = match b[1] & 0x7f {
        126 => (u16::from_be_bytes([*b.get(2)?, *b.get(3)?]) as usize, 4),
        127 => (
            u64::from_be_bytes(b.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    if b[1] & 0x80 != 0 {
        at += 4; // masked (not expected from a server)
    }
    let payload = b.get(at..at + len)?.to_vec();
    Some((opcode, payload, at + len))
}

impl RawWs {
    /// Sends one frame with FIN set; `masked` as a conforming client would.
    pub async fn send_frame(&mut self, opcode: u8, payload: &[u8], masked: bool) {
        use tokio::io::AsyncWriteExt;
        let mut f = vec![0x80 | opcode];
        let mask_bit = if masked { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => f.push(mask_bit | n as u8),
            n if n <= 0xffff => {
                f.push(mask_bit | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(mask_bit | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if masked {
            let key = [0x12u8, 0x34, 0x56, 0x78];
            f.extend_from_slice(&key);
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            f.extend_from_slice(payload);
        }
        self.tcp.write_all(&f).await.unwrap();
    }
}

// --- PostgreSQL ------------------------------------------------------------------------------

/// The test PostgreSQL server `scripts/test` starts (`DATABASE_URL`).
pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .expect("DATABASE_URL is not set: run the tests through scripts/test")
}

/// `url` with its database name replaced.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, rest) = url.rsplit_once('/').expect("a database URL");
    let query = rest
        .split_once('?')
        .map(|(_, q)| format!("?{q}"))
        .unwrap_or_default();
    format!("{base}/{db}{query}")
}

pub async fn pg(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    tokio::spawn(conn);
    client
}

/// A new, empty database on the test server with the Supabase shim and the migrations
/// applied; returns its URL.
pub async fn fresh_database() -> String {
    fresh_database_on(&database_url()).await
}

pub async fn fresh_database_on(server_url: &str) -> String {
    let name = format!("se_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    pg(server_url)
        .await
        .batch_execute(&format!("create database {name}"))
        .await
        .unwrap();
    let url = with_database(server_url, &name);
    let mut last = None;
    // Roles are shared by the whole server: parallel tests may race creating them.
    for _ in 0..5 {
        let mut c = pg(&url).await;
        match streamedge::persist::migrate::run(&mut c, true).await {
            Ok(_) => return url,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("migrations failed: {:#}", last.unwrap());
}

fn pg_bin(name: &str) -> PathBuf {
    if let Ok(dir) = std::env::var("PG_BIN") {
        return PathBuf::from(dir).join(name);
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs.pop()
        .map(|d| d.join(name))
        .expect("PostgreSQL binaries not found: run the tests through scripts/test")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs a PostgreSQL tool, as the `postgres` user when the tests run as root.
fn pg_command(name: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(pg_bin(name));
        c
    } else {
        Command::new(pg_bin(name))
    }
}

/// A private PostgreSQL server that a test may stop and start again (the shared one must
/// stay up for the other tests).
pub struct PgServer {
    pub port: u16,
    dir: PathBuf,
    running: bool,
}

impl PgServer {
    pub fn start() -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("se-pg-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        if is_root() {
            assert!(Command::new("chown")
                .args(["postgres"])
                .arg(&dir)
                .status()
                .unwrap()
                .success());
        }
        let out = pg_command("initdb")
            .arg("-D")
            .arg(dir.join("data"))
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale"])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut s = Self {
            port,
            dir,
            running: false,
        };
        s.restart();
        s
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn restart(&mut self) {
        let status = pg_command("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("log"))
            .args(["-w", "-t", "60", "-o"])
            .arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
                self.port,
                self.dir.display()
            ))
            .arg("start")
            .stdout(Stdio::null())
            .status()
            .expect("run pg_ctl");
        assert!(status.success(), "PostgreSQL did not start");
        self.running = true;
    }

    /// Stops the server (fast shutdown: open connections are cut).
    pub fn stop(&mut self) {
        if !self.running {
            return;
        }
        let _ = pg_command("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "fast", "-w", "stop"])
            .stdout(Stdio::null())
            .status();
        self.running = false;
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// --- chat over the stream WebSocket --------------------------------------------------------

/// Joins a stream's WebSocket with `token`; returns the socket and the welcome frame.
pub async fn join_with(
    addr: SocketAddr,
    stream: &uuid::Uuid,
    token: &str,
) -> (Ws, serde_json::Value) {
    let mut ws = ws_connect(&format!(
        "ws://{addr}/v1/streams/{stream}/ws?access_token={token}"
    ))
    .await;
    let welcome = next_json(&mut ws, Duration::from_secs(15)).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    (ws, welcome)
}

/// Sends one chat message and waits for its ack; returns the ack frame (an `error` frame
/// when refused).
pub async fn send_and_ack(ws: &mut Ws, client_msg_id: &str, body: &str) -> serde_json::Value {
    send_text(
        ws,
        &serde_json::json!({"type": "send", "client_msg_id": client_msg_id, "body": body})
            .to_string(),
    )
    .await;
    loop {
        let f = next_json(ws, Duration::from_secs(15)).await;
        if (f["type"] == "ack" && f["client_msg_id"] == client_msg_id) || f["type"] == "error" {
            return f;
        }
    }
}

/// One API call; returns the status and the JSON body (`Null` when none).
pub async fn call(
    method: reqwest::Method,
    url: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut req = reqwest::Client::new()
        .request(method, url)
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    (
        r.status().as_u16(),
        r.json().await.unwrap_or(serde_json::Value::Null),
    )
}
