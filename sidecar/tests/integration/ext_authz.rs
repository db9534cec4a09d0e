//! Envoy / Istio external authorization through the real gRPC server: real
//! `envoy.service.auth.v3.CheckRequest`s over the Unix socket, for an allowed token,
//! a missing one, a bad one, a revoked one and a stale denylist.

use std::collections::HashMap;

use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse};

use crate::harness::{Issuer, START_SECS, SidecarBuilder, TestKey, TestSidecar, within};

const OK: i32 = 0;
const UNAUTHENTICATED: i32 = 16;
const UNAVAILABLE: i32 = 14;

fn issuer() -> Issuer {
    Issuer::new("https://envoy.example", "HS256", TestKey::hmac(Some("k1")))
}

fn request(headers: &[(&str, &str)]) -> CheckRequest {
    let headers: HashMap<String, String> = headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "GET".into(),
                    path: "/orders".into(),
                    headers,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

async fn check(sidecar: &TestSidecar, headers: &[(&str, &str)]) -> CheckResponse {
    let mut client = AuthorizationClient::new(sidecar.channel());
    within("ext_authz Check", client.check(request(headers)))
        .await
        .expect("ext_authz Check answers")
        .into_inner()
}

fn status_code(r: &CheckResponse) -> i32 {
    r.status.as_ref().map_or(-1, |s| s.code)
}

/// The denied response's HTTP status, headers and body.
fn denied(r: &CheckResponse) -> (i32, HashMap<String, String>, String) {
    let Some(HttpResponse::DeniedResponse(d)) = &r.http_response else {
        panic!("expected a denied response, got {r:?}");
    };
    let headers = d
        .headers
        .iter()
        .filter_map(|h| h.header.as_ref().map(|h| (h.key.clone(), h.value.clone())))
        .collect();
    let code = d.status.as_ref().map_or(-1, |s| s.code);
    (code, headers, d.body.clone())
}

async fn sidecar(iss: &Issuer) -> TestSidecar {
    SidecarBuilder::new().issuer(iss, "").start().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_token_is_allowed_with_its_subject_forwarded_and_spoofing_stripped() {
    let iss = issuer();
    let sidecar = sidecar(&iss).await;
    let mut claims = iss.claims(START_SECS);
    claims["sub"] = "alice".into();
    let token = iss.token(&claims);
    let r = check(
        &sidecar,
        &[
            ("authorization", &format!("Bearer {token}")),
            ("x-denylist-subject", "mallory"),
        ],
    )
    .await;
    assert_eq!(status_code(&r), OK, "{r:?}");
    let Some(HttpResponse::OkResponse(ok)) = &r.http_response else {
        panic!("expected an OK response: {r:?}");
    };
    let forwarded: Vec<_> = ok
        .headers
        .iter()
        .filter_map(|h| h.header.as_ref().map(|v| (v, h.append_action)))
        .map(|(h, action)| (h.key.as_str(), h.value.as_str(), action))
        .collect();
    // Overwritten, so the client's "mallory" is replaced rather than appended to.
    assert_eq!(
        forwarded,
        [(
            "x-denylist-subject",
            "alice",
            HeaderAppendAction::OverwriteIfExistsOrAdd as i32
        )]
    );
    // Not also removed: Envoy applies removals after additions, so a header both set
    // and removed would never reach the upstream.
    assert!(ok.headers_to_remove.is_empty(), "{ok:?}");

    // A token without `sub`: the client's header is removed, and nothing is added.
    let mut claims = iss.claims(START_SECS);
    claims.as_object_mut().expect("claims object").remove("sub");
    let r = check(
        &sidecar,
        &[
            ("authorization", &format!("Bearer {}", iss.token(&claims))),
            ("x-denylist-subject", "mallory"),
        ],
    )
    .await;
    assert_eq!(status_code(&r), OK, "{r:?}");
    let Some(HttpResponse::OkResponse(ok)) = &r.http_response else {
        panic!("expected an OK response: {r:?}");
    };
    assert!(ok.headers.is_empty(), "{ok:?}");
    assert_eq!(ok.headers_to_remove, ["x-denylist-subject"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_bad_token_is_401_with_www_authenticate() {
    let iss = issuer();
    let sidecar = sidecar(&iss).await;

    let r = check(&sidecar, &[("accept", "*/*")]).await;
    assert_eq!(status_code(&r), UNAUTHENTICATED);
    let (code, headers, _) = denied(&r);
    assert_eq!(code, 401);
    assert_eq!(headers["www-authenticate"], "Bearer realm=\"denylist\"");

    let r = check(&sidecar, &[("authorization", "Basic dXNlcjpwYXNz")]).await;
    assert_eq!(denied(&r).0, 401, "a non-bearer scheme is no token");

    let mut claims = iss.claims(START_SECS);
    claims["exp"] = (START_SECS - 3600).into();
    let expired = iss.token(&claims);
    let r = check(&sidecar, &[("authorization", &format!("Bearer {expired}"))]).await;
    assert_eq!(status_code(&r), UNAUTHENTICATED);
    let (code, headers, body) = denied(&r);
    assert_eq!(code, 401);
    assert!(
        headers["www-authenticate"].contains("error=\"invalid_token\"")
            && headers["www-authenticate"].contains("REASON_EXPIRED"),
        "{headers:?}"
    );
    assert!(body.contains("REASON_EXPIRED"), "{body}");

    let r = check(&sidecar, &[("authorization", "Bearer not.a.jwt")]).await;
    assert!(denied(&r).1["www-authenticate"].contains("REASON_MALFORMED"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_401_once_the_revocation_reaches_the_sidecar() {
    let iss = issuer();
    let sidecar = sidecar(&iss).await;
    let claims = iss.claims(START_SECS);
    let jti = claims["jti"].as_str().expect("jti").to_owned();
    let token = iss.token(&claims);
    let header = format!("Bearer {token}");
    assert_eq!(
        status_code(&check(&sidecar, &[("authorization", &header)]).await),
        OK
    );

    sidecar.write_revocations(&[sidecar.revoke_event("ev-authz", "jti", &iss.iss, &[&jti])]);
    sidecar
        .wait_for_reason(&token, denylist_proto::pb::Reason::Revoked)
        .await;

    let r = check(&sidecar, &[("authorization", &header)]).await;
    assert_eq!(status_code(&r), UNAUTHENTICATED);
    let (code, headers, _) = denied(&r);
    assert_eq!(code, 401);
    assert!(
        headers["www-authenticate"].contains("REASON_REVOKED"),
        "{headers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_denylist_under_fail_closed_is_503() {
    let iss = issuer();
    let sidecar = sidecar(&iss).await;
    let token = iss.token(&iss.claims(START_SECS));
    let header = format!("Bearer {token}");
    assert_eq!(
        status_code(&check(&sidecar, &[("authorization", &header)]).await),
        OK
    );

    // A missing revocations file is silence from the source; then time passes
    // beyond max_staleness (1 h in the harness) on the sidecar's clock.
    std::fs::remove_file(&sidecar.revocations).expect("remove the revocations file");
    sidecar.clock.advance_ms(2 * 3600 * 1000);
    within("the denylist turns stale", async {
        loop {
            if sidecar.status().await.stale {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    // The first token expired while the clock moved: mint one valid at the new time.
    let fresh = iss.token(&iss.claims(START_SECS + 2 * 3600));
    let r = check(&sidecar, &[("authorization", &format!("Bearer {fresh}"))]).await;
    assert_eq!(status_code(&r), UNAVAILABLE, "{r:?}");
    let (code, headers, _) = denied(&r);
    assert_eq!(code, 503);
    assert_eq!(headers["retry-after"], "1");
}
