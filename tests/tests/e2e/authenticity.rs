//! Only events signed by a trusted publisher key are applied, each at most once:
//! garbage, unsigned, wrongly keyed, tampered and replayed messages on the stream are
//! skipped (and the sidecar keeps following).
//!
//! "Never applied" is proved without waiting out a window: after the bad messages a
//! valid marker event is published; sidecars apply the stream in order, so once the
//! marker is applied every bad message before it has been processed, and the token the
//! bad ones target must still be valid.

use bytes::Bytes;
use denylist_proto::envelope::SigningKey;
use denylist_proto::events::{Action, Event, RuleKind};
use denylist_proto::pb::{self, Reason};
use denylist_proto::subjects;
use denylist_tests::events;
use denylist_tests::tokens::ISSUER;
use denylist_tests::{Fleet, unique};
use prost::Message as _;

/// Publishes a valid revocation of a fresh token and waits until every sidecar has
/// applied it: everything published before it has then been processed.
async fn publish_marker(fleet: &Fleet) -> anyhow::Result<u64> {
    let jti = unique("marker");
    let marker = fleet.issuer.token().jti(&jti).mint();
    let sequence = fleet
        .publish(&events::revoke(RuleKind::Jti, ISSUER, &[&jti]))
        .await?;
    fleet.expect_everywhere(&marker, Reason::Revoked).await?;
    Ok(sequence)
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_unsigned_and_wrongly_keyed_events_are_never_applied() -> anyhow::Result<()> {
    let fleet = Fleet::start(2).await?;
    let jti = unique("target");
    let target = fleet.issuer.token().jti(&jti).mint();
    fleet.expect_everywhere(&target, Reason::Ok).await?;

    let wanted = events::revoke(RuleKind::Jti, ISSUER, &[&jti]);
    let trusted = fleet.publisher.key();
    let (untrusted, _) = SigningKey::generate()?;
    let envelope = |signed: pb::SignedEvent| Bytes::from(signed.encode_to_vec());

    let mut bad: Vec<(&str, Bytes)> = vec![
        (
            "garbage",
            Bytes::from_static(b"\x00\xffnot a protobuf at all\xff"),
        ),
        ("empty", Bytes::new()),
        (
            "unsigned",
            envelope(pb::SignedEvent {
                event: wanted.to_proto().encode_to_vec(),
                key_id: trusted.key_id().to_owned(),
                signature: Vec::new(),
            }),
        ),
        (
            "signed by an untrusted key",
            envelope(untrusted.sign(&wanted)),
        ),
        ("untrusted key posing as the trusted key id", {
            let mut signed = untrusted.sign(&wanted);
            signed.key_id = trusted.key_id().to_owned();
            envelope(signed)
        }),
        ("tampered after signing", {
            // A genuine signature over a harmless event, with the event bytes swapped.
            let harmless = events::revoke(RuleKind::Jti, ISSUER, &[&unique("harmless")]);
            let mut signed = trusted.sign(&harmless);
            signed.event = wanted.to_proto().encode_to_vec();
            envelope(signed)
        }),
        (
            "a bare, unwrapped RevocationEvent",
            Bytes::from(wanted.to_proto().encode_to_vec()),
        ),
    ];
    // Correctly signed by the trusted key, but not a valid event (no targets): logged and
    // skipped, never applied, and the follower must not choke on it.
    let mut invalid = wanted.clone();
    if let Action::Revoke(r) = &mut invalid.action {
        r.targets.clear();
    }
    bad.push(("signed but invalid", envelope(trusted.sign(&invalid))));

    let (_, before) = fleet.stream_state().await?;
    for (what, payload) in &bad {
        fleet
            .publisher
            .publish_raw(
                &subjects::event_subject("jti"),
                Some(&unique("bad")),
                payload.clone(),
            )
            .await
            .map_err(|e| e.context(format!("publishing the {what} message")))?;
    }
    let (_, after) = fleet.stream_state().await?;
    assert_eq!(
        after - before,
        bad.len() as u64,
        "JetStream stores every message; sidecars must filter"
    );

    let marker_sequence = publish_marker(&fleet).await?;
    fleet
        .expect_everywhere(&target, Reason::Ok)
        .await
        .map_err(|e| {
            e.context("a garbage, unsigned, untrusted, tampered or invalid event was applied")
        })?;
    for sidecar in &fleet.sidecars {
        let status = sidecar.status().await?;
        assert!(
            status.ready,
            "{} stopped being ready after bad events",
            sidecar.name()
        );
        assert!(status.denylist_sequence >= marker_sequence);
        assert!(
            sidecar.exited().is_none(),
            "{} crashed on a bad event",
            sidecar.name()
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replayed_event_is_not_applied_again_after_its_lift() -> anyhow::Result<()> {
    let fleet = Fleet::start(2).await?;
    let jti = unique("replayed");
    let token = fleet.issuer.token().jti(&jti).mint();
    let original: Event = events::revoke(RuleKind::Jti, ISSUER, &[&jti]);
    let original_bytes = fleet.publisher.envelope(&original);

    fleet.publish(&original).await?;
    fleet.expect_everywhere(&token, Reason::Revoked).await?;
    fleet.publish(&events::lift(&[&original.event_id])).await?;
    fleet.expect_everywhere(&token, Reason::Ok).await?;

    // An attacker (or a confused operator) re-publishes the exact signed bytes under a
    // new Nats-Msg-Id, so JetStream's duplicate window does not catch it. The event id
    // inside is the same: it was applied once and lifted, and must stay lifted.
    fleet
        .publisher
        .publish_raw(
            &subjects::subject_for(&original),
            Some(&unique("replay")),
            original_bytes.clone(),
        )
        .await?;
    // And once more with its own id as Nats-Msg-Id, long after (from JetStream's view
    // it is within the window, so it is dropped there; either way it must not apply).
    fleet
        .publisher
        .publish_raw(
            &subjects::subject_for(&original),
            Some(&original.event_id),
            original_bytes,
        )
        .await?;

    publish_marker(&fleet).await?;
    fleet
        .expect_everywhere(&token, Reason::Ok)
        .await
        .map_err(|e| e.context("a replayed event was applied again after its lift"))?;
    Ok(())
}
