//! The scenarios of the fleet simulator (see the bench's module docs).

use std::time::{Duration, Instant};

use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

use super::{
    Args, Env, Follower, FollowerCounters, POLL, Probes, WAVE, emit, fleet_state, mib, revocation,
    revokes, start_fleet, start_follower, stop_all, wait_all_fresh,
};
use denylist_proto::events::RuleKind;
use denylist_proto::subjects;
use denylist_sidecar::denylist::TokenFacts;
use denylist_tests::Denylistctl;
use denylist_tests::events;
use denylist_tests::fleet_sim::{own_cpu_seconds, own_rss_bytes, percentile};
use denylist_tests::tokens::ISSUER;

/// Bound on "every follower fresh again" after a fault.
const CONVERGE: Duration = Duration::from_secs(60);
/// Bound on one revocation reaching every follower in the fan-out scenario.
const ROUND: Duration = Duration::from_secs(30);

/// `steady`, `fanout` and `restart` on one fleet of `n` followers and one server.
pub(crate) async fn shared_fleet(
    args: &Args,
    metrics: &PrometheusHandle,
    n: usize,
) -> anyhow::Result<()> {
    let mut env = Env::single(args.heartbeat).await?;
    let rss_before = own_rss_bytes();
    let (followers, took) = start_fleet(&env, n).await?;
    let rss_per_follower = own_rss_bytes().saturating_sub(rss_before) / n as u64;
    // Nothing is published before the scenarios: every denylist is still empty.
    let empty_denylist = followers[0].denylist.stats().heap_bytes;
    println!(
        "\n== {n} followers on one nats-server: all fresh in {:.1} s (waves of {WAVE}); \
         this process +{:.1} KiB RSS per follower (connection, follower, empty denylist: \
         {empty_denylist} heap bytes)",
        took.as_secs_f64(),
        rss_per_follower as f64 / 1024.0
    );
    emit(
        args,
        &json!({
            "scenario": "start", "followers": n, "secs": took.as_secs_f64(),
            "client_rss_per_follower_kib": rss_per_follower as f64 / 1024.0,
            "empty_denylist_heap_bytes": empty_denylist,
        }),
    )?;
    if args.wants("steady") {
        steady(args, &env, &followers, metrics, n).await?;
    }
    if args.wants("fanout") {
        fanout(args, &env, &followers, n).await?;
    }
    if args.wants("restart") {
        restart(args, &mut env, &followers, metrics, n).await?;
    }
    stop_all(followers).await;
    Ok(())
}

async fn steady(
    args: &Args,
    env: &Env,
    followers: &[Follower],
    metrics: &PrometheusHandle,
    n: usize,
) -> anyhow::Result<()> {
    // The last wave's start (stream info, direct gets) must not count as steady state.
    tokio::time::sleep(Duration::from_secs(3)).await;
    env.sampler.reset_peaks();
    let t0 = env.totals_now().await;
    let c0 = FollowerCounters::read(metrics);
    let cpu0 = own_cpu_seconds();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.steady_secs)).await;
    let cpu = own_cpu_seconds() - cpu0;
    let t1 = env.totals_now().await;
    let c = FollowerCounters::read(metrics).since(&c0);
    let secs = started.elapsed().as_secs_f64();
    let d = t1.since(&t0);
    let last = env.last_sequence().await?;
    let state = fleet_state(followers, last);
    println!(
        "steady  {n:>6}: API {:.2} req/s ({} errors), consumers peak {}, server CPU mean {:.1} % \
         (peak {:.1}), RSS {:.1} MiB, out {:.1} KiB/s; followers: stream info {:.2}/s, \
         direct gets {:.2}/s, heartbeats {:.0}/s, CPU {:.1} % ({:.0} µs/s per follower); \
         fresh {}/{n}",
        d.api_total as f64 / secs,
        d.api_errors,
        d.peak_consumers,
        d.mean_cpu_percent,
        d.peak_cpu_percent,
        mib(t1.last.rss_bytes),
        d.out_bytes as f64 / secs / 1024.0,
        c.stream_info_requests / secs,
        c.direct_get_requests / secs,
        c.heartbeats / secs,
        100.0 * cpu / secs,
        cpu * 1e6 / secs / n as f64,
        state.fresh,
    );
    emit(
        args,
        &json!({
            "scenario": "steady", "followers": n, "secs": secs,
            "api_per_sec": d.api_total as f64 / secs, "api_errors": d.api_errors,
            "peak_consumers": d.peak_consumers,
            "server_cpu_mean_percent": d.mean_cpu_percent,
            "server_cpu_peak_percent": d.peak_cpu_percent,
            "server_rss_mib": mib(t1.last.rss_bytes),
            "server_out_kib_per_sec": d.out_bytes as f64 / secs / 1024.0,
            "connections": t1.last.connections,
            "client_cpu_percent": 100.0 * cpu / secs,
            "client_cpu_us_per_sec_per_follower": cpu * 1e6 / secs / n as f64,
            "follower_counters_per_sec": {
                "stream_info": c.stream_info_requests / secs,
                "direct_get": c.direct_get_requests / secs,
                "catch_ups": c.catch_ups / secs,
                "heartbeats": c.heartbeats / secs,
            },
            "fleet": state,
        }),
    )
}

async fn fanout(args: &Args, env: &Env, followers: &[Follower], n: usize) -> anyhow::Result<()> {
    let epoch = Instant::now();
    let probes = if args.received {
        Some(Probes::start(followers, epoch).await?)
    } else {
        None
    };
    env.sampler.reset_peaks();
    let t0 = env.totals_now().await;
    let cpu0 = own_cpu_seconds();
    let (mut received, mut applied, mut median_applied, mut acked) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut missing = 0usize;
    for _ in 0..args.rounds {
        let (event, jti) = revocation("fan");
        let facts = TokenFacts {
            issuer: ISSUER,
            jti: Some(&jti),
            ..TokenFacts::default()
        };
        // Registered before the publish, so no application can be missed.
        let waits: Vec<_> = followers
            .iter()
            .map(|f| {
                let watcher = f.denylist.watch(&facts);
                tokio::spawn(async move {
                    tokio::time::timeout(ROUND, watcher.woken())
                        .await
                        .ok()
                        .map(|()| epoch.elapsed())
                })
            })
            .collect();
        let published = epoch.elapsed();
        let seq = env.publisher.publish(&event).await?;
        acked.push(ms(epoch.elapsed() - published));
        let mut times = Vec::with_capacity(n);
        for w in waits {
            match w.await? {
                Some(t) => times.push(ms(t.saturating_sub(published))),
                None => missing += 1,
            }
        }
        applied.push(times.iter().copied().fold(0.0, f64::max));
        median_applied.push(percentile(&times, 0.5));
        // Receipt is recorded by the probes; they may trail the followers a little.
        let Some(probes) = &probes else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let deadline = Instant::now() + ROUND;
        while probes
            .seq
            .iter()
            .any(|s| s.load(std::sync::atomic::Ordering::Acquire) < seq)
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let last_receipt = probes
            .at_ns
            .iter()
            .zip(probes.seq.iter())
            .filter(|(_, s)| s.load(std::sync::atomic::Ordering::Acquire) == seq)
            .map(|(t, _)| t.load(std::sync::atomic::Ordering::Acquire))
            .max()
            .unwrap_or(0);
        received.push(ms(
            Duration::from_nanos(last_receipt).saturating_sub(published)
        ));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cpu = own_cpu_seconds() - cpu0;
    let t1 = env.totals_now().await;
    let d = t1.since(&t0);
    drop(probes);
    // The followers' (and the harness's) CPU per follower per revocation: on this
    // machine the followers share two cores with the server, so fan-out time is bounded
    // below by this times N / 2.
    let cpu_us = cpu * 1e6 / (n * args.rounds) as f64;
    let q = |v: &[f64]| (percentile(v, 0.5), percentile(v, 0.99));
    let (r50, r99) = q(&received);
    let (a50, a99) = q(&applied);
    let (m50, m99) = q(&median_applied);
    let (k50, _) = q(&acked);
    println!(
        "fanout  {n:>6}: {} revocations: publish → last received p50 {r50:.1} ms p99 {r99:.1} ms; \
         → last applied p50 {a50:.1} ms p99 {a99:.1} ms (median follower p50 {m50:.1} ms); \
         ack p50 {k50:.1} ms; server CPU mean {:.1} % peak {:.1} %; this process {cpu_us:.0} \
         µs CPU per follower per revocation{}; not applied {missing}",
        args.rounds,
        d.mean_cpu_percent,
        d.peak_cpu_percent,
        if args.received {
            " (receipt probes on)"
        } else {
            " (no receipt probes)"
        },
    );
    emit(
        args,
        &json!({
            "scenario": "fanout", "followers": n, "rounds": args.rounds,
            "received_last_ms": args.received.then(|| json!({"p50": r50, "p99": r99})),
            "applied_last_ms": {"p50": a50, "p99": a99},
            "applied_median_follower_ms": {"p50": m50, "p99": m99},
            "ack_p50_ms": k50, "not_applied": missing,
            "received_probes": args.received,
            "client_cpu_us_per_follower_revocation": cpu_us,
            "api_total": d.api_total, "api_errors": d.api_errors,
            "peak_consumers": d.peak_consumers,
            "server_cpu_mean_percent": d.mean_cpu_percent,
            "server_cpu_peak_percent": d.peak_cpu_percent,
        }),
    )
}

/// `bytes` random bytes, hex.
fn random_hex(bytes: usize) -> String {
    let mut raw = vec![0u8; bytes];
    aws_lc_rs::rand::fill(&mut raw).expect("system random number generator");
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

/// A random UUID-shaped string (8-4-4-4-12 hex digits).
fn random_uuid() -> String {
    let h = random_hex(16);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

async fn restart(
    args: &Args,
    env: &mut Env,
    followers: &[Follower],
    metrics: &PrometheusHandle,
    n: usize,
) -> anyhow::Result<()> {
    let last = env.last_sequence().await?;
    let mut worst_stale = 0;
    wait_all_fresh(followers, last, CONVERGE, &mut worst_stale)
        .await
        .map_err(|s| anyhow::anyhow!("not all fresh before the restart: {s:?}"))?;
    env.sampler.reset_peaks();
    let t0 = env.totals_now().await;
    let c0 = FollowerCounters::read(metrics);
    let nats = env
        .single
        .as_mut()
        .ok_or_else(|| anyhow::anyhow!("restart needs the single server"))?;
    nats.stop();
    let killed = Instant::now();
    // Watch the fleet while the server is down: it must not turn stale in a short outage.
    while killed.elapsed() < Duration::from_secs(args.outage_secs) {
        worst_stale = worst_stale.max(fleet_state(followers, 0).stale);
        tokio::time::sleep(POLL).await;
    }
    // `start_again` waits (10 s at most) for JetStream to answer the harness's own
    // request; under a reconnect storm it may not, which is a finding, not the end.
    let restarting = Instant::now();
    let js_answered = match nats.start_again().await {
        Ok(()) => true,
        Err(e) => {
            println!("restart {n:>6}: {e:#}");
            false
        }
    };
    let restart_wait = restarting.elapsed();
    let back = Instant::now();
    let (event, _) = revocation("restart");
    let seq = env.publisher.publish_with_retry(&event, CONVERGE).await?;
    let published = back.elapsed();
    let outcome = wait_all_fresh(followers, seq, CONVERGE, &mut worst_stale).await;
    let fresh_after_back = back.elapsed();
    // Catch-ups still running (or consumers still lingering) after the last follower
    // turned fresh are part of the storm's cost.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let t1 = env.totals_now().await;
    let c = FollowerCounters::read(metrics).since(&c0);
    let d = t1.since(&t0);
    // nats-server drops every queued JetStream API request once too many are pending, and
    // says so only in its log ("JetStream API queue limit reached"): not in `api.errors`.
    let queue_drops: Vec<String> = env
        .single
        .as_ref()
        .map(|s| s.log())
        .unwrap_or_default()
        .lines()
        .filter(|l| l.to_ascii_lowercase().contains("queue limit"))
        .map(str::to_owned)
        .collect();
    let (fresh_ms, not_fresh) = match outcome {
        Ok(_) => (Some(ms(fresh_after_back)), None),
        Err(state) => (None, Some(state)),
    };
    println!(
        "restart {n:>6}: down {} s; restarted, JetStream answering the harness in {:.0} ms{}; \
         then → revocation stored {:.0} ms; → all fresh {}; \
         peak consumers {}, API {} requests, {} errors; followers: catch-ups {:.0}, sync errors \
         {:.0}, direct gets {:.0}, stream info {:.0}; worst stale count {worst_stale}; API queue \
         limit lines in the server log: {}{}",
        args.outage_secs,
        ms(restart_wait),
        if js_answered {
            ""
        } else {
            " (NOT within 10 s)"
        },
        ms(published),
        fresh_ms.map_or_else(
            || "NEVER (within 60 s)".to_owned(),
            |m| format!("{m:.0} ms")
        ),
        d.peak_consumers,
        d.api_total,
        d.api_errors,
        c.catch_ups,
        c.sync_errors,
        c.direct_get_requests,
        c.stream_info_requests,
        queue_drops.len(),
        not_fresh.map_or_else(String::new, |s| format!("; at the deadline: {s:?}")),
    );
    emit(
        args,
        &json!({
            "scenario": "restart", "followers": n, "outage_secs": args.outage_secs,
            "restart_wait_ms": ms(restart_wait),
            "jetstream_answered_within_10s": js_answered,
            "back_to_stored_ms": ms(published),
            "back_to_all_fresh_ms": fresh_ms,
            "kill_to_all_fresh_ms": fresh_ms.map(|_| ms(killed.elapsed())),
            "not_fresh_at_deadline": not_fresh,
            "worst_stale": worst_stale,
            "peak_consumers": d.peak_consumers,
            "api_total": d.api_total, "api_errors": d.api_errors,
            "server_cpu_peak_percent": d.peak_cpu_percent,
            "follower_counters": c,
            "monitor_samples_failed": d.failed,
            "api_queue_limit_log_lines": queue_drops,
        }),
    )
}

/// A 3-node cluster, an R3 stream, `n` followers; a revocation every 100 ms for 10 s,
/// the stream leader killed after 3 s.
pub(crate) async fn leader_kill(
    args: &Args,
    metrics: &PrometheusHandle,
    n: usize,
) -> anyhow::Result<()> {
    const PUBLISHES: usize = 100;
    let mut env = Env::cluster(args.heartbeat).await?;
    let (followers, took) = start_fleet(&env, n).await?;
    println!(
        "\n== {n} followers on a 3-node cluster: all fresh in {:.1} s",
        took.as_secs_f64()
    );
    env.sampler.reset_peaks();
    let t0 = env.totals_now().await;
    let c0 = FollowerCounters::read(metrics);
    let mut cluster = env
        .cluster
        .take()
        .ok_or_else(|| anyhow::anyhow!("leader-kill needs the cluster"))?;
    let publishing = async {
        let mut ticker = tokio::time::interval(Duration::from_millis(100));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut published = Vec::with_capacity(PUBLISHES);
        let mut slowest = Duration::ZERO;
        for _ in 0..PUBLISHES {
            ticker.tick().await;
            let (event, jti) = revocation("lk");
            let started = Instant::now();
            let seq = env.publisher.publish_with_retry(&event, CONVERGE).await?;
            slowest = slowest.max(started.elapsed());
            published.push((seq, jti));
        }
        anyhow::Ok((published, slowest, Instant::now()))
    };
    let killing = async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let leader = cluster
            .stream_leader(&env.client, subjects::DEFAULT_STREAM)
            .await?
            .ok_or_else(|| anyhow::anyhow!("the stream has no leader"))?;
        cluster.kill(leader);
        anyhow::Ok((leader, Instant::now()))
    };
    let (publishing, killing) = tokio::join!(publishing, killing);
    let (published, slowest, last_publish) = publishing?;
    let (killed_node, killed) = killing?;
    let last = published.iter().map(|(s, _)| *s).max().unwrap_or(0);
    let mut worst_stale = 0;
    let outcome = wait_all_fresh(&followers, last, CONVERGE, &mut worst_stale).await;
    let converged_after_kill = killed.elapsed();
    let converged_after_last = last_publish.elapsed();
    let mut lost = 0usize;
    let mut followers_missing = 0usize;
    for f in &followers {
        let missing = published
            .iter()
            .filter(|(_, jti)| !revokes(&f.denylist, jti))
            .count();
        lost += missing;
        followers_missing += usize::from(missing > 0);
    }
    let t1 = env.totals_now().await;
    let d = t1.since(&t0);
    let c = FollowerCounters::read(metrics).since(&c0);
    let converged = outcome.is_ok();
    println!(
        "leader-kill {n:>6}: node n{killed_node} killed; {} revocations published (slowest publish \
         {:.0} ms); lost {lost} (followers missing any: {followers_missing}); all converged: \
         {converged}, {:.1} s after the kill, {:.1} s after the last publish; peak consumers {}, \
         API {} requests, {} errors; follower sync errors {:.0}",
        published.len(),
        ms(slowest),
        converged_after_kill.as_secs_f64(),
        converged_after_last.as_secs_f64(),
        d.peak_consumers,
        d.api_total,
        d.api_errors,
        c.sync_errors,
    );
    emit(
        args,
        &json!({
            "scenario": "leader-kill", "followers": n, "killed_node": killed_node,
            "published": published.len(), "slowest_publish_ms": ms(slowest),
            "lost": lost, "followers_missing_any": followers_missing,
            "converged": converged,
            "not_fresh_at_deadline": outcome.err(),
            "converged_after_kill_ms": converged.then(|| ms(converged_after_kill)),
            "converged_after_last_publish_ms": converged.then(|| ms(converged_after_last)),
            "worst_stale": worst_stale,
            "peak_consumers": d.peak_consumers,
            "api_total": d.api_total, "api_errors": d.api_errors,
            "follower_counters": c,
        }),
    )?;
    stop_all(followers).await;
    env.cluster = Some(cluster);
    Ok(())
}

/// `--revocations` revocations and a snapshot of them; then `n` followers started at
/// once. Each follower is stopped and dropped once ready, so the process holds only
/// those still starting (a follower holding 100 000 rules is megabytes).
pub(crate) async fn rollout(
    args: &Args,
    metrics: &PrometheusHandle,
    n: usize,
) -> anyhow::Result<()> {
    let env = Env::single(args.heartbeat).await?;
    let filling = Instant::now();
    let mut left = args.revocations;
    while left > 0 {
        let batch: Vec<_> = (0..left.min(50_000))
            .map(|_| {
                // Random ids, as production's are (UUID jtis, ULID event ids): sequential
                // test ids would flatter a compressed snapshot.
                let jti = random_uuid();
                let mut event = events::revoke(RuleKind::Jti, ISSUER, &[&jti]);
                event.event_id = random_hex(13);
                event
            })
            .collect();
        left -= batch.len();
        env.publisher.publish_all(&batch).await?;
    }
    let url = env.servers().join(",");
    let ctl = Denylistctl::new(&url)?.with_key(&env.key_dir.path().join("publisher.pem"));
    let trust = env.publisher.public_key();
    let created = ctl
        .run(
            &["-o", "json", "--trust", &trust, "snapshot", "create"],
            Duration::from_secs(900),
        )
        .await?
        .ok()?
        .json()?;
    let object_bytes = created["bytes"].as_u64().unwrap_or(0);
    anyhow::ensure!(
        created["events"].as_u64() == Some(args.revocations as u64),
        "the snapshot holds {} events, not {}: {created}",
        created["events"],
        args.revocations
    );
    let last = env.last_sequence().await?;
    println!(
        "\n== rollout: {} revocations published and snapshotted in {:.1} s; snapshot object \
         {:.2} MiB",
        args.revocations,
        filling.elapsed().as_secs_f64(),
        mib(object_bytes)
    );

    env.sampler.reset_peaks();
    let t0 = env.totals_now().await;
    let c0 = FollowerCounters::read(metrics);
    let rss_before = own_rss_bytes();
    let mut peak_rss = rss_before;
    let config = env.follower_config();
    let started = Instant::now();
    let mut starting: Vec<Option<Follower>> =
        futures::future::try_join_all((0..n).map(|i| start_follower(&config, format!("r{i}"))))
            .await?
            .into_iter()
            .map(Some)
            .collect();
    let mut ready_times = Vec::with_capacity(n);
    let mut stopping = Vec::with_capacity(n);
    let deadline = started + Duration::from_secs(600);
    while ready_times.len() < n && Instant::now() < deadline {
        for slot in &mut starting {
            let done = slot.as_ref().is_some_and(|f| {
                let v = f.freshness.view();
                v.ready && v.sequence >= last
            });
            if done && let Some(f) = slot.take() {
                ready_times.push(started.elapsed().as_secs_f64());
                f.stop.send_replace(true);
                stopping.push(f.task);
            }
        }
        peak_rss = peak_rss.max(own_rss_bytes());
        tokio::time::sleep(POLL).await;
    }
    let all_ready = started.elapsed();
    let never_ready = starting.iter().filter(|s| s.is_some()).count();
    let t1 = env.totals_now().await;
    let c = FollowerCounters::read(metrics).since(&c0);
    let d = t1.since(&t0);
    let per_follower = d.out_bytes / n as u64;
    println!(
        "rollout {n:>6}: all ready in {:.1} s (p50 {:.1} s), never ready {never_ready}; server \
         sent {:.1} MiB, {:.2} MiB per follower ({:.0} % of the snapshot object); snapshot loads \
         {:.0}; peak consumers {} ({} before the start); API {} requests, {} errors; this process \
         peak +{:.0} MiB",
        all_ready.as_secs_f64(),
        percentile(&ready_times, 0.5),
        mib(d.out_bytes),
        mib(per_follower),
        100.0 * per_follower as f64 / object_bytes.max(1) as f64,
        c.snapshot_loads,
        d.peak_consumers,
        t0.last.consumers,
        d.api_total,
        d.api_errors,
        mib(peak_rss.saturating_sub(rss_before)),
    );
    emit(
        args,
        &json!({
            "scenario": "rollout", "followers": n, "revocations": args.revocations,
            "snapshot_object_bytes": object_bytes,
            "all_ready_secs": all_ready.as_secs_f64(),
            "ready_p50_secs": percentile(&ready_times, 0.5),
            "never_ready": never_ready,
            "server_out_bytes": d.out_bytes, "out_bytes_per_follower": per_follower,
            "per_follower_over_object": per_follower as f64 / object_bytes.max(1) as f64,
            "snapshot_loads": c.snapshot_loads,
            "direct_gets": c.direct_get_requests,
            "peak_consumers": d.peak_consumers,
            // `denylistctl snapshot create` reads the stream with a consumer of its own,
            // which may linger after it exits: this tells it from the followers'.
            "consumers_before_start": t0.last.consumers,
            "api_total": d.api_total, "api_errors": d.api_errors,
            "server_cpu_peak_percent": d.peak_cpu_percent,
            "client_peak_rss_delta_mib": mib(peak_rss.saturating_sub(rss_before)),
        }),
    )?;
    for task in stopping {
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    }
    stop_all(starting.into_iter().flatten().collect()).await;
    Ok(())
}
