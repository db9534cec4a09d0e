//! The receiver's HTTP endpoints:
//!
//! - `POST /backchannel-logout/<provider>`: a form with one `logout_token` (Back-Channel
//!   Logout 1.0 §2.5). 200 once the revocation is stored; 400 with
//!   `{"error":"invalid_request","error_description":…}` for a bad token (§2.8); 503 when it
//!   cannot be stored now, so the provider retries.
//! - `POST /ssf/push/<provider>`: one SET as `application/secevent+jwt` (RFC 8935 §2). The
//!   `Authorization` header must equal the stream's configured value (401
//!   `authentication_failed` otherwise). 202 once acted on (or acknowledged: verification,
//!   unknown or disabled event types, a redelivered SET); 400 with `{"err":…,"description":…}`
//!   and an RFC 8935 §2.4 code for a bad SET; 503 when it cannot be stored now.
//! - `GET /metrics`, `/healthz` (the process serves), `/readyz` (NATS connected, keys
//!   loaded; the body also reports each managed SSF stream, which readiness does not wait
//!   for).
//!
//! Bodies over `max_body_bytes` are refused with 413 before they are read in full, and a
//! body not sent within 10 s with 408.

use std::sync::Arc;

use aws_lc_rs::constant_time;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::{Outcome, Receiver, now_secs};

/// The router over a shared receiver.
pub fn router(receiver: Arc<Receiver>) -> Router {
    Router::new()
        .route("/backchannel-logout/{provider}", post(logout))
        .route("/ssf/push/{provider}", post(push))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(receiver)
}

async fn metrics(State(r): State<Arc<Receiver>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        r.metrics().render(),
    )
        .into_response()
}

async fn readyz(State(r): State<Arc<Receiver>>) -> Response {
    let streams = r.stream_report();
    match r.is_ready() {
        Ok(()) => (StatusCode::OK, format!("ready\n{streams}")).into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n{streams}"),
        )
            .into_response(),
    }
}

/// How long a client may take to send its body: a slow sender must not hold a request
/// (and its memory) open forever.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The body, at most `limit` bytes (else 413), sent within [`BODY_TIMEOUT`] (else 408).
async fn read_body(body: Body, limit: usize) -> Result<axum::body::Bytes, (StatusCode, String)> {
    match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {limit} bytes"),
        )),
        Err(_) => Err((
            StatusCode::REQUEST_TIMEOUT,
            format!("the body was not sent within {BODY_TIMEOUT:?}"),
        )),
    }
}

fn json(status: StatusCode, value: serde_json::Value) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        value.to_string(),
    )
        .into_response()
}

/// Whether the media type (parameters ignored) is `expected`.
fn content_type_is(headers: &HeaderMap, expected: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case(expected))
}

async fn logout(
    State(r): State<Arc<Receiver>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(provider) = r.provider(&name) else {
        return logout_error(StatusCode::NOT_FOUND, "invalid_request", "no such provider");
    };
    let form = match read_body(body, r.max_body_bytes).await {
        Ok(b) => b,
        Err((status, message)) => {
            r.metrics()
                .signal(&name, "backchannel-logout", "unreadable_body");
            return logout_error(status, "invalid_request", &message);
        }
    };
    let token = match logout_token(&headers, &form) {
        Ok(t) => t,
        Err(message) => {
            r.metrics().signal(&name, "backchannel-logout", "malformed");
            return logout_error(StatusCode::BAD_REQUEST, "invalid_request", &message);
        }
    };
    match r.logout(provider, &token, now_secs()).await {
        Ok(_) => (StatusCode::OK, [(header::CACHE_CONTROL, "no-store")]).into_response(),
        Err(e) if e.is_retryable() => logout_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            &e.to_string(),
        ),
        Err(e) => logout_error(StatusCode::BAD_REQUEST, "invalid_request", &e.to_string()),
    }
}

/// The one `logout_token` of a form body.
fn logout_token(headers: &HeaderMap, form: &[u8]) -> Result<String, String> {
    if !content_type_is(headers, "application/x-www-form-urlencoded") {
        return Err("the body must be application/x-www-form-urlencoded".into());
    }
    if std::str::from_utf8(form).is_err() {
        return Err("the form is not UTF-8".into());
    }
    let mut tokens = url::form_urlencoded::parse(form)
        .filter(|(k, _)| k == "logout_token")
        .map(|(_, v)| v.into_owned());
    match (tokens.next(), tokens.next()) {
        (Some(t), None) if !t.is_empty() => Ok(t),
        (Some(_), Some(_)) => Err("the form holds more than one `logout_token`".into()),
        _ => Err("the form has no `logout_token`".into()),
    }
}

fn logout_error(status: StatusCode, error: &str, description: &str) -> Response {
    json(
        status,
        serde_json::json!({"error": error, "error_description": description}),
    )
}

async fn push(
    State(r): State<Arc<Receiver>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(provider) = r.provider(&name) else {
        return push_error(StatusCode::NOT_FOUND, "invalid_request", "no such provider");
    };
    let Some(expected) = &provider.push_authorization else {
        return push_error(
            StatusCode::NOT_FOUND,
            "access_denied",
            "push delivery is not configured for this provider",
        );
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if constant_time::verify_slices_are_equal(given, expected.as_bytes()).is_err() {
        r.metrics().signal(&name, "set", "unauthenticated");
        return push_error(
            StatusCode::UNAUTHORIZED,
            "authentication_failed",
            "the Authorization header is missing or wrong",
        );
    }
    let set = match read_body(body, r.max_body_bytes).await {
        Ok(b) => b,
        Err((status, message)) => {
            r.metrics().signal(&name, "set", "unreadable_body");
            return push_error(status, "invalid_request", &message);
        }
    };
    if !content_type_is(&headers, "application/secevent+jwt") {
        r.metrics().signal(&name, "set", "malformed");
        return push_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the body must be application/secevent+jwt",
        );
    }
    let Ok(set) = std::str::from_utf8(&set) else {
        r.metrics().signal(&name, "set", "malformed");
        return push_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the SET is not UTF-8",
        );
    };
    match r.set(provider, set, now_secs()).await {
        Ok(Outcome::Published(_) | Outcome::Duplicate | Outcome::Acknowledged(_)) => {
            StatusCode::ACCEPTED.into_response()
        }
        Err(e) if e.is_retryable() => push_error(
            StatusCode::SERVICE_UNAVAILABLE,
            e.ssf_code(),
            &e.to_string(),
        ),
        Err(e) => push_error(StatusCode::BAD_REQUEST, e.ssf_code(), &e.to_string()),
    }
}

fn push_error(status: StatusCode, err: &str, description: &str) -> Response {
    json(
        status,
        serde_json::json!({"err": err, "description": description}),
    )
}
