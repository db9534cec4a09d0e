//! Snapshots: `denylistctl snapshot create` signs the live events up to a sequence; a
//! starting sidecar loads it and replays only what came after — and refuses any
//! snapshot it cannot trust, replaying the whole stream instead, so a bad snapshot
//! can cost time but never a revocation.

use std::path::PathBuf;
use std::time::Duration;

use denylist_proto::envelope::SigningKey;
use denylist_proto::events::{Event, RuleKind};
use denylist_proto::pb::Reason;
use denylist_tests::events::{self, EventPublisher};
use denylist_tests::fleet::tokens_not_answering;
use denylist_tests::tokens::ISSUER;
use denylist_tests::{Denylistctl, Fleet, Issuer, READY_TIMEOUT, Sidecar, now_secs, unique};

/// Bound on one CLI run.
const RUN: Duration = Duration::from_secs(60);

/// A fleet without sidecars whose publisher key is also in a PEM file for `denylistctl`.
async fn fleet_with_key_file() -> anyhow::Result<(Fleet, Denylistctl, tempfile::TempDir)> {
    let mut fleet = Fleet::start(0).await?;
    let dir = tempfile::tempdir()?;
    let (key, pem) = SigningKey::generate()?;
    let path = write_key(&dir, "publisher.pem", &pem)?;
    fleet.publisher = EventPublisher::with_key(fleet.client.clone(), key);
    let ctl = Denylistctl::new(&fleet.nats.url())?.with_key(&path);
    Ok((fleet, ctl, dir))
}

fn write_key(dir: &tempfile::TempDir, name: &str, pem: &str) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.path().join(name);
    std::fs::write(&path, pem)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(path)
}

/// `count` tokens and one jti revocation event for each.
fn revocations(issuer: &Issuer, count: usize) -> (Vec<String>, Vec<Event>) {
    (0..count)
        .map(|_| {
            let jti = unique("snap");
            let token = issuer.token().jti(&jti).mint();
            (token, events::revoke(RuleKind::Jti, ISSUER, &[&jti]))
        })
        .unzip()
}

async fn snapshot_create(
    ctl: &Denylistctl,
    trust: &str,
    extra: &[&str],
) -> anyhow::Result<serde_json::Value> {
    let mut args = vec!["-o", "json", "--trust", trust, "snapshot", "create"];
    args.extend_from_slice(extra);
    ctl.run(&args, RUN).await?.ok()?.json()
}

/// Starts a sidecar of the fleet and waits until it is ready.
async fn start_sidecar(fleet: &Fleet, name: &str) -> anyhow::Result<Sidecar> {
    let sidecar = Sidecar::start(fleet.sidecar_options(name)).await?;
    sidecar.wait_ready(READY_TIMEOUT).await?;
    Ok(sidecar)
}

/// Ready means caught up: every answer must already be right, without waiting.
async fn assert_answers(
    sidecar: &Sidecar,
    tokens: &[String],
    reason: Reason,
) -> anyhow::Result<()> {
    let wrong = tokens_not_answering(sidecar, tokens, reason).await?;
    anyhow::ensure!(
        wrong.is_empty(),
        "sidecar {} answered other than {} for {} of {} tokens, e.g. {:?}; log tail:\n{}",
        sidecar.name(),
        reason.as_str_name(),
        wrong.len(),
        tokens.len(),
        &wrong[..wrong.len().min(5)],
        tail(&sidecar.log())
    );
    Ok(())
}

fn tail(log: &str) -> &str {
    let start = log.len().saturating_sub(4000);
    let start = (start..log.len())
        .find(|&i| log.is_char_boundary(i))
        .unwrap_or(log.len());
    &log[start..]
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sidecar_starts_from_the_snapshot_and_replays_only_what_came_after() -> anyhow::Result<()>
{
    let (fleet, ctl, _dir) = fleet_with_key_file().await?;
    let trust = fleet.publisher.public_key();

    // Before the first snapshot: revocations, one of them lifted, and a subject rule.
    let (mut revoked, first) = revocations(&fleet.issuer, 200);
    fleet.publisher.publish_all(&first).await?;
    let lifted_token = revoked.remove(0);
    fleet
        .publish(&events::lift(&[first[0].event_id.as_str()]))
        .await?;
    // Issued before the cut-off (the revocation's creation time), so it is revoked.
    revoked.push(
        fleet
            .issuer
            .token()
            .sub("mallory")
            .iat(now_secs() - 10)
            .mint(),
    );
    fleet
        .publish(&events::revoke(RuleKind::Subject, ISSUER, &["mallory"]))
        .await?;
    let (_, covered1) = fleet.stream_state().await?;

    let snap1 = snapshot_create(&ctl, &trust, &[]).await?;
    assert_eq!(snap1["covered_sequence"], covered1, "{snap1}");
    assert_eq!(snap1["previous_covered_sequence"], serde_json::Value::Null);
    assert_eq!(snap1["rejected"], 0, "{snap1}");

    // Between the snapshots: more revocations, and a lift of an event of the first.
    let (second_tokens, second) = revocations(&fleet.issuer, 100);
    fleet.publisher.publish_all(&second).await?;
    revoked.extend(second_tokens);
    let lifted_later = revoked.remove(0);
    fleet
        .publish(&events::lift(&[first[1].event_id.as_str()]))
        .await?;
    let (_, covered2) = fleet.stream_state().await?;

    // The second snapshot starts from the first and reads only the events after it.
    let snap2 = snapshot_create(&ctl, &trust, &[]).await?;
    assert_eq!(snap2["covered_sequence"], covered2, "{snap2}");
    assert_eq!(snap2["previous_covered_sequence"], covered1, "{snap2}");
    assert_eq!(snap2["read"], covered2 - covered1, "{snap2}");

    // After the last snapshot: events the sidecar must replay from the stream.
    let (third_tokens, third) = revocations(&fleet.issuer, 50);
    fleet.publisher.publish_all(&third).await?;
    revoked.extend(third_tokens);
    let (_, last) = fleet.stream_state().await?;

    let info = ctl
        .run(&["-o", "json", "--trust", &trust, "snapshot", "info"], RUN)
        .await?
        .ok()?
        .json()?;
    assert_eq!(info["covered_sequence"], covered2, "{info}");
    assert_eq!(info["events_behind"], last - covered2, "{info}");

    let sidecar = start_sidecar(&fleet, "from-snapshot").await?;
    assert_eq!(sidecar.status().await?.denylist_sequence, last);
    let log = sidecar.log();
    assert!(
        log.contains("started from the revocation stream's snapshot")
            && log.contains(&format!("covered_sequence={covered2}")),
        "the sidecar did not start from the snapshot; log tail:\n{}",
        tail(&log)
    );
    assert_answers(&sidecar, &revoked, Reason::Revoked).await?;
    assert_answers(
        &sidecar,
        &[
            lifted_token,
            lifted_later,
            fleet.issuer.token().jti(&unique("never")).mint(),
        ],
        Reason::Ok,
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_the_sidecar_cannot_trust_is_refused_and_the_stream_replayed()
-> anyhow::Result<()> {
    let (fleet, _ctl, dir) = fleet_with_key_file().await?;
    let (tokens, events) = revocations(&fleet.issuer, 150);
    fleet.publisher.publish_all(&events).await?;
    let (_, last) = fleet.stream_state().await?;

    // An attacker with write access to NATS but not a trusted key: a snapshot that
    // claims the whole stream is covered and holds no revocations. Its maker trusts
    // its own key, so it signs an empty set (every stream event is "untrusted" to it).
    let (attacker_key, attacker_pem) = SigningKey::generate()?;
    let attacker_path = write_key(&dir, "attacker.pem", &attacker_pem)?;
    let attacker = Denylistctl::new(&fleet.nats.url())?.with_key(&attacker_path);
    let forged = snapshot_create(&attacker, &attacker_key.public_key(), &[]).await?;
    assert_eq!(forged["covered_sequence"], last, "{forged}");
    assert_eq!(forged["events"], 0, "{forged}");

    let sidecar = start_sidecar(&fleet, "refuses-forgery").await?;
    assert_eq!(sidecar.status().await?.denylist_sequence, last);
    let log = sidecar.log();
    assert!(
        log.contains("snapshot refused")
            && !log.contains("started from the revocation stream's snapshot"),
        "the forged snapshot was not refused; log tail:\n{}",
        tail(&log)
    );
    assert_answers(&sidecar, &tokens, Reason::Revoked).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_create_refuses_a_signing_key_outside_the_trusted_ones() -> anyhow::Result<()> {
    let (fleet, ctl, _dir) = fleet_with_key_file().await?;
    fleet
        .publisher
        .publish_all(&revocations(&fleet.issuer, 3).1)
        .await?;
    // Trusting only another key (a rotation half done): refused before anything is stored.
    let (other, _) = SigningKey::generate()?;
    let out = ctl
        .run(&["--trust", &other.public_key(), "snapshot", "create"], RUN)
        .await?;
    assert!(!out.status.success(), "{out}");
    assert!(out.stderr.contains("not among the --trust keys"), "{out}");
    let info = ctl
        .run(
            &[
                "-o",
                "json",
                "--trust",
                &other.public_key(),
                "snapshot",
                "info",
            ],
            RUN,
        )
        .await?;
    assert!(
        !info.stdout.contains("covered_sequence"),
        "no snapshot was stored: {info}"
    );
    Ok(())
}
