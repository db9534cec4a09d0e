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
use denylist_tests::sidecar::ScopedPublisher;
use denylist_tests::tokens::ISSUER;
use denylist_tests::{
    Denylistctl, Fleet, Issuer, READY_TIMEOUT, Sidecar, now_secs, unique, within,
};

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
    assert!(out.stderr.contains("not among the trusted keys"), "{out}");
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

/// A scoped publisher's revocations (the signal receiver's key) are judged for a snapshot
/// as the sidecars judge them live: `--trust-config` reads the sidecars' own trust, scopes
/// included, so what is in scope goes into the snapshot and what is not stays out. With
/// only the full-authority `--trust` keys, the in-scope revocation would be left out and a
/// sidecar starting from the snapshot would never apply it; with the scoped key passed as
/// a plain `--trust` key, the out-of-scope one would be baked in under the snapshot's
/// full authority. A scoped key may not sign the snapshot.
#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_keeps_a_scoped_keys_revocations_within_its_scope_only() -> anyhow::Result<()> {
    let (fleet, ctl, dir) = fleet_with_key_file().await?;
    let (receiver_key, receiver_pem) = SigningKey::generate()?;
    let scoped = ScopedPublisher {
        key: receiver_key.public_key(),
        kinds: vec!["session".into()],
        issuers: vec![ISSUER.into()],
        heartbeats_only: false,
    };
    let options = |name: &str| {
        let mut options = fleet.sidecar_options(name);
        options.scoped_publishers.push(scoped.clone());
        options
    };
    let receiver = EventPublisher::with_key(fleet.client.clone(), receiver_key);
    let sid = unique("sid");
    let session_token = fleet.issuer.token().sid(&sid).mint();
    receiver
        .publish(&events::revoke(RuleKind::Session, ISSUER, &[&sid]))
        .await?;
    // Out of scope (a `jti` rule): refused live, so it must stay out of the snapshot.
    let jti = unique("jti");
    let jti_token = fleet.issuer.token().jti(&jti).mint();
    receiver
        .publish(&events::revoke(RuleKind::Jti, ISSUER, &[&jti]))
        .await?;
    let (admin_tokens, admin_events) = revocations(&fleet.issuer, 3);
    fleet.publisher.publish_all(&admin_events).await?;
    let (_, covered) = fleet.stream_state().await?;

    // The first sidecar follows the stream live; its config file is the trust to use.
    let live = Sidecar::start(options("live")).await?;
    live.wait_ready(READY_TIMEOUT).await?;
    assert_answers(&live, std::slice::from_ref(&session_token), Reason::Revoked).await?;
    assert_answers(&live, std::slice::from_ref(&jti_token), Reason::Ok).await?;
    let config = live
        .config_path()
        .to_str()
        .expect("a UTF-8 path")
        .to_owned();

    // The scoped key may not sign the snapshot: refused before anything is stored.
    let receiver_path = write_key(&dir, "receiver.pem", &receiver_pem)?;
    let refused = Denylistctl::new(&fleet.nats.url())?
        .with_key(&receiver_path)
        .run(&["--trust-config", &config, "snapshot", "create"], RUN)
        .await?;
    assert!(!refused.status.success(), "{refused}");
    assert!(refused.stderr.contains("scoped publisher key"), "{refused}");

    let snap = ctl
        .run(
            &[
                "-o",
                "json",
                "--trust-config",
                &config,
                "snapshot",
                "create",
            ],
            RUN,
        )
        .await?
        .ok()?
        .json()?;
    assert_eq!(snap["covered_sequence"], covered, "{snap}");
    assert_eq!(
        snap["events"], 4,
        "the session revocation and the admin's three: {snap}"
    );
    assert_eq!(
        snap["rejected"], 1,
        "the out-of-scope jti revocation: {snap}"
    );

    let started = Sidecar::start(options("from-snapshot")).await?;
    started.wait_ready(READY_TIMEOUT).await?;
    let log = started.log();
    assert!(
        log.contains("started from the revocation stream's snapshot")
            && log.contains(&format!("covered_sequence={covered}")),
        "the sidecar did not start from the snapshot; log tail:\n{}",
        tail(&log)
    );
    let mut revoked = admin_tokens;
    revoked.push(session_token);
    assert_answers(&started, &revoked, Reason::Revoked).await?;
    assert_answers(&started, &[jti_token], Reason::Ok).await?;
    Ok(())
}

/// The consumers on `stream` now (its info's count).
async fn consumer_count(
    js: &async_nats::jetstream::Context,
    stream: &str,
) -> anyhow::Result<usize> {
    let mut handle = within("stream info", js.get_stream(stream)).await??;
    Ok(within("stream info", handle.info())
        .await??
        .state
        .consumer_count)
}

/// Issue 10: a sidecar starting from a snapshot reads it with direct gets, so no
/// consumer exists at any point, on the events stream or on the snapshot bucket's
/// stream. Three witnesses: every consumer-creation advisory the server publishes,
/// every consumer API request (a core subscriber gets a copy of each), and the
/// streams' consumer counts polled all along. The snapshot on the wire is the dense one.
#[tokio::test(flavor = "multi_thread")]
async fn a_sidecar_starts_from_the_snapshot_without_any_consumer() -> anyhow::Result<()> {
    use futures::StreamExt as _;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let (fleet, ctl, _dir) = fleet_with_key_file().await?;
    let trust = fleet.publisher.public_key();
    let (tokens, events) = revocations(&fleet.issuer, 300);
    fleet.publisher.publish_all(&events).await?;
    let snap = snapshot_create(&ctl, &trust, &[]).await?;
    assert_eq!(snap["events"], 300, "{snap}");
    // `denylistctl` reads with consumers of its own, which linger until idle: removed
    // here, so that any consumer seen from now on is the sidecar's.
    let js = async_nats::jetstream::new(fleet.client.clone());
    let bucket_stream = "OBJ_DENYLIST_SNAPSHOTS";
    for stream in ["DENYLIST", bucket_stream] {
        let handle = within("get stream", js.get_stream(stream)).await??;
        let names: Vec<String> = within(
            "the consumer list",
            futures::TryStreamExt::try_collect(handle.consumer_names()),
        )
        .await??;
        for name in names {
            within("delete consumer", handle.delete_consumer(&name)).await??;
        }
        assert_eq!(consumer_count(&js, stream).await?, 0, "{stream}");
    }
    let info = within("bucket stream info", js.get_stream(bucket_stream)).await??;
    assert!(
        info.cached_info().config.allow_direct,
        "the snapshot bucket's stream must allow direct gets"
    );

    let mut advisories = fleet
        .client
        .subscribe("$JS.EVENT.ADVISORY.CONSUMER.CREATED.>")
        .await?;
    let mut consumer_requests = fleet.client.subscribe("$JS.API.CONSUMER.>").await?;
    fleet.client.flush().await?;
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let (js, stop) = (js.clone(), Arc::clone(&stop));
        tokio::spawn(async move {
            let (mut most, mut polls) = (0, 0);
            while !stop.load(Ordering::Relaxed) {
                let n = consumer_count(&js, "DENYLIST").await?
                    + consumer_count(&js, bucket_stream).await?;
                most = most.max(n);
                polls += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Ok::<_, anyhow::Error>((most, polls))
        })
    };

    let sidecar = start_sidecar(&fleet, "no-consumer").await?;
    // Live events and a catch-up after the start: still no consumer.
    let (more_tokens, more) = revocations(&fleet.issuer, 20);
    fleet.publisher.publish_all(&more).await?;
    let (_, last) = fleet.stream_state().await?;
    sidecar.wait_sequence(last, READY_TIMEOUT).await?;
    stop.store(true, Ordering::Relaxed);
    let (most, polls) = within("the consumer poller", poller).await???;

    let log = sidecar.log();
    assert!(
        log.contains("started from the revocation stream's snapshot"),
        "the sidecar did not start from the snapshot; log tail:\n{}",
        tail(&log)
    );
    fleet.client.flush().await?;
    // Anything the server sent went out before the flush above returned.
    let quiet = Duration::from_millis(300);
    let advisory = tokio::time::timeout(quiet, advisories.next()).await;
    assert!(
        advisory.is_err(),
        "a consumer was created: {:?}",
        advisory
            .ok()
            .flatten()
            .map(|m| (m.subject, String::from_utf8_lossy(&m.payload).into_owned()))
    );
    let request = tokio::time::timeout(quiet, consumer_requests.next()).await;
    assert!(
        request.is_err(),
        "a consumer API request was sent: {:?}",
        request.ok().flatten().map(|m| m.subject)
    );
    assert!(polls > 0, "the consumer counts were never polled");
    assert_eq!(most, 0, "a consumer existed while the sidecar started");
    assert_answers(&sidecar, &tokens, Reason::Revoked).await?;
    assert_answers(&sidecar, &more_tokens, Reason::Revoked).await?;
    Ok(())
}

/// The object reader (`sync/object.rs`) on a real object store: an object of many chunks
/// comes back byte for byte over several batches, with no consumer; a missing object is
/// `None`; one over the size bound is refused before it is read; a missing bucket is
/// "nobody answers", which a sidecar takes as "no snapshots".
#[tokio::test(flavor = "multi_thread")]
async fn objects_are_read_with_direct_gets_whole_and_bounded() -> anyhow::Result<()> {
    use async_nats::jetstream::object_store;
    use denylist_sidecar::sync::direct::{DirectGetError, DirectReader};
    use denylist_sidecar::sync::object::{ObjectReadError, ObjectReader};

    let nats = denylist_tests::NatsServer::start().await?;
    let client = nats.connect().await?;
    let js = async_nats::jetstream::new(client.clone());
    let store = within(
        "create bucket",
        js.create_object_store(object_store::Config {
            bucket: "READS".into(),
            ..Default::default()
        }),
    )
    .await??;
    // 9 MiB of varied bytes in 128 KiB chunks: 72 chunks, several 4 MiB batches.
    let object: Vec<u8> = (0..9u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let meta = object_store::ObjectMetadata {
        name: "big".into(),
        chunk_size: Some(128 * 1024),
        ..Default::default()
    };
    within("put", store.put(meta, &mut object.as_slice())).await??;

    let any = DirectReader::new(client.clone(), "unused");
    let reader = ObjectReader::new(&any, "READS", 16 << 20);
    let read = within("read", reader.read("big")).await??;
    assert!(
        read.as_deref() == Some(object.as_slice()),
        "read back differs"
    );
    assert!(within("read", reader.read("absent")).await??.is_none());
    let mut handle = within("stream", js.get_stream("OBJ_READS")).await??;
    assert_eq!(
        within("info", handle.info()).await??.state.consumer_count,
        0
    );

    let small = ObjectReader::new(&any, "READS", 1 << 20);
    let err = within("read", small.read("big")).await?.unwrap_err();
    assert!(matches!(err, ObjectReadError::TooLarge { .. }), "{err}");

    let nowhere = ObjectReader::new(&any, "NO_SUCH_BUCKET", 1 << 20);
    let err = within("read", nowhere.read("big")).await?.unwrap_err();
    assert!(
        matches!(
            err,
            ObjectReadError::Direct(DirectGetError::NoResponders { .. })
        ),
        "{err}"
    );
    Ok(())
}
