//! [`VerifyLayer`]: bearer-token authentication for any `tower` HTTP service (axum, hyper,
//! tonic's HTTP routes), backed by the sidecar.
//!
//! For each request the layer takes the token from `Authorization: Bearer …` and calls
//! `Verify` on the sidecar:
//!
//! | outcome | answer |
//! |---|---|
//! | valid | the inner service runs; [`pb::Claims`] and [`Freshness`] are in the request extensions |
//! | no or malformed `Authorization` | `401`, `WWW-Authenticate: Bearer`, JSON `{"error":"missing_token",…}` |
//! | token rejected | `401`, `WWW-Authenticate: Bearer error="invalid_token"`, JSON `{"error":"invalid_token","reason":"REASON_…","detail":…}` |
//! | denylist stale (`REASON_DENYLIST_STALE`) | `503`, `Retry-After: 1`, JSON `{"error":"denylist_stale",…}` |
//! | sidecar unreachable, not ready, or too slow | `503`, `Retry-After: 1`, JSON `{"error":"verifier_unavailable",…}` |
//!
//! A stale denylist is the sidecar's problem, not the caller's: answering 401 would tell a
//! client to drop a perfectly good token, while 503 tells it to retry. The 401 body names the
//! reason (so a client can tell "expired, refresh" from "revoked, log in again") but never the
//! revocation's event id or actor.

use std::task::{Context, Poll};

use bytes::Bytes;
use denylist_proto::pb;
use futures::future::BoxFuture;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{Request, Response, StatusCode};
use http_body_util::{Either, Full};

use crate::verifier::{Client, ClientError};

/// The response body of a [`VerifyService`]: the inner service's body, or the layer's own JSON.
pub type VerifyBody<B> = Either<B, Full<Bytes>>;

/// How fresh the sidecar's denylist was when it accepted the request's token. Put into the
/// request extensions beside [`pb::Claims`]; `stale` is true only under the `fail_open`
/// policy (under `fail_closed` a stale sidecar rejects instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// Last applied denylist sequence.
    pub denylist_sequence: u64,
    /// Milliseconds since the denylist last heard from its source.
    pub denylist_age_ms: u64,
    /// The denylist is past `max_staleness`.
    pub stale: bool,
}

/// A `tower::Layer` that authenticates requests with the sidecar. See the module docs.
#[derive(Debug, Clone)]
pub struct VerifyLayer {
    client: Client,
}

impl VerifyLayer {
    /// A layer asking the sidecar behind `client`. The client's deadline bounds how long a
    /// request may wait for its answer.
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

impl<S> tower::Layer<S> for VerifyLayer {
    type Service = VerifyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        VerifyService {
            inner,
            client: self.client.clone(),
        }
    }
}

/// The service [`VerifyLayer`] wraps around an inner service.
#[derive(Debug, Clone)]
pub struct VerifyService<S> {
    inner: S,
    client: Client,
}

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for VerifyService<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
{
    type Response = Response<VerifyBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        // The clone is not ready; the service `poll_ready` readied is the one that is called.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let client = self.client.clone();
        Box::pin(async move {
            let Some(token) = bearer_token(&request) else {
                return Ok(rejection(Rejection::MissingToken));
            };
            let answer = client.verify(&token).await;
            match decide(answer) {
                Decision::Accept(claims, freshness) => {
                    request.extensions_mut().insert(*claims);
                    request.extensions_mut().insert(freshness);
                    let response = inner.call(request).await?;
                    Ok(response.map(Either::Left))
                }
                Decision::Reject(r) => Ok(rejection(r)),
            }
        })
    }
}

/// The bearer token of a request, if its `Authorization` header carries one.
pub fn bearer_token<B>(request: &Request<B>) -> Option<String> {
    let value = request.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_owned())
}

enum Decision {
    Accept(Box<pb::Claims>, Freshness),
    Reject(Rejection),
}

/// Why the layer answers itself.
#[derive(Debug)]
enum Rejection {
    MissingToken,
    InvalidToken { reason: pb::Reason, detail: String },
    Stale { detail: String },
    Unavailable { detail: String },
}

fn decide(answer: Result<pb::VerifyResponse, ClientError>) -> Decision {
    match answer {
        Ok(a) if a.valid => Decision::Accept(
            Box::new(a.claims.unwrap_or_default()),
            Freshness {
                denylist_sequence: a.denylist_sequence,
                denylist_age_ms: a.denylist_age_ms,
                stale: a.stale,
            },
        ),
        Ok(a) => match pb::Reason::try_from(a.reason).unwrap_or(pb::Reason::Unspecified) {
            pb::Reason::DenylistStale => Decision::Reject(Rejection::Stale { detail: a.detail }),
            reason => Decision::Reject(Rejection::InvalidToken {
                reason,
                detail: a.detail,
            }),
        },
        Err(e) => {
            if !e.is_unavailable() {
                // Not the caller's fault and not retryable by the client either: loud in logs.
                tracing::warn!(error = %e, "denylist sidecar error; answering 503");
            }
            Decision::Reject(Rejection::Unavailable {
                detail: e.to_string(),
            })
        }
    }
}

fn rejection<B>(r: Rejection) -> Response<VerifyBody<B>> {
    let (status, challenge, body) = match r {
        Rejection::MissingToken => (
            StatusCode::UNAUTHORIZED,
            Some("Bearer"),
            serde_json::json!({
                "error": "missing_token",
                "detail": "no bearer token in the Authorization header",
            }),
        ),
        Rejection::InvalidToken { reason, detail } => (
            StatusCode::UNAUTHORIZED,
            Some(r#"Bearer error="invalid_token""#),
            serde_json::json!({
                "error": "invalid_token",
                "reason": reason.as_str_name(),
                "detail": detail,
            }),
        ),
        Rejection::Stale { detail } => (
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            serde_json::json!({
                "error": "denylist_stale",
                "reason": pb::Reason::DenylistStale.as_str_name(),
                "detail": detail,
            }),
        ),
        Rejection::Unavailable { detail } => (
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            serde_json::json!({ "error": "verifier_unavailable", "detail": detail }),
        ),
    };
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(body.to_string()))));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    match challenge {
        Some(c) => {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static(c));
        }
        None => {
            headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
    }
    response
}

#[cfg(test)]
mod tests;
