//! Envoy / Istio external authorization: `envoy.service.auth.v3.Authorization/Check`.
//!
//! The token comes from the configured header (`Authorization: Bearer …`) or cookie.
//! Valid → OK, with the configured claims forwarded as request headers (and those
//! headers stripped from the client's request first, so they cannot be forged).
//! Missing or invalid → 401 with `www-authenticate` and the reason; revoked → 401;
//! stale under `fail_closed`, or not ready → 503.

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
            let (scheme, token) = value.trim().split_once(' ')?;
            return scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim())
                .filter(|t| !t.is_empty());
        }
        let name = self.config.cookie.as_deref()?;
        headers.get("cookie")?.split(';').find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name && !v.is_empty()).then_some(v)
        })
    }
}

#[tonic::async_trait]
impl Authorization for ExtAuthzService {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let req = request.into_inner();
        let Some(token) = self.token_from(&req) else {
            metrics::counter!("denylist_ext_authz_total", "result" => "missing_token").increment(1);
            return Ok(Response::new(deny(
                HttpStatusCode::Unauthorized,
                "Bearer realm=\"denylist\"".to_owned(),
                "missing_token",
                "no bearer token in the request",
            )));
        };
        if !self.verifier.freshness().is_ready() {
            metrics::counter!("denylist_ext_authz_total", "result" => "unavailable").increment(1);
            return Ok(Response::new(unavailable("the denylist is still loading")));
        }
        let verdict = self.verifier.verify_with_refetch(token).await;
        metrics::counter!("denylist_ext_authz_total", "result" => verdict.reason.as_str_name())
            .increment(1);
        let response = match (verdict.reason, verdict.token) {
            (Reason::Ok, Some(token)) => self.allow(&token),
            (Reason::DenylistStale, _) => unavailable(&verdict.detail),
            (reason, _) => deny(
                HttpStatusCode::Unauthorized,
                format!(
                    "Bearer realm=\"denylist\", error=\"invalid_token\", error_description=\"{}\"",
                    reason.as_str_name()
                ),
                reason.as_str_name(),
                &verdict.detail,
            ),
        };
        Ok(Response::new(response))
    }
}

impl ExtAuthzService {
    fn allow(&self, token: &VerifiedToken) -> CheckResponse {
        let mut ok = OkHttpResponseBuilder::new();
        let mut payload: Option<serde_json::Map<String, serde_json::Value>> = None;
        // A client-sent header of a forwarded name must never reach the upstream: it is
        // overwritten with the claim, or removed when the token has no such claim. Never
        // both: Envoy applies removals after additions, so a header both set and removed
        // would reach the upstream not at all.
        for (claim, header) in &self.config.forward_claims {
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
                        Some(serde_json::Value::String(s)) => Some(s.clone()),
                        Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => {
                            Some(v.to_string())
                        }
                        _ => None,
                    }
                }
            };
            // Header values must not smuggle line breaks or other control characters.
            match value.filter(|v| !v.is_empty() && !v.chars().any(char::is_control)) {
                Some(v) => {
                    ok.add_header(
                        header.as_str(),
                        v,
                        Some(HeaderAppendAction::OverwriteIfExistsOrAdd),
                        false,
                    );
                }
                None => {
                    ok.remove_header(header.as_str());
                }
            }
        }
        let mut response = CheckResponse::with_status(Status::ok("token valid"));
        response.set_http_response(ok);
        response
    }
}

fn deny(
    code: HttpStatusCode,
    www_authenticate: String,
    error: &str,
    detail: &str,
) -> CheckResponse {
    let body = serde_json::json!({ "error": error, "detail": detail }).to_string();
    let mut denied = DeniedHttpResponseBuilder::new();
    denied
        .set_http_status(code)
        .add_header("www-authenticate", www_authenticate, None, false)
        .add_header("content-type", "application/json", None, false)
        .set_body(body);
    let mut response = CheckResponse::with_status(Status::unauthenticated(detail.to_owned()));
    response.set_http_response(denied);
    response
}

fn unavailable(detail: &str) -> CheckResponse {
    let body =
        serde_json::json!({ "error": "REASON_DENYLIST_STALE", "detail": detail }).to_string();
    let mut denied = DeniedHttpResponseBuilder::new();
    denied
        .set_http_status(HttpStatusCode::ServiceUnavailable)
        .add_header("content-type", "application/json", None, false)
        .add_header("retry-after", "1", None, false)
        .set_body(body);
    let mut response = CheckResponse::with_status(Status::unavailable(detail.to_owned()));
    response.set_http_response(denied);
    response
}
