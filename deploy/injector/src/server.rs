//! The HTTPS server: admission endpoints, `/healthz`, `/metrics`, and a graceful drain.
//!
//! [`run`] takes a bound listener, a TLS config and a shutdown future (the mini-redis
//! shape), so tests bind port 0 and exercise shutdown itself. Every connection runs in a
//! task of one `JoinSet`, so on shutdown nothing is left detached: connections are told to
//! finish (HTTP/2 `GOAWAY`, HTTP/1 close after the current response) and are awaited until
//! the grace period ends, then aborted.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::inject::{Decision, OptIn, decide};
use crate::metrics::{ErrorKind, InjectorMetrics};
use crate::settings::InjectionSettings;

/// Webhook path for pods of namespaces without the injection label (annotation opt-in).
pub const PATH_POD: &str = "/mutate";
/// Webhook path for pods of namespaces labelled `denylist.dev/injection=enabled`.
pub const PATH_NAMESPACE: &str = "/mutate/namespace";
/// Liveness and readiness of the injector.
pub const PATH_HEALTHZ: &str = "/healthz";
/// Prometheus metrics.
pub const PATH_METRICS: &str = "/metrics";

/// Largest request body accepted. An AdmissionReview carries the pod (etcd caps objects at
/// 1.5 MiB) and, for updates, the old one too.
const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// A client that has not finished the TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the webhook needs to answer requests.
#[derive(Debug, Clone)]
pub struct App {
    settings: Arc<InjectionSettings>,
    metrics: Arc<InjectorMetrics>,
}

impl App {
    /// An app with validated settings and the metrics registry it records into.
    pub fn new(settings: InjectionSettings, metrics: Arc<InjectorMetrics>) -> Self {
        Self {
            settings: Arc::new(settings),
            metrics,
        }
    }

    /// The routes, as an axum router (used by [`run`], and by tests without TLS).
    pub fn router(&self) -> Router {
        Router::new()
            .route(
                PATH_POD,
                post(|State(app): State<App>, body: Bytes| async move {
                    app.admit(OptIn::PodAnnotation, &body)
                }),
            )
            .route(
                PATH_NAMESPACE,
                post(|State(app): State<App>, body: Bytes| async move {
                    app.admit(OptIn::Namespace, &body)
                }),
            )
            .route(PATH_HEALTHZ, get(|| async { "ok\n" }))
            .route(
                PATH_METRICS,
                get(|State(app): State<App>| async move {
                    (
                        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        app.metrics.render(),
                    )
                }),
            )
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .with_state(self.clone())
    }

    fn bad_request(&self, message: String) -> Response {
        self.metrics.error(ErrorKind::BadRequest);
        tracing::warn!(%message, "rejected a malformed admission request");
        (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response()
    }

    /// Answers one AdmissionReview body. Malformed input is HTTP 400 with a message.
    fn admit(&self, opt_in: OptIn, body: &[u8]) -> Response {
        let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => return self.bad_request(format!("malformed AdmissionReview: {e}")),
        };
        if review.types.api_version != "admission.k8s.io/v1"
            || review.types.kind != "AdmissionReview"
        {
            return self.bad_request(format!(
                "expected apiVersion admission.k8s.io/v1 and kind AdmissionReview, got {:?} {:?}",
                review.types.api_version, review.types.kind
            ));
        }
        let request: AdmissionRequest<DynamicObject> = match review.try_into() {
            Ok(r) => r,
            Err(_) => return self.bad_request("AdmissionReview has no request".to_owned()),
        };
        let decision = match decide(&self.settings, opt_in, &request) {
            Ok(d) => d,
            Err(e) => return self.bad_request(e.to_string()),
        };
        let pod = pod_name(&request);
        let namespace = request.namespace.as_deref().unwrap_or_default();
        let mut response = AdmissionResponse::from(&request);
        let outcome = match decision {
            Decision::Skip(reason) => {
                self.metrics.skipped(reason);
                tracing::debug!(uid = %request.uid, namespace, pod, reason = reason.as_str(), "allowed without injection");
                "skipped"
            }
            Decision::Deny(denial) => {
                self.metrics.denied(denial.reason);
                tracing::info!(uid = %request.uid, namespace, pod, reason = denial.reason.as_str(), message = %denial.message, "denied");
                response = response.deny(denial.message);
                response.result.code = 403;
                response.result.reason = "Forbidden".to_owned();
                "denied"
            }
            Decision::Inject(injection) => {
                response = match response.with_patch(injection.patch) {
                    Ok(r) => r,
                    Err(e) => {
                        self.metrics.error(ErrorKind::Internal);
                        tracing::error!(uid = %request.uid, error = %e, "cannot serialise the patch");
                        return (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n"))
                            .into_response();
                    }
                };
                if !injection.warnings.is_empty() {
                    response.warnings = Some(injection.warnings);
                }
                self.metrics.injected();
                tracing::info!(uid = %request.uid, namespace, pod, legacy = self.settings.legacy_sidecar, "injected the denylist sidecar");
                "injected"
            }
        };
        response.audit_annotations = HashMap::from([("decision".to_owned(), outcome.to_owned())]);
        // kube-core serialises `patch` (a byte vector) as an array of numbers; the API's
        // documented JSON form of a `[]byte` is a base64 string, so write that instead.
        let patch = response.patch.take();
        let json = serde_json::to_value(response.into_review()).and_then(|mut review| {
            if let Some(bytes) = patch {
                review["response"]["patch"] = serde_json::Value::String(BASE64.encode(bytes));
            }
            serde_json::to_vec(&review)
        });
        match json {
            Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
            Err(e) => {
                self.metrics.error(ErrorKind::Internal);
                (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response()
            }
        }
    }
}

/// A pod's name for logs: on CREATE the name is often still empty (`generateName`).
fn pod_name(request: &AdmissionRequest<DynamicObject>) -> String {
    let meta = request.object.as_ref().map(|o| &o.metadata);
    match (
        meta.and_then(|m| m.name.as_deref()),
        meta.and_then(|m| m.generate_name.as_deref()),
    ) {
        (Some(name), _) if !name.is_empty() => name.to_owned(),
        (_, Some(prefix)) => format!("{prefix}*"),
        _ => request.name.clone(),
    }
}

/// How the server stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every connection finished within the grace period.
    Clean,
    /// The grace period ended first; this many connections were aborted.
    DeadlineExceeded {
        /// Connections still open at the deadline.
        aborted: usize,
    },
}

/// Serves the webhook over TLS on `listener` until `shutdown` completes, goes on
/// accepting for `delay` (the API server may route calls here until it has seen the pod
/// terminating, and a refused call fails a pod creation under `failurePolicy: Fail`),
/// then stops accepting and drains open connections for at most `grace`.
pub async fn run(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: App,
    shutdown: impl Future<Output = ()>,
    delay: Duration,
    grace: Duration,
) -> Drained {
    let acceptor = TlsAcceptor::from(tls);
    let service = TowerToHyperService::new(app.router());
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // A timer lets hyper enforce its header-read timeout (slow clients cannot hold a slot).
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let accept_until = async {
        shutdown.await;
        if !delay.is_zero() {
            tracing::info!(
                ?delay,
                "shutdown requested: still accepting while the API server stops routing here"
            );
            tokio::time::sleep(delay).await;
        }
    };
    tokio::pin!(accept_until);
    loop {
        tokio::select! {
            () = &mut accept_until => break,
            // Reap finished connections so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(error) => {
                        // Per-connection errors (reset before accept, fd limits): keep serving.
                        tracing::warn!(%error, "accept failed");
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                connections.spawn(serve_connection(
                    tcp,
                    peer,
                    acceptor.clone(),
                    builder.clone(),
                    service.clone(),
                    graceful.watcher(),
                    app.metrics.clone(),
                ));
            }
        }
    }
    drop(listener);
    tracing::info!(
        open = connections.len(),
        ?grace,
        "shutting down: draining connections"
    );
    let drain = async {
        graceful.shutdown().await;
        while connections.join_next().await.is_some() {}
    };
    if tokio::time::timeout(grace, drain).await.is_ok() {
        tracing::info!("drained");
        return Drained::Clean;
    }
    connections.abort_all();
    let mut aborted = 0;
    while let Some(result) = connections.join_next().await {
        // Connections that finished just before the abort are not counted.
        aborted += usize::from(result.is_err_and(|e| e.is_cancelled()));
    }
    tracing::warn!(
        aborted,
        "grace period ended before every connection finished; aborted them"
    );
    Drained::DeadlineExceeded { aborted }
}

async fn serve_connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    builder: Arc<hyper_util::server::conn::auto::Builder<TokioExecutor>>,
    service: TowerToHyperService<Router>,
    watcher: hyper_util::server::graceful::Watcher,
    metrics: Arc<InjectorMetrics>,
) {
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            metrics.error(ErrorKind::Tls);
            tracing::debug!(%peer, %error, "TLS handshake failed");
            return;
        }
        Err(_) => {
            metrics.error(ErrorKind::Tls);
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    if let Err(error) = watcher.watch(connection).await {
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
}
