//! The local state (`state.dir`): a restarted sidecar resumes from its last applied
//! state without downloading the snapshot, comes up with its true age while NATS is
//! down (ready under `fail_open`; under `fail_closed` only within `max_staleness`), and
//! refuses — counting, never applying — a state that is corrupt, foreign, or of a
//! stream that was recreated since.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use denylist_proto::envelope::SigningKey;
use denylist_proto::events::{Event, RuleKind};
use denylist_proto::pb::Reason;
use denylist_proto::subjects;
use denylist_tests::events::{self, EventPublisher};
use denylist_tests::heartbeat::{metrics, sample};
use denylist_tests::tokens::ISSUER;
use denylist_tests::{
    Denylistctl, Fleet, READY_TIMEOUT, Sidecar, SidecarOptions, StalenessPolicy, StreamOptions,
    holds_for, init_stream, unique, wait_for, within,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Bound on one CLI run.
const RUN: Duration = Duration::from_secs(60);
/// How long a state takes to be written (interval 200 ms) in these tests, generously.
const WRITTEN: Duration = Duration::from_secs(15);

/// Options for a sidecar of `fleet` that keeps its local state in `dir`, with the admin
/// endpoint (the state's metrics).
fn options(fleet: &Fleet, name: &str, dir: &Path) -> SidecarOptions {
    let mut options = fleet.sidecar_options(name);
    options.state_dir = Some(dir.to_owned());
    options.admin = true;
    options
}

fn admin(sidecar: &Sidecar) -> SocketAddr {
    sidecar
        .admin_addr()
        .expect("started with the admin endpoint")
}

/// `denylist_local_state_loads_total{outcome}`.
async fn loads(sidecar: &Sidecar, outcome: &str) -> anyhow::Result<f64> {
    let text = metrics(admin(sidecar)).await?;
    Ok(sample(
        &text,
        &format!("denylist_local_state_loads_total{{outcome=\"{outcome}\"}}"),
    ))
}

/// Waits until the sidecar has written a state at `sequence` or later.
async fn wait_written(sidecar: &Sidecar, sequence: u64) -> anyhow::Result<()> {
    wait_for(
        WRITTEN,
        format_args!("a local state at sequence {sequence}"),
        || async {
            let text = metrics(admin(sidecar)).await.map_err(|e| e.to_string())?;
            let written = sample(&text, "denylist_local_state_sequence");
            if written >= sequence as f64 {
                Ok(())
            } else {
                Err(format!("written at {written}"))
            }
        },
    )
    .await
}

/// The status line of `GET /readyz`.
async fn readyz(admin: SocketAddr) -> anyhow::Result<u16> {
    within(format_args!("GET http://{admin}/readyz"), async {
        let mut stream = tokio::net::TcpStream::connect(admin).await?;
        stream
            .write_all(b"GET /readyz HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        let code = response
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("not an HTTP response: {response:?}"))?;
        anyhow::Ok(code)
    })
    .await?
}

async fn expect_reason(sidecar: &Sidecar, token: &str, reason: Reason) -> anyhow::Result<()> {
    let answer = sidecar.verify(token).await?;
    anyhow::ensure!(
        answer.reason == reason as i32,
        "sidecar {} answered {:?} (stale {}, age {} ms, sequence {}), not {}",
        sidecar.name(),
        Reason::try_from(answer.reason),
        answer.stale,
        answer.denylist_age_ms,
        answer.denylist_sequence,
        reason.as_str_name()
    );
    Ok(())
}

/// A revocation of a fresh jti, and a token it revokes.
fn revocation(fleet: &Fleet, prefix: &str) -> (String, Event) {
    let jti = unique(prefix);
    let token = fleet.issuer.token().jti(&jti).mint();
    (token, events::revoke(RuleKind::Jti, ISSUER, &[&jti]))
}

fn state_file(dir: &Path) -> PathBuf {
    dir.join("state.bin")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_resumes_from_the_local_state_without_the_snapshot() -> anyhow::Result<()> {
    let mut fleet = Fleet::start(0).await?;
    let keys = tempfile::tempdir()?;
    let (key, pem) = SigningKey::generate()?;
    let key_path = keys.path().join("publisher.pem");
    std::fs::write(&key_path, pem)?;
    fleet.publisher = EventPublisher::with_key(fleet.client.clone(), key);
    let trust = fleet.publisher.public_key();
    let ctl = Denylistctl::new(&fleet.nats.url())?.with_key(&key_path);

    // A snapshot of some revocations, one of them lifted, then more after it.
    let mut revoked = Vec::new();
    let mut first = Vec::new();
    for _ in 0..20 {
        let (token, event) = revocation(&fleet, "before-snap");
        revoked.push(token);
        first.push(event);
    }
    fleet.publisher.publish_all(&first).await?;
    let lifted = revoked.remove(0);
    fleet
        .publish(&events::lift(&[first[0].event_id.as_str()]))
        .await?;
    ctl.run(
        &["-o", "json", "--trust", &trust, "snapshot", "create"],
        RUN,
    )
    .await?
    .ok()?;
    let (token, event) = revocation(&fleet, "after-snap");
    revoked.push(token);
    let seq = fleet.publish(&event).await?;

    let dir = tempfile::tempdir()?;
    let mut sidecar = Sidecar::start(options(&fleet, "resumer", dir.path())).await?;
    sidecar.wait_ready(READY_TIMEOUT).await?;
    let text = metrics(admin(&sidecar)).await?;
    assert_eq!(
        sample(&text, "denylist_snapshot_loads_total{outcome=\"loaded\"}"),
        1.0,
        "the first start downloads the snapshot"
    );
    assert_eq!(loads(&sidecar, "missing").await?, 1.0);
    wait_written(&sidecar, seq).await?;

    // A crash (SIGKILL: no shutdown write), and a revocation and a lift while it is down.
    sidecar.kill();
    let (token, event) = revocation(&fleet, "while-down");
    revoked.push(token);
    fleet.publish(&event).await?;
    let lifted_while_down = revoked.remove(0);
    let last = fleet
        .publish(&events::lift(&[first[1].event_id.as_str()]))
        .await?;

    sidecar.start_again()?;
    let status = sidecar.wait_ready(READY_TIMEOUT).await?;
    assert_eq!(
        status.denylist_sequence, last,
        "caught up from the state's sequence"
    );
    let text = metrics(admin(&sidecar)).await?;
    assert_eq!(
        sample(
            &text,
            "denylist_local_state_loads_total{outcome=\"loaded\"}"
        ),
        1.0
    );
    for outcome in ["loaded", "missing", "refused", "error"] {
        assert_eq!(
            sample(
                &text,
                &format!("denylist_snapshot_loads_total{{outcome=\"{outcome}\"}}")
            ),
            0.0,
            "a restart with a local state does not even look for the snapshot ({outcome})"
        );
    }
    assert!(
        sidecar.log().contains("resumed from the local state"),
        "the log says where it started from"
    );
    for token in &revoked {
        expect_reason(&sidecar, token, Reason::Revoked).await?;
    }
    for token in [&lifted, &lifted_while_down] {
        expect_reason(&sidecar, token, Reason::Ok).await?;
    }

    // While it runs again: a revocation and a lift of one restored, written as records
    // of the state's journal (the state file written after the restart stays as it is),
    // then another crash; the restart resumes from the state and its journal.
    wait_written(&sidecar, last).await?;
    let state_bytes = std::fs::read(state_file(dir.path()))?;
    let (token, event) = revocation(&fleet, "journaled");
    revoked.push(token);
    fleet.publish(&event).await?;
    let lifted_journaled = revoked.remove(0);
    let last = fleet
        .publish(&events::lift(&[first[2].event_id.as_str()]))
        .await?;
    wait_written(&sidecar, last).await?;
    sidecar.kill();
    assert_eq!(
        std::fs::read(state_file(dir.path()))?,
        state_bytes,
        "the state file was rewritten instead of journaled"
    );
    let journal = dir.path().join("journal.bin");
    anyhow::ensure!(
        std::fs::metadata(&journal)?.len() > 44,
        "no journal record in {}",
        journal.display()
    );
    sidecar.start_again()?;
    let status = sidecar.wait_ready(READY_TIMEOUT).await?;
    assert_eq!(status.denylist_sequence, last);
    assert!(
        sidecar.log().contains("resumed from the local state"),
        "the log says where it started from"
    );
    for token in &revoked {
        expect_reason(&sidecar, token, Reason::Revoked).await?;
    }
    for token in [&lifted, &lifted_while_down, &lifted_journaled] {
        expect_reason(&sidecar, token, Reason::Ok).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_graceful_shutdown_writes_the_state() -> anyhow::Result<()> {
    let fleet = Fleet::start(0).await?;
    let dir = tempfile::tempdir()?;
    let mut o = options(&fleet, "graceful", dir.path());
    // No periodic write in this test's lifetime: only the shutdown can write it.
    o.state_interval = Duration::from_secs(3600);
    let mut sidecar = Sidecar::start(o).await?;
    sidecar.wait_ready(READY_TIMEOUT).await?;
    let (revoked, event) = revocation(&fleet, "graceful");
    let seq = fleet.publish(&event).await?;
    sidecar.wait_sequence(seq, READY_TIMEOUT).await?;
    assert!(
        !state_file(dir.path()).exists(),
        "written before the shutdown: the test would prove nothing"
    );
    let status = sidecar.terminate(Duration::from_secs(15)).await?;
    assert!(status.success(), "exit status {status}");
    assert!(state_file(dir.path()).exists(), "written at shutdown");

    sidecar.start_again()?;
    let status = sidecar.wait_ready(READY_TIMEOUT).await?;
    assert_eq!(status.denylist_sequence, seq);
    assert_eq!(loads(&sidecar, "loaded").await?, 1.0);
    expect_reason(&sidecar, &revoked, Reason::Revoked).await?;
    Ok(())
}

/// A sidecar with a local state written at the stream's last sequence, killed, then
/// NATS stopped: returns the revoked token and when the sidecar was killed (it last
/// heard the stream before that).
async fn crash_then_lose_nats(
    fleet: &mut Fleet,
    sidecar: &mut Sidecar,
) -> anyhow::Result<(String, Instant)> {
    sidecar.wait_ready(READY_TIMEOUT).await?;
    let (token, event) = revocation(fleet, "known");
    let seq = fleet.publish(&event).await?;
    sidecar.wait_sequence(seq, READY_TIMEOUT).await?;
    wait_written(sidecar, seq).await?;
    sidecar.kill();
    let killed = Instant::now();
    fleet.nats.stop();
    Ok((token, killed))
}

#[tokio::test(flavor = "multi_thread")]
async fn restarted_while_nats_is_down_fail_open_serves_with_its_true_age() -> anyhow::Result<()> {
    let mut fleet = Fleet::start(0).await?;
    let dir = tempfile::tempdir()?;
    let mut o = options(&fleet, "open", dir.path());
    o.staleness_policy = StalenessPolicy::FailOpen;
    o.max_staleness = Duration::from_secs(3);
    let mut sidecar = Sidecar::start(o).await?;
    let (revoked, killed) = crash_then_lose_nats(&mut fleet, &mut sidecar).await?;
    let token = fleet.issuer.token().mint();

    sidecar.start_again()?;
    let status = sidecar.wait_ready(READY_TIMEOUT).await?;
    let answer = sidecar.verify(&token).await?;
    let down_ms = u64::try_from(killed.elapsed().as_millis())?;
    assert_eq!(
        answer.reason,
        Reason::Ok as i32,
        "fail_open answers as usual"
    );
    // The age counts from when the stream was last heard, before the crash: at least
    // the time since the kill, and not much more (state written every 200 ms,
    // heartbeats every 200 ms).
    assert!(
        answer.denylist_age_ms >= down_ms.saturating_sub(50)
            && answer.denylist_age_ms <= down_ms + 3000,
        "age {} ms, down for {down_ms} ms",
        answer.denylist_age_ms
    );
    assert!(status.denylist_sequence > 0);
    expect_reason(&sidecar, &revoked, Reason::Revoked).await?;
    assert_eq!(loads(&sidecar, "loaded").await?, 1.0);
    wait_for(READY_TIMEOUT, "a stale-flagged answer", || async {
        match sidecar.verify(&token).await {
            Ok(a) if a.stale && a.reason == Reason::Ok as i32 => Ok(()),
            Ok(a) => Err(format!("reason {} stale {}", a.reason, a.stale)),
            Err(e) => Err(e.to_string()),
        }
    })
    .await?;
    assert_eq!(readyz(admin(&sidecar)).await?, 200, "fail_open stays ready");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn restarted_while_nats_is_down_fail_closed_is_ready_only_within_max_staleness()
-> anyhow::Result<()> {
    const MAX_STALENESS: Duration = Duration::from_secs(8);
    let mut fleet = Fleet::start(0).await?;
    let dir = tempfile::tempdir()?;
    let mut o = options(&fleet, "closed", dir.path());
    o.staleness_policy = StalenessPolicy::FailClosed;
    o.max_staleness = MAX_STALENESS;
    let mut sidecar = Sidecar::start(o).await?;
    let (revoked, killed) = crash_then_lose_nats(&mut fleet, &mut sidecar).await?;
    let token = fleet.issuer.token().mint();

    // Within max_staleness: ready from the state, answering as usual.
    sidecar.start_again()?;
    sidecar.wait_ready(READY_TIMEOUT).await?;
    anyhow::ensure!(
        killed.elapsed() < MAX_STALENESS,
        "the restart took too long for this test to mean anything"
    );
    expect_reason(&sidecar, &token, Reason::Ok).await?;
    expect_reason(&sidecar, &revoked, Reason::Revoked).await?;
    assert_eq!(readyz(admin(&sidecar)).await?, 200);
    // Then, as time passes without the stream, stale: unready, and every token refused.
    let stale = wait_for(
        MAX_STALENESS + Duration::from_secs(10),
        "a DENYLIST_STALE answer",
        || async {
            match sidecar.verify(&token).await {
                Ok(a) if a.reason == Reason::DenylistStale as i32 => Ok(a),
                Ok(a) => Err(format!("reason {} age {} ms", a.reason, a.denylist_age_ms)),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await?;
    assert!(stale.denylist_age_ms > u64::try_from(MAX_STALENESS.as_millis())?);
    assert_eq!(readyz(admin(&sidecar)).await?, 503);

    // Restarted again, its state now older than max_staleness: not ready at all.
    sidecar.start_again()?;
    wait_for(
        READY_TIMEOUT,
        "the restarted sidecar to apply its state",
        || async {
            match loads(&sidecar, "loaded").await {
                Ok(n) if n >= 1.0 => Ok(()),
                Ok(n) => Err(format!("loaded {n}")),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await?;
    holds_for(
        Duration::from_secs(4),
        "not ready with a state older than max_staleness",
        || async {
            match sidecar.status().await {
                Ok(s) if !s.ready => Ok(()),
                Ok(s) => Err(format!("ready, age {} ms", s.denylist_age_ms)),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await?;
    assert_eq!(readyz(admin(&sidecar)).await?, 503);

    // NATS back: it catches up from the state and is ready.
    fleet.nats.start_again().await?;
    sidecar.wait_ready(READY_TIMEOUT).await?;
    expect_reason(&sidecar, &revoked, Reason::Revoked).await?;
    wait_for(READY_TIMEOUT, "a fresh answer", || async {
        match sidecar.verify(&token).await {
            Ok(a) if a.reason == Reason::Ok as i32 && !a.stale => Ok(()),
            Ok(a) => Err(format!("reason {} stale {}", a.reason, a.stale)),
            Err(e) => Err(e.to_string()),
        }
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_or_foreign_local_state_is_refused_and_counted() -> anyhow::Result<()> {
    let fleet = Fleet::start(0).await?;
    let dir = tempfile::tempdir()?;
    let mut sidecar = Sidecar::start(options(&fleet, "victim", dir.path())).await?;
    sidecar.wait_ready(READY_TIMEOUT).await?;
    let (revoked, event) = revocation(&fleet, "kept");
    let seq = fleet.publish(&event).await?;
    wait_written(&sidecar, seq).await?;
    sidecar.kill();
    let good = std::fs::read(state_file(dir.path()))?;

    // Bytes flipped in the middle, then the file cut short: corrupt.
    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 0x40;
    let cut = good[..good.len() - 7].to_vec();
    for (i, bad) in [flipped, cut].into_iter().enumerate() {
        std::fs::write(state_file(dir.path()), &bad)?;
        sidecar.start_again()?;
        sidecar.wait_ready(READY_TIMEOUT).await?;
        assert_eq!(loads(&sidecar, "corrupt").await?, 1.0, "case {i}");
        assert_eq!(loads(&sidecar, "loaded").await?, 0.0, "case {i}");
        // Started as without a state: the stream gives the same answer.
        expect_reason(&sidecar, &revoked, Reason::Revoked).await?;
        sidecar.kill();
    }

    // Another format version: foreign.
    let mut version_2 = good.clone();
    version_2[8..12].copy_from_slice(&2u32.to_le_bytes());
    std::fs::write(state_file(dir.path()), &version_2)?;
    sidecar.start_again()?;
    sidecar.wait_ready(READY_TIMEOUT).await?;
    assert_eq!(loads(&sidecar, "foreign").await?, 1.0);
    assert_eq!(loads(&sidecar, "loaded").await?, 0.0);
    sidecar.kill();

    // A sound state of a sidecar with another set of trusted publishers: foreign.
    std::fs::write(state_file(dir.path()), &good)?;
    let (_, other_key) = SigningKey::generate()?;
    let other_key = SigningKey::from_pkcs8_pem(&other_key)?.public_key();
    let mut o = options(&fleet, "other-trust", dir.path());
    o.trusted_publishers.push(other_key);
    let other = Sidecar::start(o).await?;
    other.wait_ready(READY_TIMEOUT).await?;
    assert_eq!(loads(&other, "foreign").await?, 1.0);
    assert_eq!(loads(&other, "loaded").await?, 0.0);
    expect_reason(&other, &revoked, Reason::Revoked).await?;
    assert!(
        other.log().contains("local state refused"),
        "the refusal is logged with its reason"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_local_state_of_a_recreated_stream_is_refused() -> anyhow::Result<()> {
    let fleet = Fleet::start(0).await?;
    let dir = tempfile::tempdir()?;
    let mut sidecar = Sidecar::start(options(&fleet, "recreated", dir.path())).await?;
    sidecar.wait_ready(READY_TIMEOUT).await?;
    let (old_token, event) = revocation(&fleet, "old-stream");
    let seq = fleet.publish(&event).await?;
    wait_written(&sidecar, seq).await?;
    sidecar.kill();

    // The stream deleted and created again: its sequences start over.
    let js = async_nats::jetstream::new(fleet.client.clone());
    js.delete_stream(subjects::DEFAULT_STREAM).await?;
    init_stream(&fleet.client, &StreamOptions::default()).await?;
    let (new_token, event) = revocation(&fleet, "new-stream");
    let new_seq = fleet.publish(&event).await?;

    sidecar.start_again()?;
    let status = sidecar.wait_ready(READY_TIMEOUT).await?;
    assert_eq!(status.denylist_sequence, new_seq);
    assert_eq!(loads(&sidecar, "recreated").await?, 1.0);
    assert_eq!(loads(&sidecar, "loaded").await?, 0.0);
    expect_reason(&sidecar, &new_token, Reason::Revoked).await?;
    // Never applied: the old stream's rule is not in force.
    expect_reason(&sidecar, &old_token, Reason::Ok).await?;
    Ok(())
}
