//! Time to ready of a starting sidecar with a large denylist, with and without a
//! snapshot, and its resident memory once ready.
//!
//! ```text
//! cargo build --release -p denylist-sidecar -p denylist-client
//! DENYLIST_SIDECAR_BIN=$PWD/target/release/denylist-sidecar \
//! DENYLISTCTL_BIN=$PWD/target/release/denylistctl \
//!   cargo bench -p denylist-tests --bench cold_start
//! ```
//!
//! For each size (`COLD_START_SIZES`, default `100000,1000000` live revocations, one
//! `jti` event each: the worst case, one signature per revocation), one NATS server
//! and stream are filled, then:
//!
//! 1. **replay**: a sidecar starts with no snapshot in existence and replays the whole
//!    stream (one Ed25519 check per event) — the baseline;
//! 2. `denylistctl snapshot create` builds the snapshot (timed: the writer's cost);
//! 3. **snapshot**: sidecars start from it (`COLD_START_RUNS` runs, default 3).
//!
//! Time to ready runs from spawning the process to the first `Status` answer with
//! `ready = true` (polled every 20 ms by the harness). Resident memory (VmRSS and
//! VmHWM, the peak) is read from `/proc` when ready and again after the denylist's
//! first prune cycle. The replay baseline runs once per size (minutes at 1 M;
//! `COLD_START_REPLAY=0` skips it).

// Bench binaries print their results.
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use denylist_proto::envelope::SigningKey;
use denylist_proto::events::{Event, RuleKind};
use denylist_tests::events::{self, EventPublisher};
use denylist_tests::tokens::ISSUER;
use denylist_tests::{Denylistctl, Fleet, Sidecar, unique};

/// Bound on a start: the 1 M replay baseline takes about a minute on 2 cores.
const READY_BOUND: Duration = Duration::from_secs(600);

fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name).map_or_else(
        |_| default.to_vec(),
        |v| {
            v.split(',')
                .map(|s| s.trim().parse().expect("a number"))
                .collect()
        },
    )
}

/// VmRSS and VmHWM of the sidecar process, MiB.
fn memory_mib(sidecar: &Sidecar) -> anyhow::Result<(f64, f64)> {
    let mib = |field| Ok::<_, anyhow::Error>(sidecar.memory_kib(field)? as f64 / 1024.0);
    Ok((mib("VmRSS")?, mib("VmHWM")?))
}

struct Start {
    ready: Duration,
    rss_ready: f64,
    peak_ready: f64,
    rss_settled: f64,
    entries: u64,
}

async fn start_and_measure(fleet: &Fleet, name: &str, last: u64) -> anyhow::Result<Start> {
    let mut options = fleet.sidecar_options(name);
    options.log_filter = "info".to_owned();
    // Rules derive their expiry from the issuer's lifetime: keep them all live.
    options.max_token_lifetime = Duration::from_secs(24 * 3600);
    options.prune_interval = Duration::from_secs(2);
    let started = Instant::now();
    let sidecar = Sidecar::start(options).await?;
    let status = sidecar.wait_ready(READY_BOUND).await?;
    let ready = started.elapsed();
    anyhow::ensure!(
        status.denylist_sequence == last,
        "{name} ready at sequence {} of {last}",
        status.denylist_sequence
    );
    let (rss_ready, peak_ready) = memory_mib(&sidecar)?;
    // Let a prune cycle run (it rebuilds the compact base) before the settled figure.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (rss_settled, _) = memory_mib(&sidecar)?;
    let entries = sidecar.status().await?.entries;
    Ok(Start {
        ready,
        rss_ready,
        peak_ready,
        rss_settled,
        entries,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn run_size(size: usize, runs: usize) -> anyhow::Result<()> {
    let mut fleet = Fleet::start(0).await?;
    let dir = tempfile::tempdir()?;
    let (key, pem) = SigningKey::generate()?;
    let key_path = dir.path().join("publisher.pem");
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::write(&key_path, pem)?;
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600))?;
    }
    fleet.publisher = EventPublisher::with_key(fleet.client.clone(), key);
    let trust = fleet.publisher.public_key();

    let filling = Instant::now();
    let prefix = unique("cold");
    for chunk in (0..size).collect::<Vec<_>>().chunks(50_000) {
        let batch: Vec<Event> = chunk
            .iter()
            .map(|i| {
                events::revoke(
                    RuleKind::Jti,
                    ISSUER,
                    &[&format!("{prefix}-{i:07}-5f0c3a1e-8d2b-4f6a-9c71")],
                )
            })
            .collect();
        fleet.publisher.publish_all(&batch).await?;
    }
    let (messages, last) = fleet.stream_state().await?;
    anyhow::ensure!(messages as usize == size, "{messages} stored of {size}");
    println!(
        "\n== {size} revocations (one jti event each) published in {:.1?}",
        filling.elapsed()
    );

    // `COLD_START_REPLAY=0` skips the (slow) replay baseline.
    if std::env::var("COLD_START_REPLAY").is_ok_and(|v| v == "0") {
        return snapshot_runs(&fleet, &key_path, &trust, size, runs, last, None).await;
    }
    let replay = start_and_measure(&fleet, "replay", last).await?;
    println!(
        "replay   : ready in {:>8.3} s   RSS ready {:>7.1} MiB (peak {:>7.1})   settled {:>7.1} MiB   entries {}",
        replay.ready.as_secs_f64(),
        replay.rss_ready,
        replay.peak_ready,
        replay.rss_settled,
        replay.entries
    );

    snapshot_runs(&fleet, &key_path, &trust, size, runs, last, Some(replay)).await
}

/// Builds the snapshot, then starts `runs` sidecars from it.
async fn snapshot_runs(
    fleet: &Fleet,
    key_path: &std::path::Path,
    trust: &str,
    size: usize,
    runs: usize,
    last: u64,
    replay: Option<Start>,
) -> anyhow::Result<()> {
    let ctl = Denylistctl::new(&fleet.nats.url())?.with_key(key_path);
    let creating = Instant::now();
    let created = ctl
        .run(
            &["-o", "json", "--trust", trust, "snapshot", "create"],
            Duration::from_secs(900),
        )
        .await?
        .ok()?
        .json()?;
    let create_time = creating.elapsed();
    println!(
        "snapshot create: {create_time:.1?} ({} events, {:.1} MiB object)",
        created["events"],
        created["bytes"].as_f64().unwrap_or(0.0) / 1_048_576.0
    );

    let mut ready = Vec::new();
    let mut rss = Vec::new();
    let mut peak = Vec::new();
    let mut settled = Vec::new();
    for run in 0..runs {
        let s = start_and_measure(fleet, &format!("snap{run}"), last).await?;
        let expected = replay.as_ref().map_or(size as u64, |r| r.entries);
        anyhow::ensure!(
            s.entries == expected,
            "snapshot start holds {} rules, replay {expected}",
            s.entries,
        );
        println!(
            "snapshot : ready in {:>8.3} s   RSS ready {:>7.1} MiB (peak {:>7.1})   settled {:>7.1} MiB",
            s.ready.as_secs_f64(),
            s.rss_ready,
            s.peak_ready,
            s.rss_settled
        );
        ready.push(s.ready.as_secs_f64());
        rss.push(s.rss_ready);
        peak.push(s.peak_ready);
        settled.push(s.rss_settled);
    }
    let median_ready = median(ready);
    let replay_ready = replay.map_or(f64::NAN, |r| r.ready.as_secs_f64());
    println!(
        "| {size} | {replay_ready:.2} s | {median_ready:.3} s | {:.0}x | {:.0} MiB | {:.0} MiB | {:.0} MiB | {:.1?} |",
        replay_ready / median_ready,
        median(rss),
        median(peak),
        median(settled),
        create_time,
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    denylist_tests::bench::main(|| async {
        let sizes = env_list("COLD_START_SIZES", &[100_000, 1_000_000]);
        let runs = env_list("COLD_START_RUNS", &[3])[0].max(1);
        println!(
            "| live revocations | replay: ready | snapshot: ready (median of {runs}) | ratio | RSS ready | peak RSS | RSS settled | snapshot create |"
        );
        for size in sizes {
            run_size(size, runs).await?;
        }
        Ok(())
    })
}
