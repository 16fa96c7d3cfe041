//! The `streamedge` command line: `serve` (default), `check-config`, `version`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use streamedge::config::{self, Config, ConfigSource};
use streamedge::server::{self, Listeners};

/// Exit code for configuration errors (unknown key, bad value, unreadable file).
const EXIT_CONFIG: u8 = 2;

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
    Serve,
    /// Validate the configuration and print it, secrets redacted.
    CheckConfig,
    /// Print the version.
    Version,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve);
    if let Command::Version = command {
        println!("streamedge {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let config = match config::load(&ConfigSource::from_process(cli.config)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("streamedge: configuration error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match command {
        Command::CheckConfig => check_config(&config),
        Command::Serve => serve(config),
        Command::Version => unreachable!(),
    }
}

fn check_config(config: &Config) -> ExitCode {
    match toml::to_string_pretty(&config.redacted()) {
        Ok(text) => {
            println!("# configuration is valid; effective values (secrets redacted):\n");
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("streamedge: cannot print configuration: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: Config) -> ExitCode {
    streamedge::telemetry::init_logging(&config.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
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
