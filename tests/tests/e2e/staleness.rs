//! Staleness: with NATS gone for longer than `max_staleness`, a `fail_closed` sidecar
//! answers `REASON_DENYLIST_STALE` and a `fail_open` one answers as usual but flagged
//! `stale`; both recover once NATS is back.

use std::time::Duration;

use denylist_proto::events::RuleKind;
use denylist_proto::pb::Reason;
use denylist_tests::events;
use denylist_tests::tokens::ISSUER;
use denylist_tests::{Fleet, StalenessPolicy, unique, wait_for};

const MAX_STALENESS: Duration = Duration::from_secs(1);
/// Time to notice: `max_staleness` plus heartbeats, with a generous margin.
const NOTICE: Duration = Duration::from_secs(15);
/// Time to recover: the sidecar's reconnect back-off plus catch-up.
const RECOVER: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread")]
async fn fail_closed_rejects_everything_as_stale_while_nats_is_gone() -> anyhow::Result<()> {
    let mut fleet = Fleet::start_with(1, |o| {
        o.max_staleness = MAX_STALENESS;
        o.staleness_policy = StalenessPolicy::FailClosed;
    })
    .await?;
    let token = fleet.issuer.token().mint();
    fleet.expect_everywhere(&token, Reason::Ok).await?;

    fleet.nats.stop();
    let sidecar = &fleet.sidecars[0];
    let answer = wait_for(NOTICE, "a DENYLIST_STALE answer", || async {
        match sidecar.verify(&token).await {
            Ok(a) if a.reason == Reason::DenylistStale as i32 => Ok(a),
            Ok(a) => Err(format!("reason {} age {} ms", a.reason, a.denylist_age_ms)),
            Err(e) => Err(format!("gRPC {}", e.code())),
        }
    })
    .await?;
    assert!(!answer.valid);
    assert!(answer.stale);
    assert!(
        answer.denylist_age_ms >= 1000,
        "stale at age {} ms",
        answer.denylist_age_ms
    );
    let status = sidecar.status().await?;
    assert!(status.stale, "Status must show the staleness");

    fleet.nats.start_again().await?;
    wait_for(RECOVER, "a fresh answer once NATS is back", || async {
        match sidecar.verify(&token).await {
            Ok(a) if a.reason == Reason::Ok as i32 && !a.stale => Ok(()),
            Ok(a) => Err(format!(
                "reason {} stale {} age {} ms",
                a.reason, a.stale, a.denylist_age_ms
            )),
            Err(e) => Err(format!("gRPC {}", e.code())),
        }
    })
    .await?;
    // And it follows the stream again.
    let jti = unique("after-outage");
    let revoked = fleet.issuer.token().jti(&jti).mint();
    fleet
        .publish(&events::revoke(RuleKind::Jti, ISSUER, &[&jti]))
        .await?;
    fleet.expect_everywhere(&revoked, Reason::Revoked).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn fail_open_answers_as_usual_but_flagged_while_nats_is_gone() -> anyhow::Result<()> {
    let mut fleet = Fleet::start_with(1, |o| {
        o.max_staleness = MAX_STALENESS;
        o.staleness_policy = StalenessPolicy::FailOpen;
    })
    .await?;
    let token = fleet.issuer.token().mint();
    let jti = unique("revoked-before");
    let revoked = fleet.issuer.token().jti(&jti).mint();
    fleet
        .publish(&events::revoke(RuleKind::Jti, ISSUER, &[&jti]))
        .await?;
    fleet.expect_everywhere(&revoked, Reason::Revoked).await?;

    fleet.nats.stop();
    let sidecar = &fleet.sidecars[0];
    let answer = wait_for(NOTICE, "a stale-flagged answer", || async {
        match sidecar.verify(&token).await {
            Ok(a) if a.stale => Ok(a),
            Ok(a) => Err(format!(
                "reason {} stale {} age {} ms",
                a.reason, a.stale, a.denylist_age_ms
            )),
            Err(e) => Err(format!("gRPC {}", e.code())),
        }
    })
    .await?;
    assert_eq!(
        answer.reason,
        Reason::Ok as i32,
        "fail_open answers as usual"
    );
    assert!(answer.valid);
    // What it knows it still enforces.
    let answer = sidecar.verify(&revoked).await?;
    assert_eq!(answer.reason, Reason::Revoked as i32);
    assert!(answer.stale);
    assert!(sidecar.status().await?.stale);

    fleet.nats.start_again().await?;
    wait_for(RECOVER, "an unflagged answer once NATS is back", || async {
        match sidecar.verify(&token).await {
            Ok(a) if a.reason == Reason::Ok as i32 && !a.stale => Ok(()),
            Ok(a) => Err(format!(
                "reason {} stale {} age {} ms",
                a.reason, a.stale, a.denylist_age_ms
            )),
            Err(e) => Err(format!("gRPC {}", e.code())),
        }
    })
    .await?;
    assert!(!sidecar.status().await?.stale);
    Ok(())
}
