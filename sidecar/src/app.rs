//! Builds the sidecar from its configuration and runs it until shutdown.
//!
//! The caller hands [`App::run`] bound listeners and a shutdown future (as in
//! mini-redis), so tests bind port 0 / a temp socket and can test shutdown itself.
//! Every background task takes the shutdown watch and is awaited before `run`
//! returns; in-flight calls drain under `shutdown_grace`.

use std::future::Future;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt as _;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

use crate::admin;
use crate::clock::SharedClock;
use crate::config::{Config, DenylistSource, ForwardAuthConfig, ListenConfig};
use crate::denylist::{Denylist, DenylistSettings};
use crate::ext_authz::ExtAuthzService;
use crate::forward_auth;
use crate::freshness::Freshness;
use crate::grpc::{self, GrpcLimits, ServiceInfo, VerifierService};
use crate::keys::{KeyError, KeyStore};
use crate::publisher::PublisherService;
use crate::standalone::{FileSource, RevocationsFileError};
use crate::sync::StreamFollower;
use crate::verify::Verifier;
use denylist_proto::envelope::{EnvelopeError, SigningKey, TrustedKeys};

/// Why the sidecar could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A key could not be loaded.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// The revocations file is missing or invalid at start.
    #[error(transparent)]
    RevocationsFile(#[from] RevocationsFileError),
    /// A listener could not be bound.
    #[error("cannot listen on {what}: {source}")]
    Bind {
        /// Which listener.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// Another process is serving on the configured socket.
    #[error("socket {0} is in use by another process")]
    SocketInUse(PathBuf),
    /// Something other than a socket is at the configured socket path; it is left alone.
    #[error(
        "{0} exists and is not a socket; refusing to replace it (check --socket / listen.socket)"
    )]
    NotASocket(PathBuf),
    /// A configured feature is not part of this build.
    #[error("{0}")]
    Unsupported(&'static str),
    /// NATS settings could not be applied (files, keys).
    #[error(transparent)]
    Nats(#[from] crate::sync::SyncError),
    /// A trusted or signing key is invalid.
    #[error("{what}: {error}")]
    PublisherKey {
        /// Which key.
        what: String,
        /// Why.
        error: denylist_proto::envelope::EnvelopeError,
    },
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Serve(String),
    /// The local state's directory (`state.dir`) cannot be created.
    #[error("state.dir {path}: {source}")]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The bound listeners.
#[derive(Debug, Default)]
pub struct Listeners {
    /// gRPC on a Unix socket, with its path (removed on shutdown).
    pub unix: Option<(UnixListener, PathBuf)>,
    /// gRPC on loopback TCP.
    pub tcp: Option<TcpListener>,
    /// HTTP admin.
    pub admin: Option<TcpListener>,
}

impl Listeners {
    /// Binds what the configuration asks for. A leftover socket file from a dead
    /// process is replaced; a live one is an error.
    pub async fn bind(listen: &ListenConfig) -> Result<Self, AppError> {
        let unix = match &listen.socket {
            Some(path) => Some((bind_unix(path).await?, path.clone())),
            None => None,
        };
        let tcp = bind_tcp(listen.tcp, "gRPC TCP").await?;
        let admin = bind_tcp(listen.admin, "admin HTTP").await?;
        Ok(Self { unix, tcp, admin })
    }
}

/// The forward-auth listeners (`[forward_auth]`), apart from [`Listeners`] because
/// they come from their own config section. [`App::run`] binds them itself unless
/// they are handed in with [`App::with_forward_auth_listeners`] (tests bind port 0).
#[derive(Debug, Default)]
pub struct ForwardAuthListeners {
    /// HTTP on loopback TCP.
    pub tcp: Option<TcpListener>,
    /// HTTP on a Unix socket, with its path (removed on shutdown).
    pub unix: Option<(UnixListener, PathBuf)>,
}

impl ForwardAuthListeners {
    /// Binds what `[forward_auth]` asks for (nothing when it is disabled).
    pub async fn bind(config: &ForwardAuthConfig) -> Result<Self, AppError> {
        if !config.enabled {
            return Ok(Self::default());
        }
        let tcp = bind_tcp(config.listen, "forward-auth HTTP").await?;
        let unix = match &config.socket {
            Some(path) => Some((bind_unix(path).await?, path.clone())),
            None => None,
        };
        Ok(Self { tcp, unix })
    }
}

async fn bind_tcp(
    addr: Option<std::net::SocketAddr>,
    what: &str,
) -> Result<Option<TcpListener>, AppError> {
    let Some(addr) = addr else { return Ok(None) };
    TcpListener::bind(addr)
        .await
        .map(Some)
        .map_err(|source| AppError::Bind {
            what: format!("{what} {addr}"),
            source,
        })
}

async fn bind_unix(path: &Path) -> Result<UnixListener, AppError> {
    let bind_err = |source| AppError::Bind {
        what: format!("socket {}", path.display()),
        source,
    };
    if let Ok(meta) = tokio::fs::symlink_metadata(path).await {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(AppError::SocketInUse(path.to_owned()));
        }
        // Only a stale socket is removed: a mistyped path must never delete a file.
        if !std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) {
            return Err(AppError::NotASocket(path.to_owned()));
        }
        tokio::fs::remove_file(path).await.map_err(bind_err)?;
    }
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await.map_err(bind_err)?;
    }
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    // Access is governed by the directory (a pod-private emptyDir); app containers
    // may run as any uid, so the socket itself is open to all who can reach it.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).map_err(bind_err)?;
    Ok(listener)
}

/// A built sidecar, ready to run.
#[derive(Debug)]
pub struct App {
    config: Config,
    keys: Arc<KeyStore>,
    denylist: Arc<Denylist>,
    freshness: Arc<Freshness>,
    verifier: Arc<Verifier>,
    file_source: Option<FileSource>,
    nats: Option<NatsParts>,
    clock: SharedClock,
    metrics: Option<PrometheusHandle>,
    forward_auth_listeners: Option<ForwardAuthListeners>,
}

/// Fleet-mode pieces, built at start and run by [`App::run`].
#[derive(Debug)]
struct NatsParts {
    client: async_nats::Client,
    trusted: TrustedKeys,
    publisher_key: Option<SigningKey>,
}

impl NatsParts {
    async fn build(config: &Config) -> Result<Self, AppError> {
        let trusted = config
            .nats
            .trusted_keys()
            .map_err(|e| AppError::PublisherKey {
                what: "nats trusted publishers".into(),
                error: EnvelopeError::Key(e.to_string()),
            })?;
        let publisher_key = match &config.nats.publisher_key_file {
            Some(path) => {
                let what = format!("nats.publisher_key_file {}", path.display());
                let pem = std::fs::read_to_string(path).map_err(|e| AppError::PublisherKey {
                    what: what.clone(),
                    error: EnvelopeError::Key(e.to_string()),
                })?;
                Some(
                    SigningKey::from_pkcs8_pem(&pem)
                        .map_err(|error| AppError::PublisherKey { what, error })?,
                )
            }
            None => None,
        };
        let client = crate::sync::connect(&config.nats, &config.name).await?;
        Ok(Self {
            client,
            trusted,
            publisher_key,
        })
    }
}

impl App {
    /// Loads keys and the initial denylist. Fails on anything that would make the
    /// sidecar answer wrongly: unreadable key files, an invalid revocations file.
    pub async fn build(
        config: Config,
        clock: SharedClock,
        metrics: Option<PrometheusHandle>,
    ) -> Result<Self, AppError> {
        let keys = Arc::new(KeyStore::load(&config.issuers, Arc::clone(&clock)).await?);
        let settings = DenylistSettings {
            expected_entries: config.denylist.expected_entries,
            bloom_fp_rate: config.denylist.bloom_fp_rate,
            max_lifetimes: config
                .issuers
                .iter()
                .map(|i| {
                    (
                        i.issuer.clone(),
                        i64::try_from(i.max_lifetime.as_secs()).unwrap_or(i64::MAX),
                    )
                })
                .collect(),
            default_max_lifetime: config
                .issuers
                .iter()
                .map(|i| i64::try_from(i.max_lifetime.as_secs()).unwrap_or(i64::MAX))
                .max()
                .unwrap_or(24 * 3600),
        };
        let denylist = Arc::new(Denylist::new(settings, Arc::clone(&clock)));
        let freshness = Arc::new(Freshness::new(
            Arc::clone(&clock),
            config.denylist.max_staleness,
            config.denylist.staleness_policy,
        ));
        let (file_source, nats) = match config.denylist.source {
            DenylistSource::File => {
                let path = config.denylist.file.clone().ok_or(AppError::Unsupported(
                    "denylist.file is required in file mode",
                ))?;
                let mut source =
                    FileSource::new(path, Arc::clone(&denylist), Arc::clone(&freshness));
                source.load()?;
                (Some(source), None)
            }
            DenylistSource::Nats => (None, Some(NatsParts::build(&config).await?)),
        };
        let verifier = Arc::new(Verifier::new(
            &config,
            &keys,
            Arc::clone(&denylist),
            Arc::clone(&freshness),
            Arc::clone(&clock),
        ));
        Ok(Self {
            config,
            keys,
            denylist,
            freshness,
            verifier,
            file_source,
            nats,
            clock,
            metrics,
            forward_auth_listeners: None,
        })
    }

    /// Serves forward-auth on these listeners instead of binding `[forward_auth]`'s
    /// addresses (used only when `forward_auth.enabled`).
    #[must_use]
    pub fn with_forward_auth_listeners(mut self, listeners: ForwardAuthListeners) -> Self {
        self.forward_auth_listeners = Some(listeners);
        self
    }

    /// Serves until `shutdown` completes, then drains in-flight calls for at most
    /// `shutdown_grace` and removes the socket file.
    pub async fn run(
        mut self,
        listeners: Listeners,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), AppError> {
        // Bound first, so a port in use fails the start before anything runs.
        let forward_auth_listeners = match self.forward_auth_listeners.take() {
            Some(l) if self.config.forward_auth.enabled => l,
            _ => ForwardAuthListeners::bind(&self.config.forward_auth).await?,
        };
        let forward_auth_router = if self.config.forward_auth.enabled {
            Some(
                forward_auth::router(
                    Arc::clone(&self.verifier),
                    self.config.forward_auth.clone(),
                )
                .ok_or(AppError::Unsupported(
                    "forward_auth: a header name does not parse (config validation was skipped?)",
                ))?,
            )
        } else {
            None
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();

        tasks.spawn(Arc::clone(&self.keys).run_refresh(stop_rx.clone()));
        if let Some(source) = self.file_source {
            tasks.spawn(source.run(self.config.denylist.file_poll_interval, stop_rx.clone()));
        }
        let mut publisher = None;
        let mode = if let Some(nats) = self.nats {
            let longest = self
                .config
                .issuers
                .iter()
                .map(|i| i.max_lifetime)
                .max()
                .unwrap_or_default();
            let mut follower = StreamFollower::new(
                nats.client.clone(),
                &self.config.nats,
                nats.trusted,
                Arc::clone(&self.denylist),
                Arc::clone(&self.freshness),
                Arc::clone(&self.clock),
                longest,
            );
            let identity = crate::state::Identity::of(&self.config.nats);
            if let Some(store) = crate::state::LocalStore::new(&self.config.state, identity) {
                let (pending, recorder, writer) = store
                    .open(
                        Arc::clone(&self.denylist),
                        Arc::clone(&self.freshness),
                        Arc::clone(&self.clock),
                    )
                    .await
                    .map_err(|source| AppError::StateDir {
                        path: self.config.state.dir.clone().unwrap_or_default(),
                        source,
                    })?;
                follower = follower.with_local_state(pending, recorder);
                tasks.spawn(writer.run(stop_rx.clone()));
            }
            tasks.spawn(follower.run(stop_rx.clone()));
            tasks.spawn(crate::fleet::answer_status_requests(
                nats.client.clone(),
                self.config.name.clone(),
                Arc::clone(&self.freshness),
                Arc::clone(&self.denylist),
                stop_rx.clone(),
            ));
            publisher = nats.publisher_key.map(|key| {
                PublisherService::new(
                    async_nats::jetstream::new(nats.client.clone()),
                    key,
                    Arc::clone(&self.clock),
                    self.config.nats.request_timeout,
                )
            });
            "nats"
        } else {
            "standalone"
        };
        tasks.spawn(maintain_denylist(
            Arc::clone(&self.denylist),
            self.config.denylist.prune_interval,
            stop_rx.clone(),
        ));

        let service = VerifierService::new(
            Arc::clone(&self.verifier),
            Arc::clone(&self.keys),
            ServiceInfo {
                name: self.config.name.clone(),
                mode,
            },
            stop_rx.clone(),
        );
        let limits = GrpcLimits {
            max_request_bytes: self.config.listen.max_request_bytes,
            max_concurrent_streams: self.config.listen.max_concurrent_streams,
        };
        let ext_authz = self.config.ext_authz.enabled.then(|| {
            ExtAuthzService::new(Arc::clone(&self.verifier), self.config.ext_authz.clone())
        });
        let (routes, health) = grpc::routes(service, ext_authz, publisher, limits)
            .map_err(|e| AppError::Serve(e.to_string()))?;
        tasks.spawn(report_health(
            Arc::clone(&self.freshness),
            health,
            stop_rx.clone(),
        ));

        let mut servers = JoinSet::new();
        let socket_path = listeners.unix.as_ref().map(|(_, p)| p.clone());
        if let Some((listener, path)) = listeners.unix {
            tracing::info!(socket = %path.display(), "gRPC listening");
            let incoming = UnixListenerStream::new(listener);
            let server = grpc_server(limits, false).add_routes(routes.clone());
            let stop = stopped(stop_rx.clone());
            servers.spawn(async move {
                server
                    .serve_with_incoming_shutdown(incoming, stop)
                    .await
                    .map_err(|e| e.to_string())
            });
        }
        if let Some(listener) = listeners.tcp {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(%addr, "gRPC listening");
            }
            // serve_with_incoming ignores Server::tcp_nodelay: set it on the incoming
            // stream, or Nagle adds ~40 ms to the p99.
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            let server = grpc_server(limits, true).add_routes(routes);
            let stop = stopped(stop_rx.clone());
            servers.spawn(async move {
                server
                    .serve_with_incoming_shutdown(incoming, stop)
                    .await
                    .map_err(|e| e.to_string())
            });
        }
        if let Some(listener) = listeners.admin {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(%addr, "admin HTTP listening");
            }
            let router = admin::router(Arc::clone(&self.freshness), self.metrics.clone());
            let stop = stopped(stop_rx.clone());
            servers.spawn(async move {
                axum::serve(listener, router)
                    .with_graceful_shutdown(stop)
                    .await
                    .map_err(|e| e.to_string())
            });
        }

        let forward_auth_socket = forward_auth_listeners.unix.as_ref().map(|(_, p)| p.clone());
        if let Some(router) = forward_auth_router {
            if let Some(listener) = forward_auth_listeners.tcp {
                if let Ok(addr) = listener.local_addr() {
                    tracing::info!(%addr, "forward-auth HTTP listening");
                }
                // Nagle would hold back the small answers a proxy waits on per request.
                let listener = listener.tap_io(|tcp| {
                    if let Err(e) = tcp.set_nodelay(true) {
                        tracing::debug!(error = %e, "forward-auth: cannot set TCP_NODELAY");
                    }
                });
                let (router, stop) = (router.clone(), stopped(stop_rx.clone()));
                servers.spawn(async move {
                    axum::serve(listener, router)
                        .with_graceful_shutdown(stop)
                        .await
                        .map_err(|e| e.to_string())
                });
            }
            if let Some((listener, path)) = forward_auth_listeners.unix {
                tracing::info!(socket = %path.display(), "forward-auth HTTP listening");
                let stop = stopped(stop_rx.clone());
                servers.spawn(async move {
                    axum::serve(listener, router)
                        .with_graceful_shutdown(stop)
                        .await
                        .map_err(|e| e.to_string())
                });
            }
        }

        // Run until asked to stop, or until a server fails on its own.
        let mut failure = None;
        tokio::select! {
            () = shutdown => tracing::info!("shutdown requested: draining"),
            Some(res) = servers.join_next() => {
                failure = Some(match res {
                    Ok(Ok(())) => "a server stopped unexpectedly".to_owned(),
                    Ok(Err(e)) => e,
                    Err(e) => e.to_string(),
                });
            }
        }
        stop_tx.send_replace(true);

        let grace = self.config.shutdown_grace;
        let drain = async {
            while let Some(res) = servers.join_next().await {
                if let Ok(Err(e)) = res {
                    tracing::warn!(error = %e, "server ended with an error while draining");
                }
            }
            while tasks.join_next().await.is_some() {}
        };
        if tokio::time::timeout(grace, drain).await.is_err() {
            tracing::warn!(
                ?grace,
                "in-flight calls did not finish within the grace period; closing them"
            );
            servers.abort_all();
            tasks.abort_all();
        }
        for path in [socket_path, forward_auth_socket].into_iter().flatten() {
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(socket = %path.display(), error = %e, "could not remove the socket file");
            }
        }
        match failure {
            Some(e) => Err(AppError::Serve(e)),
            None => {
                tracing::info!("stopped");
                Ok(())
            }
        }
    }
}

/// A gRPC server for one listener. HTTP/2 keepalive pings find dead peers on TCP, where a
/// vanished host leaves a half-open connection behind. On the Unix socket the peer is a
/// process of the same pod: when it exits the kernel closes the connection, so pings
/// would find nothing, and keeping their timer armed costs every call (~2 k instructions
/// of ~68 k per cached Verify, counted with callgrind; docs/BENCHMARKS.md).
fn grpc_server(limits: GrpcLimits, keepalive: bool) -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .max_concurrent_streams(Some(limits.max_concurrent_streams))
        .http2_keepalive_interval(keepalive.then_some(Duration::from_secs(30)))
}

/// Completes once `rx` sees `true` (or its sender is gone). A plain future, so it
/// can sit in a `select!` of a `Send` task.
pub(crate) async fn stopped(mut rx: watch::Receiver<bool>) {
    // An error means the sender is gone, which also means stop.
    let _ = rx.wait_for(|s| *s).await;
}

/// Prunes expired rules and rebuilds the filter periodically, off the async threads.
async fn maintain_denylist(
    denylist: Arc<Denylist>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let d = Arc::clone(&denylist);
        match tokio::task::spawn_blocking(move || d.prune_and_rebuild()).await {
            Ok(stats) => {
                if stats.dropped > 0 {
                    tracing::info!(
                        kept = stats.kept,
                        dropped = stats.dropped,
                        "pruned expired revocations"
                    );
                }
            }
            Err(e) => tracing::error!(error = %e, "denylist rebuild failed"),
        }
        let stats = denylist.stats();
        metrics::gauge!("denylist_entries").set(stats.entries as f64);
        metrics::gauge!("denylist_bloom_bytes").set(stats.bloom_bytes as f64);
        metrics::gauge!("denylist_heap_bytes").set(stats.heap_bytes as f64);
    }
}

/// Mirrors readiness and staleness into gRPC health and the gauges, once a second.
async fn report_health(
    freshness: Arc<Freshness>,
    health: tonic_health::server::HealthReporter,
    mut stop: watch::Receiver<bool>,
) {
    let mut ready_rx = freshness.ready_watch();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let mut last = None;
    loop {
        let serving = freshness.serving();
        if last != Some(serving) {
            let status = if serving {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            health.set_service_status("", status).await;
            health
                .set_service_status(grpc::HEALTH_SERVICE, status)
                .await;
            last = Some(serving);
        }
        let view = freshness.view();
        metrics::gauge!("denylist_age_seconds").set(view.age_ms as f64 / 1000.0);
        metrics::gauge!("denylist_stale").set(if view.stale { 1.0 } else { 0.0 });
        tokio::select! {
            _ = ticker.tick() => {}
            _ = ready_rx.changed() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
