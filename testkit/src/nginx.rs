//! nginx in front of test nodes, configured by the repository's own
//! `deploy/nginx/streamedge.conf` (its listen address and upstream servers replaced by the
//! test's ports) and `streamedge-proxy.conf`, so tests exercise what operators deploy.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::free_port;

/// A private nginx balancing over some nodes' API listeners.
pub struct Nginx {
    pub port: u16,
    dir: PathBuf,
    child: Child,
}

/// The repository's `deploy/nginx/`.
fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nginx")
}

/// The nginx binary: `NGINX_BIN`, else `nginx` on the PATH or in /usr/sbin.
fn nginx_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("NGINX_BIN") {
        return PathBuf::from(p);
    }
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin"])
    {
        let p = Path::new(dir).join("nginx");
        if p.exists() {
            return p;
        }
    }
    panic!("nginx is not installed: scripts/test installs it (Debian package nginx)");
}

impl Nginx {
    /// Starts nginx on a free port, balancing over `upstreams` (API listener ports).
    pub fn start(upstreams: &[u16]) -> Self {
        let shipped = std::fs::read_to_string(deploy_dir().join("streamedge.conf"))
            .expect("deploy/nginx/streamedge.conf");
        let port = free_port();
        let servers: String = upstreams
            .iter()
            .map(|p| format!("        server 127.0.0.1:{p} max_fails=1 fail_timeout=2s;\n"))
            .collect();
        // The shipped upstream lists 18081-18083 and listens on 18080.
        let mut conf = String::new();
        let mut in_servers = false;
        let mut listens = 0;
        for line in shipped.lines() {
            if line.trim_start().starts_with("server 127.0.0.1:1808") {
                if !in_servers {
                    conf.push_str(&servers);
                    in_servers = true;
                }
                continue;
            }
            if line.contains("listen 127.0.0.1:18080") {
                listens += 1;
            }
            conf.push_str(&line.replace(
                "listen 127.0.0.1:18080",
                &format!("listen 127.0.0.1:{port}"),
            ));
            conf.push('\n');
        }
        assert!(
            in_servers && listens == 1,
            "deploy/nginx/streamedge.conf: expected upstream servers 127.0.0.1:1808x and one \
             listen 127.0.0.1:18080 to replace"
        );
        let dir = std::env::temp_dir().join(format!("se-nginx-{}-{port}", std::process::id()));
        for sub in ["logs", "tmp"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        std::fs::copy(
            deploy_dir().join("streamedge-proxy.conf"),
            dir.join("streamedge-proxy.conf"),
        )
        .unwrap();
        let child = Command::new(nginx_bin())
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn nginx");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(dir.join("logs/error.log")).unwrap_or_default();
                panic!("nginx did not start listening: {log}");
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Self { port, dir, child }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // TERM to the master: it stops its workers (a KILL would leave them running).
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
