//! `Watch` through the real gRPC server: a long-lived stream that delivers a notice
//! when a revocation matching the watched token (or subject) is applied.

use denylist_proto::pb::{self, RuleKind};
use futures::StreamExt as _;

use crate::harness::{Issuer, START_SECS, SidecarBuilder, TestKey, within};

fn issuer() -> Issuer {
    Issuer::new("https://watch.example", "HS256", TestKey::hmac(Some("k1")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_token_is_notified_when_its_subject_is_revoked() {
    let iss = issuer();
    let sidecar = SidecarBuilder::new().issuer(&iss, "").start().await;
    let token = iss.token(&iss.claims(START_SECS));
    let mut client = sidecar.client();
    let mut notices = within(
        "Watch starts",
        client.watch(pb::WatchRequest {
            token: token.clone(),
            ..Default::default()
        }),
    )
    .await
    .expect("Watch accepts a valid token")
    .into_inner();

    // A revocation of someone else does not notify.
    sidecar.write_revocations(&[sidecar.revoke_event("other", "subject", &iss.iss, &["bob"])]);
    sidecar.wait_for_sequence(2).await;
    sidecar.write_revocations(&[
        sidecar.revoke_event("other", "subject", &iss.iss, &["bob"]),
        sidecar.revoke_event("takeover", "subject", &iss.iss, &["alice"]),
    ]);
    let notice = within("a notice arrives", notices.next())
        .await
        .expect("the stream yields")
        .expect("a notice, not an error");
    let revocation = notice.revocation.expect("the matching rule");
    assert_eq!(revocation.event_id, "takeover");
    assert_eq!(revocation.kind, RuleKind::Subject as i32);
    assert_eq!(revocation.target, "alice");
    assert!(notice.denylist_sequence >= 3);
    // One notice, then the stream ends.
    assert!(within("the stream ends", notices.next()).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_refuses_an_invalid_token_and_an_empty_request() {
    let iss = issuer();
    let sidecar = SidecarBuilder::new().issuer(&iss, "").start().await;
    let mut client = sidecar.client();
    let err = within(
        "Watch answers",
        client.watch(pb::WatchRequest {
            token: "not.a.token".into(),
            ..Default::default()
        }),
    )
    .await
    .expect_err("an invalid token cannot be watched");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("REASON_MALFORMED"),
        "{}",
        err.message()
    );
    let err = within("Watch answers", client.watch(pb::WatchRequest::default()))
        .await
        .expect_err("nothing to watch");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}

/// A caller that verifies tokens itself watches by subject: with the `iat` of the token
/// its connection was opened with, an earlier revocation of the same user (whose cut-off
/// that token postdates) does not cut it at once; a later one does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_watch_with_issued_at_skips_older_cut_offs() {
    let iss = issuer();
    let sidecar = SidecarBuilder::new().issuer(&iss, "").start().await;
    let mut old = sidecar.revoke_event("old", "subject", &iss.iss, &["alice"]);
    old["cutoff"] = (START_SECS - 60).into();
    sidecar.write_revocations(std::slice::from_ref(&old));
    sidecar.wait_for_sequence(2).await;

    let watch = |issued_at: Option<i64>| {
        let mut client = sidecar.client();
        let request = pb::WatchRequest {
            issuer: iss.iss.clone(),
            subject: "alice".into(),
            issued_at,
            ..Default::default()
        };
        async move {
            within("Watch starts", client.watch(request))
                .await
                .expect("Watch accepts an issuer and subject")
                .into_inner()
        }
    };
    // Without `issued_at`, every cut-off matches: the old rule notifies at once.
    let mut any = watch(None).await;
    let notice = within("a notice arrives", any.next())
        .await
        .expect("the stream yields")
        .expect("a notice");
    assert_eq!(notice.revocation.expect("rule").event_id, "old");

    // A token issued after the old cut-off: only the newer revocation notifies.
    let mut after = watch(Some(START_SECS)).await;
    let mut new = sidecar.revoke_event("new", "subject", &iss.iss, &["alice"]);
    new["cutoff"] = (START_SECS + 60).into();
    sidecar.write_revocations(&[old, new]);
    let notice = within("a notice arrives", after.next())
        .await
        .expect("the stream yields")
        .expect("a notice");
    assert_eq!(notice.revocation.expect("rule").event_id, "new");
}

/// A Watch is registered under every key a rule can match it by: a key (`kid`) rule
/// reaches a watched token, and an issuer-wide rule a watched subject.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_and_issuer_wide_rules_notify_their_watchers() {
    let iss = issuer();
    let sidecar = SidecarBuilder::new().issuer(&iss, "").start().await;
    let token = iss.token(&iss.claims(START_SECS));
    let mut client = sidecar.client();
    let mut by_token = within(
        "Watch starts",
        client.watch(pb::WatchRequest {
            token,
            ..Default::default()
        }),
    )
    .await
    .expect("Watch accepts a valid token")
    .into_inner();
    let mut by_subject = within(
        "Watch starts",
        client.watch(pb::WatchRequest {
            issuer: iss.iss.clone(),
            subject: "someone".into(),
            ..Default::default()
        }),
    )
    .await
    .expect("Watch accepts an issuer and subject")
    .into_inner();

    let key = sidecar.revoke_event("key", "key", &iss.iss, &["k1"]);
    sidecar.write_revocations(std::slice::from_ref(&key));
    let notice = within("a notice for the token", by_token.next())
        .await
        .expect("the stream yields")
        .expect("a notice");
    let rule = notice.revocation.expect("the rule");
    assert_eq!(
        (rule.event_id.as_str(), rule.kind),
        ("key", RuleKind::Key as i32)
    );

    sidecar.write_revocations(&[key, sidecar.revoke_event("all", "issuer", &iss.iss, &[])]);
    let notice = within("a notice for the subject", by_subject.next())
        .await
        .expect("the stream yields")
        .expect("a notice");
    let rule = notice.revocation.expect("the rule");
    assert_eq!(
        (rule.event_id.as_str(), rule.kind),
        ("all", RuleKind::Issuer as i32)
    );
}
