//! Envoy / Istio external authorization: `envoy.service.auth.v3.Authorization/Check`,
//! and the decision it shares with the HTTP forward-auth endpoint.
//!
//! The token comes from the configured header (`Authorization: Bearer …`) or cookie.
//! Valid → OK, with the configured claims forwarded as request headers (and those
//! headers stripped from the client's request first, so they cannot be forged).
//! Missing or invalid → 401 with `www-authenticate` and the reason; revoked → 401;
//! stale under `fail_closed`, or not ready → 503.
//!
//! [`Decision`], [`bearer_token`], [`cookie_token`] and [`claim_headers`] are the
//! proxy-independent part: [`crate::forward_auth`] answers the same decision over
//! plain HTTP.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use denylist_proto::pb::Reason;
use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, HeaderAppendAction,
    HttpStatusCode,
};
use envoy_types::ext_authz::v3::{
    CheckRequestExt as _, CheckResponseExt as _, DeniedHttpResponseBuilder, OkHttpResponseBuilder,
};
use tonic::{Request, Response, Status};

use crate::config::ExtAuthzConfig;
use crate::verify::{VerifiedToken, Verifier};

/// The challenge of a request without a token (RFC 6750 §3.1: no error code).
pub(crate) const CHALLENGE: &str = "Bearer realm=\"denylist\"";

/// What an authorization check answers, whichever proxy asked.
#[derive(Debug)]
pub(crate) enum Decision {
    /// Valid: let the request through, with the token's claims.
    Allow {
        /// The verified token.
        token: Arc<VerifiedToken>,
        /// The denylist is stale, and the policy is `fail_open`.
        stale: bool,
    },
    /// No token in the request: 401 with a bare challenge.
    MissingToken,
    /// A token that is invalid, expired or revoked: 401 `invalid_token`.
    Invalid {
        /// Why.
        reason: Reason,
        /// The verifier's explanation.
        detail: Cow<'static, str>,
    },
    /// The sidecar cannot answer for revocations (still loading, or stale under
    /// `fail_closed`): 503, try again shortly.
    Unavailable {
        /// `not_ready` or `REASON_DENYLIST_STALE`.
        error: &'static str,
        /// Why.
        detail: Cow<'static, str>,
    },
}

impl Decision {
    /// Verifies `token` (the one the request carries, if any). Never an error: a bad
    /// token is a normal answer.
    pub(crate) async fn for_token(verifier: &Verifier, token: Option<&str>) -> Self {
        let Some(token) = token else {
            return Self::MissingToken;
        };
        if !verifier.freshness().is_ready() {
            return Self::Unavailable {
                error: "not_ready",
                detail: Cow::Borrowed("the denylist is still loading"),
            };
        }
        let verdict = verifier.verify_with_refetch(token).await;
        match (verdict.reason, verdict.token) {
            (Reason::Ok, Some(token)) => Self::Allow {
                token,
                stale: verdict.freshness.stale,
            },
            (Reason::DenylistStale, _) => Self::Unavailable {
                error: Reason::DenylistStale.as_str_name(),
                detail: verdict.detail,
            },
            // `Ok` without a token would be a verifier bug: never let it through.
            (Reason::Ok, None) => Self::Invalid {
                reason: Reason::Unspecified,
                detail: Cow::Borrowed("no verified token"),
            },
            (reason, _) => Self::Invalid {
                reason,
                detail: verdict.detail,
            },
        }
    }

    /// The short name of the outcome: the `result` metric label, the JSON body's
    /// `error`, and forward-auth's `x-denylist-reason`.
    pub(crate) fn error(&self) -> &'static str {
        match self {
            Self::Allow { .. } => Reason::Ok.as_str_name(),
            Self::MissingToken => "missing_token",
            Self::Invalid { reason, .. } => reason.as_str_name(),
            Self::Unavailable { error, .. } => error,
        }
    }

    /// The `WWW-Authenticate` challenge of a 401 (RFC 6750 §3); `None` for other answers.
    pub(crate) fn challenge(&self) -> Option<Cow<'static, str>> {
        match self {
            Self::MissingToken => Some(Cow::Borrowed(CHALLENGE)),
            Self::Invalid { reason, .. } => Some(Cow::Owned(format!(
                "{CHALLENGE}, error=\"invalid_token\", error_description=\"{}\"",
                reason.as_str_name()
            ))),
            Self::Allow { .. } | Self::Unavailable { .. } => None,
        }
    }

    /// The JSON body of a denial: `{"error": …, "detail": …}`.
    pub(crate) fn body(&self) -> String {
        let detail: &str = match self {
            Self::Allow { .. } => "",
            Self::MissingToken => "no bearer token in the request",
            Self::Invalid { detail, .. } | Self::Unavailable { detail, .. } => detail,
        };
        serde_json::json!({ "error": self.error(), "detail": detail }).to_string()
    }
}

/// The token of an `Authorization`-style header value: `Bearer <token>`, the scheme
/// matched case-insensitively (RFC 9110 §11.1). Anything else carries no token.
pub(crate) fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The value of cookie `name` in one `Cookie` header value; the first one wins.
pub(crate) fn cookie_token<'a>(cookie_header: &'a str, name: &str) -> Option<&'a str> {
    cookie_header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name && !v.is_empty()).then_some(v)
    })
}

/// The configured claims of `token` as header values, in `forward` order: `(header,
/// Some(value))` to set, `(header, None)` to remove — the token has no such claim, or
/// its value is not safe to forward.
///
/// `iss sub jti sid` are strings, `aud` is its values joined with `,`, any other
/// top-level claim is its string, or its JSON text when it is not a string.
pub(crate) fn claim_headers<'c>(
    token: &VerifiedToken,
    forward: &'c BTreeMap<String, String>,
) -> Vec<(&'c str, Option<String>)> {
    // Parsed only when a non-registered claim is asked for, and then once.
    let mut payload: Option<serde_json::Map<String, serde_json::Value>> = None;
    forward
        .iter()
        .map(|(claim, header)| {
            let value = match claim.as_str() {
                "iss" => token.claims.iss().map(str::to_owned),
                "sub" => token.claims.sub().map(str::to_owned),
                "jti" => token.claims.jti().map(str::to_owned),
                "sid" => token.claims.sid().map(str::to_owned),
                "aud" => {
                    let aud: Vec<&str> = token.claims.audiences().collect();
                    (!aud.is_empty()).then(|| aud.join(","))
                }
                other => {
                    let map = payload.get_or_insert_with(|| {
                        serde_json::from_slice(token.claims.payload()).unwrap_or_default()
                    });
                    match map.get(other) {
                        None | Some(serde_json::Value::Null) => None,
                        Some(serde_json::Value::String(s)) => Some(s.clone()),
                        Some(v) => Some(v.to_string()),
                    }
                }
            };
            (header.as_str(), value.filter(|v| is_safe_header_value(v)))
        })
        .collect()
}

/// Whether a claim value may become a header value as it is. Line breaks and other
/// control characters could smuggle headers; leading or trailing white space is
/// dropped by every HTTP parser, so `" admin"` would reach the upstream as `admin`.
fn is_safe_header_value(v: &str) -> bool {
    !v.is_empty() && !v.chars().any(char::is_control) && v.trim() == v
}

/// The ext_authz gRPC service.
#[derive(Debug, Clone)]
pub struct ExtAuthzService {
    verifier: Arc<Verifier>,
    config: Arc<ExtAuthzConfig>,
}

impl ExtAuthzService {
    /// A service over the sidecar's verifier.
    pub fn new(verifier: Arc<Verifier>, config: ExtAuthzConfig) -> Self {
        Self {
            verifier,
            config: Arc::new(config),
        }
    }

    /// The tonic server wrapper.
    pub fn into_server(self) -> AuthorizationServer<Self> {
        AuthorizationServer::new(self)
    }

    fn token_from<'a>(&self, req: &'a CheckRequest) -> Option<&'a str> {
        let headers = req.get_client_headers()?;
        if let Some(value) = headers.get(&self.config.header) {
            return bearer_token(value);
        }
        let name = self.config.cookie.as_deref()?;
        cookie_token(headers.get("cookie")?, name)
    }
}

#[tonic::async_trait]
impl Authorization for ExtAuthzService {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let req = request.into_inner();
        let decision = Decision::for_token(&self.verifier, self.token_from(&req)).await;
        let result = match &decision {
            // The label the dashboards already know for a request the sidecar could not
            // judge yet.
            Decision::Unavailable {
                error: "not_ready", ..
            } => "unavailable",
            other => other.error(),
        };
        metrics::counter!("denylist_ext_authz_total", "result" => result).increment(1);
        let response = match &decision {
            Decision::Allow { token, .. } => self.allow(token),
            Decision::Unavailable { detail, .. } => unavailable(&decision, detail),
            Decision::MissingToken | Decision::Invalid { .. } => deny(&decision),
        };
        Ok(Response::new(response))
    }
}

impl ExtAuthzService {
    fn allow(&self, token: &VerifiedToken) -> CheckResponse {
        let mut ok = OkHttpResponseBuilder::new();
        // A client-sent header of a forwarded name must never reach the upstream: it is
        // overwritten with the claim, or removed when the token has no such claim. Never
        // both: Envoy applies removals after additions, so a header both set and removed
        // would reach the upstream not at all.
        for (header, value) in claim_headers(token, &self.config.forward_claims) {
            match value {
                Some(v) => {
                    ok.add_header(
                        header,
                        v,
                        Some(HeaderAppendAction::OverwriteIfExistsOrAdd),
                        false,
                    );
                }
                None => {
                    ok.remove_header(header);
                }
            }
        }
        let mut response = CheckResponse::with_status(Status::ok("token valid"));
        response.set_http_response(ok);
        response
    }
}

fn deny(decision: &Decision) -> CheckResponse {
    let mut denied = DeniedHttpResponseBuilder::new();
    denied
        .set_http_status(HttpStatusCode::Unauthorized)
        .add_header(
            "www-authenticate",
            decision.challenge().unwrap_or(Cow::Borrowed(CHALLENGE)),
            None,
            false,
        )
        .add_header("content-type", "application/json", None, false)
        .set_body(decision.body());
    let detail = match decision {
        Decision::Invalid { detail, .. } => detail,
        _ => "no bearer token in the request",
    };
    let mut response = CheckResponse::with_status(Status::unauthenticated(detail.to_owned()));
    response.set_http_response(denied);
    response
}

fn unavailable(decision: &Decision, detail: &str) -> CheckResponse {
    let mut denied = DeniedHttpResponseBuilder::new();
    denied
        .set_http_status(HttpStatusCode::ServiceUnavailable)
        .add_header("content-type", "application/json", None, false)
        .add_header("retry-after", "1", None, false)
        .set_body(decision.body());
    let mut response = CheckResponse::with_status(Status::unavailable(detail.to_owned()));
    response.set_http_response(denied);
    response
}
