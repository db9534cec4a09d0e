//! The HTTP forward-auth endpoint: the conventions of nginx `auth_request`, Traefik
//! `ForwardAuth` and Caddy `forward_auth`.
//!
//! Every request, whatever its method and path, is an authorization check of the token
//! it carries (`Authorization: Bearer …`, or the configured header or cookie). The
//! answer is the one Envoy's ext_authz gets ([`Decision`]), in HTTP:
//!
//! - **200**, empty body, the configured claims as response headers for the proxy to
//!   copy onto the upstream request (`x-denylist-stale: true` too when the denylist is
//!   stale under `fail_open`);
//! - **401** with `WWW-Authenticate: Bearer realm="denylist"` when there is no token, or
//!   `…, error="invalid_token", error_description="REASON_…"` (RFC 6750 §3) when it is
//!   invalid, expired or revoked, plus `x-denylist-reason` and a JSON body;
//! - **503** with `Retry-After: 1` while the denylist is loading, or stale under
//!   `fail_closed`.
//!
//! A merely invalid token is never a 5xx. Every answer carries `Cache-Control: no-store`:
//! an authorization answer must not be reused after a revocation.
//!
//! The endpoint is unauthenticated and tells whoever asks whether a token is valid, so
//! it listens on loopback or a Unix socket only (checked in config).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, COOKIE, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse as _, Response};

use crate::config::ForwardAuthConfig;
use crate::ext_authz::{Decision, bearer_token, claim_headers, cookie_token};
use crate::verify::Verifier;

/// The reason of a denial, for proxies to copy (nginx: `auth_request_set`).
pub const REASON_HEADER: &str = "x-denylist-reason";

/// Set on a 200 when the denylist is stale and the policy is `fail_open`.
pub const STALE_HEADER: &str = "x-denylist-stale";

#[derive(Debug)]
struct ForwardAuth {
    verifier: Arc<Verifier>,
    config: ForwardAuthConfig,
    /// The configured header, parsed once (config validation guarantees it parses).
    header: HeaderName,
    /// The claim headers, parsed once, in `forward_claims` order.
    claim_headers: Vec<HeaderName>,
}

/// Where the request's token is, or why there is none usable.
#[derive(Debug, PartialEq, Eq)]
enum Credentials<'a> {
    Token(&'a str),
    None,
    /// The token header appears more than once, or is not text: which one the proxy
    /// and the upstream would each pick is anyone's guess, so it is refused.
    Ambiguous(&'static str),
}

/// The forward-auth router: a fallback handler, so any method and path is the check.
///
/// Returns `None` if a configured header name does not parse, which
/// [`crate::config::Config::validate`] rules out.
pub fn router(verifier: Arc<Verifier>, config: ForwardAuthConfig) -> Option<Router> {
    let header = HeaderName::from_bytes(config.header.as_bytes()).ok()?;
    let claim_headers = config
        .forward_claims
        .values()
        .map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
        .collect::<Option<Vec<_>>>()?;
    let state = Arc::new(ForwardAuth {
        verifier,
        config,
        header,
        claim_headers,
    });
    Some(Router::new().fallback(check).with_state(state))
}

async fn check(State(fa): State<Arc<ForwardAuth>>, headers: HeaderMap) -> Response {
    let decision = match credentials(&fa.header, fa.config.cookie.as_deref(), &headers) {
        Credentials::Token(token) => Decision::for_token(&fa.verifier, Some(token)).await,
        Credentials::None => Decision::MissingToken,
        Credentials::Ambiguous(why) => Decision::Invalid {
            reason: denylist_proto::pb::Reason::Malformed,
            detail: why.into(),
        },
    };
    metrics::counter!("denylist_forward_auth_total", "result" => decision.error()).increment(1);
    fa.respond(&decision)
}

impl ForwardAuth {
    fn respond(&self, decision: &Decision) -> Response {
        let Decision::Allow { token, stale } = decision else {
            return denial(decision);
        };
        let mut response = StatusCode::OK.into_response();
        let headers = response.headers_mut();
        let values = claim_headers(token, &self.config.forward_claims);
        for (name, (_, value)) in self.claim_headers.iter().zip(values) {
            // Values with control characters are already left out; from_bytes also
            // takes UTF-8 beyond ASCII, which proxies pass through as bytes.
            if let Some(v) = value.and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok()) {
                headers.insert(name.clone(), v);
            }
        }
        if *stale {
            headers.insert(STALE_HEADER, HeaderValue::from_static("true"));
        }
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

/// A 401 or 503 for a decision other than `Allow`.
fn denial(decision: &Decision) -> Response {
    let status = match decision {
        Decision::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::UNAUTHORIZED,
    };
    let mut response = (status, Body::from(decision.body())).into_response();
    let headers = response.headers_mut();
    if let Some(challenge) = decision
        .challenge()
        .and_then(|c| HeaderValue::try_from(c.into_owned()).ok())
    {
        headers.insert(WWW_AUTHENTICATE, challenge);
    }
    if status == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(REASON_HEADER, HeaderValue::from_static(decision.error()));
    response
}

/// The token in `headers`: `Bearer` in `header`, else the `cookie` (only when `header`
/// is absent, as ext_authz does).
fn credentials<'h>(
    header: &HeaderName,
    cookie: Option<&str>,
    headers: &'h HeaderMap,
) -> Credentials<'h> {
    let mut values = headers.get_all(header).iter();
    if let Some(value) = values.next() {
        if values.next().is_some() {
            return Credentials::Ambiguous("more than one token header");
        }
        let Ok(value) = value.to_str() else {
            return Credentials::Ambiguous("the token header is not visible ASCII");
        };
        // Present but not a Bearer credential: no token, and no falling back to the cookie.
        return bearer_token(value).map_or(Credentials::None, Credentials::Token);
    }
    let Some(name) = cookie else {
        return Credentials::None;
    };
    // HTTP/1.1 sends one Cookie header, HTTP/2 may send several: look in each.
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| cookie_token(v, name))
        .map_or(Credentials::None, Credentials::Token)
}

#[cfg(test)]
mod tests;
