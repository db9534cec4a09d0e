//! Verify throughput while revocations stream in at 1 000/s: no error, memory flat.
//!
//! ```text
//! cargo build --release -p denylist-sidecar
//! DENYLIST_SIDECAR_BIN=$PWD/target/release/denylist-sidecar \
//!   cargo bench -p denylist-tests --bench under_load
//! ```
//!
//! Environment: `UNDER_LOAD_SECS` (phase B, default 60), `UNDER_LOAD_BASELINE_SECS`
//! (phase A, default 15), `UNDER_LOAD_RATE` (revocations per second, default 1000),
//! `UNDER_LOAD_FRESH_EVERY` (one call in this many verifies a never-seen token, default
//! 128; 0 for none, which leaves the verified-token cache out of the memory trend).
//!
//! One nats-server, one release sidecar (log level info, production heartbeat and prune
//! intervals, default verified-token cache) and this process, on the same machine.
//! 64 Verify calls are kept in flight over 4 connections to the sidecar's Unix socket:
//! mostly tokens of a pool of 1 000 users (cache hits), one call in 10 a token that
//! phase B revokes, one in 128 a token never seen before (signature checked, cached).
//!
//! - Phase A (baseline): the load alone, no revocations.
//! - Phase B: the same load while a publisher signs and publishes single-rule
//!   revocations at `UNDER_LOAD_RATE` (batches every 10 ms, each event's JetStream ack
//!   awaited): 9 in 10 `jti`, 1 in 10 `subject`, of unused targets except 2 in 50 that
//!   revoke one of the load's doomed tokens.
//!
//! Every answer is checked: a token never revoked must be `OK`, a token whose revocation
//! JetStream acked more than 1 s before the call must be `REVOKED`; any gRPC error or
//! other answer is an error. The sidecar's VmRSS, its `Status` entries and its `/metrics`
//! (`denylist_heap_bytes`, set at each prune) are sampled every second; at the end its
//! applied sequence must reach the last acked one.
//!
//! "Memory flat": rules are kept by design until their token can no longer be live, so
//! the denylist grows by one rule per event. RSS may grow with it: by the rule storage
//! (the sidecar's own heap figure per rule, ~130 B for one event per rule) plus
//! allocator overhead and the bounded verified-token cache filling at the fresh-token
//! rate, and by no more than [`FLAT_BYTES_PER_RULE`] per rule added in all (slopes
//! fitted over the second half of phase B). The bench fails on any error, a publish failure, a publish rate below 90 %
//! of the target, a lost revocation (applied sequence or entries short of what was
//! acked) or growth beyond that bound.

// Bench binaries print their results.
#![allow(clippy::print_stdout)]

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishAckFuture;
use denylist_proto::events::RuleKind;
use denylist_proto::pb::{self, Reason, verifier_client::VerifierClient};
use denylist_proto::subjects;
use denylist_tests::events::revoke;
use denylist_tests::{Fleet, Issuer, Sidecar, expect_all_tokens, unique};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic::transport::Channel;

/// Verify calls kept in flight.
const IN_FLIGHT: usize = 64;
/// HTTP/2 connections they are spread over.
const CONNECTIONS: usize = 4;
/// Distinct valid tokens (users) the load mostly verifies.
const POOL: usize = 1_000;
/// One call in this many verifies a freshly minted token (a cache miss), by default.
const DEFAULT_FRESH_EVERY: u64 = 128;
/// One call in this many verifies a doomed token (revoked during phase B).
const DOOMED_EVERY: u64 = 10;
/// The publisher's pace: one batch per tick.
const TICK: Duration = Duration::from_millis(10);
/// One event in this many is a `subject` revocation; the rest are `jti`.
const SUBJECT_EVERY: u64 = 10;
/// Out of this many events, one revokes a doomed `subject` token and one a doomed
/// `jti` token.
const DELIBERATE_EVERY: u64 = 50;
/// A revocation acked this long before a call must be enforced by it.
const ENFORCE_AFTER: Duration = Duration::from_secs(1);
/// A Verify call not answered within this is an error.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// "Flat": RSS grows by at most this many bytes per rule added (rule storage, allocator
/// overhead, and the bounded token cache filling at the fresh-token rate).
const FLAT_BYTES_PER_RULE: f64 = 512.0;
/// The bench fails below this fraction of the target publish rate.
const MIN_RATE_FRACTION: f64 = 0.9;
/// Bytes per rule when the sidecar has not reported its heap yet: the denylist bench's
/// worst case (one event per rule), `docs/BENCHMARKS.md`.
const FALLBACK_BYTES_PER_RULE: f64 = 133.2;

/// Doomed token states (`Doomed::state`): not published, publishing, else
/// `1 + microseconds since origin` of the JetStream ack.
const UNTOUCHED: u64 = 0;
const PUBLISHING: u64 = u64::MAX;

/// A token the publisher revokes during phase B.
struct Doomed {
    token: String,
    kind: RuleKind,
    /// The jti or sub the revocation names.
    target: String,
    state: AtomicU64,
}

/// What the load and the publisher share.
struct Shared {
    origin: Instant,
    issuer: Issuer,
    pool: Vec<String>,
    /// `doomed_per_kind` `jti` tokens, then as many `subject` tokens.
    doomed: Vec<Doomed>,
    doomed_per_kind: usize,
    /// One call in this many verifies a fresh token; 0: none.
    fresh_every: u64,
}

impl Shared {
    fn now_us(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX - 1)
    }
}

#[derive(Debug, Clone, Copy)]
enum Expect {
    Ok,
    Revoked,
    Either,
}

/// A small deterministic generator (SplitMix64): which pool token to verify next.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z % n as u64) as usize
    }
}

#[derive(Default)]
struct LoadStats {
    elapsed: Duration,
    latencies_us: Vec<u32>,
    calls: u64,
    fresh: u64,
    errors: u64,
    error_samples: Vec<String>,
    /// Calls that had to answer `REVOKED` and did.
    revoked_enforced: u64,
}

impl LoadStats {
    fn merge(&mut self, other: Self) {
        self.latencies_us.extend(other.latencies_us);
        self.calls += other.calls;
        self.fresh += other.fresh;
        self.errors += other.errors;
        self.revoked_enforced += other.revoked_enforced;
        for s in other.error_samples {
            if self.error_samples.len() < 5 {
                self.error_samples.push(s);
            }
        }
    }

    fn calls_per_sec(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile_ms(&self, q: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies_us.len() as f64 - 1.0) * q).round() as usize;
        f64::from(self.latencies_us[i]) / 1e3
    }
}

async fn worker(
    id: usize,
    mut client: VerifierClient<Channel>,
    shared: Arc<Shared>,
    until: Instant,
) -> LoadStats {
    let mut rng = Rng(id as u64 + 1);
    let mut stats = LoadStats::default();
    // Staggered, so the fresh and doomed calls of the 64 workers do not line up.
    let mut n = id as u64 * 7;
    while Instant::now() < until {
        n += 1;
        let mut doomed = None;
        let token = if shared.fresh_every > 0 && n.is_multiple_of(shared.fresh_every) {
            stats.fresh += 1;
            shared.issuer.token().sub(&unique("fresh")).mint()
        } else if n.is_multiple_of(DOOMED_EVERY) {
            let d = &shared.doomed[rng.below(shared.doomed.len())];
            doomed = Some(d);
            d.token.clone()
        } else {
            shared.pool[rng.below(shared.pool.len())].clone()
        };
        let state_before = doomed.map_or(UNTOUCHED, |d| d.state.load(Ordering::Acquire));
        let start_us = shared.now_us();
        let start = Instant::now();
        let answer =
            tokio::time::timeout(CALL_TIMEOUT, client.verify(pb::VerifyRequest { token })).await;
        let elapsed = start.elapsed();
        stats.calls += 1;
        stats
            .latencies_us
            .push(u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX));
        // Must be revoked: acked long enough before the call started. Must be valid:
        // still not published once the answer is in (so it cannot have been applied).
        let expect = match (state_before, doomed) {
            (_, None) => Expect::Ok,
            (s, Some(_))
                if s != UNTOUCHED
                    && s != PUBLISHING
                    && start_us.saturating_sub(s - 1) > ENFORCE_AFTER.as_micros() as u64 =>
            {
                Expect::Revoked
            }
            (_, Some(d)) if d.state.load(Ordering::Acquire) == UNTOUCHED => Expect::Ok,
            _ => Expect::Either,
        };
        let problem = match answer {
            Err(_) => Some(format!("no answer within {CALL_TIMEOUT:?}")),
            Ok(Err(status)) => Some(format!("gRPC {}: {}", status.code(), status.message())),
            Ok(Ok(response)) => {
                let response = response.into_inner();
                let reason = Reason::try_from(response.reason).unwrap_or(Reason::Unspecified);
                match (expect, reason) {
                    (Expect::Ok | Expect::Either, Reason::Ok) => None,
                    (Expect::Either, Reason::Revoked) => None,
                    (Expect::Revoked, Reason::Revoked) => {
                        stats.revoked_enforced += 1;
                        None
                    }
                    (expect, reason) => Some(format!(
                        "expected {expect:?}, answered {} ({:?})",
                        reason.as_str_name(),
                        response.detail
                    )),
                }
            }
        };
        if let Some(problem) = problem {
            stats.errors += 1;
            if stats.error_samples.len() < 5 {
                stats.error_samples.push(problem);
            }
        }
    }
    stats
}

/// `IN_FLIGHT` workers until `until`.
async fn run_load(
    clients: &[VerifierClient<Channel>],
    shared: &Arc<Shared>,
    until: Instant,
) -> anyhow::Result<LoadStats> {
    let start = Instant::now();
    let mut workers = JoinSet::new();
    for id in 0..IN_FLIGHT {
        workers.spawn(worker(
            id,
            clients[id % clients.len()].clone(),
            Arc::clone(shared),
            until,
        ));
    }
    let mut stats = LoadStats::default();
    while let Some(done) = workers.join_next().await {
        stats.merge(done.context("a load worker panicked")?);
    }
    stats.elapsed = start.elapsed();
    stats.latencies_us.sort_unstable();
    Ok(stats)
}

#[derive(Default)]
struct PublishStats {
    elapsed: Duration,
    published: u64,
    acked: u64,
    failures: u64,
    failure_samples: Vec<String>,
    last_sequence: u64,
}

impl PublishStats {
    fn fail(&mut self, what: String) {
        self.failures += 1;
        if self.failure_samples.len() < 5 {
            self.failure_samples.push(what);
        }
    }

    fn merge(&mut self, other: Self) {
        self.acked += other.acked;
        self.failures += other.failures;
        self.last_sequence = self.last_sequence.max(other.last_sequence);
        let room = 5usize.saturating_sub(self.failure_samples.len());
        self.failure_samples
            .extend(other.failure_samples.into_iter().take(room));
    }

    fn acked_per_sec(&self) -> f64 {
        self.acked as f64 / self.elapsed.as_secs_f64()
    }
}

/// Awaits the acks of one batch; marks acked doomed tokens.
async fn await_acks(
    acks: Vec<(PublishAckFuture, Option<usize>)>,
    shared: Arc<Shared>,
) -> PublishStats {
    let mut stats = PublishStats::default();
    for (ack, doomed) in acks {
        match tokio::time::timeout(Duration::from_secs(10), ack).await {
            Ok(Ok(ack)) => {
                stats.acked += 1;
                stats.last_sequence = stats.last_sequence.max(ack.sequence);
                if let Some(i) = doomed {
                    shared.doomed[i]
                        .state
                        .store(shared.now_us() + 1, Ordering::Release);
                }
            }
            Ok(Err(e)) => stats.fail(format!("ack: {e}")),
            Err(_) => stats.fail("no ack within 10 s".to_owned()),
        }
    }
    stats
}

/// Publishes `rate` single-rule revocations per second until `until`.
async fn publish(
    fleet: Arc<Fleet>,
    shared: Arc<Shared>,
    rate: u64,
    until: Instant,
) -> anyhow::Result<PublishStats> {
    let js = fleet.publisher.jetstream().clone();
    let ticks_per_sec = (1.0 / TICK.as_secs_f64()).round() as u64;
    anyhow::ensure!(
        rate > 0 && rate.is_multiple_of(ticks_per_sec),
        "UNDER_LOAD_RATE must be a positive multiple of {ticks_per_sec}"
    );
    let per_tick = rate / ticks_per_sec;
    let mut ticker = tokio::time::interval(TICK);
    // A late tick is caught up at once: the target is an average rate.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut batches = JoinSet::new();
    let mut stats = PublishStats::default();
    let (mut next_jti, mut next_sub) = (0, 0);
    let mut i = 0u64;
    let start = Instant::now();
    loop {
        ticker.tick().await;
        if Instant::now() >= until {
            break;
        }
        let mut acks = Vec::with_capacity(per_tick as usize);
        for _ in 0..per_tick {
            i += 1;
            let doomed = if i.is_multiple_of(DELIBERATE_EVERY) && next_sub < shared.doomed_per_kind
            {
                next_sub += 1;
                Some(shared.doomed_per_kind + next_sub - 1)
            } else if i % DELIBERATE_EVERY == 1 && next_jti < shared.doomed_per_kind {
                next_jti += 1;
                Some(next_jti - 1)
            } else {
                None
            };
            let event = match doomed {
                Some(d) => {
                    let d = &shared.doomed[d];
                    d.state.store(PUBLISHING, Ordering::Release);
                    revoke(d.kind, shared.issuer.iss(), &[&d.target])
                }
                None if i.is_multiple_of(SUBJECT_EVERY) => revoke(
                    RuleKind::Subject,
                    shared.issuer.iss(),
                    &[&unique("gone-user")],
                ),
                None => revoke(RuleKind::Jti, shared.issuer.iss(), &[&unique("gone-jti")]),
            };
            let mut headers = HeaderMap::new();
            headers.insert(subjects::HEADER_MSG_ID, event.event_id.as_str());
            stats.published += 1;
            match js
                .publish_with_headers(
                    subjects::subject_for(&event),
                    headers,
                    fleet.publisher.envelope(&event),
                )
                .await
            {
                Ok(ack) => acks.push((ack, doomed)),
                Err(e) => stats.fail(format!("publish: {e}")),
            }
        }
        batches.spawn(await_acks(acks, Arc::clone(&shared)));
        while let Some(done) = batches.try_join_next() {
            stats.merge(done.context("an ack task panicked")?);
        }
    }
    while let Some(done) = batches.join_next().await {
        stats.merge(done.context("an ack task panicked")?);
    }
    stats.elapsed = start.elapsed();
    Ok(stats)
}

/// One reading of the sidecar.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Seconds since the origin.
    t: f64,
    rss_kib: u64,
    entries: u64,
    /// `(denylist_heap_bytes, denylist_entries)` gauges, set at each prune.
    heap: Option<(f64, f64)>,
}

/// `GET /metrics` on the admin listener (HTTP/1.0: the server closes when done).
async fn metrics(admin: SocketAddr) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(admin).await?;
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await?;
        let mut text = String::new();
        stream.read_to_string(&mut text).await?;
        Ok::<_, anyhow::Error>(text)
    };
    tokio::time::timeout(Duration::from_secs(2), fetch)
        .await
        .context("/metrics did not answer within 2 s")?
}

fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let (key, value) = l.split_once(' ')?;
        (key == name).then(|| value.trim().parse().ok()).flatten()
    })
}

async fn sample(sidecar: &Sidecar, admin: SocketAddr, origin: Instant) -> Sample {
    let status = sidecar.status().await.ok();
    let heap = metrics(admin).await.ok().and_then(|text| {
        Some((
            gauge(&text, "denylist_heap_bytes")?,
            gauge(&text, "denylist_entries")?,
        ))
    });
    Sample {
        t: origin.elapsed().as_secs_f64(),
        rss_kib: sidecar.memory_kib("VmRSS").unwrap_or(0),
        entries: status.as_ref().map_or(0, |s| s.entries),
        heap,
    }
}

/// Samples every second until `stop`.
async fn sampler(
    fleet: Arc<Fleet>,
    admin: SocketAddr,
    origin: Instant,
    stop: Arc<AtomicBool>,
) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(Ordering::Acquire) {
        ticker.tick().await;
        samples.push(sample(&fleet.sidecars[0], admin, origin).await);
    }
    samples
}

/// Least-squares slope of `(seconds, value)` points, per minute.
fn slope_per_min(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 3 {
        return None;
    }
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx * 60.0)
}

/// Samples taken in `[from, to]` seconds.
fn window(samples: &[Sample], from: f64, to: f64) -> Vec<Sample> {
    samples
        .iter()
        .filter(|s| s.t >= from && s.t <= to)
        .copied()
        .collect()
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// RSS at the start and end of a phase and its slope (MiB/min) over the second half.
fn rss_trend(samples: &[Sample], from: f64, to: f64) -> (f64, f64, Option<f64>) {
    let all = window(samples, from, to);
    let second_half = window(samples, from + (to - from) / 2.0, to);
    let points: Vec<_> = second_half.iter().map(|s| (s.t, mib(s.rss_kib))).collect();
    (
        all.first().map_or(f64::NAN, |s| mib(s.rss_kib)),
        all.last().map_or(f64::NAN, |s| mib(s.rss_kib)),
        slope_per_min(&points),
    )
}

fn env_u64(name: &str, default: u64) -> anyhow::Result<u64> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name}={v:?} is not a whole number")),
        Err(_) => Ok(default),
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "—".to_owned(), |v| format!("{v:.digits$}"))
}

async fn run() -> anyhow::Result<()> {
    let secs = env_u64("UNDER_LOAD_SECS", 60)?;
    let baseline_secs = env_u64("UNDER_LOAD_BASELINE_SECS", 15)?;
    let rate = env_u64("UNDER_LOAD_RATE", 1_000)?;
    let fresh_every = env_u64("UNDER_LOAD_FRESH_EVERY", DEFAULT_FRESH_EVERY)?;
    anyhow::ensure!(
        secs >= 4 && baseline_secs >= 2,
        "phases too short to measure"
    );
    let load_before = load_average();

    // Production settings where they matter: log level, heartbeat, prune interval.
    let fleet = Arc::new(
        Fleet::start_with(1, |o| {
            o.log_filter = "info".to_owned();
            o.admin = true;
            o.heartbeat_interval = Duration::from_secs(2);
            o.request_timeout = Duration::from_secs(5);
            o.prune_interval = Duration::from_secs(60);
        })
        .await?,
    );
    let sidecar = &fleet.sidecars[0];
    // Fails now, not in the sampler, if /proc cannot be read.
    sidecar.memory_kib("VmRSS")?;
    let admin = sidecar.admin_addr().context("no admin listener")?;

    let issuer = fleet.issuer.clone();
    let pool: Vec<String> = (0..POOL)
        .map(|i| issuer.token().sub(&format!("user-{i}")).mint())
        .collect();
    let doomed_per_kind = (secs * rate / DELIBERATE_EVERY) as usize + 100;
    let mut doomed = Vec::with_capacity(2 * doomed_per_kind);
    for kind in [RuleKind::Jti, RuleKind::Subject] {
        for _ in 0..doomed_per_kind {
            let (jti, sub) = (unique("doomed-jti"), unique("doomed-user"));
            doomed.push(Doomed {
                token: issuer.token().jti(&jti).sub(&sub).mint(),
                kind,
                target: if kind == RuleKind::Jti { jti } else { sub },
                state: AtomicU64::new(UNTOUCHED),
            });
        }
    }
    let origin = Instant::now();
    let shared = Arc::new(Shared {
        origin,
        issuer,
        pool,
        doomed,
        doomed_per_kind,
        fresh_every,
    });
    let clients = (0..CONNECTIONS)
        .map(|_| sidecar.connect_client())
        .collect::<anyhow::Result<Vec<_>>>()?;

    // Every token once (all valid, all cached), so phase A starts in a steady state.
    let all: Vec<String> = shared
        .pool
        .iter()
        .cloned()
        .chain(shared.doomed.iter().map(|d| d.token.clone()))
        .collect();
    expect_all_tokens(sidecar, &all, Reason::Ok, Duration::from_secs(60)).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let sampling = tokio::spawn(sampler(
        Arc::clone(&fleet),
        admin,
        origin,
        Arc::clone(&stop),
    ));

    println!("phase A: {baseline_secs} s of Verify load, no revocations");
    let a_from = origin.elapsed().as_secs_f64();
    let phase_a = run_load(
        &clients,
        &shared,
        Instant::now() + Duration::from_secs(baseline_secs),
    )
    .await?;
    let a_to = origin.elapsed().as_secs_f64();

    println!("phase B: {secs} s of Verify load, {rate} revocations/s");
    let b_from = origin.elapsed().as_secs_f64();
    let until = Instant::now() + Duration::from_secs(secs);
    let (phase_b, published) = tokio::join!(
        run_load(&clients, &shared, until),
        publish(Arc::clone(&fleet), Arc::clone(&shared), rate, until)
    );
    let (phase_b, published) = (phase_b?, published?);
    let b_to = origin.elapsed().as_secs_f64();
    stop.store(true, Ordering::Release);
    let samples = sampling.await.context("the sampler panicked")?;
    let load_after = load_average();

    // No revocation lost: the sidecar applies up to the last acked sequence, holds one
    // rule per acked event, and rejects every doomed token whose revocation was acked.
    let caught_up_from = Instant::now();
    let caught_up = sidecar
        .wait_sequence(published.last_sequence, Duration::from_secs(10))
        .await;
    let caught_up_after = caught_up_from.elapsed();
    let (_, stream_last) = fleet.stream_state().await?;
    let final_status = sidecar.status().await?;
    let acked_doomed: Vec<String> = shared
        .doomed
        .iter()
        .filter(|d| !matches!(d.state.load(Ordering::Acquire), UNTOUCHED | PUBLISHING))
        .map(|d| d.token.clone())
        .collect();
    let doomed_enforced = expect_all_tokens(
        sidecar,
        &acked_doomed,
        Reason::Revoked,
        Duration::from_secs(10),
    )
    .await;

    // Memory.
    let (a_rss_start, a_rss_end, a_slope) = rss_trend(&samples, a_from, a_to);
    let (b_rss_start, b_rss_end, b_slope) = rss_trend(&samples, b_from, b_to);
    let b_samples = window(&samples, b_from, b_to);
    let b_entries = (
        b_samples.first().map_or(0, |s| s.entries),
        b_samples.last().map_or(0, |s| s.entries),
    );
    let second_half = window(&samples, b_from + (b_to - b_from) / 2.0, b_to);
    let entries_slope = slope_per_min(
        &second_half
            .iter()
            .map(|s| (s.t, s.entries as f64))
            .collect::<Vec<_>>(),
    );
    // The sidecar's own bytes per rule, from its latest gauge reading with many rules.
    let reported = samples
        .iter()
        .rev()
        .filter_map(|s| s.heap)
        .find(|(_, entries)| *entries >= 1_000.0);
    let bytes_per_rule = reported.map_or(FALLBACK_BYTES_PER_RULE, |(heap, n)| heap / n);
    let storage_slope = entries_slope.map(|e| e * bytes_per_rule / (1024.0 * 1024.0));
    let rss_per_rule = match (b_slope, entries_slope) {
        (Some(r), Some(e)) if e > 0.0 => Some(r * 1024.0 * 1024.0 / e),
        _ => None,
    };
    let flat = rss_per_rule.is_some_and(|b| b <= FLAT_BYTES_PER_RULE);
    // Phase A's drift (token cache filling, allocator warm-up) taken out.
    let rss_per_rule_net = match (b_slope, a_slope, entries_slope) {
        (Some(b), Some(a), Some(e)) if e > 0.0 => Some((b - a) * 1024.0 * 1024.0 / e),
        _ => None,
    };

    let achieved = published.acked_per_sec();
    println!(
        "\n| phase | calls/s | p50 ms | p99 ms | errors | revocations/s acked | publish failures | RSS start MiB | RSS end MiB | RSS slope, 2nd half, MiB/min | entries |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| A: Verify only, {:.0} s | {:.0} | {:.2} | {:.2} | {} | — | — | {:.1} | {:.1} | {} | 0 |",
        phase_a.elapsed.as_secs_f64(),
        phase_a.calls_per_sec(),
        phase_a.percentile_ms(0.5),
        phase_a.percentile_ms(0.99),
        phase_a.errors,
        a_rss_start,
        a_rss_end,
        opt(a_slope, 2),
    );
    println!(
        "| B: Verify + {rate} revocations/s, {:.0} s | {:.0} | {:.2} | {:.2} | {} | {:.0} | {} | {:.1} | {:.1} | {} | {} → {} |",
        phase_b.elapsed.as_secs_f64(),
        phase_b.calls_per_sec(),
        phase_b.percentile_ms(0.5),
        phase_b.percentile_ms(0.99),
        phase_b.errors,
        achieved,
        published.failures,
        b_rss_start,
        b_rss_end,
        opt(b_slope, 2),
        b_entries.0,
        b_entries.1,
    );
    let mut notes = String::new();
    writeln!(
        notes,
        "\n- Load: {IN_FLIGHT} calls in flight over {CONNECTIONS} connections; fresh tokens {:.0}/s in A, {:.0}/s in B; \
         {} calls in B had to answer REVOKED (revocation acked > {ENFORCE_AFTER:?} earlier) and did.",
        phase_a.fresh as f64 / phase_a.elapsed.as_secs_f64(),
        phase_b.fresh as f64 / phase_b.elapsed.as_secs_f64(),
        phase_b.revoked_enforced,
    )?;
    writeln!(
        notes,
        "- Publisher: {} events sent, {} acked in {:.1} s ({achieved:.0}/s, target {rate}/s); last sequence {}, stream last sequence {stream_last}.",
        published.published,
        published.acked,
        published.elapsed.as_secs_f64(),
        published.last_sequence,
    )?;
    writeln!(
        notes,
        "- Sidecar applied sequence {} ({}), entries {} for {} acked events; {} doomed tokens revoked: {}.",
        final_status.denylist_sequence,
        match &caught_up {
            Ok(_) => format!("caught up {caught_up_after:.1?} after the publisher stopped"),
            Err(e) => format!("NOT caught up: {e}"),
        },
        final_status.entries,
        published.acked,
        acked_doomed.len(),
        match &doomed_enforced {
            Ok(()) => "all answer REVOKED".to_owned(),
            Err(e) => format!("NOT all REVOKED: {e}"),
        },
    )?;
    writeln!(
        notes,
        "- Memory, 2nd half of B: rules +{} /min × {bytes_per_rule:.1} B/rule ({}) = rule storage +{} MiB/min; \
         RSS {} MiB/min = {} B per rule added (flat if ≤ {FLAT_BYTES_PER_RULE:.0}): {}; beyond rule storage {} MiB/min.",
        opt(entries_slope, 0),
        match reported {
            Some((heap, n)) => format!("sidecar's denylist_heap_bytes {heap:.0} at {n:.0} entries"),
            None => "no heap gauge reading with rules yet: denylist bench worst case".to_owned(),
        },
        opt(storage_slope, 2),
        opt(b_slope, 2),
        opt(rss_per_rule, 0),
        if flat { "held" } else { "NOT held" },
        opt(b_slope.zip(storage_slope).map(|(r, s)| r - s), 2),
    )?;
    writeln!(
        notes,
        "- Without phase A's drift ({} MiB/min, no rules): {} B per rule added.",
        opt(a_slope, 2),
        opt(rss_per_rule_net, 0),
    )?;
    let every = |f: fn(&Sample) -> String| {
        samples
            .iter()
            .step_by(5)
            .map(f)
            .collect::<Vec<_>>()
            .join(" ")
    };
    writeln!(
        notes,
        "- Every 5 s from the start of phase A (B starts at {b_from:.0} s): RSS MiB {}; entries {}.",
        every(|s| format!("{:.1}", mib(s.rss_kib))),
        every(|s| s.entries.to_string()),
    )?;
    writeln!(
        notes,
        "- Load average (1/5/15 min): {load_before} before, {load_after} after."
    )?;
    print!("{notes}");
    for s in phase_a.error_samples.iter().chain(&phase_b.error_samples) {
        println!("  error: {s}");
    }
    for s in &published.failure_samples {
        println!("  publish failure: {s}");
    }

    let mut failed = Vec::new();
    if phase_a.errors + phase_b.errors > 0 {
        failed.push(format!("{} Verify errors", phase_a.errors + phase_b.errors));
    }
    if published.failures > 0 {
        failed.push(format!("{} publish failures", published.failures));
    }
    if achieved < MIN_RATE_FRACTION * rate as f64 {
        failed.push(format!(
            "publish rate {achieved:.0}/s below 90 % of {rate}/s"
        ));
    }
    if caught_up.is_err() || final_status.entries < published.acked {
        failed.push("revocations lost".to_owned());
    }
    if doomed_enforced.is_err() || phase_b.revoked_enforced == 0 {
        failed.push("revoked tokens not enforced".to_owned());
    }
    if !flat {
        failed.push("memory not flat".to_owned());
    }
    anyhow::ensure!(failed.is_empty(), "FAILED: {}", failed.join(", "));
    println!("\nOK: no error, publish rate held, nothing lost, memory flat.");
    Ok(())
}

fn main() -> anyhow::Result<()> {
    denylist_tests::bench::main(run)
}
