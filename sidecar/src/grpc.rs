//! The gRPC surface: `denylist.v1.Verifier`, `grpc.health.v1.Health` and server
//! reflection on one router, served on a Unix socket and/or loopback TCP.
//!
//! Domain answers (an invalid token) are normal responses; only "cannot answer"
//! conditions become a `tonic::Status`, and they do so in [`ServiceError`]'s
//! conversion alone.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use denylist_proto::pb;
use denylist_proto::pb::Reason;
use denylist_proto::pb::verifier_server::Verifier as VerifierApi;
use futures::Stream;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::config::StalenessPolicy;
use crate::denylist::{Revocation, TokenFacts};
use crate::freshness::FreshnessView;
use crate::keys::KeyStore;
use crate::verify::{VerifiedToken, Verifier};

mod request_limit;
mod verify_answer;
use request_limit::RequestLimit;
pub(crate) use verify_answer::encode_claims_field;
use verify_answer::{VerifyAnswer, VerifyRoute};

/// Longest field accepted in a `CheckRequest` or `WatchRequest`.
const MAX_FIELD_BYTES: usize = 1024;

/// Why a call could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The denylist has not caught up with its source yet.
    #[error("the denylist is still loading; retry shortly")]
    NotReady,
    /// The denylist is stale and the policy is `fail_closed`.
    #[error(
        "the denylist is stale ({age_ms} ms since its source was heard from) and the policy is fail_closed"
    )]
    Stale {
        /// Age of the denylist.
        age_ms: u64,
    },
    /// The request is malformed.
    #[error("{0}")]
    InvalidArgument(String),
}

impl From<ServiceError> for Status {
    fn from(e: ServiceError) -> Self {
        let msg = e.to_string();
        match e {
            ServiceError::NotReady | ServiceError::Stale { .. } => Status::unavailable(msg),
            ServiceError::InvalidArgument(_) => Status::invalid_argument(msg),
        }
    }
}

/// Static facts shown by `Status`.
#[derive(Debug, Clone)]
pub struct ServiceInfo {
    /// The sidecar's name (pod name).
    pub name: String,
    /// `standalone` or `nats`.
    pub mode: &'static str,
}

/// The `denylist.v1.Verifier` implementation.
#[derive(Debug, Clone)]
pub struct VerifierService {
    verifier: Arc<Verifier>,
    keys: Arc<KeyStore>,
    info: ServiceInfo,
    stopping: watch::Receiver<bool>,
    metrics: Arc<VerifyMetrics>,
}

/// Verify's metrics, looked up once: `metrics::counter!` with a label finds its
/// counter in the recorder's registry by hashing name and label on every call.
#[derive(Debug)]
struct VerifyMetrics {
    /// `denylist_verifications_total`, indexed by the reason's number.
    answers: Vec<metrics::Counter>,
    duration: metrics::Histogram,
}

impl VerifyMetrics {
    /// Handles from the recorder installed now (the binary installs it before building
    /// the service; without one they do nothing, as the macros would).
    fn new() -> Self {
        let answers = (0..)
            .map_while(|n| Reason::try_from(n).ok())
            .map(|reason| match reason {
                // Never a verdict's reason, and not exported (see telemetry).
                Reason::Unspecified => metrics::Counter::noop(),
                _ => metrics::counter!("denylist_verifications_total", "reason" => reason.as_str_name()),
            })
            .collect();
        Self {
            answers,
            duration: metrics::histogram!("denylist_verify_duration_seconds"),
        }
    }

    fn record(&self, reason: Reason, took: Duration) {
        match self.answers.get(reason as usize) {
            Some(counter) => counter.increment(1),
            None => {
                metrics::counter!("denylist_verifications_total", "reason" => reason.as_str_name())
                    .increment(1)
            }
        }
        self.duration.record(took.as_secs_f64());
    }
}

impl VerifierService {
    /// A service over a verifier and its key store. Watch streams are woken by the
    /// denylist itself (see [`crate::watch`]); `stopping` turns true when the sidecar
    /// begins to shut down, which ends every Watch stream.
    pub fn new(
        verifier: Arc<Verifier>,
        keys: Arc<KeyStore>,
        info: ServiceInfo,
        stopping: watch::Receiver<bool>,
    ) -> Self {
        Self {
            verifier,
            keys,
            info,
            stopping,
            metrics: Arc::new(VerifyMetrics::new()),
        }
    }

    /// One Verify call, up to its answer. Served through [`VerifyRoute`]; the trait's
    /// `verify` answers the same as a prost message.
    async fn answer_verify(&self, request: pb::VerifyRequest) -> Result<VerifyAnswer, Status> {
        self.require_ready()?;
        let started = Instant::now();
        let token = without_bearer(&request.token);
        let verdict = self.verifier.verify_with_refetch(token).await;
        self.metrics.record(verdict.reason, started.elapsed());
        Ok(VerifyAnswer::new(verdict))
    }

    fn require_ready(&self) -> Result<(), ServiceError> {
        if self.verifier.freshness().is_ready() {
            Ok(())
        } else {
            Err(ServiceError::NotReady)
        }
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::RevocationNotice, Status>> + Send>>;

#[tonic::async_trait]
impl VerifierApi for VerifierService {
    async fn verify(
        &self,
        request: Request<pb::VerifyRequest>,
    ) -> Result<Response<pb::VerifyResponse>, Status> {
        let answer = self.answer_verify(request.into_inner()).await?;
        Ok(Response::new(answer.into_response()))
    }

    async fn check(
        &self,
        request: Request<pb::CheckRequest>,
    ) -> Result<Response<pb::CheckResponse>, Status> {
        self.require_ready()?;
        let req = request.into_inner();
        if req.issuer.is_empty() {
            return Err(ServiceError::InvalidArgument("`issuer` is required".into()).into());
        }
        for (name, v) in [
            ("issuer", &req.issuer),
            ("jti", &req.jti),
            ("subject", &req.subject),
            ("session", &req.session),
            ("kid", &req.kid),
        ] {
            if v.len() > MAX_FIELD_BYTES {
                return Err(ServiceError::InvalidArgument(format!(
                    "`{name}` is longer than {MAX_FIELD_BYTES} bytes"
                ))
                .into());
            }
        }
        let facts = TokenFacts {
            issuer: &req.issuer,
            jti: non_empty(&req.jti),
            subject: non_empty(&req.subject),
            session: non_empty(&req.session),
            kid: non_empty(&req.kid),
            issued_at: req.issued_at,
        };
        let (revocation, freshness) = self.verifier.check(&facts);
        if revocation.is_none() {
            fail_closed_if_stale(freshness, self.verifier.freshness().policy())?;
        }
        Ok(Response::new(pb::CheckResponse {
            revoked: revocation.is_some(),
            revocation: revocation.as_ref().map(revocation_to_proto),
            denylist_sequence: freshness.sequence,
            denylist_age_ms: freshness.age_ms,
            stale: freshness.stale,
        }))
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let freshness = self.verifier.freshness().view();
        let stats = self.verifier.denylist().stats();
        let issuers: Vec<_> = self
            .keys
            .status()
            .into_iter()
            .map(|s| pb::IssuerStatus {
                issuer: s.issuer,
                source: s.source.to_owned(),
                keys: s.keys,
                last_refresh_ms: s.last_refresh_ms,
                last_error: s.last_error.unwrap_or_default(),
                fetch_failures: s.fetch_failures,
            })
            .collect();
        Ok(Response::new(pb::StatusResponse {
            ready: freshness.ready,
            stale: freshness.stale,
            denylist_sequence: freshness.sequence,
            denylist_age_ms: freshness.age_ms,
            entries: stats.entries,
            bloom_bytes: stats.bloom_bytes,
            keys: issuers.iter().map(|i| u64::from(i.keys)).sum(),
            issuers,
            mode: self.info.mode.to_owned(),
            name: self.info.name.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.require_ready()?;
        let target = self.watch_target(request.into_inner()).await?;
        // Registered before the first check, so a revocation applied in between wakes it.
        let watcher = self.verifier.denylist().watch(&target.facts());
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(watch_until_revoked(
            Arc::clone(&self.verifier),
            target,
            watcher,
            self.stopping.clone(),
            tx,
        ));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// The task behind one Watch stream: sends one notice when a rule matching `target` is
/// in force, then ends. Ends early when the caller goes away (`tx` closed) or the
/// sidecar begins to stop: an open stream would otherwise hold the graceful drain until
/// `shutdown_grace` runs out.
///
/// It waits on `watcher`, which the denylist wakes only for rules under the target's
/// keys (and for whole replacements), and then re-checks with the real lookup: the
/// registry narrows who re-checks, the denylist decides. So the cost of a revocation
/// does not grow with the number of open streams.
///
/// The notice's `denylist_sequence` is the one recorded when the rule was found. The
/// denylist wakes watchers as soon as the rule is visible and the source records the
/// rule's sequence just after `apply` returns, so a watcher run at once on another
/// thread can report the sequence just before the rule's. It seldom happens: a task
/// woken from a runtime thread (the stream follower and the file source are tasks)
/// normally runs on that thread once the waking task yields, after the sequence is
/// recorded; not always (tokio gives one woken task that slot, and a replacement wakes
/// many). An exact sequence needs the source to wake watchers after recording it.
async fn watch_until_revoked(
    verifier: Arc<Verifier>,
    target: WatchTarget,
    watcher: crate::watch::Watcher,
    stopping: watch::Receiver<bool>,
    tx: tokio::sync::mpsc::Sender<Result<pb::RevocationNotice, Status>>,
) {
    let facts = target.facts();
    loop {
        let (revocation, freshness) = verifier.check(&facts);
        if let Some(r) = revocation {
            let notice = pb::RevocationNotice {
                revocation: Some(revocation_to_proto(&r)),
                denylist_sequence: freshness.sequence,
            };
            let _ = tx.send(Ok(notice)).await;
            return;
        }
        tokio::select! {
            () = tx.closed() => return,
            () = crate::app::stopped(stopping.clone()) => {
                let _ = tx.send(Err(Status::unavailable("the sidecar is shutting down"))).await;
                return;
            }
            () = watcher.woken() => {}
        }
    }
}

/// What a Watch call watches, owned so it can outlive the request.
#[derive(Debug)]
struct WatchTarget {
    issuer: String,
    jti: Option<String>,
    subject: Option<String>,
    session: Option<String>,
    kid: Option<String>,
    issued_at: Option<i64>,
}

impl WatchTarget {
    fn facts(&self) -> TokenFacts<'_> {
        TokenFacts {
            issuer: &self.issuer,
            jti: self.jti.as_deref(),
            subject: self.subject.as_deref(),
            session: self.session.as_deref(),
            kid: self.kid.as_deref(),
            issued_at: self.issued_at,
        }
    }
}

impl VerifierService {
    async fn watch_target(&self, req: pb::WatchRequest) -> Result<WatchTarget, ServiceError> {
        if !req.token.is_empty() {
            let token = without_bearer(&req.token);
            let verdict = self.verifier.verify_with_refetch(token).await;
            // A revoked token is still watchable: the first notice arrives at once.
            let Some(t) = verdict.token.filter(|_| {
                matches!(
                    verdict.reason,
                    Reason::Ok | Reason::Revoked | Reason::DenylistStale
                )
            }) else {
                return Err(ServiceError::InvalidArgument(format!(
                    "the token cannot be watched: {}: {}",
                    verdict.reason.as_str_name(),
                    verdict.detail
                )));
            };
            // The same facts Verify matches on (a kid-less token: its key's kid).
            let facts = t.facts();
            return Ok(WatchTarget {
                issuer: facts.issuer.to_owned(),
                jti: facts.jti.map(str::to_owned),
                subject: facts.subject.map(str::to_owned),
                session: facts.session.map(str::to_owned),
                kid: facts.kid.map(str::to_owned),
                issued_at: facts.issued_at,
            });
        }
        if req.issuer.is_empty() || (req.subject.is_empty() && req.session.is_empty()) {
            return Err(ServiceError::InvalidArgument(
                "watch a `token`, or an `issuer` with a `subject` or `session`".into(),
            ));
        }
        if [&req.issuer, &req.subject, &req.session]
            .iter()
            .any(|v| v.len() > MAX_FIELD_BYTES)
        {
            return Err(ServiceError::InvalidArgument(format!(
                "fields are limited to {MAX_FIELD_BYTES} bytes"
            )));
        }
        Ok(WatchTarget {
            issuer: req.issuer,
            jti: None,
            subject: non_empty(&req.subject).map(str::to_owned),
            session: non_empty(&req.session).map(str::to_owned),
            kid: None,
            // Without it, every token of the subject: every cut-off rule matches.
            issued_at: req.issued_at,
        })
    }
}

/// The token without a leading `Bearer ` scheme, which callers often pass on from an
/// `Authorization` header. The scheme is case-insensitive (RFC 9110 §11.1), as ext_authz
/// reads it too.
fn without_bearer(raw: &str) -> &str {
    match raw.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case("bearer ") => &raw[7..],
        _ => raw,
    }
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

fn fail_closed_if_stale(f: FreshnessView, policy: StalenessPolicy) -> Result<(), ServiceError> {
    if f.stale && policy == StalenessPolicy::FailClosed {
        Err(ServiceError::Stale { age_ms: f.age_ms })
    } else {
        Ok(())
    }
}

/// The protobuf form of a verified token's claims.
pub fn claims_to_proto(t: &VerifiedToken) -> pb::Claims {
    let c = &t.claims;
    let owned = |s: Option<&str>| s.unwrap_or_default().to_owned();
    pb::Claims {
        iss: owned(c.iss()),
        sub: owned(c.sub()),
        aud: c.audiences().map(str::to_owned).collect(),
        exp: c.exp().unwrap_or(0),
        iat: c.iat(),
        nbf: c.nbf(),
        jti: owned(c.jti()),
        kid: owned(t.kid()),
        sid: owned(c.sid()),
        alg: t.alg.name().to_owned(),
        payload: Some(object_to_struct(c.object())),
    }
}

/// The protobuf form of a matched rule.
pub fn revocation_to_proto(r: &Revocation) -> pb::Revocation {
    pb::Revocation {
        kind: r.kind.to_proto() as i32,
        event_id: r.event_id.to_string(),
        reason: r.reason.to_string(),
        issuer: r.issuer.clone(),
        target: r.target.clone(),
        cutoff: r.cutoff,
        actor: r.actor.to_string(),
        created_at_ms: r.created_at_ms,
    }
}

/// Converts a verified payload object into a `google.protobuf.Struct`.
fn object_to_struct(map: &serde_json::Map<String, serde_json::Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: map
            .iter()
            .map(|(k, v)| (k.clone(), json_to_value(v)))
            .collect(),
    }
}

fn json_to_value(v: &serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    use serde_json::Value as J;
    let kind = match v {
        J::Null => Kind::NullValue(0),
        J::Bool(b) => Kind::BoolValue(*b),
        J::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        J::String(s) => Kind::StringValue(s.clone()),
        J::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(json_to_value).collect(),
        }),
        J::Object(o) => Kind::StructValue(object_to_struct(o)),
    };
    prost_types::Value { kind: Some(kind) }
}

/// Limits applied to the gRPC server.
#[derive(Debug, Clone, Copy)]
pub struct GrpcLimits {
    /// Largest request message, not counting its protobuf framing; a larger one is
    /// refused with `RESOURCE_EXHAUSTED`.
    pub max_request_bytes: usize,
    /// Most concurrent streams per connection.
    pub max_concurrent_streams: u32,
}

/// The router with Verifier, health and reflection. Returns the health reporter so
/// the caller can publish serving status.
pub fn routes(
    service: VerifierService,
    ext_authz: Option<crate::ext_authz::ExtAuthzService>,
    publisher: Option<crate::publisher::PublisherService>,
    limits: GrpcLimits,
) -> Result<
    (tonic::service::Routes, tonic_health::server::HealthReporter),
    tonic_reflection::server::Error,
> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(denylist_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let verifier = VerifyRoute::new(
        service,
        limits.max_request_bytes + request_limit::FRAMING_BYTES,
        limits.max_request_bytes.max(1 << 20),
    );
    let mut routes = tonic::service::Routes::new(RequestLimit::new(verifier))
        .add_service(health_service)
        .add_service(reflection);
    if let Some(ext_authz) = ext_authz {
        routes = routes.add_service(
            ext_authz
                .into_server()
                // Envoy sends every request header (and optionally the body): allow more.
                .max_decoding_message_size(limits.max_request_bytes.max(1 << 20)),
        );
    }
    if let Some(publisher) = publisher {
        routes = routes.add_service(publisher.into_server());
    }
    Ok((routes, health_reporter))
}

/// The gRPC service name whose health mirrors readiness.
pub const HEALTH_SERVICE: &str = "denylist.v1.Verifier";

#[cfg(test)]
mod tests;
