//! What the bench binaries (`tests/benches/*.rs`, `harness = false`) share.

use std::future::Future;

/// Runs a bench's async body on a two-worker runtime, but only when run with
/// `--bench`: `cargo test --benches` runs bench binaries without it, and a bench
/// that publishes a million events must not run there.
pub fn main<F: Future<Output = anyhow::Result<()>>>(run: impl FnOnce() -> F) -> anyhow::Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run())
}
