//! What the bench binaries (`tests/benches/*.rs`, `harness = false`) share.

use std::future::Future;
use std::time::{Duration, Instant};

use denylist_proto::pb;
use futures::StreamExt as _;

use crate::Fleet;

/// Runs a bench's async body on a two-worker runtime, but only when run with
/// `--bench`: `cargo test --benches` runs bench binaries without it, and a bench
/// that publishes a million events must not run there.
pub fn main<F: Future<Output = anyhow::Result<()>>>(run: impl FnOnce() -> F) -> anyhow::Result<()> {
    main_with(tokio::runtime::Builder::new_multi_thread(), run)
}

/// [`main`] on a runtime from `builder` (two workers are set here), for a bench that needs
/// more of the runtime than its defaults.
pub fn main_with<F: Future<Output = anyhow::Result<()>>>(
    mut builder: tokio::runtime::Builder,
    run: impl FnOnce() -> F,
) -> anyhow::Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    builder
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run())
}

/// The `q` quantile (0.0–1.0) of `sorted` durations, in milliseconds (nearest rank).
pub fn percentile_ms(sorted: &[Duration], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

/// One round of "→ every sidecar rejecting": opens a `Watch` on every sidecar of `fleet`
/// for `token`, then runs `trigger` (the publish, the signal) while the notices come in.
/// Returns how long `trigger` took and when the last sidecar's notice arrived, both from
/// the trigger's start. Notices are pushed by the sidecars, so no polling interval
/// inflates the figure; one missing within 10 s is an error.
pub async fn until_every_sidecar(
    fleet: &Fleet,
    token: &str,
    trigger: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<(Duration, Duration)> {
    let mut watches = Vec::with_capacity(fleet.sidecars.len());
    for sidecar in &fleet.sidecars {
        let request = pb::WatchRequest {
            token: token.to_owned(),
            ..Default::default()
        };
        watches.push(sidecar.watch(request).await?);
    }
    let start = Instant::now();
    let arrivals = futures::future::join_all(watches.into_iter().map(|mut w| async move {
        match tokio::time::timeout(Duration::from_secs(10), w.next()).await {
            Ok(Some(Ok(_))) => Ok(start.elapsed()),
            other => Err(anyhow::anyhow!("no revocation notice: {other:?}")),
        }
    }));
    let triggered = async {
        trigger.await?;
        Ok::<_, anyhow::Error>(start.elapsed())
    };
    let (arrivals, triggered) = tokio::join!(arrivals, triggered);
    let last = arrivals
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?
        .into_iter()
        .max()
        .unwrap_or_default();
    Ok((triggered?, last))
}
