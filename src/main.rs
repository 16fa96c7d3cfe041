//! The `streamedge` command line: `serve` (default), `check-config`, `version`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use streamedge::config::{self, Config, ConfigSource};
use streamedge::server::{self, Listeners};

/// Exit code for configuration errors (unknown key, bad value, unreadable file).
const EXIT_CONFIG: u8 = 2;

/// mimalloc instead of glibc malloc: request handling allocates and frees many small
/// buffers across two worker threads; see docs/benchmarks.md ("RTC token endpoint").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Called by each worker thread when it runs out of work: when the node has asked for
/// memory back since this thread last looked (a burst of connections ended, see
/// `streamedge::telemetry::memory`), hand this thread's free allocator pages back to the
/// OS. Cheap otherwise: one atomic load.
fn release_memory_if_asked() {
    thread_local! {
        static SEEN: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }
    let epoch = streamedge::telemetry::memory::release_epoch();
    if SEEN.with(|s| s.replace(epoch)) != epoch {
        // SAFETY: mi_collect has no preconditions; it frees this thread's unused pages.
        unsafe { libmimalloc_sys::mi_collect(true) };
    }
}

/// Transparent huge pages make a freed 4 KiB page inside a 2 MiB huge page stay resident,
/// so memory freed after a burst is not given back (and an idle node starts at ~19 MiB
/// instead of ~11 MiB). The node's working set is small; it does without them.
fn disable_transparent_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes plain integer arguments and affects only this
    // process; failure (an old kernel) changes nothing.
    let r = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if r != 0 {
        eprintln!(
            "streamedge: could not disable transparent huge pages: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Each WebSocket is a file descriptor: raise the soft open-file limit to the hard limit
/// (systemd's `LimitNOFILE=`, a container's `nofile` ulimit), so a default soft limit of
/// 1,024 does not cap the node far below `ws.max_connections`.
fn raise_open_file_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write and read the struct passed; no other effect.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 || lim.rlim_cur >= lim.rlim_max {
            return;
        }
        let wanted = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) != 0 {
            eprintln!(
                "streamedge: could not raise the open-file limit from {}: {}",
                lim.rlim_cur,
                std::io::Error::last_os_error()
            );
        }
    }
}

#[derive(Parser)]
#[command(
    name = "streamedge",
    version,
    about = "Edge node for live shopping streams"
)]
struct Cli {
    /// TOML config file (see config/default.toml). Without it, built-in defaults apply;
    /// STREAMEDGE_<SECTION>__<KEY> environment variables override either.
    #[arg(long, short = 'c', global = true, env = "STREAMEDGE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node (the default).
    Serve {
        /// Development mode: embedded backend defaults plus the public development JWT
        /// secret and placeholder Agora credentials. Never use in production.
        #[arg(long)]
        dev: bool,
    },
    /// Validate the configuration and print it, secrets redacted.
    CheckConfig {
        /// Validate as `serve --dev` would run.
        #[arg(long)]
        dev: bool,
    },
    /// Mint development access tokens and inspect RTC tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Apply the database migrations (supabase/migrations) that are not applied yet.
    Migrate {
        /// PostgreSQL URL; defaults to persist.database_url.
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
        /// On a plain PostgreSQL (not Supabase): first create the Supabase roles and
        /// auth.uid() the policies use, when the auth schema is missing.
        #[arg(long)]
        auth_shim: bool,
    },
    /// Print the version.
    Version,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Mint a Supabase-style access token (HS256) with the configured JWT secret, for
    /// trying the node locally.
    Mint {
        /// The user id (`sub`).
        #[arg(long)]
        user: String,
        /// `seller` or `buyer`.
        #[arg(long, default_value = "buyer")]
        role: String,
        /// Lifetime, e.g. `1h`.
        #[arg(long, default_value = "1h", value_parser = humantime_duration)]
        ttl: std::time::Duration,
        /// Mark the token as an anonymous sign-in.
        #[arg(long)]
        anonymous: bool,
        /// Use the development secret (as `serve --dev` does).
        #[arg(long)]
        dev: bool,
    },
    /// Decode an Agora AccessToken2 and verify it against the configured certificate.
    Inspect {
        /// The token ("007...").
        token: String,
        /// Verify against the development placeholder certificate.
        #[arg(long)]
        dev: bool,
    },
}

/// Prints a line to stdout. A closed pipe (`streamedge token inspect … | head`) is not an
/// error worth a panic: the output is simply cut short.
fn out(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("streamedge: cannot write output: {e}");
        }
    }
}

fn humantime_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime_serde::re::humantime::parse_duration(s).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve { dev: false });
    if let Command::Version = command {
        out(&format!("streamedge {}", env!("CARGO_PKG_VERSION")));
        return ExitCode::SUCCESS;
    }
    let dev = match &command {
        Command::Serve { dev } | Command::CheckConfig { dev } => *dev,
        Command::Token(TokenCommand::Mint { dev, .. } | TokenCommand::Inspect { dev, .. }) => *dev,
        Command::Version | Command::Migrate { .. } => false,
    };
    // Development values are filled in before the cross-key checks (e.g. media.enabled
    // with --dev gets the development media key).
    let mut config = match config::load_unvalidated(&ConfigSource::from_process(cli.config)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("streamedge: configuration error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let dev_changes = if dev {
        streamedge::auth::dev::apply_dev_mode(&mut config)
    } else {
        Vec::new()
    };
    if let Err(e) = config.validate() {
        eprintln!("streamedge: configuration error: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    match command {
        Command::CheckConfig { .. } => check_config(&config),
        Command::Serve { .. } => serve(config, dev, dev_changes),
        Command::Token(t) => token_command(&config, t),
        Command::Migrate {
            database_url,
            auth_shim,
        } => migrate(config, database_url, auth_shim),
        Command::Version => unreachable!(),
    }
}

fn migrate(mut config: Config, url: Option<String>, auth_shim: bool) -> ExitCode {
    if let Some(u) = url {
        config.persist.database_url = config::Secret::new(u);
    }
    if !config.persist.enabled() {
        eprintln!("streamedge: no database: pass --database-url or set persist.database_url");
        return ExitCode::from(EXIT_CONFIG);
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("streamedge: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        let mut client = streamedge::persist::pg::connect(&config.persist).await?;
        streamedge::persist::migrate::run(&mut client, auth_shim).await
    });
    match result {
        Ok(applied) if applied.is_empty() => {
            out("schema up to date");
            ExitCode::SUCCESS
        }
        Ok(applied) => {
            for v in applied {
                out(&format!("applied {v}"));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("streamedge: migrate failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn token_command(config: &Config, cmd: TokenCommand) -> ExitCode {
    use streamedge::auth::dev::{mint, MintRequest};
    use streamedge::auth::Role;
    match cmd {
        TokenCommand::Mint {
            user,
            role,
            ttl,
            anonymous,
            ..
        } => {
            let role = match role.as_str() {
                "seller" => Role::Seller,
                "buyer" => Role::Buyer,
                other => {
                    eprintln!("streamedge: --role must be seller or buyer, not {other:?}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            if config.auth.jwt_secret.is_empty() {
                eprintln!(
                    "streamedge: no auth.jwt_secret configured; pass --dev to use the development secret"
                );
                return ExitCode::from(EXIT_CONFIG);
            }
            let token = mint(
                config.auth.jwt_secret.expose().as_bytes(),
                &MintRequest {
                    user_id: &user,
                    role,
                    ttl,
                    audience: &config.auth.audience,
                    issuer: &config.auth.issuer,
                    role_claim: &config.auth.role_claim,
                    anonymous,
                },
                jsonwebtoken::get_current_timestamp(),
            );
            out(&token);
            ExitCode::SUCCESS
        }
        TokenCommand::Inspect { token, .. } => {
            use streamedge::rtc::accesstoken2;
            let parsed = match accesstoken2::parse(token.trim()) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("streamedge: not a valid AccessToken2: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let cert = config.agora.app_certificate.expose();
            let signature = if cert.is_empty() {
                "unchecked (no agora.app_certificate configured)".to_string()
            } else {
                match parsed.verify_signature(cert) {
                    Ok(()) => "valid".to_string(),
                    Err(e) => format!("INVALID ({e})"),
                }
            };
            let now = jsonwebtoken::get_current_timestamp();
            let report = inspect_report(&parsed.token, &signature, now);
            out(&serde_json::to_string_pretty(&report).unwrap_or_default());
            if signature.starts_with("INVALID") {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
    }
}

fn inspect_report(
    t: &streamedge::rtc::accesstoken2::AccessToken2,
    signature: &str,
    now: u64,
) -> serde_json::Value {
    use streamedge::domain::clock::rfc3339;
    use streamedge::rtc::accesstoken2::Service;
    let at = |rel: u32| rfc3339((u64::from(t.issue_ts) + u64::from(rel)) * 1000);
    let services: Vec<serde_json::Value> = t
        .services
        .iter()
        .map(|s| match s {
            Service::Rtc {
                channel_name,
                uid,
                privileges,
            } => serde_json::json!({
                "service": "rtc",
                "channel": channel_name,
                "uid": uid,
                "privileges": privileges.iter().map(|(p, e)| serde_json::json!({
                    "privilege": match p { 1 => "join_channel", 2 => "publish_audio", 3 => "publish_video", 4 => "publish_data", _ => "unknown" },
                    "id": p,
                    "expire_seconds": e,
                    "expires_at": if *e == 0 { "never".to_string() } else { at(*e) },
                })).collect::<Vec<_>>(),
            }),
            other => serde_json::json!({ "service_type": other.service_type() }),
        })
        .collect();
    serde_json::json!({
        "version": "007",
        "app_id": t.app_id,
        "issued_at": rfc3339(u64::from(t.issue_ts) * 1000),
        "expire_seconds": t.expire,
        "expires_at": at(t.expire),
        "expired": u64::from(t.issue_ts) + u64::from(t.expire) <= now,
        "salt": t.salt,
        "signature": signature,
        "services": services,
    })
}

fn check_config(config: &Config) -> ExitCode {
    match toml::to_string_pretty(&config.redacted()) {
        Ok(text) => {
            out(&format!(
                "# configuration is valid; effective values (secrets redacted):\n\n{}",
                text.trim_end()
            ));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("streamedge: cannot print configuration: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: Config, dev: bool, dev_changes: Vec<&'static str>) -> ExitCode {
    streamedge::telemetry::init_logging(&config.log);
    if dev {
        tracing::warn!("==============================================================");
        tracing::warn!("DEVELOPMENT MODE (--dev): this node is NOT secure.");
        for c in &dev_changes {
            tracing::warn!("  {c}");
        }
        tracing::warn!(
            "Anyone can mint tokens: `streamedge token mint --dev --user alice --role seller`"
        );
        tracing::warn!("==============================================================");
    }
    if !dev && config.auth.dev_login {
        tracing::warn!(
            "auth.dev_login is on: POST /v1/dev/login mints access tokens for anyone; never in production"
        );
    }
    if config.auth.jwt_secret.is_empty() && config.auth.jwks_url.is_empty() {
        tracing::warn!(
            "no auth.jwt_secret or auth.jwks_url configured: every authenticated request will be refused"
        );
    }
    disable_transparent_huge_pages();
    raise_open_file_limit();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all().on_thread_park(release_memory_if_asked);
    if config.server.worker_threads > 0 {
        builder.worker_threads(config.server.worker_threads);
    }
    let runtime = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("streamedge: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: anyhow::Result<()> = runtime.block_on(async move {
        let listeners = Listeners::bind(&config).await?;
        server::run(config, listeners, shutdown_signal()).await?;
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "streamedge stopped with an error");
            eprintln!("streamedge: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}
