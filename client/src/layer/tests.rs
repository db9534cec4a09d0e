use std::convert::Infallible;
use std::time::Duration;

use http_body_util::BodyExt as _;
use tower::{Layer as _, ServiceExt as _};

use super::*;
use crate::fake_verifier::FakeServer;

/// The inner service: answers 200 with the subject and denylist sequence it was handed.
fn echo_claims() -> impl tower::Service<
    Request<String>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send,
> + Clone
+ Send
+ 'static {
    tower::service_fn(|request: Request<String>| async move {
        let claims = request.extensions().get::<pb::Claims>().cloned();
        let freshness = request.extensions().get::<Freshness>().copied();
        let body = format!(
            "sub={} seq={}",
            claims.map(|c| c.sub).unwrap_or_default(),
            freshness.map(|f| f.denylist_sequence).unwrap_or_default()
        );
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
    })
}

async fn call(
    layer: &VerifyLayer,
    authorization: Option<&str>,
) -> (StatusCode, http::HeaderMap, String) {
    let mut request = Request::builder().uri("/orders");
    if let Some(a) = authorization {
        request = request.header(AUTHORIZATION, a);
    }
    let request = request.body(String::new()).unwrap();
    let response = tokio::time::timeout(
        Duration::from_secs(10),
        layer.layer(echo_claims()).oneshot(request),
    )
    .await
    .expect("the layer answered in time")
    .unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8(bytes.to_vec()).unwrap(),
    )
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap()
}

async fn layer_for(fake: &FakeServer) -> VerifyLayer {
    VerifyLayer::new(Client::connect_unix(&fake.socket).await.unwrap())
}

#[tokio::test]
async fn a_valid_token_reaches_the_service_with_its_claims() {
    let fake = FakeServer::start().await;
    let layer = layer_for(&fake).await;
    let (status, _, body) = call(&layer, Some("Bearer good")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "sub=alice seq=7");
    // The scheme is case-insensitive.
    let (status, _, _) = call(&layer, Some("bearer good")).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_missing_or_foreign_authorization_is_401_without_calling_the_sidecar() {
    let fake = FakeServer::start().await;
    let layer = layer_for(&fake).await;
    for authorization in [
        None,
        Some("Basic dXNlcjpwYXNz"),
        Some("Bearer "),
        Some("Bearer"),
    ] {
        let (status, headers, body) = call(&layer, authorization).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{authorization:?}");
        assert_eq!(headers[WWW_AUTHENTICATE], "Bearer");
        assert_eq!(json(&body)["error"], "missing_token");
    }
    assert_eq!(fake.calls(), 0);
}

#[tokio::test]
async fn a_rejected_token_is_401_naming_the_reason_but_not_the_rule() {
    let fake = FakeServer::start().await;
    let layer = layer_for(&fake).await;
    let (status, headers, body) = call(&layer, Some("Bearer revoked")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers[WWW_AUTHENTICATE], r#"Bearer error="invalid_token""#);
    assert_eq!(headers[CONTENT_TYPE], "application/json");
    let body = json(&body);
    assert_eq!(body["error"], "invalid_token");
    assert_eq!(body["reason"], "REASON_REVOKED");
    assert_eq!(body["detail"], "revoked by a subject rule");
    let text = body.to_string();
    assert!(
        !text.contains("ev-secret") && !text.contains("alice@sec"),
        "{text}"
    );

    let (status, _, body) = call(&layer, Some("Bearer expired")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(json(&body)["reason"], "REASON_EXPIRED");
}

#[tokio::test]
async fn a_stale_denylist_is_503() {
    let fake = FakeServer::start().await;
    let layer = layer_for(&fake).await;
    let (status, headers, body) = call(&layer, Some("Bearer stale")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers[RETRY_AFTER], "1");
    assert!(headers.get(WWW_AUTHENTICATE).is_none());
    assert_eq!(json(&body)["error"], "denylist_stale");
}

#[tokio::test]
async fn an_unavailable_sidecar_is_503_after_retries() {
    let fake = FakeServer::start().await;
    let layer = layer_for(&fake).await;
    fake.unavailable_first(100);
    let (status, _, body) = call(&layer, Some("Bearer good")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json(&body)["error"], "verifier_unavailable");
    assert_eq!(fake.calls(), 3);

    // A short outage is ridden over.
    fake.unavailable_first(1);
    let (status, _, _) = call(&layer, Some("Bearer good")).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_sidecar_error_or_a_slow_sidecar_is_503() {
    let fake = FakeServer::start().await;
    let client = Client::connect_unix(&fake.socket)
        .await
        .unwrap()
        .with_deadline(Duration::from_millis(100));
    let layer = VerifyLayer::new(client);
    let (status, _, _) = call(&layer, Some("Bearer internal")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (status, _, body) = call(&layer, Some("Bearer slow")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        json(&body)["detail"].as_str().unwrap().contains("within"),
        "{body}"
    );
}

#[tokio::test]
async fn no_sidecar_at_all_is_503() {
    let dir = tempfile::tempdir().unwrap();
    let layer = VerifyLayer::new(Client::lazy_unix(dir.path().join("none.sock")));
    let (status, _, body) = call(&layer, Some("Bearer good")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json(&body)["error"], "verifier_unavailable");
}

#[tokio::test]
async fn the_layer_fits_an_axum_router() {
    let fake = FakeServer::start().await;
    let app = axum::Router::new()
        .route(
            "/me",
            axum::routing::get(
                |axum::Extension(claims): axum::Extension<pb::Claims>| async move { claims.sub },
            ),
        )
        .layer(layer_for(&fake).await);
    let request = Request::builder()
        .uri("/me")
        .header(AUTHORIZATION, "Bearer good")
        .body(axum::body::Body::empty())
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), app.oneshot(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"alice");
}

#[test]
fn bearer_tokens_are_taken_from_authorization_only() {
    let with = |v: &str| {
        Request::builder()
            .header(AUTHORIZATION, v)
            .body(())
            .unwrap()
    };
    assert_eq!(
        bearer_token(&with("Bearer abc.def.ghi")).as_deref(),
        Some("abc.def.ghi")
    );
    assert_eq!(
        bearer_token(&with("  BEARER   abc  ")).as_deref(),
        Some("abc")
    );
    assert_eq!(bearer_token(&with("Basic abc")), None);
    assert_eq!(bearer_token(&with("abc")), None);
    assert_eq!(bearer_token(&Request::new(())), None);
}
