//! The fleet simulator: N followers running the sidecar's own follower code
//! (`denylist_sidecar::sync::StreamFollower`, each with its own NATS connection,
//! `Denylist` and `Freshness`) in this one process, against real `nats-server` processes
//! (one server, or a 3-node cluster), with the fleet heartbeat (`denylistctl heartbeat`)
//! running as it does in production.
//!
//! ```text
//! cargo build --release -p denylist-client --bin denylistctl
//! cargo bench -p denylist-tests --bench fleet -- \
//!     --scenario steady,fanout,restart --followers 100,1000
//! ```
//!
//! Scenarios (`--scenario`, comma-separated; default `steady,fanout,restart`):
//! - `steady`: nothing published for `--steady-secs` (15): JetStream API requests per
//!   second (the server's `/jsz` `api.total`), consumers, server CPU and RSS;
//! - `fanout`: `--rounds` (50) revocations, one at a time: publish → last follower
//!   *received* (a plain core subscription on each follower's own connection, which the
//!   server delivers beside the follower's) and → last follower *applied* (a
//!   `Denylist::watch` on the revoked token, woken when the rule is visible), p50/p99;
//! - `restart`: the server killed, down `--outage-secs` (3), started again on the same
//!   port and store; one revocation published as soon as it answers: time until every
//!   follower is fresh (applied the stream's last sequence, not stale), peak consumers
//!   (sampled every 100 ms), API requests and errors;
//! - `leader-kill`: a 3-node cluster, an R3 stream, a revocation every 100 ms for 10 s,
//!   the stream leader killed after 3 s: revocations missing anywhere (must be 0), time
//!   until every follower converges;
//! - `rollout`: `--revocations` (100 000) jti revocations and `denylistctl snapshot
//!   create`, then N followers started at once: time until all are ready, bytes the server
//!   sent (`/varz` `out_bytes`), per follower.
//!
//! `steady`, `fanout` and `restart` share one fleet per N (started in waves of
//! `WAVE`, each wave ready before the next, so the start itself is not a storm);
//! `leader-kill` and `rollout` start their own. Every result is printed as a table row and
//! as a JSON line (`{"scenario":…}`) on stdout, and appended to `--json <file>` if given.
//! Fleet-wide follower counters (catch-ups, direct gets, stream-info requests, sync
//! errors) come from an in-process Prometheus recorder: every follower of the process
//! counts into the same series.

// Bench binaries print their results.
#![allow(clippy::print_stdout)]

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use denylist_proto::envelope::{SigningKey, TrustedKeys};
use denylist_proto::events::{Event, RuleKind};
use denylist_proto::subjects;
use denylist_sidecar::clock::{SharedClock, SystemClock};
use denylist_sidecar::config::{DenylistConfig, NatsConfig, StalenessPolicy};
use denylist_sidecar::denylist::{Denylist, DenylistSettings, TokenFacts};
use denylist_sidecar::freshness::Freshness;
use denylist_sidecar::sync::{StreamFollower, connect};
use denylist_tests::events::{self, EventPublisher, StreamOptions, init_stream, stream_state};
use denylist_tests::fleet_sim::{Sampler, Totals, samples_by_label};
use denylist_tests::heartbeat::{HeartbeatKey, HeartbeatProcess, sample_sum};
use denylist_tests::tokens::ISSUER;
use denylist_tests::{NatsCluster, NatsServer, unique};
use futures::StreamExt as _;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::watch;

// The bench's root is this file: its module lives beside it, in `fleet/`.
#[path = "fleet/scenarios.rs"]
mod scenarios;

/// Followers started (connected) at once while building a fleet; the next wave waits
/// until this one is ready.
const WAVE: usize = 250;
/// How often the servers' monitoring endpoints are sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// How often the followers' freshness is polled while waiting for the whole fleet.
const POLL: Duration = Duration::from_millis(50);
/// Longest token lifetime of the simulated issuer: the rules stay live throughout.
const LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// What to run, from the command line.
#[derive(Debug, Clone)]
struct Args {
    scenarios: Vec<String>,
    followers: Vec<usize>,
    rounds: usize,
    steady_secs: u64,
    outage_secs: u64,
    revocations: usize,
    /// Whether `fanout` also measures receipt (a second subscription per connection).
    received: bool,
    json: Option<std::path::PathBuf>,
    /// The runtime's blocking threads (snapshot decodes run there).
    blocking_threads: usize,
    /// The fleet heartbeat's interval (default 1 s, the production default).
    heartbeat: Duration,
}

impl Args {
    fn parse() -> anyhow::Result<Self> {
        let mut args = Self {
            scenarios: vec!["steady".into(), "fanout".into(), "restart".into()],
            followers: vec![100, 1000],
            rounds: 50,
            steady_secs: 15,
            outage_secs: 3,
            revocations: 100_000,
            received: true,
            json: None,
            blocking_threads: 2,
            heartbeat: Duration::from_secs(1),
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            if flag == "--bench" {
                continue;
            }
            let mut value = |name: &str| {
                it.next()
                    .ok_or_else(|| anyhow::anyhow!("{name}: a value is required"))
            };
            let number = |name: &str, v: String| {
                v.trim()
                    .parse::<usize>()
                    .map_err(|e| anyhow::anyhow!("{name}: {v:?} is not a number ({e})"))
            };
            match flag.as_str() {
                "--scenario" => {
                    args.scenarios = value("--scenario")?
                        .split(',')
                        .map(|s| s.trim().to_owned())
                        .collect();
                    for s in &args.scenarios {
                        anyhow::ensure!(
                            ["steady", "fanout", "restart", "leader-kill", "rollout"]
                                .contains(&s.as_str()),
                            "--scenario: unknown scenario {s:?} (steady, fanout, restart, leader-kill, rollout)"
                        );
                    }
                }
                "--followers" => {
                    args.followers = value("--followers")?
                        .split(',')
                        .map(|v| number("--followers", v.to_owned()))
                        .collect::<anyhow::Result<_>>()?;
                    anyhow::ensure!(
                        args.followers.iter().all(|&n| n > 0),
                        "--followers: each count must be at least 1"
                    );
                }
                "--rounds" => args.rounds = number("--rounds", value("--rounds")?)?.max(1),
                "--steady-secs" => {
                    args.steady_secs = number("--steady-secs", value("--steady-secs")?)? as u64;
                }
                "--outage-secs" => {
                    args.outage_secs = number("--outage-secs", value("--outage-secs")?)? as u64;
                }
                "--revocations" => {
                    args.revocations = number("--revocations", value("--revocations")?)?;
                }
                "--json" => args.json = Some(value("--json")?.into()),
                "--no-received" => args.received = false,
                "--heartbeat-ms" => {
                    let ms = number("--heartbeat-ms", value("--heartbeat-ms")?)?.max(100);
                    args.heartbeat = Duration::from_millis(ms as u64);
                }
                "--blocking-threads" => {
                    args.blocking_threads =
                        number("--blocking-threads", value("--blocking-threads")?)?.max(1);
                }
                other => anyhow::bail!(
                    "unknown flag {other:?} (--scenario, --followers, --rounds, --steady-secs, \
                     --outage-secs, --revocations, --no-received, --blocking-threads, --heartbeat-ms, \
                     --json)"
                ),
            }
        }
        Ok(args)
    }

    fn wants(&self, scenario: &str) -> bool {
        self.scenarios.iter().any(|s| s == scenario)
    }
}

/// One simulated sidecar: the follower task and what it shares with it.
struct Follower {
    client: async_nats::Client,
    denylist: Arc<Denylist>,
    freshness: Arc<Freshness>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// The sidecar's follower settings for a fleet on `servers`: the product defaults, plus
/// the trusted keys.
fn follower_config(servers: Vec<String>, trusted: &[String]) -> NatsConfig {
    NatsConfig {
        servers,
        trusted_publishers: trusted.to_vec(),
        ..NatsConfig::default()
    }
}

/// Connects and starts one follower, exactly as the sidecar's `App` does in fleet mode.
async fn start_follower(config: &NatsConfig, name: String) -> anyhow::Result<Follower> {
    let clock: SharedClock = Arc::new(SystemClock);
    let trusted = TrustedKeys::from_public_keys(&config.trusted_publishers)?;
    let client = connect(config, &name).await?;
    let denylist_defaults = DenylistConfig::default();
    let settings = DenylistSettings {
        expected_entries: denylist_defaults.expected_entries,
        bloom_fp_rate: denylist_defaults.bloom_fp_rate,
        max_lifetimes: HashMap::from([(ISSUER.to_owned(), LIFETIME.as_secs() as i64)]),
        default_max_lifetime: LIFETIME.as_secs() as i64,
    };
    let denylist = Arc::new(Denylist::new(settings, Arc::clone(&clock)));
    let freshness = Arc::new(Freshness::new(
        Arc::clone(&clock),
        denylist_defaults.max_staleness,
        StalenessPolicy::FailClosed,
    ));
    let follower = StreamFollower::new(
        client.clone(),
        config,
        trusted,
        Arc::clone(&denylist),
        Arc::clone(&freshness),
        clock,
        LIFETIME,
    );
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(follower.run(stopped));
    Ok(Follower {
        client,
        denylist,
        freshness,
        stop,
        task,
    })
}

/// How far the fleet is from "every follower fresh at `last`".
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
struct FleetState {
    fresh: usize,
    not_ready: usize,
    stale: usize,
    behind: usize,
    min_sequence: u64,
}

fn fleet_state(followers: &[Follower], last: u64) -> FleetState {
    let mut s = FleetState {
        min_sequence: u64::MAX,
        ..FleetState::default()
    };
    for f in followers {
        let v = f.freshness.view();
        s.min_sequence = s.min_sequence.min(v.sequence);
        if !v.ready {
            s.not_ready += 1;
        } else if v.stale {
            s.stale += 1;
        } else if v.sequence < last {
            s.behind += 1;
        } else {
            s.fresh += 1;
        }
    }
    s
}

/// Polls until every follower is fresh at `last` or `timeout` passes; returns the time
/// taken, or the state at the deadline. `worst_stale` gets the highest stale count seen.
async fn wait_all_fresh(
    followers: &[Follower],
    last: u64,
    timeout: Duration,
    worst_stale: &mut usize,
) -> Result<Duration, FleetState> {
    let started = Instant::now();
    loop {
        let s = fleet_state(followers, last);
        *worst_stale = (*worst_stale).max(s.stale);
        if s.fresh == followers.len() {
            return Ok(started.elapsed());
        }
        if started.elapsed() > timeout {
            return Err(s);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Stops every follower and waits for their tasks.
async fn stop_all(followers: Vec<Follower>) {
    for f in &followers {
        f.stop.send_replace(true);
    }
    for f in followers {
        let _ = tokio::time::timeout(Duration::from_secs(10), f.task).await;
        drop(f.client);
    }
}

/// The followers' own counters, summed over the fleet (this process).
#[derive(Debug, Clone, Default, serde::Serialize)]
struct FollowerCounters {
    /// `denylist_stream_info_requests_total` by `reason`.
    stream_info_by_reason: BTreeMap<String, f64>,
    /// `denylist_catch_ups_total` by `trigger`.
    catch_ups_by_trigger: BTreeMap<String, f64>,
    stream_info_requests: f64,
    direct_get_requests: f64,
    catch_ups: f64,
    sync_errors: f64,
    gaps: f64,
    heartbeats: f64,
    snapshot_loads: f64,
}

impl FollowerCounters {
    fn read(handle: &PrometheusHandle) -> Self {
        let text = handle.render();
        let sum = |name| sample_sum(&text, name);
        Self {
            stream_info_by_reason: samples_by_label(&text, "denylist_stream_info_requests_total"),
            catch_ups_by_trigger: samples_by_label(&text, "denylist_catch_ups_total"),
            stream_info_requests: sum("denylist_stream_info_requests_total"),
            direct_get_requests: sum("denylist_direct_get_requests_total"),
            catch_ups: sum("denylist_catch_ups_total"),
            sync_errors: sum("denylist_sync_errors_total"),
            gaps: sum("denylist_sync_gaps_total"),
            heartbeats: sum("denylist_heartbeats_total"),
            snapshot_loads: sum("denylist_snapshot_loads_total"),
        }
    }

    fn since(self, e: &Self) -> Self {
        let minus = |now: BTreeMap<String, f64>, before: &BTreeMap<String, f64>| {
            now.into_iter()
                .map(|(k, v)| {
                    let d = v - before.get(&k).copied().unwrap_or(0.0);
                    (k, d)
                })
                .filter(|(_, d)| *d != 0.0)
                .collect()
        };
        Self {
            stream_info_by_reason: minus(self.stream_info_by_reason, &e.stream_info_by_reason),
            catch_ups_by_trigger: minus(self.catch_ups_by_trigger, &e.catch_ups_by_trigger),
            stream_info_requests: self.stream_info_requests - e.stream_info_requests,
            direct_get_requests: self.direct_get_requests - e.direct_get_requests,
            catch_ups: self.catch_ups - e.catch_ups,
            sync_errors: self.sync_errors - e.sync_errors,
            gaps: self.gaps - e.gaps,
            heartbeats: self.heartbeats - e.heartbeats,
            snapshot_loads: self.snapshot_loads - e.snapshot_loads,
        }
    }
}

/// A NATS deployment (one server or a cluster), its stream, a publisher the followers
/// trust, the fleet heartbeat, and a sampler on every node's monitoring endpoint.
struct Env {
    single: Option<NatsServer>,
    cluster: Option<NatsCluster>,
    client: async_nats::Client,
    publisher: EventPublisher,
    heartbeat_key: HeartbeatKey,
    // Kept running for the whole scenario; killed on drop.
    _heartbeat: HeartbeatProcess,
    sampler: Sampler,
    monitors: Vec<String>,
    key_dir: tempfile::TempDir,
}

impl Env {
    async fn single(heartbeat: Duration) -> anyhow::Result<Self> {
        let nats = NatsServer::start().await?;
        let client = nats.connect().await?;
        init_stream(&client, &StreamOptions::default()).await?;
        let monitors = vec![
            nats.monitor_url()
                .ok_or_else(|| anyhow::anyhow!("nats-server reported no monitoring port"))?,
        ];
        let urls = vec![nats.url()];
        Self::finish(Some(nats), None, client, &urls, monitors, heartbeat).await
    }

    async fn cluster(heartbeat: Duration) -> anyhow::Result<Self> {
        let cluster = NatsCluster::start(3).await?;
        let client = cluster.connect().await?;
        init_stream(
            &client,
            &StreamOptions {
                replicas: 3,
                ..StreamOptions::default()
            },
        )
        .await?;
        let monitors = (0..cluster.len())
            .map(|i| {
                cluster
                    .node(i)
                    .monitor_url()
                    .ok_or_else(|| anyhow::anyhow!("node {i} reported no monitoring port"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let urls = cluster.urls();
        Self::finish(None, Some(cluster), client, &urls, monitors, heartbeat).await
    }

    async fn finish(
        single: Option<NatsServer>,
        cluster: Option<NatsCluster>,
        client: async_nats::Client,
        urls: &[String],
        monitors: Vec<String>,
        heartbeat_interval: Duration,
    ) -> anyhow::Result<Self> {
        // The publisher key is also written to a PEM file, for `denylistctl snapshot create`.
        let key_dir = tempfile::tempdir()?;
        let (key, pem) = SigningKey::generate()?;
        {
            use std::os::unix::fs::PermissionsExt as _;
            let path = key_dir.path().join("publisher.pem");
            std::fs::write(&path, pem)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        }
        let publisher = EventPublisher::with_key(client.clone(), key);
        let heartbeat_key = HeartbeatKey::generate()?;
        let heartbeat =
            HeartbeatProcess::start(&heartbeat_key, &urls.join(","), heartbeat_interval)?;
        let sampler = Sampler::start(monitors.clone(), SAMPLE_EVERY).await;
        Ok(Self {
            single,
            cluster,
            client,
            publisher,
            heartbeat_key,
            _heartbeat: heartbeat,
            sampler,
            monitors,
            key_dir,
        })
    }

    fn servers(&self) -> Vec<String> {
        match (&self.single, &self.cluster) {
            (Some(n), _) => vec![n.url()],
            (None, Some(c)) => c.urls(),
            (None, None) => Vec::new(),
        }
    }

    fn follower_config(&self) -> NatsConfig {
        follower_config(
            self.servers(),
            &[self.publisher.public_key(), self.heartbeat_key.public_key()],
        )
    }

    async fn last_sequence(&self) -> anyhow::Result<u64> {
        Ok(stream_state(&self.client, subjects::DEFAULT_STREAM)
            .await?
            .1)
    }

    async fn totals_now(&self) -> Totals {
        self.sampler.sample_now(&self.monitors).await;
        self.sampler.totals()
    }
}

/// Starts `n` followers in waves of [`WAVE`], each wave fresh before the next; returns
/// them and how long it took.
async fn start_fleet(env: &Env, n: usize) -> anyhow::Result<(Vec<Follower>, Duration)> {
    let config = env.follower_config();
    let last = env.last_sequence().await?;
    let started = Instant::now();
    let mut followers: Vec<Follower> = Vec::with_capacity(n);
    while followers.len() < n {
        let from = followers.len();
        let wave = WAVE.min(n - from);
        let batch = futures::future::try_join_all(
            (from..from + wave).map(|i| start_follower(&config, format!("f{i}"))),
        )
        .await?;
        followers.extend(batch);
        let mut stale = 0;
        wait_all_fresh(
            &followers[from..],
            last,
            Duration::from_secs(120),
            &mut stale,
        )
        .await
        .map_err(|s| anyhow::anyhow!("wave at {from}: not all fresh within 120 s: {s:?}"))?;
    }
    Ok((followers, started.elapsed()))
}

/// Prints one result as a JSON line and appends it to `--json`.
fn emit(args: &Args, row: &serde_json::Value) -> anyhow::Result<()> {
    let line = serde_json::to_string(row)?;
    println!("{line}");
    if let Some(path) = &args.json {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        writeln!(file, "{line}")?;
    }
    Ok(())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1_048_576.0
}

/// A jti revocation with a fresh id; returns it with its jti.
fn revocation(prefix: &str) -> (Event, String) {
    let jti = unique(prefix);
    (events::revoke(RuleKind::Jti, ISSUER, &[&jti]), jti)
}

/// Whether `denylist` revokes a token with this jti.
fn revokes(denylist: &Denylist, jti: &str) -> bool {
    denylist
        .is_revoked(&TokenFacts {
            issuer: ISSUER,
            jti: Some(jti),
            ..TokenFacts::default()
        })
        .is_some()
}

/// The live sequence a republished message carries.
fn live_sequence(message: &async_nats::Message) -> Option<u64> {
    message
        .headers
        .as_ref()?
        .get(subjects::HEADER_SEQUENCE)?
        .as_str()
        .parse()
        .ok()
}

/// Per follower: the sequence and arrival time (ns since `epoch`) of the last live
/// message its connection delivered to the probe subscription.
struct Probes {
    seq: Arc<Vec<AtomicU64>>,
    at_ns: Arc<Vec<AtomicU64>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Probes {
    async fn start(followers: &[Follower], epoch: Instant) -> anyhow::Result<Self> {
        let n = followers.len();
        let seq: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
        let at_ns: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
        let mut tasks = Vec::with_capacity(n);
        for (i, f) in followers.iter().enumerate() {
            let mut sub = f.client.subscribe(subjects::LIVE_WILDCARD).await?;
            let (seq, at_ns) = (Arc::clone(&seq), Arc::clone(&at_ns));
            tasks.push(tokio::spawn(async move {
                while let Some(m) = sub.next().await {
                    let now = epoch.elapsed().as_nanos() as u64;
                    if let Some(s) = live_sequence(&m) {
                        at_ns[i].store(now, Ordering::Release);
                        seq[i].store(s, Ordering::Release);
                    }
                }
            }));
        }
        for f in followers {
            f.client.flush().await?;
        }
        Ok(Self { seq, at_ns, tasks })
    }
}

impl Drop for Probes {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| anyhow::anyhow!("installing the metrics recorder: {e}"))?;
    println!("fleet simulator: {args:?}");
    let shared = ["steady", "fanout", "restart"];
    for &n in &args.followers {
        if shared.iter().any(|s| args.wants(s)) {
            scenarios::shared_fleet(&args, &metrics, n).await?;
        }
        if args.wants("leader-kill") {
            scenarios::leader_kill(&args, &metrics, n).await?;
        }
        if args.wants("rollout") {
            scenarios::rollout(&args, &metrics, n).await?;
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    // Flags are read only when run as a bench: `cargo test --benches` runs this binary
    // with a test harness's arguments.
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    let args = Args::parse()?;
    // Each sidecar of a fleet decodes a snapshot on a CPU of its own pod. Here N followers
    // share one process: with tokio's default of 512 blocking threads, N decodes at once
    // are N OS threads that starve the two runtime workers, so every follower's connection
    // goes unread for seconds and its direct-get replies time out and are asked for again.
    // Two blocking threads keep the decodes to the machine's two cores.
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.max_blocking_threads(args.blocking_threads);
    denylist_tests::bench::main_with(builder, || run(args))
}
