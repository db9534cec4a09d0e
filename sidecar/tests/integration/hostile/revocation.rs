//! The denylist through the gRPC API: revoked tokens get `REASON_REVOKED` with the rule
//! that matched — also when the token is in the verified-token cache — `Check` answers
//! for callers that verify signatures themselves, and `Status` and health report the
//! sidecar's state. Revocations are written to the standalone revocations file, which
//! the sidecar reloads in the background; tests wait (bounded) for the reload by
//! watching `Status.denylist_sequence`, so the answer that follows is deterministic.

use std::time::Duration;

use denylist_proto::pb::{self, Reason, RuleKind};
use serde_json::json;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use super::one_issuer;
use crate::harness::{
    EVENTUALLY, Issuer, START_SECS, SidecarBuilder, TestKey, reason_name, toml_str, within,
};

fn hs_issuer() -> Issuer {
    Issuer::new("https://hs.example", "HS256", TestKey::hmac(Some("hs-1")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_jti_gets_revoked_with_the_event_id() {
    let hs = hs_issuer();
    let sidecar = one_issuer(&hs).await;
    let claims = hs.claims(START_SECS);
    let jti = claims["jti"].as_str().expect("jti").to_owned();
    let token = hs.token(&claims);
    let bystander = hs.token(&hs.claims(START_SECS));
    sidecar
        .assert_reason(&token, Reason::Ok, "before the revocation")
        .await;

    sidecar.write_revocations(&[sidecar.revoke_event("e1", "jti", &hs.iss, &[&jti])]);
    let r = sidecar.wait_for_reason(&token, Reason::Revoked).await;

    assert!(!r.valid);
    let revocation = r.revocation.expect("a REVOKED answer names the rule");
    assert_eq!(revocation.event_id, "e1");
    assert_eq!(revocation.kind, RuleKind::Jti as i32);
    assert_eq!(revocation.issuer, hs.iss);
    assert_eq!(revocation.target, jti);
    let claims = r
        .claims
        .expect("a revoked token's signature held: claims come back");
    assert_eq!(claims.jti, jti);
    assert!(
        r.denylist_sequence >= 2,
        "the reload is a new generation: {}",
        r.denylist_sequence
    );
    sidecar
        .assert_reason(&bystander, Reason::Ok, "another token of the same issuer")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_is_checked_on_cache_hits() {
    let hs = hs_issuer();
    let sidecar = one_issuer(&hs).await;
    let claims = hs.claims(START_SECS);
    let jti = claims["jti"].as_str().expect("jti").to_owned();
    let token = hs.token(&claims);
    // Twice: the second answer comes from the verified-token cache.
    sidecar
        .assert_reason(&token, Reason::Ok, "first Verify")
        .await;
    sidecar
        .assert_reason(&token, Reason::Ok, "second Verify (cached)")
        .await;

    sidecar.write_revocations(&[sidecar.revoke_event("e1", "jti", &hs.iss, &[&jti])]);
    sidecar.wait_for_sequence(2).await;

    // The very next answer, and every one after, is REVOKED.
    for attempt in 1..=3 {
        let r = sidecar
            .assert_reason(
                &token,
                Reason::Revoked,
                &format!("Verify #{attempt} after the revocation"),
            )
            .await;
        assert_eq!(r.revocation.map(|x| x.event_id).as_deref(), Some("e1"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_token_is_not_accepted_after_it_expires() {
    let hs = hs_issuer();
    let sidecar = one_issuer(&hs).await;
    let mut claims = hs.claims(START_SECS);
    claims["exp"] = json!(START_SECS + 60);
    let token = hs.token(&claims);
    sidecar
        .assert_reason(&token, Reason::Ok, "first Verify")
        .await;
    sidecar
        .assert_reason(&token, Reason::Ok, "second Verify (cached)")
        .await;
    // exp + leeway (30 s) is the last accepted second.
    sidecar.clock.set_ms((START_SECS + 90) * 1000);
    sidecar
        .assert_reason(&token, Reason::Ok, "at exp + leeway")
        .await;
    sidecar.clock.set_ms((START_SECS + 91) * 1000);
    sidecar
        .assert_reason(
            &token,
            Reason::Expired,
            "one second after exp + leeway (cached before)",
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_answers_for_a_revoked_subject() {
    let hs = hs_issuer();
    let sidecar = one_issuer(&hs).await;
    let cutoff = START_SECS;
    let mut event = sidecar.revoke_event("s1", "subject", &hs.iss, &["mallory"]);
    event["cutoff"] = json!(cutoff);
    sidecar.write_revocations(&[event]);
    sidecar.wait_for_sequence(2).await;

    let check = |subject: &str, issuer: &str, issued_at: Option<i64>| pb::CheckRequest {
        issuer: issuer.to_owned(),
        subject: subject.to_owned(),
        issued_at,
        ..Default::default()
    };
    let revoked = sidecar
        .check(check("mallory", &hs.iss, Some(cutoff - 60)))
        .await
        .expect("Check");
    assert!(revoked.revoked, "issued before the cut-off: revoked");
    let rule = revoked.revocation.expect("the rule is named");
    assert_eq!(rule.event_id, "s1");
    assert_eq!(rule.kind, RuleKind::Subject as i32);
    assert_eq!(rule.target, "mallory");
    assert_eq!(rule.cutoff, cutoff);
    assert!(revoked.denylist_sequence >= 2);

    for (what, request, expected) in [
        (
            "issued at the cut-off second",
            check("mallory", &hs.iss, Some(cutoff)),
            true,
        ),
        (
            "issued after the cut-off",
            check("mallory", &hs.iss, Some(cutoff + 1)),
            false,
        ),
        ("no iat: fails safe", check("mallory", &hs.iss, None), true),
        (
            "another subject",
            check("alice", &hs.iss, Some(cutoff - 60)),
            false,
        ),
        (
            "same subject, another issuer",
            check("mallory", "https://other.example", Some(cutoff - 60)),
            false,
        ),
    ] {
        let r = sidecar.check(request).await.expect("Check");
        assert_eq!(r.revoked, expected, "Check, {what}");
        assert_eq!(
            r.revocation.is_some(),
            expected,
            "Check, {what}: the rule is named iff revoked"
        );
    }

    // Verify agrees: mallory's old token is revoked; one issued after the cut-off is not.
    let mut old = hs.claims(START_SECS);
    old["sub"] = json!("mallory");
    old["iat"] = json!(cutoff - 60);
    let r = sidecar
        .assert_reason(&hs.token(&old), Reason::Revoked, "mallory's old token")
        .await;
    assert_eq!(r.revocation.map(|x| x.kind), Some(RuleKind::Subject as i32));
    sidecar.clock.set_ms((START_SECS + 10) * 1000);
    let mut new = hs.claims(START_SECS + 10);
    new["sub"] = json!("mallory");
    sidecar
        .assert_reason(
            &hs.token(&new),
            Reason::Ok,
            "mallory's token issued after the cut-off",
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rule_revokes_every_token_of_the_key_and_lift_withdraws_it() {
    let hs = hs_issuer();
    let sidecar = one_issuer(&hs).await;
    let token = hs.token(&hs.claims(START_SECS));
    let key_rule = sidecar.revoke_event("k1", "key", &hs.iss, &["hs-1"]);
    sidecar.write_revocations(std::slice::from_ref(&key_rule));
    sidecar.wait_for_sequence(2).await;
    let r = sidecar
        .assert_reason(&token, Reason::Revoked, "token of a revoked key")
        .await;
    assert_eq!(
        r.revocation.map(|x| (x.kind, x.event_id)),
        Some((RuleKind::Key as i32, "k1".to_owned()))
    );
    // Leaving `kid` out of the header does not escape the rule: the issuer's only key
    // still verifies the token, and that key is the revoked one.
    let kidless = hs.token_with_header(&json!({"alg": hs.alg}), &hs.claims(START_SECS));
    let r = sidecar
        .assert_reason(
            &kidless,
            Reason::Revoked,
            "a kid-less token of a revoked key",
        )
        .await;
    assert_eq!(r.revocation.map(|x| x.kind), Some(RuleKind::Key as i32));

    let lift = json!({
        "event_id": "l1",
        "action": "lift",
        "targets": ["k1"],
        "created_at_ms": START_SECS * 1000,
    });
    sidecar.write_revocations(&[key_rule, lift]);
    sidecar.wait_for_sequence(3).await;
    sidecar
        .assert_reason(&token, Reason::Ok, "after the lift")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_refuses_malformed_requests_and_keeps_serving() {
    let hs = hs_issuer();
    let sidecar = one_issuer(&hs).await;
    let no_issuer = sidecar
        .check(pb::CheckRequest {
            jti: "x".into(),
            ..Default::default()
        })
        .await
        .expect_err("`issuer` is required");
    assert_eq!(
        no_issuer.code(),
        tonic::Code::InvalidArgument,
        "{no_issuer:?}"
    );
    let long = sidecar
        .check(pb::CheckRequest {
            issuer: hs.iss.clone(),
            jti: "j".repeat(5000),
            ..Default::default()
        })
        .await
        .expect_err("a 5000-byte jti is refused");
    assert_eq!(long.code(), tonic::Code::InvalidArgument, "{long:?}");
    let fine = sidecar
        .check(pb::CheckRequest {
            issuer: hs.iss.clone(),
            jti: "x".into(),
            ..Default::default()
        })
        .await
        .expect("a well-formed Check");
    assert!(!fine.revoked);
    sidecar
        .assert_reason(
            &hs.token(&hs.claims(START_SECS)),
            Reason::Ok,
            "after bad Checks",
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_readiness_issuers_keys_and_denylist() {
    let hs = hs_issuer();
    let ed = Issuer::new(
        "https://ed.example",
        "EdDSA",
        TestKey::ed25519(Some("ed-1")),
    );
    let es = Issuer::new(
        "https://es.example",
        "ES256",
        TestKey::ec_p256(Some("es-1")),
    );
    let builder = SidecarBuilder::new();
    let jwks = builder.dir().join("es.jwks.json");
    std::fs::write(&jwks, json!({"keys": [es.key.public_jwk()]}).to_string()).expect("write JWKS");
    let sidecar = builder
        .issuer(&hs, "")
        .issuer(&ed, "")
        .issuer_toml(format!(
            "[[issuers]]\nissuer = {}\nalgorithms = [\"ES256\"]\n[issuers.keys]\njwks_file = {}\n",
            toml_str(&es.iss),
            toml_str(&jwks.to_string_lossy())
        ))
        .start()
        .await;

    let s = sidecar.status().await;
    assert!(s.ready, "ready once the revocations file is loaded");
    assert!(!s.stale);
    assert_eq!(s.mode, "standalone");
    assert_eq!(s.name, "itest");
    assert_eq!(s.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(s.denylist_sequence, 1, "the first load of the file");
    assert_eq!(s.entries, 0);
    assert_eq!(s.keys, 3, "one key per issuer");
    let issuers: Vec<_> = s
        .issuers
        .iter()
        .map(|i| (i.issuer.as_str(), i.source.as_str(), i.keys))
        .collect();
    assert_eq!(
        issuers,
        [
            ("https://ed.example", "pem", 1),
            ("https://es.example", "jwks_file", 1),
            ("https://hs.example", "hmac", 1),
        ],
        "issuers, sorted by issuer"
    );
    for i in &s.issuers {
        assert!(i.last_refresh_ms > 0, "{}: keys were loaded", i.issuer);
        assert_eq!(i.last_error, "", "{}", i.issuer);
        assert_eq!(i.fetch_failures, 0, "{}", i.issuer);
    }
    // The JWKS-file issuer verifies.
    sidecar
        .assert_reason(
            &es.token(&es.claims(START_SECS)),
            Reason::Ok,
            "ES256 via jwks_file",
        )
        .await;

    sidecar.write_revocations(&[sidecar.revoke_event("e1", "jti", &hs.iss, &["a", "b"])]);
    sidecar.wait_for_sequence(2).await;
    let s = sidecar.status().await;
    assert_eq!(s.denylist_sequence, 2);
    assert_eq!(s.entries, 2, "one live rule per target");
    assert!(s.bloom_bytes > 0, "the Bloom filter holds the rules");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_health_reports_serving() {
    let hs = hs_issuer();
    let sidecar = one_issuer(&hs).await;
    let mut health = HealthClient::new(sidecar.channel());
    for service in ["", "denylist.v1.Verifier"] {
        let poll = async {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            loop {
                tick.tick().await;
                let request = HealthCheckRequest {
                    service: service.to_owned(),
                };
                if let Ok(r) = within("Health/Check", health.check(request)).await
                    && r.into_inner().status == ServingStatus::Serving as i32
                {
                    return;
                }
            }
        };
        tokio::time::timeout(EVENTUALLY, poll)
            .await
            .unwrap_or_else(|_| panic!("health of {service:?} did not turn SERVING"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_shutdown_returns_ok_and_removes_the_socket() {
    let hs = hs_issuer();
    let sidecar = one_issuer(&hs).await;
    let socket = sidecar.socket.clone();
    let r = sidecar.verify(&hs.token(&hs.claims(START_SECS))).await;
    assert_eq!(reason_name(r.reason), "REASON_OK");
    assert!(socket.exists());
    sidecar
        .stop()
        .await
        .expect("App::run returns Ok after shutdown");
    assert!(!socket.exists(), "the socket file is removed on shutdown");
}
