//! `denylist-injector`: parses flags, loads the certificate, binds, serves, and drains on
//! SIGTERM under a deadline. Everything else is in the library.

use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser as _;
use denylist_injector::cli::{Args, env};
use denylist_injector::{App, Drained, InjectorMetrics, ReloadingCertResolver, server_config};
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = EnvFilter::try_from_env(env::LOG).unwrap_or_else(|_| EnvFilter::new("info"));
    let subscriber = tracing_subscriber::fmt().with_env_filter(filter);
    if args.log_format == "json" {
        subscriber.json().init();
    } else {
        subscriber.init();
    }

    let own_namespace = std::env::var(env::POD_NAMESPACE).ok();
    let settings = args
        .settings(own_namespace.as_deref())
        .context("invalid configuration")?;
    let resolver = Arc::new(
        ReloadingCertResolver::load(&args.tls_cert, &args.tls_key)
            .context("cannot load the TLS certificate")?,
    );
    let metrics = Arc::new(InjectorMetrics::new());
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(
        listen = %args.listen,
        image = %settings.image,
        legacy_sidecar = settings.legacy_sidecar,
        excluded_namespaces = ?settings.excluded_namespaces,
        "denylist-injector serving"
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let reloader = tokio::spawn(resolver.clone().watch(
        args.cert_reload_interval,
        metrics.clone(),
        stopped(stop_rx.clone()),
    ));
    let server = tokio::spawn(denylist_injector::run(
        listener,
        server_config(resolver),
        App::new(settings, metrics),
        stopped(stop_rx),
        args.shutdown_delay,
        args.shutdown_grace,
    ));

    shutdown_signal().await;
    tracing::info!("signal received, shutting down");
    let _ = stop_tx.send(true);
    let drained = server.await.context("server task failed")?;
    let _ = reloader.await;
    if let Drained::DeadlineExceeded { aborted } = drained {
        tracing::warn!(aborted, "exited before every connection finished");
    }
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("can install a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
