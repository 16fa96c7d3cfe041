//! PostgreSQL for tests: the shared server `scripts/test` starts, fresh migrated databases
//! on it, and private servers a test may stop and start again.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::free_port;

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

/// A client connected to `url` (its connection runs on a spawned task).
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

/// Like [`fresh_database`], on the server at `server_url`.
pub async fn fresh_database_on(server_url: &str) -> String {
    let url = empty_database_on(server_url).await;
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

/// A new database on the server at `server_url`, with nothing applied (no shim, no
/// migrations); returns its URL.
pub async fn empty_database_on(server_url: &str) -> String {
    let name = format!("se_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    pg(server_url)
        .await
        .batch_execute(&format!("create database {name}"))
        .await
        .unwrap();
    with_database(server_url, &name)
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

/// The single number a query returns (`select count(*) ...`).
pub async fn pg_count(url: &str, sql: &str) -> i64 {
    pg(url).await.query_one(sql, &[]).await.unwrap().get(0)
}

/// Waits up to `limit` until `sql` (a count) returns `want`, failing with the last count.
pub async fn wait_pg_count(url: &str, sql: &str, want: i64, limit: std::time::Duration) {
    let ok =
        crate::support::eventually(limit, || async move { pg_count(url, sql).await == want }).await;
    if !ok {
        panic!("{sql}: {}, wanted {want}", pg_count(url, sql).await);
    }
}
