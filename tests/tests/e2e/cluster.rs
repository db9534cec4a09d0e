//! A 3-node JetStream cluster with an R3 stream loses a node while revocations are
//! being published: every sidecar still converges to the stream's full set.

use std::time::Duration;

use denylist_proto::events::{Event, RuleKind};
use denylist_proto::pb::Reason;
use denylist_proto::subjects;
use denylist_tests::events::{self, EventPublisher, StreamOptions, init_stream, stream_state};
use denylist_tests::tokens::{ISSUER, OTHER_ISSUER};
use denylist_tests::{
    Issuer, NatsCluster, READY_TIMEOUT, STEP, Sidecar, SidecarOptions, expect_all_tokens,
    expect_sequence, unique, wait_for,
};

/// Failover (a raft election, 4–9 s in nats-server) plus catch-up.
const CONVERGE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn every_sidecar_converges_when_a_node_dies_during_publishing() -> anyhow::Result<()> {
    let mut cluster = NatsCluster::start(3).await?;
    let client = cluster.connect().await?;
    init_stream(
        &client,
        &StreamOptions {
            replicas: 3,
            ..StreamOptions::default()
        },
    )
    .await?;
    let publisher = EventPublisher::new(client.clone());
    let issuer = Issuer::new(ISSUER);

    // Each sidecar lists every node, its "own" node first.
    let mut sidecars = Vec::new();
    for i in 0..3 {
        let mut urls = cluster.urls();
        urls.rotate_left(i);
        let options = SidecarOptions::new(
            &format!("s{i}"),
            urls,
            publisher.public_key(),
            vec![issuer.clone(), Issuer::new(OTHER_ISSUER)],
        );
        sidecars.push(Sidecar::start(options).await?);
    }
    for sidecar in &sidecars {
        sidecar.wait_ready(READY_TIMEOUT).await?;
    }

    let mut tokens = Vec::new();
    let mut batch = |n: usize| -> Vec<Event> {
        (0..n)
            .map(|_| {
                let jti = unique("r3");
                tokens.push(issuer.token().jti(&jti).mint());
                events::revoke(RuleKind::Jti, ISSUER, &[&jti])
            })
            .collect()
    };
    let first = batch(150);
    let second = batch(150);
    publisher.publish_all(&first).await?;

    // Kill the stream leader, then keep publishing through the failover: each event is
    // retried with the same Nats-Msg-Id until acknowledged, so it is stored once.
    let leader = wait_for(STEP, "a stream leader", || async {
        cluster
            .stream_leader(&client, subjects::DEFAULT_STREAM)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no leader yet"))
    })
    .await?;
    cluster.kill(leader);
    for event in &second {
        publisher.publish_with_retry(event, CONVERGE).await?;
    }
    let (messages, last) = wait_for(STEP, "the stream's state", || {
        stream_state(&client, subjects::DEFAULT_STREAM)
    })
    .await?;
    assert_eq!(
        (messages, last),
        (300, 300),
        "each event stored exactly once"
    );

    expect_sequence(&sidecars, last, CONVERGE).await?;
    for sidecar in &sidecars {
        expect_all_tokens(sidecar, &tokens, Reason::Revoked, CONVERGE).await?;
    }

    // The node comes back; the fleet keeps following.
    cluster.restart(leader).await?;
    let jti = unique("after-rejoin");
    let token = issuer.token().jti(&jti).mint();
    let sequence = publisher
        .publish_with_retry(&events::revoke(RuleKind::Jti, ISSUER, &[&jti]), CONVERGE)
        .await?;
    expect_sequence(&sidecars, sequence, CONVERGE).await?;
    for sidecar in &sidecars {
        expect_all_tokens(sidecar, std::slice::from_ref(&token), Reason::Revoked, STEP).await?;
    }
    Ok(())
}
