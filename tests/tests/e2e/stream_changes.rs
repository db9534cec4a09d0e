//! The stream changing under the sidecars: every event aged out of it, the stream
//! deleted and created again, and a live copy of an event that does not open. In each
//! case a revocation published afterwards must still be applied.

use std::time::Duration;

use async_nats::HeaderMap;
use denylist_proto::events::RuleKind;
use denylist_proto::pb::Reason;
use denylist_proto::subjects;
use denylist_tests::events;
use denylist_tests::tokens::ISSUER;
use denylist_tests::{
    EventPublisher, Fleet, NatsServer, READY_TIMEOUT, Sidecar, StreamOptions, expect_reason,
    expect_sequence, init_stream, stream_state, unique, wait_for,
};

/// How long a sidecar may take to notice and apply.
const APPLY: Duration = Duration::from_secs(30);

/// Revokes a fresh `jti` and returns the token it revokes.
async fn revoke_a_token(fleet: &Fleet) -> anyhow::Result<String> {
    let jti = unique("jti");
    let token = fleet.issuer.token().jti(&jti).mint();
    fleet
        .publish(&events::revoke(RuleKind::Jti, ISSUER, &[&jti]))
        .await?;
    Ok(token)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_sidecar_becomes_ready_when_every_event_has_aged_out() -> anyhow::Result<()> {
    // Not `Fleet::start`: this stream keeps events for one second only.
    let nats = NatsServer::start().await?;
    let client = nats.connect().await?;
    let mut config = events::stream_config(&StreamOptions {
        max_age: Duration::from_secs(1),
        ..StreamOptions::default()
    });
    // JetStream refuses a duplicate window longer than max_age.
    config.duplicate_window = Duration::from_secs(1);
    async_nats::jetstream::new(client.clone())
        .create_stream(config)
        .await?;
    let publisher = EventPublisher::new(client.clone());
    publisher
        .publish(&events::revoke(RuleKind::Jti, ISSUER, &[&unique("old")]))
        .await?;
    // JetStream removes it after max_age: the stream is then empty, its first
    // sequence past its last.
    wait_for(
        Duration::from_secs(30),
        "the only event to age out",
        || async {
            match stream_state(&client, subjects::DEFAULT_STREAM).await {
                Ok((0, 1)) => Ok(()),
                Ok((messages, last)) => Err(format!("{messages} messages, last {last}")),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await?;

    let issuer = denylist_tests::Issuer::new(ISSUER);
    let options = denylist_tests::SidecarOptions::new(
        "late",
        vec![nats.url()],
        publisher.public_key(),
        vec![issuer.clone()],
    );
    let sidecar = Sidecar::start(options).await?;
    let status = sidecar.wait_ready(READY_TIMEOUT).await?;
    assert_eq!(status.denylist_sequence, 1, "nothing left to replay");

    // And it follows what comes next.
    let jti = unique("new");
    let token = issuer.token().jti(&jti).mint();
    publisher
        .publish(&events::revoke(RuleKind::Jti, ISSUER, &[&jti]))
        .await?;
    expect_reason(
        std::slice::from_ref(&sidecar),
        &token,
        Reason::Revoked,
        APPLY,
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_recreated_stream_is_followed_from_its_start() -> anyhow::Result<()> {
    let fleet = Fleet::start(1).await?;
    let mut before = Vec::new();
    for _ in 0..3 {
        before.push(revoke_a_token(&fleet).await?);
    }
    expect_sequence(&fleet.sidecars, 3, APPLY).await?;

    // Lost storage, or a second `stream init` after a delete: sequences start over.
    let js = async_nats::jetstream::new(fleet.client.clone());
    js.delete_stream(subjects::DEFAULT_STREAM).await?;
    init_stream(&fleet.client, &StreamOptions::default()).await?;
    let after = revoke_a_token(&fleet).await?;
    assert_eq!(fleet.stream_state().await?, (1, 1));

    expect_reason(&fleet.sidecars, &after, Reason::Revoked, APPLY).await?;
    // What was applied from the old stream stays in force.
    for token in &before {
        assert_eq!(fleet.sidecars[0].reason(token).await?, Reason::Revoked);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_live_copy_that_does_not_open_does_not_use_up_its_sequence() -> anyhow::Result<()> {
    let fleet = Fleet::start(1).await?;
    revoke_a_token(&fleet).await?;
    expect_sequence(&fleet.sidecars, 1, APPLY).await?;

    // A message on the live subject claiming the next sequence, with nothing signed in
    // it (as a headers-only republish, or a stray publish, would deliver). It goes out
    // on the publisher's connection just before the real event, so it arrives first.
    let mut headers = HeaderMap::new();
    headers.insert(subjects::HEADER_SEQUENCE, "2");
    fleet
        .client
        .publish_with_headers("denylist.v1.live.forged", headers, "not an event".into())
        .await?;
    let token = revoke_a_token(&fleet).await?;

    expect_reason(&fleet.sidecars, &token, Reason::Revoked, APPLY).await?;
    expect_sequence(&fleet.sidecars, 2, APPLY).await?;
    Ok(())
}
