//! [`NatsOptions`]: how the publisher and `denylistctl` reach NATS — server URLs,
//! authentication (credentials file, nkey seed, user and password, token), TLS, timeouts — and
//! the JetStream context built on the connection.
//!
//! The options mirror the sidecar's `[nats]` section so one set of credentials works for both,
//! except that secrets may be given inline here (from the environment), since the CLI runs
//! interactively.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::jetstream;
use async_nats::{ConnectErrorKind, ConnectOptions};
use tokio::time::Instant;

use crate::env;

/// How to connect to NATS.
#[derive(Debug, Clone)]
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
    /// The connection failed (after retries, for [`NatsOptions::connect_until`]).
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        /// The server URL(s).
        url: String,
        /// What async-nats said.
        #[source]
        source: async_nats::ConnectError,
    },
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
        let give_up_at = Instant::now() + deadline;
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.connect().await {
                Ok(client) => return Ok(client),
                Err(NatsError::Connect { source, url })
                    if matches!(
                        source.kind(),
                        ConnectErrorKind::Io | ConnectErrorKind::TimedOut | ConnectErrorKind::Dns
                    ) && Instant::now() + backoff < give_up_at =>
                {
                    tracing::debug!(%url, error = %source, ?backoff, "NATS connect failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(e),
            }
        }
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
