//! `denylistctl heartbeat`: the fleet heartbeat as a long-running command (see
//! [`denylist_client::heartbeat`]).

use std::process::ExitCode;
use std::time::Duration;

use denylist_client::heartbeat::{HeartbeatPublisher, HeartbeatSettings};
use tokio::time::Instant;

use super::{connect, load_key, nats_options};
use crate::cli::{Global, HeartbeatArgs};

/// Publishes the fleet heartbeat until SIGINT or SIGTERM. Connecting is retried until
/// `--timeout`; after that, NATS outages are ridden out (the client reconnects by itself) and
/// each failed interval is logged.
pub(super) async fn run(
    g: &Global,
    args: &HeartbeatArgs,
    deadline: Instant,
) -> anyhow::Result<ExitCode> {
    let key = load_key(g)?;
    let name = args
        .name
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "denylistctl".to_owned());
    let settings = HeartbeatSettings {
        stream: g.stream.clone(),
        subject: args.subject.clone(),
        interval: args.interval,
        request_timeout: nats_options(g).request_timeout,
        publisher: name,
    };
    let (client, _) = connect(g, deadline).await?;
    let key_id = key.key_id().to_owned();
    let publisher = HeartbeatPublisher::new(client.clone(), key, settings)?;
    eprintln!(
        "denylistctl: publishing heartbeats of stream {} on {} every {} (key id {key_id})",
        g.stream,
        args.subject,
        humantime::format_duration(args.interval)
    );
    let stats = publisher.run(shutdown_signal()).await;
    // Whatever is still buffered goes out before the process ends.
    let _ = tokio::time::timeout(Duration::from_secs(2), client.flush()).await;
    eprintln!(
        "denylistctl: heartbeat stopped ({} published, {} intervals failed)",
        stats.published, stats.failed
    );
    Ok(ExitCode::SUCCESS)
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
