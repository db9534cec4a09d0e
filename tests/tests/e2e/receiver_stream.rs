//! The receiver manages its own SSF stream (issue 12, SSF 1.0 §8), end to end: the real
//! `denylist-receiver` against the transmitter simulator's stream management API, with a
//! real nats-server and three real sidecars. It creates the stream at start (push or poll),
//! has it verified, enforces the SETs sent over it, converges on one stream when two
//! replicas start together, reuses (and updates) its stream after a restart, with a
//! refused management credential says so (and stays ready: readiness does not depend on
//! the management API) and publishes nothing, and follows a management token a refresher
//! rewrites in its file.

use denylist_proto::pb::Reason;
use denylist_tests::tokens::ISSUER;
use denylist_tests::transmitter::{
    ACCOUNT_DISABLED, Forwarder, PROVIDER, ReceiverKey, ReceiverOptions, ReceiverProcess,
    SESSION_REVOKED, StreamOptions, Transmitter,
};
use denylist_tests::{Fleet, PROPAGATION_TIMEOUT, expect_reason, now_secs, unique, wait_for};
use serde_json::{Value, json};

/// The SSF verification event type.
const VERIFICATION: &str = "https://schemas.openid.net/secevent/ssf/event-type/verification";
/// How long a receiver may take to configure and verify its stream.
const STREAM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// Three sidecars trusting the receiver's key, the transmitter, and the push URL the
/// receiver(s) will register (a forwarder to the one that serves it).
struct Setup {
    fleet: Fleet,
    transmitter: Transmitter,
    key: ReceiverKey,
    forwarder: Forwarder,
}

async fn setup() -> anyhow::Result<Setup> {
    let key = ReceiverKey::generate()?;
    let fleet = Fleet::start_with(3, |o| {
        o.scoped_publishers.push(key.scoped_publisher(ISSUER));
    })
    .await?;
    Ok(Setup {
        fleet,
        transmitter: Transmitter::start().await?,
        key,
        forwarder: Forwarder::start().await?,
    })
}

impl Setup {
    /// Receiver options with a managed stream (`stream`), push auth on, no manual poll.
    fn options(&self, stream: StreamOptions) -> ReceiverOptions {
        let mut o = ReceiverOptions::new(self.fleet.nats.url(), &self.transmitter, ISSUER);
        o.stream = Some(stream);
        o
    }

    fn push_stream(&self) -> StreamOptions {
        StreamOptions::push(self.forwarder.url(&format!("/ssf/push/{PROVIDER}")))
    }

    /// Starts a receiver, points the forwarder at it, and waits until it is ready.
    async fn receiver(&self, options: &ReceiverOptions) -> anyhow::Result<ReceiverProcess> {
        self.forwarder.hold();
        let receiver = ReceiverProcess::spawn(&self.key, options).await?;
        self.forwarder.forward_to(receiver.addr());
        receiver.wait_ready().await?;
        Ok(receiver)
    }

    /// The one stream the transmitter has, once it has exactly one.
    async fn one_stream(&self) -> anyhow::Result<Value> {
        wait_for(
            STREAM_TIMEOUT,
            "exactly one stream at the transmitter",
            || async {
                match self.transmitter.streams().as_slice() {
                    [one] => Ok(one.clone()),
                    other => Err(format!("{} streams: {other:?}", other.len())),
                }
            },
        )
        .await
    }

    fn count(&self, prefix: &str) -> usize {
        self.transmitter
            .operations()
            .iter()
            .filter(|o| o.starts_with(prefix))
            .count()
    }

    async fn messages(&self) -> anyhow::Result<u64> {
        Ok(self.fleet.stream_state().await?.0)
    }
}

/// Waits until `receiver`'s metrics contain `line`.
async fn metric(receiver: &ReceiverProcess, line: &str) -> anyhow::Result<()> {
    wait_for(STREAM_TIMEOUT, format!("metric {line}"), || async {
        let m = receiver.metrics().await.map_err(|e| e.to_string())?;
        if m.contains(line) { Ok(()) } else { Err(m) }
    })
    .await
}

fn stream_id(stream: &Value) -> String {
    stream["stream_id"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_stream_is_created_verified_and_its_session_revoked_reaches_every_sidecar()
-> anyhow::Result<()> {
    let s = setup().await?;
    let receiver = s.receiver(&s.options(s.push_stream())).await?;
    let stream = s.one_stream().await?;
    let id = stream_id(&stream);
    assert_eq!(
        stream["delivery"]["method"], "urn:ietf:rfc:8935",
        "{stream}"
    );
    assert_eq!(
        stream["delivery"]["endpoint_url"],
        s.forwarder.url("/ssf/push/idp"),
        "{stream}"
    );
    let requested = stream["events_requested"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        requested.len(),
        6,
        "every SSF type the provider acts on: {stream}"
    );
    assert!(requested.contains(&json!(SESSION_REVOKED)), "{stream}");
    // The verification event asked for at start came back over the stream and checked out.
    metric(
        &receiver,
        r#"denylist_receiver_stream_verified{provider="idp"} 1"#,
    )
    .await?;
    metric(
        &receiver,
        r#"denylist_receiver_signals_total{provider="idp",type="verification",outcome="verified"} 1"#,
    )
    .await?;
    metric(
        &receiver,
        &format!(r#"denylist_receiver_stream_info{{provider="idp",stream_id="{id}"}} 1"#),
    )
    .await?;
    metric(
        &receiver,
        r#"denylist_receiver_stream_status{provider="idp",status="enabled"} 1"#,
    )
    .await?;
    let verifications: Vec<_> = s
        .transmitter
        .deliveries()
        .into_iter()
        .filter(|d| d.event_type == VERIFICATION)
        .collect();
    anyhow::ensure!(
        verifications.len() == 1 && verifications[0].status == Some(202),
        "{verifications:?}"
    );
    assert_eq!(s.count("create"), 1, "{:?}", s.transmitter.operations());
    // A verification event with a state this deployment did not issue is acknowledged
    // (SSF 1.0 lets the transmitter send them; refusing could get the stream disabled) and
    // counted apart; it verifies nothing.
    let forged = s
        .transmitter
        .transmit(
            &id,
            &s.transmitter.set_claims(
                &unique("set"),
                VERIFICATION,
                json!({"format": "opaque", "id": id}),
                json!({"state": "1700000000.AAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAA"}),
            ),
        )
        .await?;
    assert_eq!(forged.status, Some(202), "{forged:?}");
    metric(
        &receiver,
        r#"denylist_receiver_signals_total{provider="idp",type="verification",outcome="unknown_state"} 1"#,
    )
    .await?;

    // A session-revoked SET over the stream: every sidecar rejects that session only.
    let sid = unique("sid");
    let revoked = s.fleet.issuer.token().sub("ann").sid(&sid).mint();
    let other = s.fleet.issuer.token().sub("ann").sid(&unique("sid")).mint();
    let before = s.messages().await?;
    let delivery = s
        .transmitter
        .transmit(
            &id,
            &s.transmitter.set_claims(
                &unique("set"),
                SESSION_REVOKED,
                json!({
                    "format": "complex",
                    "user": {"format": "iss_sub", "iss": ISSUER, "sub": "ann"},
                    "session": {"format": "opaque", "id": sid},
                }),
                json!({"event_timestamp": now_secs()}),
            ),
        )
        .await?;
    assert_eq!(delivery.status, Some(202), "{delivery:?}");
    expect_reason(
        &s.fleet.sidecars,
        &revoked,
        Reason::Revoked,
        PROPAGATION_TIMEOUT,
    )
    .await?;
    expect_reason(&s.fleet.sidecars, &other, Reason::Ok, PROPAGATION_TIMEOUT).await?;
    assert_eq!(s.messages().await?, before + 1);

    // The transmitter pauses the stream: the stream-updated event is acknowledged, shows in
    // the status metric, and publishes nothing.
    let delivery = s
        .transmitter
        .set_stream_status(&id, "paused", "maintenance")
        .await?;
    assert_eq!(delivery.status, Some(202), "{delivery:?}");
    metric(
        &receiver,
        r#"denylist_receiver_stream_status{provider="idp",status="paused"} 1"#,
    )
    .await?;
    metric(
        &receiver,
        r#"denylist_receiver_signals_total{provider="idp",type="stream-updated",outcome="acknowledged"} 1"#,
    )
    .await?;
    assert_eq!(s.messages().await?, before + 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_stream_takes_its_endpoint_from_the_transmitter_and_is_enforced()
-> anyhow::Result<()> {
    let s = setup().await?;
    let mut stream = StreamOptions::poll();
    // Only a 404 from the poll endpoint can make it look again (below).
    stream.resync_interval = std::time::Duration::from_secs(3600);
    stream.verify_interval = Some(std::time::Duration::from_secs(1));
    let mut options = s.options(stream);
    options.push_authorization = None;
    let receiver = s.receiver(&options).await?;
    let stream = s.one_stream().await?;
    let id = stream_id(&stream);
    assert_eq!(
        stream["delivery"]["method"], "urn:ietf:rfc:8936",
        "{stream}"
    );
    assert_eq!(
        stream["delivery"]["endpoint_url"],
        format!("{}/ssf/poll/{id}", s.transmitter.issuer()),
        "{stream}"
    );
    // The verification SET is polled (with the management credential) and checks out.
    metric(
        &receiver,
        r#"denylist_receiver_stream_verified{provider="idp"} 1"#,
    )
    .await?;

    let earlier = s
        .fleet
        .issuer
        .token()
        .sub("bea")
        .iat(now_secs() - 30)
        .mint();
    let other = s
        .fleet
        .issuer
        .token()
        .sub("cid")
        .iat(now_secs() - 30)
        .mint();
    let jti = unique("set");
    let delivery = s
        .transmitter
        .transmit(
            &id,
            &s.transmitter.set_claims(
                &jti,
                ACCOUNT_DISABLED,
                json!({"format": "iss_sub", "iss": ISSUER, "sub": "bea"}),
                json!({}),
            ),
        )
        .await?;
    assert_eq!(delivery.status, None, "queued for polling");
    expect_reason(
        &s.fleet.sidecars,
        &earlier,
        Reason::Revoked,
        PROPAGATION_TIMEOUT,
    )
    .await?;
    expect_reason(&s.fleet.sidecars, &other, Reason::Ok, PROPAGATION_TIMEOUT).await?;
    s.transmitter.wait_acked(&jti, PROPAGATION_TIMEOUT).await?;
    // verify_interval: verification is asked for again (not faster than the stream's
    // min_verification_interval, 1 s here).
    wait_for(STREAM_TIMEOUT, "a second verification request", || async {
        match s.count(&format!("verify {id}")) {
            n if n >= 2 => Ok(()),
            n => Err(format!("{n} verification requests")),
        }
    })
    .await?;

    // The stream is deleted behind the receiver's back: its poll endpoint answers 404, the
    // receiver looks again at once, creates a new stream and polls that one.
    assert!(s.transmitter.delete_stream(&id));
    let replaced = wait_for(STREAM_TIMEOUT, "a new stream", || async {
        match s.transmitter.streams().as_slice() {
            [one] if stream_id(one) != id => Ok(stream_id(one)),
            other => Err(format!("{other:?}")),
        }
    })
    .await?;
    let later = s
        .fleet
        .issuer
        .token()
        .sub("dan")
        .iat(now_secs() - 30)
        .mint();
    let delivery = s
        .transmitter
        .transmit(
            &replaced,
            &s.transmitter.set_claims(
                &unique("set"),
                ACCOUNT_DISABLED,
                json!({"format": "iss_sub", "iss": ISSUER, "sub": "dan"}),
                json!({}),
            ),
        )
        .await?;
    assert_eq!(delivery.status, None, "queued for polling");
    expect_reason(
        &s.fleet.sidecars,
        &later,
        Reason::Revoked,
        PROPAGATION_TIMEOUT,
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_receivers_starting_together_end_with_one_stream() -> anyhow::Result<()> {
    let s = setup().await?;
    let options = s.options(s.push_stream());
    // Both see no stream, so both create one.
    s.transmitter.hold_lists(2);
    let (a, b) = tokio::join!(
        ReceiverProcess::spawn(&s.key, &options),
        ReceiverProcess::spawn(&s.key, &options)
    );
    let (a, b) = (a?, b?);
    s.forwarder.forward_to(a.addr());
    a.wait_ready().await?;
    b.wait_ready().await?;
    let stream = s.one_stream().await?;
    let id = stream_id(&stream);
    // Both use it (a replica whose first view was stale catches up at its resync).
    let info = format!(r#"denylist_receiver_stream_info{{provider="idp",stream_id="{id}"}} 1"#);
    metric(&a, &info).await?;
    metric(&b, &info).await?;
    // Both created one; one was deleted.
    let (creates, deletes) = (s.count("create"), s.count("delete"));
    anyhow::ensure!(
        creates == 2 && deletes == 1,
        "{creates} created, {deletes} deleted: {:?}",
        s.transmitter.operations()
    );
    assert_eq!(s.transmitter.streams().len(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_receiver_reuses_its_stream_and_updates_the_events_requested()
-> anyhow::Result<()> {
    let s = setup().await?;
    let mut options = s.options(s.push_stream());
    let mut first = s.receiver(&options).await?;
    let id = stream_id(&s.one_stream().await?);
    metric(
        &first,
        r#"denylist_receiver_stream_verified{provider="idp"} 1"#,
    )
    .await?;
    first.kill();

    // Same config: the stream is found, not created again, not updated.
    let mut second = s.receiver(&options).await?;
    metric(
        &second,
        &format!(r#"denylist_receiver_stream_info{{provider="idp",stream_id="{id}"}} 1"#),
    )
    .await?;
    metric(
        &second,
        r#"denylist_receiver_stream_verified{provider="idp"} 1"#,
    )
    .await?;
    assert_eq!(s.count("create"), 1, "{:?}", s.transmitter.operations());
    assert_eq!(s.count("update"), 0, "{:?}", s.transmitter.operations());
    second.kill();

    // Fewer event types: the same stream is PATCHed.
    options.events = Some(vec!["backchannel-logout".into(), "session-revoked".into()]);
    let third = s.receiver(&options).await?;
    // Readiness does not wait for the stream: wait for the PATCH itself.
    let stream = wait_for(STREAM_TIMEOUT, "the stream's events updated", || async {
        match s.transmitter.streams().as_slice() {
            [one] if one["events_requested"] == json!([SESSION_REVOKED]) => Ok(one.clone()),
            other => Err(format!("{other:?}")),
        }
    })
    .await?;
    assert_eq!(stream_id(&stream), id);
    assert_eq!(s.count("create"), 1, "{:?}", s.transmitter.operations());
    assert_eq!(
        s.count(&format!("update {id}")),
        1,
        "{:?}",
        s.transmitter.operations()
    );
    metric(
        &third,
        r#"denylist_receiver_stream_verified{provider="idp"} 1"#,
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_management_credential_is_reported_and_readiness_does_not_wait_for_it()
-> anyhow::Result<()> {
    let s = setup().await?;
    let mut stream = s.push_stream();
    stream.authorization = "Bearer not-the-secret".into();
    let receiver = ReceiverProcess::spawn(&s.key, &s.options(stream)).await?;
    s.forwarder.forward_to(receiver.addr());
    metric(
        &receiver,
        r#"denylist_receiver_stream_requests_total{provider="idp",operation="list",outcome="unauthorized"}"#,
    )
    .await?;
    metric(
        &receiver,
        r#"denylist_receiver_stream_configured{provider="idp"} 0"#,
    )
    .await?;
    // Ready all the same (a management API outage must not take every replica out of
    // service while the stream may still deliver); /readyz says what is wrong.
    receiver.wait_ready().await?;
    let ready = receiver.readyz().await?;
    anyhow::ensure!(
        ready.status == 200
            && ready
                .body
                .contains("SSF stream of provider idp not configured yet")
            && ready.body.contains("401"),
        "{ready:?}"
    );
    let log = receiver.log();
    anyhow::ensure!(
        log.contains("the SSF stream could not be configured")
            && log.contains("stream.authorization_file"),
        "{log}"
    );
    assert!(s.transmitter.streams().is_empty());
    assert!(
        s.count("unauthorized GET /ssf/stream") >= 1,
        "{:?}",
        s.transmitter.operations()
    );
    assert_eq!(s.messages().await?, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_management_token_rewritten_by_a_refresher_is_used_for_management_and_polling()
-> anyhow::Result<()> {
    let s = setup().await?;
    let mut stream = StreamOptions::poll();
    // Resyncs often, so management requests follow the rotation.
    stream.resync_interval = std::time::Duration::from_secs(1);
    let mut options = s.options(stream);
    options.push_authorization = None;
    let receiver = s.receiver(&options).await?;
    let id = stream_id(&s.one_stream().await?);
    metric(
        &receiver,
        r#"denylist_receiver_stream_verified{provider="idp"} 1"#,
    )
    .await?;

    // The short-lived token expires: the refresher writes a new one, the old one is refused.
    receiver.write_management_authorization("Bearer rotated-token")?;
    s.transmitter
        .rotate_management_authorization("Bearer rotated-token");
    let rotated_at = s.transmitter.operations().len();

    // Polling (same credential, SSF 1.0 §7.1.1) goes on: a SET over the stream is enforced
    // and acknowledged.
    let earlier = s
        .fleet
        .issuer
        .token()
        .sub("eve")
        .iat(now_secs() - 30)
        .mint();
    let jti = unique("set");
    s.transmitter
        .transmit(
            &id,
            &s.transmitter.set_claims(
                &jti,
                ACCOUNT_DISABLED,
                json!({"format": "iss_sub", "iss": ISSUER, "sub": "eve"}),
                json!({}),
            ),
        )
        .await?;
    expect_reason(
        &s.fleet.sidecars,
        &earlier,
        Reason::Revoked,
        PROPAGATION_TIMEOUT,
    )
    .await?;
    s.transmitter.wait_acked(&jti, PROPAGATION_TIMEOUT).await?;
    // And so does management: the resync lists the streams with the new token.
    wait_for(STREAM_TIMEOUT, "a list with the new token", || async {
        let operations = s.transmitter.operations();
        if operations[rotated_at..].iter().any(|o| o == "list") {
            Ok(())
        } else {
            Err(format!("{:?}", &operations[rotated_at..]))
        }
    })
    .await?;
    assert_eq!(s.transmitter.streams().len(), 1);
    Ok(())
}
