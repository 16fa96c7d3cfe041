//! Redis over TLS (`rediss://`) with an ACL user, as managed Redis services require: the
//! server's certificate checked against `redis.tls_ca_file`, or not at all with
//! `#insecure`; refused against the system roots. A private TLS `redis-server` with a
//! throw-away CA made by `openssl`.

use streamedge_testkit as common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::TestNode;

struct TlsRedis {
    port: u16,
    dir: PathBuf,
    child: Child,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TlsRedis {
    fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("streamedge-tls-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-subj",
                "/CN=streamedge test CA",
            ],
        );
        openssl(
            &dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
        );
        std::fs::write(
            dir.join("san.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .unwrap();
        openssl(
            &dir,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "1",
                "-out",
                "server.pem",
                "-extfile",
                "san.ext",
            ],
        );
        let port = common::free_port();
        let child = Command::new(common::redis_server_bin())
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .args([
                "--tls-cert-file",
                "server.pem",
                "--tls-key-file",
                "server.key",
            ])
            .args(["--tls-ca-cert-file", "ca.pem", "--tls-auth-clients", "no"])
            .args(["--save", "", "--appendonly", "no", "--dir", "."])
            // The default user is off: only the ACL user gets in.
            .args(["--user", "default", "off"])
            .args(["--user", "edge", "on", ">edge-secret", "~*", "&*", "+@all"])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn redis-server (built with TLS)");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "TLS redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
        Self { port, dir, child }
    }

    fn url(&self, fragment: &str) -> String {
        format!(
            "rediss://edge:edge-secret@127.0.0.1:{}/0{fragment}",
            self.port
        )
    }

    fn ca(&self) -> String {
        self.dir.join("ca.pem").to_string_lossy().into_owned()
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn ready(node: &TestNode) -> bool {
    common::eventually(Duration::from_secs(5), || async {
        reqwest::get(node.admin_url("/readyz"))
            .await
            .unwrap()
            .status()
            == 200
    })
    .await
}

/// A stream created and read back through the node exercises commands and scripts.
async fn works(node: &TestNode) {
    let stream = node.new_stream().await;
    let r = node
        .client()
        .get(node.api_url(&format!("/v1/streams/{stream}")))
        .bearer_auth(common::buyer("b"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn rediss_with_a_ca_file_and_an_acl_user() {
    let redis = TlsRedis::start();
    let mut cfg = common::test_config();
    cfg.redis.url = redis.url("");
    cfg.redis.tls_ca_file = redis.ca();
    let node = TestNode::start(cfg).await;
    assert!(ready(&node).await, "not ready over TLS");
    works(&node).await;
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn rediss_insecure_skips_the_certificate_check() {
    let redis = TlsRedis::start();
    let mut cfg = common::test_config();
    cfg.redis.url = redis.url("#insecure");
    let node = TestNode::start(cfg).await;
    assert!(ready(&node).await, "not ready over TLS (#insecure)");
    works(&node).await;
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_untrusted_certificate_is_refused() {
    let redis = TlsRedis::start();
    let mut cfg = common::test_config();
    // Neither the CA file nor #insecure: the system roots do not know the test CA.
    cfg.redis.url = redis.url("");
    let node = TestNode::start(cfg).await;
    assert!(
        !ready(&node).await,
        "ready against an untrusted certificate"
    );
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_wrong_password_is_refused() {
    let redis = TlsRedis::start();
    let mut cfg = common::test_config();
    cfg.redis.url = redis.url("").replace("edge-secret", "wrong");
    cfg.redis.tls_ca_file = redis.ca();
    let node = TestNode::start(cfg).await;
    assert!(!ready(&node).await, "ready with a wrong password");
    node.shutdown().await.unwrap();
}
