//! [`Client`]: the typed client of the sidecar's `denylist.v1.Verifier` service.
//!
//! Every call has a deadline (default [`Client::DEFAULT_DEADLINE`], 250 ms) that covers the
//! whole call, retries included: an authenticating service would rather answer 503 quickly
//! than hold a request while a sidecar restarts. Only `UNAVAILABLE` is retried (the sidecar
//! is starting, catching up with the stream, or its socket is not there yet), with a short
//! exponential backoff and a bounded number of attempts ([`RetryPolicy`]). Every other gRPC
//! code is returned at once: retrying `INVALID_ARGUMENT` or `INTERNAL` only multiplies load.
//!
//! The channel reconnects by itself, so one `Client` (cheap to clone) serves a process for its
//! whole life, across sidecar restarts.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use denylist_proto::pb;
use denylist_proto::pb::verifier_client::VerifierClient;
use tokio::time::Instant;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

use crate::env;

/// How [`Client`] retries `UNAVAILABLE` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = no retry).
    pub max_attempts: u32,
    /// Wait before the first retry; doubled before each further one.
    pub initial_backoff: Duration,
    /// Longest wait between two attempts.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// Three attempts, 10 ms then 20 ms apart: enough to ride over a sidecar restart's socket
    /// swap, short enough to fit the default 250 ms deadline.
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(100),
        }
    }
}

impl RetryPolicy {
    /// No retries: one attempt.
    pub const NONE: Self = Self {
        max_attempts: 1,
        initial_backoff: Duration::ZERO,
        max_backoff: Duration::ZERO,
    };

    /// The wait after failed attempt number `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// Why a call to the sidecar failed. A token that is merely invalid is not an error: it is
/// a normal [`pb::VerifyResponse`] with `valid = false`.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The connection could not be made (only from the eager `connect_*` constructors).
    #[error("cannot connect to the sidecar at {target}: {source}")]
    Connect {
        /// The socket path or address.
        target: String,
        /// What the transport said.
        #[source]
        source: tonic::transport::Error,
    },
    /// The sidecar answered `UNAVAILABLE` (not ready yet, or stale under `fail_closed`) or
    /// could not be reached, on every attempt.
    #[error("the sidecar at {target} is unavailable ({attempts} attempt(s)): {message}")]
    Unavailable {
        /// The socket path or address.
        target: String,
        /// Attempts made.
        attempts: u32,
        /// The last status message.
        message: String,
    },
    /// No answer within the call's deadline.
    #[error("no answer from the sidecar at {target} within {}", humantime::format_duration(*.deadline))]
    DeadlineExceeded {
        /// The socket path or address.
        target: String,
        /// The deadline that passed.
        deadline: Duration,
    },
    /// Any other gRPC error; never retried.
    #[error("the sidecar at {target} answered {code:?}: {message}")]
    Rpc {
        /// The socket path or address.
        target: String,
        /// The gRPC status code.
        code: Code,
        /// The status message.
        message: String,
    },
}

impl ClientError {
    /// Whether the sidecar could not give an answer at all (unreachable, not ready, stale under
    /// `fail_closed`, or too slow): an HTTP service answers 503 then, not 401.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Self::Connect { .. } | Self::Unavailable { .. } | Self::DeadlineExceeded { .. }
        )
    }
}

/// A typed client of one sidecar's `Verifier` service. Cheap to clone; clones share the
/// connection.
#[derive(Debug, Clone)]
pub struct Client {
    inner: VerifierClient<Channel>,
    target: Arc<str>,
    deadline: Duration,
    retry: RetryPolicy,
}

/// The URI is a placeholder: the Unix-socket connector dials its path whatever the URI says.
const UNIX_PLACEHOLDER_URI: &str = "http://[::1]:50151";

impl Client {
    /// The default per-call deadline, retries included.
    pub const DEFAULT_DEADLINE: Duration = Duration::from_millis(250);

    /// Connects to a sidecar's Unix socket now; fails if nothing listens there.
    pub async fn connect_unix(path: impl AsRef<Path>) -> Result<Self, ClientError> {
        let path = path.as_ref().to_path_buf();
        let target = path.display().to_string();
        let channel = Endpoint::from_static(UNIX_PLACEHOLDER_URI)
            .connect_with_connector(unix_connector(path))
            .await
            .map_err(|source| ClientError::Connect {
                target: target.clone(),
                source,
            })?;
        Ok(Self::from_channel(channel, target))
    }

    /// Connects to a sidecar's TCP listener now (normally `127.0.0.1:50151`).
    pub async fn connect_tcp(addr: SocketAddr) -> Result<Self, ClientError> {
        let target = addr.to_string();
        let channel =
            tcp_endpoint(addr)
                .connect()
                .await
                .map_err(|source| ClientError::Connect {
                    target: target.clone(),
                    source,
                })?;
        Ok(Self::from_channel(channel, target))
    }

    /// Connects now to the socket named by `$DENYLIST_SOCKET`, or the default
    /// `/var/run/denylist/sidecar.sock`.
    pub async fn from_env() -> Result<Self, ClientError> {
        Self::connect_unix(socket_from_env()).await
    }

    /// A client for a Unix socket that connects on first use: for services that may start
    /// before their sidecar. Calls made before the sidecar listens fail as unavailable.
    pub fn lazy_unix(path: impl AsRef<Path>) -> Self {
        let path = path.as_ref().to_path_buf();
        let target = path.display().to_string();
        let channel = Endpoint::from_static(UNIX_PLACEHOLDER_URI)
            .connect_with_connector_lazy(unix_connector(path));
        Self::from_channel(channel, target)
    }

    /// A client for a TCP listener that connects on first use.
    pub fn lazy_tcp(addr: SocketAddr) -> Self {
        Self::from_channel(tcp_endpoint(addr).connect_lazy(), addr.to_string())
    }

    /// [`Client::lazy_unix`] on `$DENYLIST_SOCKET` or the default socket.
    pub fn lazy_from_env() -> Self {
        Self::lazy_unix(socket_from_env())
    }

    /// Wraps an existing channel (any transport); `target` names it in errors.
    pub fn from_channel(channel: Channel, target: impl Into<String>) -> Self {
        Self {
            inner: VerifierClient::new(channel),
            target: target.into().into(),
            deadline: Self::DEFAULT_DEADLINE,
            retry: RetryPolicy::default(),
        }
    }

    /// Sets the per-call deadline (retries included).
    #[must_use]
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Sets how `UNAVAILABLE` is retried.
    #[must_use]
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The per-call deadline.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// The retry policy.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    /// The socket path or address this client talks to.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Verifies a token (signature, claims, denylist). An invalid token is an `Ok` answer with
    /// `valid = false` and a reason. A `Bearer ` prefix is tolerated.
    pub async fn verify(&self, token: &str) -> Result<pb::VerifyResponse, ClientError> {
        let request = pb::VerifyRequest {
            token: token.to_owned(),
        };
        self.call(|mut client, timeout| {
            let request = request.clone();
            async move { client.verify(timed(request, timeout)).await }
        })
        .await
    }

    /// Asks whether a rule revokes the described token, for callers that verify signatures
    /// themselves.
    pub async fn check(&self, request: pb::CheckRequest) -> Result<pb::CheckResponse, ClientError> {
        self.call(|mut client, timeout| {
            let request = request.clone();
            async move { client.check(timed(request, timeout)).await }
        })
        .await
    }

    /// The sidecar's state: readiness, staleness, denylist size and age, issuers and keys.
    pub async fn status(&self) -> Result<pb::StatusResponse, ClientError> {
        self.call(|mut client, timeout| async move {
            client.status(timed(pb::StatusRequest {}, timeout)).await
        })
        .await
    }

    /// Runs one RPC under the deadline, retrying `UNAVAILABLE` per the policy.
    async fn call<T, F, Fut>(&self, mut rpc: F) -> Result<T, ClientError>
    where
        F: FnMut(VerifierClient<Channel>, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline_at = Instant::now() + self.deadline;
        let mut attempt = 1;
        loop {
            let remaining = deadline_at.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(self.deadline_exceeded());
            }
            let status =
                match tokio::time::timeout(remaining, rpc(self.inner.clone(), remaining)).await {
                    Err(_elapsed) => return Err(self.deadline_exceeded()),
                    Ok(Ok(response)) => return Ok(response.into_inner()),
                    Ok(Err(status)) => status,
                };
            match status.code() {
                Code::Unavailable => {
                    let backoff = self.retry.backoff(attempt);
                    let out_of_time = Instant::now() + backoff >= deadline_at;
                    if attempt >= self.retry.max_attempts || out_of_time {
                        return Err(ClientError::Unavailable {
                            target: self.target.to_string(),
                            attempts: attempt,
                            message: status.message().to_owned(),
                        });
                    }
                    tokio::time::sleep(backoff).await;
                    attempt += 1;
                }
                // tonic's own `grpc-timeout` enforcement reports an expired deadline as
                // `CANCELLED` ("Timeout expired"), racing the timeout above.
                Code::DeadlineExceeded | Code::Cancelled => return Err(self.deadline_exceeded()),
                code => {
                    return Err(ClientError::Rpc {
                        target: self.target.to_string(),
                        code,
                        message: status.message().to_owned(),
                    });
                }
            }
        }
    }

    fn deadline_exceeded(&self) -> ClientError {
        ClientError::DeadlineExceeded {
            target: self.target.to_string(),
            deadline: self.deadline,
        }
    }
}

/// A request carrying the remaining time as its `grpc-timeout`, so the sidecar can drop work
/// nobody waits for.
fn timed<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

fn socket_from_env() -> PathBuf {
    std::env::var_os(env::SOCKET)
        .filter(|s| !s.is_empty())
        .map_or_else(|| PathBuf::from(env::DEFAULT_SOCKET), PathBuf::from)
}

fn tcp_endpoint(addr: SocketAddr) -> Endpoint {
    // An IP literal always makes a valid URI: the `expect` cannot fire.
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("a socket address is a valid authority")
        .tcp_nodelay(true)
}

fn unix_connector(path: PathBuf) -> UnixConnector {
    UnixConnector {
        path: Arc::new(path),
    }
}

/// Dials a Unix socket for tonic's `connect_with_connector`, whatever URI it is handed.
#[derive(Debug, Clone)]
struct UnixConnector {
    path: Arc<PathBuf>,
}

impl tower::Service<http::Uri> for UnixConnector {
    type Response = hyper_util::rt::TokioIo<tokio::net::UnixStream>;
    type Error = std::io::Error;
    type Future = futures::future::BoxFuture<'static, std::io::Result<Self::Response>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: http::Uri) -> Self::Future {
        let path = Arc::clone(&self.path);
        Box::pin(async move {
            let stream = tokio::net::UnixStream::connect(path.as_path()).await?;
            Ok(hyper_util::rt::TokioIo::new(stream))
        })
    }
}

#[cfg(test)]
mod tests;
