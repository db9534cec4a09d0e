//! Least privilege: a publisher key trusted only for some rule kinds of some issuers
//! (`[[nats.trusted_publisher]]`, the identity-provider receiver's kind of key) gets
//! exactly that. Its revocations inside the scope apply; outside it — another kind,
//! another issuer, a lift, a heartbeat — they are refused and counted on every sidecar,
//! and the sidecars keep following the stream.
//!
//! A heartbeat key (`heartbeats_only`, the heartbeat component's) is heard, and revokes
//! nothing.
//!
//! "Never applied" is proved as in `authenticity.rs`: a valid event published after
//! the refused ones is applied everywhere, and sidecars apply the stream in order.

use denylist_proto::envelope::SigningKey;
use denylist_proto::events::RuleKind;
use denylist_proto::pb::Reason;
use denylist_proto::subjects;
use denylist_tests::events::{self, EventPublisher};
use denylist_tests::heartbeat::{
    HeartbeatKey, HeartbeatProcess, metrics, sample, signed_heartbeat,
};
use denylist_tests::sidecar::ScopedPublisher;
use denylist_tests::tokens::{ISSUER, OTHER_ISSUER, SECOND_KID, now_ms};
use denylist_tests::{Fleet, PROPAGATION_TIMEOUT, unique, wait_for};

#[tokio::test(flavor = "multi_thread")]
async fn a_scoped_key_revokes_only_within_its_scope() -> anyhow::Result<()> {
    // Key A (the fleet's publisher) is trusted unscoped; key B only for `session` and
    // `subject` rules of ISSUER.
    let (receiver_key, _) = SigningKey::generate()?;
    let receiver_public = receiver_key.public_key();
    let fleet = Fleet::start_with(3, |o| {
        o.admin = true;
        o.scoped_publishers.push(ScopedPublisher {
            key: receiver_public.clone(),
            kinds: vec!["session".into(), "subject".into()],
            issuers: vec![ISSUER.into()],
            heartbeats_only: false,
        });
    })
    .await?;
    let receiver = EventPublisher::with_key(fleet.client.clone(), receiver_key);

    // In scope: B ends a session of ISSUER.
    let sid = unique("sid");
    let session_token = fleet.issuer.token().sid(&sid).mint();
    let bystander = fleet.issuer.token().sid(&unique("sid")).mint();
    let session = events::revoke(RuleKind::Session, ISSUER, &[&sid]);
    receiver.publish(&session).await?;
    fleet
        .expect_everywhere(&session_token, Reason::Revoked)
        .await?;
    fleet.expect_everywhere(&bystander, Reason::Ok).await?;

    // Out of scope: each would revoke one of these tokens if it were applied.
    let jti = unique("jti");
    let jti_token = fleet.issuer.token().jti(&jti).mint();
    let second_key_token = fleet.issuer.token().kid(SECOND_KID).mint();
    let other_sid = unique("sid");
    let other_issuer_token = fleet.other_issuer.token().sid(&other_sid).mint();
    let refused = [
        events::revoke(RuleKind::Jti, ISSUER, &[&jti]),
        events::revoke(RuleKind::Key, ISSUER, &[SECOND_KID]),
        events::revoke(RuleKind::Issuer, ISSUER, &[]),
        events::revoke(RuleKind::Session, OTHER_ISSUER, &[&other_sid]),
        events::revoke(RuleKind::Subject, OTHER_ISSUER, &["user"]),
        // B may not lift, even its own revocation.
        events::lift(&[&session.event_id]),
    ];
    let mut refused_sequences = Vec::new();
    for event in &refused {
        refused_sequences.push(receiver.publish(event).await?);
    }
    // A heartbeat by B is refused too (it would vouch for the whole stream).
    let created = denylist_tests::heartbeat::stream_created(&fleet.client).await?;
    let (_, last) = fleet.stream_state().await?;
    fleet
        .client
        .publish(
            denylist_proto::envelope::HEARTBEAT_SUBJECT,
            signed_heartbeat(
                receiver.key(),
                subjects::DEFAULT_STREAM,
                created,
                last,
                now_ms(),
            ),
        )
        .await?;

    // Then B's next in-scope revocation still applies (nothing stalled), and A's too.
    let sub = unique("user");
    let subject_token = fleet.issuer.token().sub(&sub).mint();
    receiver
        .publish(&events::revoke(RuleKind::Subject, ISSUER, &[&sub]))
        .await?;
    fleet
        .expect_everywhere(&subject_token, Reason::Revoked)
        .await?;
    let marker_jti = unique("marker");
    let marker = fleet.issuer.token().jti(&marker_jti).mint();
    fleet
        .publish(&events::revoke(RuleKind::Jti, ISSUER, &[&marker_jti]))
        .await?;
    fleet.expect_everywhere(&marker, Reason::Revoked).await?;

    for (token, what) in [
        (&jti_token, "a jti revocation"),
        (&second_key_token, "a key revocation"),
        (&bystander, "an issuer revocation"),
        (&other_issuer_token, "a revocation for another issuer"),
    ] {
        fleet
            .expect_everywhere(token, Reason::Ok)
            .await
            .map_err(|e| e.context(format!("{what} by the scoped key was applied")))?;
    }
    fleet
        .expect_everywhere(&session_token, Reason::Revoked)
        .await
        .map_err(|e| e.context("the scoped key lifted a revocation"))?;

    let refused_count = refused.len() as f64;
    for sidecar in &fleet.sidecars {
        let admin = sidecar.admin_addr().expect("admin endpoint on");
        // Heartbeats are core NATS, not in the stream: wait for the refusal to be counted.
        let text = wait_for(
            PROPAGATION_TIMEOUT,
            format_args!("{} to refuse the scoped key's heartbeat", sidecar.name()),
            || async {
                let text = metrics(admin).await.map_err(|e| e.to_string())?;
                let untrusted = sample(
                    &text,
                    "denylist_heartbeats_rejected_total{reason=\"untrusted\"}",
                );
                if untrusted >= 1.0 {
                    Ok(text)
                } else {
                    Err(format!("{untrusted} untrusted heartbeats counted"))
                }
            },
        )
        .await?;
        assert_eq!(
            sample(&text, "denylist_events_out_of_scope_total"),
            refused_count,
            "{}: out-of-scope events counted",
            sidecar.name()
        );
        assert_eq!(
            sample(&text, "denylist_events_rejected_total"),
            refused_count,
            "{}: refused events counted as rejected",
            sidecar.name()
        );
        let status = sidecar.status().await?;
        assert!(status.ready, "{} is not ready", sidecar.name());
        assert!(sidecar.exited().is_none(), "{} exited", sidecar.name());
        // Each refusal is logged with its stream sequence.
        let log = sidecar.log();
        for seq in &refused_sequences {
            assert!(
                log.lines()
                    .any(|l| l.contains("outside the scope of key id")
                        && l.contains(&format!("seq={seq} "))),
                "{}: no refusal logged for sequence {seq}",
                sidecar.name()
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_heartbeat_key_is_heard_and_revokes_nothing() -> anyhow::Result<()> {
    let heartbeat_key = HeartbeatKey::generate()?;
    let fleet = Fleet::start_with(2, |o| {
        o.admin = true;
        o.scoped_publishers.push(ScopedPublisher {
            key: heartbeat_key.public_key(),
            kinds: Vec::new(),
            issuers: Vec::new(),
            heartbeats_only: true,
        });
    })
    .await?;
    let _heartbeats = HeartbeatProcess::start(
        &heartbeat_key,
        &fleet.nats.url(),
        std::time::Duration::from_millis(200),
    )?;
    for sidecar in &fleet.sidecars {
        let admin = sidecar.admin_addr().expect("admin endpoint on");
        wait_for(
            PROPAGATION_TIMEOUT,
            format_args!("{} to hear the heartbeat key", sidecar.name()),
            || async {
                let text = metrics(admin).await.map_err(|e| e.to_string())?;
                let heard = sample(&text, "denylist_heartbeats_total");
                let rejected = sample(&text, "denylist_heartbeats_rejected_total");
                if rejected > 0.0 {
                    Err(format!("{rejected} heartbeats rejected"))
                } else if heard >= 2.0 {
                    Ok(())
                } else {
                    Err(format!("{heard} heartbeats heard"))
                }
            },
        )
        .await?;
    }

    // Whatever it signs besides heartbeats is refused: a leaked heartbeat key can neither
    // revoke (here a whole issuer) nor lift.
    let leaked = EventPublisher::with_key(fleet.client.clone(), heartbeat_key.signing_key()?);
    let jti = unique("jti");
    let token = fleet.issuer.token().jti(&jti).mint();
    let revocation = events::revoke(RuleKind::Jti, ISSUER, &[&jti]);
    fleet.publish(&revocation).await?;
    fleet.expect_everywhere(&token, Reason::Revoked).await?;
    let bystander = fleet.issuer.token().mint();
    let refused = [
        events::revoke(RuleKind::Issuer, ISSUER, &[]),
        events::lift(&[&revocation.event_id]),
    ];
    for event in &refused {
        leaked.publish(event).await?;
    }
    let marker_jti = unique("marker");
    let marker = fleet.issuer.token().jti(&marker_jti).mint();
    fleet
        .publish(&events::revoke(RuleKind::Jti, ISSUER, &[&marker_jti]))
        .await?;
    fleet.expect_everywhere(&marker, Reason::Revoked).await?;
    fleet.expect_everywhere(&bystander, Reason::Ok).await?;
    fleet.expect_everywhere(&token, Reason::Revoked).await?;
    for sidecar in &fleet.sidecars {
        let text = metrics(sidecar.admin_addr().expect("admin endpoint on")).await?;
        assert_eq!(
            sample(&text, "denylist_events_out_of_scope_total"),
            refused.len() as f64,
            "{}: the heartbeat key's events counted out of scope",
            sidecar.name()
        );
    }
    Ok(())
}
