//! `denylist-sidecar`: parses configuration, sets up logs and metrics, builds the
//! app, and serves until SIGTERM or Ctrl-C, then drains.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use denylist_sidecar::app::{App, Listeners};
use denylist_sidecar::clock::SystemClock;
use denylist_sidecar::config::{self, Config, LogFormat};
use denylist_sidecar::telemetry;

/// Verifies JWTs locally and rejects revoked ones. Configuration: defaults, then
/// the TOML file, then DENYLIST_* environment variables, then these flags.
#[derive(Debug, Parser)]
#[command(name = "denylist-sidecar", version)]
struct Args {
    /// TOML configuration file.
    #[arg(long, short, env = config::env::CONFIG)]
    config: Option<PathBuf>,
    /// gRPC Unix socket path ("" disables it).
    #[arg(long)]
    socket: Option<String>,
    /// gRPC loopback TCP address ("" disables it).
    #[arg(long)]
    tcp: Option<String>,
    /// HTTP admin address ("" disables it).
    #[arg(long)]
    admin: Option<String>,
    /// Standalone revocations file (JSON lines).
    #[arg(long)]
    revocations_file: Option<PathBuf>,
    /// Log format.
    #[arg(long, value_parser = ["text", "json"])]
    log_format: Option<String>,
    /// Validate the configuration and key files, print a summary, and exit.
    #[arg(long)]
    check_config: bool,
}

fn load_config(args: &Args) -> Result<Config, config::ConfigError> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    config
        .apply_env(|k| std::env::var(k).ok())
        .map_err(|e| Config::in_file(e, None))?;
    // Flags are the last layer: reuse the environment parser so both accept the same syntax.
    let flags = [
        (config::env::SOCKET, args.socket.clone()),
        (config::env::TCP, args.tcp.clone()),
        (config::env::ADMIN, args.admin.clone()),
        (config::env::LOG_FORMAT, args.log_format.clone()),
        (
            config::env::REVOCATIONS_FILE,
            args.revocations_file
                .as_ref()
                .map(|p| p.display().to_string()),
        ),
    ];
    config.apply_env(|k| {
        flags
            .iter()
            .find(|(name, _)| *name == k)
            .and_then(|(_, v)| v.clone())
    })?;
    config
        .validate()
        .map_err(|e| Config::in_file(e, args.config.as_deref()))?;
    Ok(config)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let config = match load_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("denylist-sidecar: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = telemetry::init_tracing(&config.log) {
        eprintln!("denylist-sidecar: {e}");
        return ExitCode::from(2);
    }
    let metrics = match telemetry::install_metrics() {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::warn!(error = %e, "metrics disabled");
            None
        }
    };
    let app = match App::build(config.clone(), Arc::new(SystemClock), metrics).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            if config.log.format == LogFormat::Json {
                eprintln!("denylist-sidecar: {e}");
            }
            return ExitCode::from(1);
        }
    };
    if args.check_config {
        tracing::info!(issuers = config.issuers.len(), "configuration is valid");
        return ExitCode::SUCCESS;
    }
    let listeners = match Listeners::bind(&config.listen).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return ExitCode::from(1);
        }
    };
    match app.run(listeners, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "stopped with an error");
            ExitCode::from(1)
        }
    }
}

/// Completes on SIGTERM (Kubernetes) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}
