//! `Verifier/Watch`: a caller holding a long-lived connection subscribes for its token
//! (or an issuer + subject / session) and is told when a matching revocation is applied.

use denylist_proto::events::RuleKind;
use denylist_proto::pb;
use denylist_tests::events;
use denylist_tests::tokens::ISSUER;
use denylist_tests::{Fleet, PROPAGATION_TIMEOUT, unique, within_for};

#[tokio::test(flavor = "multi_thread")]
async fn watching_a_token_yields_a_notice_when_it_is_revoked() -> anyhow::Result<()> {
    let fleet = Fleet::start(1).await?;
    let sidecar = &fleet.sidecars[0];
    let jti = unique("watched");
    let sub = unique("dave");
    let token = fleet.issuer.token().jti(&jti).sub(&sub).mint();
    let mut notices = sidecar
        .watch(pb::WatchRequest {
            token: token.clone(),
            ..Default::default()
        })
        .await?;

    // A revocation that does not match comes first: the first notice must be ours.
    fleet
        .publish(&events::revoke(
            RuleKind::Jti,
            ISSUER,
            &[&unique("someone-else")],
        ))
        .await?;
    let event = events::revoke(RuleKind::Jti, ISSUER, &[&jti]);
    let sequence = fleet.publish(&event).await?;

    let notice = within_for(
        PROPAGATION_TIMEOUT,
        "a revocation notice",
        notices.message(),
    )
    .await??
    .ok_or_else(|| anyhow::anyhow!("the Watch stream ended without a notice"))?;
    let rule = notice.revocation.expect("a notice names its rule");
    assert_eq!(rule.event_id, event.event_id);
    assert_eq!(rule.kind, pb::RuleKind::Jti as i32);
    assert_eq!(notice.denylist_sequence, sequence);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn watching_a_subject_yields_a_notice_for_a_subject_revocation() -> anyhow::Result<()> {
    let fleet = Fleet::start(1).await?;
    let sidecar = &fleet.sidecars[0];
    let sub = unique("erin");
    let mut notices = sidecar
        .watch(pb::WatchRequest {
            issuer: ISSUER.to_owned(),
            subject: sub.clone(),
            ..Default::default()
        })
        .await?;
    let event = events::revoke(RuleKind::Subject, ISSUER, &[&sub]);
    fleet.publish(&event).await?;
    let notice = within_for(
        PROPAGATION_TIMEOUT,
        "a revocation notice",
        notices.message(),
    )
    .await??
    .ok_or_else(|| anyhow::anyhow!("the Watch stream ended without a notice"))?;
    let rule = notice.revocation.expect("a notice names its rule");
    assert_eq!(rule.event_id, event.event_id);
    assert_eq!(rule.kind, pb::RuleKind::Subject as i32);
    assert_eq!(rule.target, sub);
    Ok(())
}
