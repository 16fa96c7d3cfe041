//! The binary's command line: config validation exit codes and `check-config` output.

use std::process::Command;

fn streamedge(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_streamedge"));
    cmd.args(args);
    // Keep the developer's environment out of the test.
    for (k, _) in std::env::vars() {
        if k.starts_with("STREAMEDGE_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run streamedge");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("se-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn version_prints_the_crate_version() {
    let (code, out, _) = streamedge(&["version"], &[]);
    assert_eq!(code, 0);
    assert_eq!(
        out.trim(),
        format!("streamedge {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn check_config_prints_effective_config_with_secrets_redacted() {
    let (code, out, err) = streamedge(
        &["check-config"],
        &[
            (
                "STREAMEDGE_REDIS__URL",
                "redis://app:hunter2@10.1.2.3:6379/0",
            ),
            ("STREAMEDGE_WS__MAX_CONNECTIONS", "1234"),
            (
                "STREAMEDGE_PERSIST__DATABASE_URL",
                "postgresql://postgres:hunter3@db.example.supabase.co:5432/postgres?sslmode=require",
            ),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("hunter2"), "password leaked:\n{out}");
    assert!(!out.contains("hunter3"), "database password leaked:\n{out}");
    assert!(
        out.contains("postgresql://postgres:<redacted>@db.example.supabase.co:5432/postgres"),
        "{out}"
    );
    assert!(
        out.contains("redis://app:<redacted>@10.1.2.3:6379/0"),
        "{out}"
    );
    assert!(out.contains("max_connections = 1234"), "{out}");
    // The printed config is itself a valid config file.
    let body: String = out
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    let f = temp_file("printed.toml", &body);
    let (code, _, err) = streamedge(&["--config", f.to_str().unwrap(), "check-config"], &[]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn shipped_default_config_is_accepted() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/default.toml");
    let (code, _, err) = streamedge(&["--config", path, "check-config"], &[]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn typo_in_config_file_exits_2_naming_the_key() {
    let f = temp_file("typo.toml", "[server]\nlisen = \"127.0.0.1:1\"\n");
    let (code, _, err) = streamedge(&["--config", f.to_str().unwrap(), "check-config"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("server.lisen"), "{err}");
    // `serve` refuses the same way, before binding anything.
    let (code, _, err) = streamedge(&["--config", f.to_str().unwrap(), "serve"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("server.lisen"), "{err}");
}

#[test]
fn the_binary_path_variable_of_test_tools_is_not_a_config_key() {
    let (code, _, err) = streamedge(
        &["check-config"],
        &[("STREAMEDGE_BIN", "/usr/local/bin/streamedge")],
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = streamedge(&["check-config"], &[("STREAMEDGE_BINN", "x")]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn unknown_section_exits_2() {
    let f = temp_file("section.toml", "[redsi]\nurl = \"\"\n");
    let (code, _, err) = streamedge(&["--config", f.to_str().unwrap(), "check-config"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("`redsi`"), "{err}");
}

#[test]
fn bad_values_exit_2_naming_the_key() {
    for (var, value, key) in [
        (
            "STREAMEDGE_WS__MAX_CONNECTIONS",
            "many",
            "ws.max_connections",
        ),
        ("STREAMEDGE_WS__MAX_CONNECTIONS", "0", "ws.max_connections"),
        (
            "STREAMEDGE_SERVER__SHUTDOWN_GRACE",
            "soon",
            "server.shutdown_grace",
        ),
        ("STREAMEDGE_SERVER__LISTEN", "localhost", "server.listen"),
        ("STREAMEDGE_LOG__FORMAT", "yaml", "log.format"),
        ("STREAMEDGE_REDIS__URL", "postgres://x", "redis.url"),
        ("STREAMEDGE_WS__IDLE_TIMEOUT", "1s", "ws.idle_timeout"),
        ("STREAMEDGE_SERVER__TYPO", "1", "server.typo"),
    ] {
        let (code, _, err) = streamedge(&["check-config"], &[(var, value)]);
        assert_eq!(code, 2, "{var}={value}: {err}");
        assert!(err.contains(key), "{var}={value} should name {key}: {err}");
    }
}

#[test]
fn invalid_toml_exits_2() {
    let f = temp_file("broken.toml", "[server\n");
    let (code, _, err) = streamedge(&["--config", f.to_str().unwrap()], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("not valid TOML"), "{err}");
}

#[test]
fn missing_config_file_exits_2() {
    let (code, _, err) = streamedge(&["--config", "/nonexistent/streamedge.toml"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/streamedge.toml"), "{err}");
}

#[test]
fn persistence_settings_are_validated_naming_the_key() {
    for (key, value, named) in [
        (
            "STREAMEDGE_PERSIST__DATABASE_URL",
            "mysql://db/x",
            "persist.database_url",
        ),
        ("STREAMEDGE_PERSIST__WRITERS", "8", "persist.writers"),
        (
            "STREAMEDGE_PERSIST__POLL_INTERVAL",
            "0s",
            "persist.poll_interval",
        ),
        (
            "STREAMEDGE_PERSIST__OUTBOX_MAX_RECORDS",
            "0",
            "persist.outbox_max_records",
        ),
    ] {
        let (code, _, err) = streamedge(&["check-config"], &[(key, value)]);
        assert_eq!(code, 2, "{key}={value}: {err}");
        assert!(err.contains(named), "{key}={value}: {err}");
    }
}

#[test]
fn migrate_needs_a_reachable_database() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_streamedge"))
            .args(args)
            .env_remove("DATABASE_URL")
            .env_remove("STREAMEDGE_PERSIST__DATABASE_URL")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, err) = run(&["migrate"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--database-url"), "{err}");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let (code, err) = run(&[
        "migrate",
        "--database-url",
        &format!("postgres://postgres:secret-pw@127.0.0.1:{port}/postgres"),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("migrate failed"), "{err}");
    assert!(!err.contains("secret-pw"), "password leaked: {err}");
}

#[test]
fn dev_mode_fills_development_values_before_validating() {
    let env = [("STREAMEDGE_MEDIA__ENABLED", "true")];
    let (code, _, err) = streamedge(&["check-config"], &env);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("media.node_key"), "{err}");
    let (code, out, err) = streamedge(&["check-config", "--dev"], &env);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("enabled = true"), "{out}");
}
