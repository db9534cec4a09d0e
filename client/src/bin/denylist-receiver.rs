//! `denylist-receiver`: turns identity-provider signals (OpenID Connect Back-Channel Logout
//! logout tokens, Shared Signals Framework SETs) into signed revocations on the stream. See
//! `docs/RECEIVER.md` and [`denylist_client::receiver`].
//!
//! This file only reads the config, sets up logging, connects, binds, and on SIGINT or
//! SIGTERM drains under a deadline.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use denylist_client::Publisher;
use denylist_client::receiver::config::ReceiverConfig;
use denylist_client::receiver::{self, Receiver};
use denylist_proto::envelope::SigningKey;

/// How long requests in flight may take to finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Identity-provider signals (Back-Channel Logout, SSF/CAEP/RISC) → denylist revocations.
#[derive(Debug, Parser)]
#[command(name = "denylist-receiver", version)]
struct Args {
    /// The TOML config file (see docs/RECEIVER.md).
    #[arg(long, env = "DENYLIST_RECEIVER_CONFIG")]
    config: PathBuf,
    /// Validate the config (and read its files) and exit.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("denylist-receiver: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("denylist-receiver: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let config = ReceiverConfig::load(&args.config)?;
    let pem = std::fs::read_to_string(&config.signing_key_file).with_context(|| {
        format!(
            "config field `signing_key_file`: cannot read {}",
            config.signing_key_file.display()
        )
    })?;
    let key = SigningKey::from_pkcs8_pem(&pem).context("config field `signing_key_file`")?;
    let nats = config.nats.to_options()?;
    if args.check {
        eprintln!(
            "denylist-receiver: {} is valid ({} provider(s), key id {})",
            args.config.display(),
            config.providers.len(),
            key.key_id()
        );
        return Ok(());
    }
    let key_id = key.key_id().to_owned();
    let public_key = key.public_key();
    let client = nats.connect_until(config.nats.startup_timeout).await?;
    let publisher = Publisher::new(nats.jetstream(client.clone()), key);
    let receiver = Arc::new(Receiver::new(&config, publisher, client.clone(), &pem)?);
    receiver.load_keys().await;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("config field `listen`: cannot bind {}", config.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, key_id, public_key, providers = config.providers.len(), "listening on {addr}");
    receiver::serve(receiver, listener, shutdown_signal(), SHUTDOWN_GRACE).await?;
    let _ = tokio::time::timeout(Duration::from_secs(2), client.flush()).await;
    tracing::info!("stopped");
    Ok(())
}

/// Completes on SIGINT or SIGTERM (what Kubernetes sends to stop a pod).
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
