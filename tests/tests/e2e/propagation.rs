//! Each rule kind, published once, reaches every sidecar of a fleet of three: the
//! matching token is `REASON_REVOKED` everywhere, and tokens the rule does not match
//! stay `REASON_OK`. Then `lift`, and expiry pruning.

use std::time::Duration;

use denylist_proto::events::RuleKind;
use denylist_proto::pb::{self, Reason};
use denylist_sidecar::denylist::EXPIRY_GRACE_SECS;
use denylist_tests::events::{self, with_cutoff, with_expiry};
use denylist_tests::tokens::{ISSUER, OTHER_ISSUER, SECOND_KID};
use denylist_tests::{Fleet, now_secs, unique, wait_for};

const SIDECARS: usize = 3;

#[tokio::test(flavor = "multi_thread")]
async fn a_jti_revocation_reaches_every_sidecar() -> anyhow::Result<()> {
    let fleet = Fleet::start(SIDECARS).await?;
    let jti = unique("stolen");
    let revoked = fleet.issuer.token().jti(&jti).mint();
    let other = fleet.issuer.token().mint();
    // The same jti from another issuer is another token: rules are scoped by issuer.
    let same_jti_other_issuer = fleet.other_issuer.token().jti(&jti).mint();
    fleet.expect_everywhere(&revoked, Reason::Ok).await?;

    let event = events::revoke(RuleKind::Jti, ISSUER, &[&jti]);
    let sequence = fleet.publish(&event).await?;

    fleet.expect_everywhere(&revoked, Reason::Revoked).await?;
    fleet.expect_everywhere(&other, Reason::Ok).await?;
    fleet
        .expect_everywhere(&same_jti_other_issuer, Reason::Ok)
        .await?;
    for sidecar in &fleet.sidecars {
        let answer = sidecar.verify(&revoked).await?;
        assert!(!answer.valid);
        assert!(
            answer.denylist_sequence >= sequence,
            "{}: sequence {}",
            sidecar.name(),
            answer.denylist_sequence
        );
        let rule = answer.revocation.expect("a revoked answer names its rule");
        assert_eq!(rule.kind, pb::RuleKind::Jti as i32);
        assert_eq!(rule.event_id, event.event_id);
        assert_eq!(rule.issuer, ISSUER);
        assert_eq!(rule.target, jti);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_subject_revocation_cuts_off_tokens_issued_up_to_its_cutoff() -> anyhow::Result<()> {
    let fleet = Fleet::start(SIDECARS).await?;
    let now = now_secs();
    let cutoff = now - 60;
    let alice = unique("alice");
    let before = fleet.issuer.token().sub(&alice).iat(now - 120).mint();
    let at_cutoff = fleet.issuer.token().sub(&alice).iat(cutoff).mint();
    let after = fleet.issuer.token().sub(&alice).iat(now - 10).mint();
    // No `iat`: it cannot prove it was issued after the cut-off, so it fails safe.
    let without_iat = fleet.issuer.token().sub(&alice).without("iat").mint();
    let bob = fleet
        .issuer
        .token()
        .sub(&unique("bob"))
        .iat(now - 120)
        .mint();
    fleet.expect_everywhere(&before, Reason::Ok).await?;

    let event = with_cutoff(events::revoke(RuleKind::Subject, ISSUER, &[&alice]), cutoff);
    fleet.publish(&event).await?;

    fleet.expect_everywhere(&before, Reason::Revoked).await?;
    fleet.expect_everywhere(&at_cutoff, Reason::Revoked).await?;
    fleet
        .expect_everywhere(&without_iat, Reason::Revoked)
        .await?;
    fleet.expect_everywhere(&after, Reason::Ok).await?;
    fleet.expect_everywhere(&bob, Reason::Ok).await?;
    let rule = fleet.sidecars[0]
        .verify(&before)
        .await?
        .revocation
        .expect("rule");
    assert_eq!(rule.kind, pb::RuleKind::Subject as i32);
    assert_eq!(rule.cutoff, cutoff);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_revocation_reaches_every_sidecar() -> anyhow::Result<()> {
    let fleet = Fleet::start(SIDECARS).await?;
    let sid = unique("session");
    let in_session = fleet.issuer.token().sid(&sid).mint();
    let same_session_again = fleet.issuer.token().sid(&sid).sub("someone-else").mint();
    let other_session = fleet.issuer.token().sid(&unique("session")).mint();
    let no_session = fleet.issuer.token().mint();
    fleet.expect_everywhere(&in_session, Reason::Ok).await?;

    fleet
        .publish(&events::revoke(RuleKind::Session, ISSUER, &[&sid]))
        .await?;

    fleet
        .expect_everywhere(&in_session, Reason::Revoked)
        .await?;
    fleet
        .expect_everywhere(&same_session_again, Reason::Revoked)
        .await?;
    fleet.expect_everywhere(&other_session, Reason::Ok).await?;
    fleet.expect_everywhere(&no_session, Reason::Ok).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_revocation_rejects_every_token_signed_with_that_key() -> anyhow::Result<()> {
    let fleet = Fleet::start(SIDECARS).await?;
    let with_k2 = fleet.issuer.token().kid(SECOND_KID).mint();
    let with_k1 = fleet.issuer.token().mint();
    let other_issuer_k2 = fleet.other_issuer.token().kid(SECOND_KID).mint();
    fleet.expect_everywhere(&with_k2, Reason::Ok).await?;

    fleet
        .publish(&events::revoke(RuleKind::Key, ISSUER, &[SECOND_KID]))
        .await?;

    fleet.expect_everywhere(&with_k2, Reason::Revoked).await?;
    // Minted after the revocation: a key rule has no cut-off.
    let fresh_k2 = fleet
        .issuer
        .token()
        .kid(SECOND_KID)
        .iat(now_secs() + 1)
        .mint();
    fleet.expect_everywhere(&fresh_k2, Reason::Revoked).await?;
    fleet.expect_everywhere(&with_k1, Reason::Ok).await?;
    fleet
        .expect_everywhere(&other_issuer_k2, Reason::Ok)
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_issuer_revocation_logs_out_everyone_of_that_issuer_only() -> anyhow::Result<()> {
    let fleet = Fleet::start(SIDECARS).await?;
    let now = now_secs();
    let cutoff = now - 60;
    let old = fleet
        .other_issuer
        .token()
        .sub(&unique("u"))
        .iat(now - 120)
        .mint();
    let old_too = fleet
        .other_issuer
        .token()
        .sub(&unique("u"))
        .iat(now - 3000)
        .mint();
    let fresh = fleet.other_issuer.token().iat(now - 10).mint();
    let first_issuer_old = fleet.issuer.token().iat(now - 120).mint();
    fleet.expect_everywhere(&old, Reason::Ok).await?;

    let event = with_cutoff(events::revoke(RuleKind::Issuer, OTHER_ISSUER, &[]), cutoff);
    fleet.publish(&event).await?;

    fleet.expect_everywhere(&old, Reason::Revoked).await?;
    fleet.expect_everywhere(&old_too, Reason::Revoked).await?;
    fleet.expect_everywhere(&fresh, Reason::Ok).await?;
    fleet
        .expect_everywhere(&first_issuer_old, Reason::Ok)
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lift_restores_the_tokens_everywhere() -> anyhow::Result<()> {
    let fleet = Fleet::start(SIDECARS).await?;
    let jti = unique("mistake");
    let token = fleet.issuer.token().jti(&jti).mint();
    let sub = unique("carol");
    let carol = fleet.issuer.token().sub(&sub).iat(now_secs() - 60).mint();
    let by_jti = events::revoke(RuleKind::Jti, ISSUER, &[&jti]);
    let by_subject = events::revoke(RuleKind::Subject, ISSUER, &[&sub]);
    fleet.publish(&by_jti).await?;
    fleet.publish(&by_subject).await?;
    fleet.expect_everywhere(&token, Reason::Revoked).await?;
    fleet.expect_everywhere(&carol, Reason::Revoked).await?;

    // One lift withdraws both events.
    fleet
        .publish(&events::lift(&[&by_jti.event_id, &by_subject.event_id]))
        .await?;

    fleet.expect_everywhere(&token, Reason::Ok).await?;
    fleet.expect_everywhere(&carol, Reason::Ok).await?;
    // Lifting an unknown event id does nothing (and breaks nothing).
    let marker_jti = unique("marker");
    let marker = fleet.issuer.token().jti(&marker_jti).mint();
    fleet.publish(&events::lift(&["no-such-event"])).await?;
    fleet
        .publish(&events::revoke(RuleKind::Jti, ISSUER, &[&marker_jti]))
        .await?;
    fleet.expect_everywhere(&marker, Reason::Revoked).await?;
    fleet.expect_everywhere(&token, Reason::Ok).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_rule_is_pruned_and_stops_matching() -> anyhow::Result<()> {
    // The harness prunes every second, so an expiry is acted on quickly.
    let fleet = Fleet::start(SIDECARS).await?;
    let mut baseline = Vec::new();
    for sidecar in &fleet.sidecars {
        baseline.push(sidecar.status().await?.entries);
    }
    // Sidecars keep a rule EXPIRY_GRACE_SECS beyond its `expires_at` (verification
    // leeway, publishers' clock skew), so "expiring in a few seconds" means an
    // `expires_at` that far in the past. The token itself lives for an hour: the
    // publisher chose to let the rule go early, so the token is valid again after.
    let jti = unique("short-lived");
    let token = fleet.issuer.token().jti(&jti).mint();
    let dropped_at = now_secs() + 5;
    fleet
        .publish(&with_expiry(
            events::revoke(RuleKind::Jti, ISSUER, &[&jti]),
            dropped_at - EXPIRY_GRACE_SECS,
        ))
        .await?;
    fleet.expect_everywhere(&token, Reason::Revoked).await?;

    for (sidecar, before) in fleet.sidecars.iter().zip(&baseline) {
        wait_for(
            Duration::from_secs(20),
            format_args!("sidecar {} to prune the expired rule", sidecar.name()),
            || async {
                let status = sidecar.status().await.map_err(|e| e.to_string())?;
                let reason = sidecar.reason(&token).await.map_err(|e| e.to_string())?;
                if status.entries == *before && reason == Reason::Ok {
                    Ok(())
                } else {
                    Err(format!(
                        "entries {} (baseline {before}), token {}",
                        status.entries,
                        reason.as_str_name()
                    ))
                }
            },
        )
        .await?;
    }
    assert!(
        now_secs() >= dropped_at,
        "the rule stopped matching before its time"
    );

    // An event that arrives already past its expiry (and the grace) adds nothing.
    let late_jti = unique("too-late");
    let late = fleet.issuer.token().jti(&late_jti).mint();
    fleet
        .publish(&with_expiry(
            events::revoke(RuleKind::Jti, ISSUER, &[&late_jti]),
            now_secs() - EXPIRY_GRACE_SECS - 60,
        ))
        .await?;
    let marker_jti = unique("marker");
    let marker = fleet.issuer.token().jti(&marker_jti).mint();
    fleet
        .publish(&events::revoke(RuleKind::Jti, ISSUER, &[&marker_jti]))
        .await?;
    fleet.expect_everywhere(&marker, Reason::Revoked).await?;
    fleet.expect_everywhere(&late, Reason::Ok).await?;
    for (sidecar, before) in fleet.sidecars.iter().zip(&baseline) {
        assert_eq!(
            sidecar.status().await?.entries,
            before + 1,
            "{}: only the marker is live",
            sidecar.name()
        );
    }
    Ok(())
}
