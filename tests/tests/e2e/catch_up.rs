//! No revocation is ever lost: a sidecar restarted mid-stream catches up; revocations
//! published while a sidecar is cut off (its NATS server restarted, or its connection
//! broken while the server stays up) are all applied once it is back.

use std::time::Duration;

use denylist_proto::events::{Event, RuleKind};
use denylist_proto::pb::Reason;
use denylist_tests::events::{self, wait_stream_reachable};
use denylist_tests::tokens::ISSUER;
use denylist_tests::{
    Fleet, Issuer, READY_TIMEOUT, Sidecar, TcpProxy, expect_all_tokens, expect_sequence, unique,
};

/// How long a sidecar may take to apply a backlog of a few hundred events.
const CATCH_UP: Duration = Duration::from_secs(30);

/// `count` tokens and one jti revocation event for each.
fn revocations(issuer: &Issuer, count: usize) -> (Vec<String>, Vec<Event>) {
    (0..count)
        .map(|_| {
            let jti = unique("bulk");
            let token = issuer.token().jti(&jti).mint();
            (token, events::revoke(RuleKind::Jti, ISSUER, &[&jti]))
        })
        .unzip()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sidecar_restarted_mid_stream_catches_up() -> anyhow::Result<()> {
    let mut fleet = Fleet::start(2).await?;
    let (early_tokens, early) = revocations(&fleet.issuer, 100);
    fleet.publisher.publish_all(&early).await?;
    let (_, last) = fleet.stream_state().await?;
    expect_sequence(&fleet.sidecars, last, CATCH_UP).await?;

    fleet.sidecars[1].kill();
    let (late_tokens, late) = revocations(&fleet.issuer, 500);
    fleet.publisher.publish_all(&late).await?;
    let (messages, last) = fleet.stream_state().await?;
    assert_eq!(messages, 600);

    fleet.sidecars[1].start_again()?;
    let status = fleet.sidecars[1].wait_ready(READY_TIMEOUT).await?;
    // Ready means caught up with the last sequence seen at start: nothing to wait for.
    assert_eq!(status.denylist_sequence, last, "ready before catching up");
    let all: Vec<String> = early_tokens.into_iter().chain(late_tokens).collect();
    for sidecar in &fleet.sidecars {
        expect_all_tokens(sidecar, &all, Reason::Revoked, CATCH_UP).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn revocations_around_a_nats_restart_are_all_applied() -> anyhow::Result<()> {
    let mut fleet = Fleet::start(2).await?;
    let (before_tokens, before) = revocations(&fleet.issuer, 200);
    fleet.publisher.publish_all(&before).await?;
    let (_, last) = fleet.stream_state().await?;
    expect_sequence(&fleet.sidecars, last, CATCH_UP).await?;

    // The server goes away under the running sidecars and comes back (same port, same
    // store); revocations are published as soon as it is back, whether or not the
    // sidecars have reconnected yet.
    fleet.nats.restart().await?;
    wait_stream_reachable(&fleet.client, denylist_proto::subjects::DEFAULT_STREAM).await?;
    let (after_tokens, after) = revocations(&fleet.issuer, 500);
    fleet.publisher.publish_all(&after).await?;
    let (messages, last) = fleet.stream_state().await?;
    assert_eq!(messages, 700);

    expect_sequence(&fleet.sidecars, last, CATCH_UP).await?;
    let all: Vec<String> = before_tokens.into_iter().chain(after_tokens).collect();
    for sidecar in &fleet.sidecars {
        expect_all_tokens(sidecar, &all, Reason::Revoked, CATCH_UP).await?;
        assert!(
            sidecar.status().await?.ready,
            "{} is not ready after the restart",
            sidecar.name()
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn revocations_published_while_a_sidecar_is_cut_off_are_all_applied() -> anyhow::Result<()> {
    let fleet = Fleet::start(1).await?;
    // A second sidecar reaches NATS only through a proxy the test can cut.
    let proxy = TcpProxy::for_url(&fleet.nats.url()).await?;
    let mut options = fleet.sidecar_options("cut-off");
    options.nats_servers = vec![proxy.nats_url()];
    let cut_off = Sidecar::start_ready(options).await?;

    let (first_tokens, first) = revocations(&fleet.issuer, 50);
    fleet.publisher.publish_all(&first).await?;
    let (_, before_cut) = fleet.stream_state().await?;
    expect_sequence([&fleet.sidecars[0], &cut_off], before_cut, CATCH_UP).await?;

    proxy.cut();
    let (missed_tokens, missed) = revocations(&fleet.issuer, 500);
    fleet.publisher.publish_all(&missed).await?;
    let (_, last) = fleet.stream_state().await?;
    // The connected sidecar follows; the cut-off one cannot have seen any of it.
    expect_sequence(&fleet.sidecars, last, CATCH_UP).await?;
    let behind = cut_off.status().await?.denylist_sequence;
    assert!(
        behind < last,
        "the cut-off sidecar is at {behind} although it was cut off before {last}"
    );

    proxy.restore();
    expect_sequence([&cut_off], last, CATCH_UP).await?;
    let all: Vec<String> = first_tokens.into_iter().chain(missed_tokens).collect();
    expect_all_tokens(&cut_off, &all, Reason::Revoked, CATCH_UP).await?;
    assert_eq!(cut_off.status().await?.denylist_sequence, last);
    Ok(())
}
