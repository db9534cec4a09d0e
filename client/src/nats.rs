//! [`NatsOptions`]: how the publisher and `denylistctl` reach NATS — server URLs,
//! authentication (credentials file, nkey seed, user and password, token), TLS, timeouts — and
//! the JetStream context built on the connection. Also how NATS work is retried:
//! [`Backoff`] (exponential, jittered) and [`retry_until`], which retries one step until a
//! deadline and then fails with an error naming the step ([`StepError`]).
//!
//! The options mirror the sidecar's `[nats]` section so one set of credentials works for both,
//! except that secrets may be given inline here (from the environment), since the CLI runs
//! interactively.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::jetstream;
use async_nats::{ConnectErrorKind, ConnectOptions};
use tokio::time::Instant;

use crate::env;

/// How to connect to NATS. Its `Debug` shows whether a password or token is set, never
/// the secret itself (nor credentials in a URL).
#[derive(Clone)]
pub struct NatsOptions {
    /// Server URL(s), comma-separated: `nats://host:4222`, `tls://host:4222`.
    pub url: String,
    /// NATS credentials file (JWT + nkey seed).
    pub creds_file: Option<PathBuf>,
    /// File holding an nkey seed (`SU…`).
    pub nkey_seed_file: Option<PathBuf>,
    /// User name (with `password`).
    pub user: Option<String>,
    /// Password (with `user`).
    pub password: Option<String>,
    /// Token.
    pub token: Option<String>,
    /// CA bundle that verifies the servers' certificates.
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate for mutual TLS (with `tls_key_file`).
    pub tls_cert_file: Option<PathBuf>,
    /// Client key for mutual TLS.
    pub tls_key_file: Option<PathBuf>,
    /// Require TLS even for `nats://` URLs.
    pub tls_required: bool,
    /// Bound on one connection attempt. Default 5 s.
    pub connect_timeout: Duration,
    /// Bound on each JetStream API request and on each publish acknowledgement. Default 5 s.
    pub request_timeout: Duration,
    /// Connection name shown in the server's monitoring. Default `denylistctl`.
    pub name: String,
}

impl std::fmt::Debug for NatsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |secret: &Option<String>| secret.as_ref().map(|_| "<redacted>");
        f.debug_struct("NatsOptions")
            .field("url", &shown_urls(&self.url))
            .field("creds_file", &self.creds_file)
            .field("nkey_seed_file", &self.nkey_seed_file)
            .field("user", &self.user)
            .field("password", &redacted(&self.password))
            .field("token", &redacted(&self.token))
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_cert_file", &self.tls_cert_file)
            .field("tls_key_file", &self.tls_key_file)
            .field("tls_required", &self.tls_required)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("name", &self.name)
            .finish()
    }
}

impl Default for NatsOptions {
    fn default() -> Self {
        Self {
            url: env::DEFAULT_NATS_URL.to_owned(),
            creds_file: None,
            nkey_seed_file: None,
            user: None,
            password: None,
            token: None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_required: false,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            name: "denylistctl".to_owned(),
        }
    }
}

/// Why NATS could not be reached or the options are unusable.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// The options contradict each other or are incomplete; names the option.
    #[error("NATS option `{option}`: {message}")]
    Invalid {
        /// The option at fault.
        option: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A credentials, seed or certificate file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The connection failed.
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        /// The server URL(s).
        url: String,
        /// What async-nats said.
        #[source]
        source: async_nats::ConnectError,
    },
    /// Connecting still failed when the deadline of [`NatsOptions::connect_until`] passed.
    #[error(transparent)]
    GaveUp(Box<StepError<NatsError>>),
}

impl NatsError {
    /// Whether connecting again may succeed: the server was unreachable, slow or not
    /// resolvable (a restart, a failover). Bad options, unreadable files, and refused
    /// credentials or TLS fail the same way every time.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Connect { source, .. } => matches!(
                source.kind(),
                ConnectErrorKind::Io
                    | ConnectErrorKind::TimedOut
                    | ConnectErrorKind::Dns
                    | ConnectErrorKind::MaxReconnects
            ),
            Self::Invalid { .. } | Self::ReadFile { .. } | Self::GaveUp(_) => false,
        }
    }
}

/// Exponential backoff with jitter, for retrying NATS work.
///
/// The wait before retry `n` is a random duration between half and all of
/// `min(max, initial × 2ⁿ)`. The random half spreads the retries of many clients that failed
/// together (every sidecar after a NATS restart, every CLI run during a failover) instead of
/// sending them back in lockstep; the fixed half makes sure the waits still grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling of the first wait.
    pub initial: Duration,
    /// The largest ceiling.
    pub max: Duration,
}

impl Backoff {
    /// 100 ms doubling up to 2 s: what `denylistctl` and the publisher use.
    pub const DEFAULT: Self = Self {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(2),
    };

    /// The wait before retry `retry` (0 for the first retry).
    pub fn delay(&self, retry: u32) -> Duration {
        let ceiling = self
            .initial
            .saturating_mul(1u32 << retry.min(20))
            .min(self.max);
        ceiling / 2 + ceiling.mul_f64(random_fraction() / 2.0)
    }
}

/// The wait before reconnect attempt `attempts` (1 for the first after the connection was
/// lost): 25–50 ms, doubling up to 250–500 ms, jittered. async-nats' default waits up to
/// 4 s in lockstep; the long-running publishers (the fleet heartbeat above all: every
/// sidecar polls the stream while it is silent) must be back within a second of NATS.
fn reconnect_delay(attempts: usize) -> Duration {
    const RECONNECT: Backoff = Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(500),
    };
    RECONNECT.delay(u32::try_from(attempts.saturating_sub(1)).unwrap_or(u32::MAX))
}

/// A uniformly random number in [0, 1): jitter only, so the system RNG is plenty.
fn random_fraction() -> f64 {
    let mut bytes = [0u8; 8];
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        // No randomness: the fixed half of the backoff still applies.
        return 0.5;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

/// Why a step retried by [`retry_until`] did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum StepError<E: std::error::Error + 'static> {
    /// It failed in a way that retrying does not fix.
    #[error("{step}: {source}")]
    Failed {
        /// What was being done, e.g. `checking stream DENYLIST`.
        step: String,
        /// The error.
        #[source]
        source: E,
    },
    /// It was still failing when the deadline passed.
    #[error(
        "{step}: still failing when the deadline passed ({attempts} attempt(s) in {}){}",
        humantime::format_duration(Duration::from_millis(u64::try_from(.elapsed.as_millis()).unwrap_or(u64::MAX))),
        .last.as_ref().map_or_else(|| ": no answer".to_owned(), |e| format!(": {e}"))
    )]
    GaveUp {
        /// What was being done.
        step: String,
        /// Attempts made.
        attempts: u32,
        /// Time spent.
        elapsed: Duration,
        /// The last error, if an attempt finished (one cut short by the deadline has none).
        #[source]
        last: Option<E>,
    },
}

impl<E: std::error::Error + 'static> StepError<E> {
    /// The last error seen, if any.
    pub fn last(&self) -> Option<&E> {
        match self {
            Self::Failed { source, .. } => Some(source),
            Self::GaveUp { last, .. } => last.as_ref(),
        }
    }
}

/// Less time than this left is not worth another attempt.
const LAST_ATTEMPT_FLOOR: Duration = Duration::from_millis(20);

/// Runs `attempt` until it succeeds, fails in a way `is_transient` says retrying will not
/// fix, or `deadline` passes; waits per `backoff` between attempts. Each attempt is cut short
/// at the deadline, so the whole never outlasts it. `step` names what is being done in the
/// error and in the debug log of each retry.
pub async fn retry_until<T, E, F, Fut>(
    step: impl Into<String>,
    deadline: Instant,
    backoff: Backoff,
    is_transient: impl Fn(&E) -> bool,
    attempt: F,
) -> Result<T, StepError<E>>
where
    E: std::error::Error + 'static,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    retry(step.into(), deadline, true, backoff, is_transient, attempt).await
}

/// [`retry_until`] for long work (reading a whole stream, storing a snapshot): no attempt
/// *starts* after `deadline`, but one under way is not cut short by it — its own bounds (a
/// stall timeout) apply. Work that takes longer than the deadline when all goes well still
/// finishes.
pub async fn retry_starting_before<T, E, F, Fut>(
    step: impl Into<String>,
    deadline: Instant,
    backoff: Backoff,
    is_transient: impl Fn(&E) -> bool,
    attempt: F,
) -> Result<T, StepError<E>>
where
    E: std::error::Error + 'static,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    retry(step.into(), deadline, false, backoff, is_transient, attempt).await
}

async fn retry<T, E, F, Fut>(
    step: String,
    deadline: Instant,
    cut_at_deadline: bool,
    backoff: Backoff,
    is_transient: impl Fn(&E) -> bool,
    mut attempt: F,
) -> Result<T, StepError<E>>
where
    E: std::error::Error + 'static,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let started = Instant::now();
    let mut attempts = 0u32;
    let mut last = None;
    loop {
        attempts += 1;
        let outcome = if cut_at_deadline {
            tokio::time::timeout_at(deadline, attempt()).await
        } else {
            Ok(attempt().await)
        };
        let error = match outcome {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) if !is_transient(&e) => return Err(StepError::Failed { step, source: e }),
            Ok(Err(e)) => e,
            // Cut short: report the last complete failure, which says more than "late".
            Err(_) => {
                return Err(StepError::GaveUp {
                    step,
                    attempts,
                    elapsed: started.elapsed(),
                    last,
                });
            }
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining < LAST_ATTEMPT_FLOOR {
            return Err(StepError::GaveUp {
                step,
                attempts,
                elapsed: started.elapsed(),
                last: Some(error),
            });
        }
        // Near the deadline, wait less so that one more attempt still fits.
        let wait = backoff.delay(attempts - 1).min(remaining / 2);
        // A warning: someone waiting on a command should see why it is not done yet.
        tracing::warn!(%error, retry_in = ?wait, "{step} failed; retrying");
        last = Some(error);
        tokio::time::sleep(wait).await;
    }
}

impl NatsOptions {
    /// Options for `url` with everything else at its default.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }

    /// Checks the options without touching the network.
    pub fn validate(&self) -> Result<(), NatsError> {
        if self.servers().is_empty() {
            return Err(invalid("url", "no server URL given"));
        }
        let methods = [
            self.creds_file.is_some(),
            self.nkey_seed_file.is_some(),
            self.user.is_some() || self.password.is_some(),
            self.token.is_some(),
        ];
        if methods.iter().filter(|m| **m).count() > 1 {
            return Err(invalid(
                "auth",
                "give at most one of creds file, nkey seed file, user/password, token",
            ));
        }
        if self.user.is_some() != self.password.is_some() {
            return Err(invalid("user", "user and password go together"));
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err(invalid(
                "tls_cert_file",
                "a client certificate and its key go together",
            ));
        }
        Ok(())
    }

    /// The server URLs, split on commas.
    pub fn servers(&self) -> Vec<String> {
        self.url
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Connects once.
    pub async fn connect(&self) -> Result<async_nats::Client, NatsError> {
        self.validate()?;
        let options = self.connect_options().await?;
        options
            .connect(self.servers().as_slice())
            .await
            .map_err(|source| NatsError::Connect {
                url: shown_urls(&self.url),
                source,
            })
    }

    /// Connects, retrying failures that may pass (refused, timed out, DNS) with backoff until
    /// `deadline` has passed. Authentication and TLS failures are returned at once.
    pub async fn connect_until(&self, deadline: Duration) -> Result<async_nats::Client, NatsError> {
        self.connect_before(Instant::now() + deadline).await
    }

    /// [`NatsOptions::connect_until`] with the deadline as a point in time, so that one
    /// deadline can bound every step of a command.
    pub async fn connect_before(&self, deadline: Instant) -> Result<async_nats::Client, NatsError> {
        // The URLs are in each attempt's own error.
        retry_until(
            "connecting to NATS",
            deadline,
            Backoff::DEFAULT,
            NatsError::is_transient,
            || self.connect(),
        )
        .await
        .map_err(|e| match e {
            // The step is already in the message: "cannot connect to NATS at …".
            StepError::Failed { source, .. } => source,
            gave_up => NatsError::GaveUp(Box::new(gave_up)),
        })
    }

    /// A JetStream context on `client` whose API requests and acks are bounded by
    /// `request_timeout`, and which holds at most 5 000 unacknowledged publishes (further
    /// publishes wait for acks rather than fail).
    pub fn jetstream(&self, client: async_nats::Client) -> jetstream::Context {
        jetstream::ContextBuilder::new()
            .timeout(self.request_timeout)
            .max_ack_inflight(5_000)
            .backpressure_on_inflight(true)
            .build(client)
    }

    async fn connect_options(&self) -> Result<ConnectOptions, NatsError> {
        let mut options = ConnectOptions::new()
            .name(&self.name)
            .connection_timeout(self.connect_timeout)
            .reconnect_delay_callback(reconnect_delay)
            .request_timeout(Some(self.request_timeout));
        if let Some(path) = &self.creds_file {
            options = options
                .credentials_file(path)
                .await
                .map_err(|source| read_error(path, source))?;
        }
        if let Some(path) = &self.nkey_seed_file {
            let seed = read_trimmed(path)?;
            options = options.nkey(seed);
        }
        if let (Some(user), Some(password)) = (&self.user, &self.password) {
            options = options.user_and_password(user.clone(), password.clone());
        }
        if let Some(token) = &self.token {
            options = options.token(token.clone());
        }
        if let Some(ca) = &self.tls_ca_file {
            check_readable(ca)?;
            options = options.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert_file, &self.tls_key_file) {
            check_readable(cert)?;
            check_readable(key)?;
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        if self.tls_required {
            options = options.require_tls(true);
        }
        Ok(options)
    }
}

fn invalid(option: &'static str, message: impl Into<String>) -> NatsError {
    NatsError::Invalid {
        option,
        message: message.into(),
    }
}

fn read_error(path: &Path, source: std::io::Error) -> NatsError {
    NatsError::ReadFile {
        path: path.to_path_buf(),
        source,
    }
}

fn read_trimmed(path: &Path) -> Result<String, NatsError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|source| read_error(path, source))
}

/// async-nats reads TLS files only when it dials; checking first gives an error that names
/// the file instead of a generic TLS failure.
fn check_readable(path: &Path) -> Result<(), NatsError> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|source| read_error(path, source))
}

/// Server URLs as they may be printed: the user info a URL can carry (`user:password@`,
/// `token@`) is replaced by `***`, as async-nats accepts credentials there.
pub fn shown_urls(urls: &str) -> String {
    urls.split(',')
        .map(|url| {
            let url = url.trim();
            let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
            let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let rest = match rest[..authority_end].rfind('@') {
                Some(at) => format!("***{}", &rest[at..]),
                None => rest.to_owned(),
            };
            if scheme.is_empty() {
                rest
            } else {
                format!("{scheme}://{rest}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests;
