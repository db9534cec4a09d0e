//! `denylistctl` retries every NATS step until `--timeout`: a revocation published the
//! moment the stream leader of a 3-node cluster dies succeeds once a new leader is elected,
//! and is stored exactly once (also when published again under the same event id). When NATS
//! stays away, the command fails at the deadline with one line naming the step; a missing
//! stream fails at once.

use std::time::{Duration, Instant};

use denylist_proto::subjects;
use denylist_tests::tokens::ISSUER;
use denylist_tests::{Denylistctl, NatsCluster, NatsServer, STEP, stream_state, unique, wait_for};

/// Bound on one CLI run that rides out a failover (a raft election takes 4–9 s).
const FAILOVER_RUN: Duration = Duration::from_secs(90);
/// Bound on a quick CLI run.
const RUN: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread")]
async fn a_revocation_published_as_the_stream_leader_dies_is_stored_once() -> anyhow::Result<()> {
    let mut cluster = NatsCluster::start(3).await?;
    let dir = tempfile::tempdir()?;
    let key = dir.path().join("publisher.pem");
    let key_arg = key.display().to_string();
    // Every node, as an operator would list them; the dead one is tried and skipped.
    let ctl = Denylistctl::new(&cluster.urls().join(","))?;
    ctl.run(&["keygen", "--out", &key_arg], RUN).await?.ok()?;
    let ctl = ctl.with_key(&key);
    // A fresh cluster may not place an R3 stream at once: the CLI retries that too.
    ctl.run(
        &[
            "--timeout",
            "60s",
            "stream",
            "init",
            "--replicas",
            "3",
            "--max-age",
            "48h",
        ],
        FAILOVER_RUN,
    )
    .await?
    .ok()?;
    let client = cluster.connect().await?;
    let leader = wait_for(STEP, "a stream leader", || async {
        cluster
            .stream_leader(&client, subjects::DEFAULT_STREAM)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no leader yet"))
    })
    .await?;

    cluster.kill(leader);
    let event_id = unique("failover");
    let revoke = [
        "-o",
        "json",
        "--timeout",
        "60s",
        "revoke",
        "jti",
        "--issuer",
        ISSUER,
        "jti-during-failover",
        "--event-id",
        &event_id,
    ];
    let started = Instant::now();
    let run = ctl.run(&revoke, FAILOVER_RUN).await?;
    let took = started.elapsed();
    eprintln!(
        "revoke with the stream leader (n{leader}) just killed: exit {} after {took:.1?}\n--- stderr ---\n{}",
        run.status, run.stderr
    );
    let published = run.ok()?.json()?;
    assert_eq!(published["event_id"], event_id.as_str(), "{published}");
    assert_eq!(published["sequence"], 1, "{published}");
    assert_eq!(published["duplicate"], false, "{published}");

    // Stored exactly once, under a new leader.
    let state = wait_for(STEP * 3, "the stream's state from a new leader", || async {
        let state = stream_state(&client, subjects::DEFAULT_STREAM).await?;
        match cluster
            .stream_leader(&client, subjects::DEFAULT_STREAM)
            .await?
        {
            Some(new) if new != leader => Ok(state),
            other => Err(anyhow::anyhow!("leader {other:?}")),
        }
    })
    .await?;
    assert_eq!(state, (1, 1), "(messages, last sequence)");

    // Publishing the same event id again (a script retrying) stores nothing new.
    let again = ctl.run(&revoke, FAILOVER_RUN).await?.ok()?.json()?;
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(again["sequence"], 1, "{again}");
    assert_eq!(
        stream_state(&client, subjects::DEFAULT_STREAM).await?,
        (1, 1)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn with_nats_gone_the_command_fails_at_the_timeout_naming_the_step() -> anyhow::Result<()> {
    let mut nats = NatsServer::start().await?;
    nats.stop();
    let ctl = Denylistctl::new(&nats.url())?;
    let started = Instant::now();
    let run = ctl.run(&["--timeout", "2s", "stream", "info"], RUN).await?;
    let took = started.elapsed();
    assert!(!run.status.success(), "{run}");
    // Retried until the deadline, not given up at the first refusal.
    assert!(
        took >= Duration::from_millis(1500),
        "gave up after {took:?}: {run}"
    );
    let last = run.stderr.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.starts_with(
            "denylistctl: connecting to NATS: still failing when the deadline passed ("
        ) && last.contains(&nats.url()),
        "{run}"
    );
    // The retries were shown while they happened.
    assert!(
        run.stderr.contains("connecting to NATS failed; retrying"),
        "{run}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_stream_fails_at_once_not_at_the_timeout() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let ctl = Denylistctl::new(&nats.url())?;
    let started = Instant::now();
    let run = ctl.run(&["--timeout", "5m", "stream", "info"], RUN).await?;
    assert!(!run.status.success(), "{run}");
    assert!(started.elapsed() < RUN, "{run}");
    assert!(
        run.stderr
            .contains("reading stream DENYLIST: JetStream stream DENYLIST does not exist"),
        "{run}"
    );
    Ok(())
}
