//! The identity-provider signal receiver behind the `denylist-receiver` binary: it turns
//! OpenID Connect Back-Channel Logout 1.0 logout tokens and Shared Signals Framework 1.0
//! Security Event Tokens (RFC 8417; CAEP 1.0 and RISC 1.0 events; push RFC 8935, poll
//! RFC 8936) into signed `session` and `subject` revocations on the stream.
//!
//! - [`config`]: the TOML file, validated before anything starts.
//! - [`keys`]: each provider's JWKS (file, URL, or discovered).
//! - [`token`]: the signature and common claims of a signed signal.
//! - [`signal`]: what a logout token or SET means, and the events it becomes (ids derived
//!   from the signal, so retries and replicas publish once).
//! - [`http`]: the endpoints (`/backchannel-logout/<provider>`, `/ssf/push/<provider>`,
//!   `/metrics`, `/healthz`, `/readyz`); [`poll`]: the RFC 8936 poll client.
//! - [`stream`]: the SSF stream created, kept configured and verified at the transmitter
//!   (`[providers.stream]`), through [`ssf`], the stream management API client.
//!
//! A provider is answered success only after JetStream acknowledged every revocation the
//! signal calls for; when that cannot happen in time it is answered 503 (push) or the SET is
//! left unacknowledged (poll), so the provider delivers it again. See `docs/RECEIVER.md`.

pub mod config;
pub mod http;
pub mod keys;
pub mod metrics;
pub mod poll;
pub mod replay;
pub mod signal;
pub mod ssf;
pub mod stream;
pub mod token;

use std::sync::Arc;
use std::time::Duration;

use denylist_proto::events::Event;
use tokio::time::Instant;

use crate::publisher::{PublishError, Published, Publisher};
use config::{ConfigError, ProviderConfig, ReceiverConfig, SignalType, read_secret};
use keys::KeySet;
use metrics::Metrics;
use replay::ReplayCache;
use signal::{SetContent, Signal};
use ssf::Credential;
use stream::ManagedStream;
pub use token::SignalError;
use token::{TokenPolicy, VerifiedToken};

/// Header `typ` values accepted on logout tokens (Back-Channel Logout 1.0 §2.4).
const LOGOUT_TYP: &[&str] = &["logout+jwt"];
/// Header `typ` values accepted on SETs (RFC 8417 §2.3, SSF 1.0).
const SET_TYP: &[&str] = &["secevent+jwt"];

/// What was done with an accepted signal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Its revocations are stored (`duplicate` set on those JetStream already had).
    Published(Vec<Published>),
    /// The same SET was acted on before; nothing was published again.
    Duplicate,
    /// A type this provider does not act on, a verification event, or an unknown event:
    /// acknowledged, never published.
    Acknowledged(&'static str),
}

/// One configured provider, ready to verify its signals.
pub struct Provider {
    /// Its configuration.
    pub config: ProviderConfig,
    /// What logout tokens must satisfy (`max_age`).
    logout_policy: TokenPolicy,
    /// What SETs must satisfy (`set_max_age`: transmitters hold SETs until acknowledged).
    set_policy: TokenPolicy,
    /// Its keys.
    pub keys: KeySet,
    push_authorization: Option<String>,
    /// The file the poll `Authorization` value is read from before every poll request (a
    /// refresher may rewrite it).
    poll_authorization: Option<Credential>,
    /// The managed SSF stream (`[providers.stream]`).
    pub stream: Option<ManagedStream>,
}

/// By hand, so that the push `Authorization` value is never printed.
impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("config", &self.config)
            .field("keys", &self.keys)
            .field(
                "push_authorization",
                &self.push_authorization.as_ref().map(|_| "<redacted>"),
            )
            .field("poll_authorization", &self.poll_authorization)
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

impl Provider {
    /// The poll endpoint in force: configured, or assigned to the managed stream (`None`
    /// until it is configured).
    pub fn poll_endpoint(&self) -> Option<String> {
        match self.config.poll.as_ref().and_then(|p| p.endpoint.clone()) {
            Some(endpoint) => Some(endpoint),
            None => self.stream.as_ref().and_then(ManagedStream::poll_endpoint),
        }
    }
}

/// The receiver: providers, the publisher, replay cache and metrics. Shared by the HTTP
/// handlers and pollers behind an `Arc`.
#[derive(Debug)]
pub struct Receiver {
    providers: Vec<Provider>,
    publisher: Publisher,
    nats: async_nats::Client,
    replay: ReplayCache,
    metrics: Metrics,
    publish_timeout: Duration,
    max_body_bytes: usize,
    http: reqwest::Client,
}

impl Receiver {
    /// A receiver for `config` (already validated) publishing with `publisher` over `nats`.
    /// Reads the providers' secret files; keys are loaded by [`Receiver::load_keys`] or on
    /// first use. `signing_key_pem` (the revocation signing key, the same at every
    /// replica) keys the SSF verification states (through its DER bytes, see
    /// [`stream::state_key_material`]).
    pub fn new(
        config: &ReceiverConfig,
        publisher: Publisher,
        nats: async_nats::Client,
        signing_key_pem: &str,
    ) -> Result<Self, ConfigError> {
        let http = reqwest::Client::builder()
            .user_agent("denylist-receiver")
            .build()
            .map_err(|e| ConfigError::Invalid {
                field: "providers".into(),
                message: format!("cannot build the HTTP client: {e}"),
            })?;
        let state_key_material = stream::state_key_material(signing_key_pem);
        let mut providers = Vec::new();
        for (i, p) in config.providers.iter().enumerate() {
            let push_authorization = p
                .push
                .as_ref()
                .map(|push| {
                    read_secret(
                        &format!("providers[{i}].push.authorization_file"),
                        &push.authorization_file,
                    )
                })
                .transpose()?;
            let poll_authorization = match (
                p.poll
                    .as_ref()
                    .and_then(|poll| poll.authorization_file.as_ref()),
                &p.stream,
            ) {
                (Some(path), _) => Some(Credential {
                    field: format!("providers[{i}].poll.authorization_file"),
                    path: path.clone(),
                }),
                // SSF 1.0 §7.1.1: the management API's authorization also protects the
                // poll endpoint.
                (None, Some(s)) if p.polls_managed_stream() => Some(Credential {
                    field: format!("providers[{i}].stream.authorization_file"),
                    path: s.authorization_file.clone(),
                }),
                (None, _) => None,
            };
            // Read once now, so a missing file fails at start rather than at first poll.
            if let Some(c) = &poll_authorization {
                read_secret(&c.field, &c.path)?;
            }
            let stream = p
                .stream
                .as_ref()
                .map(|s| {
                    ManagedStream::new(
                        p,
                        i,
                        s,
                        push_authorization.as_deref(),
                        http.clone(),
                        &state_key_material,
                    )
                })
                .transpose()?;
            providers.push(Provider {
                logout_policy: TokenPolicy {
                    issuer: p.issuer.clone(),
                    audiences: p.audiences.clone(),
                    algorithms: p.algorithms.clone(),
                    max_age_secs: secs(p.max_age),
                    leeway_secs: secs(p.leeway),
                },
                set_policy: TokenPolicy {
                    issuer: p.issuer.clone(),
                    audiences: p.audiences.clone(),
                    algorithms: p.algorithms.clone(),
                    max_age_secs: secs(p.set_max_age),
                    leeway_secs: secs(p.leeway),
                },
                keys: KeySet::new(p, http.clone()),
                config: p.clone(),
                push_authorization,
                poll_authorization,
                stream,
            });
        }
        Ok(Self {
            providers,
            publisher,
            nats,
            replay: ReplayCache::new(config.replay_cache_entries),
            metrics: Metrics::default(),
            publish_timeout: config.publish_timeout,
            max_body_bytes: config.max_body_bytes,
            http,
        })
    }

    /// The provider named `name`.
    pub fn provider(&self, name: &str) -> Option<&Provider> {
        self.providers.iter().find(|p| p.config.name == name)
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Loads the keys of every provider not loaded yet; logs failures (they are retried).
    pub async fn load_keys(&self) {
        for p in &self.providers {
            if !p.keys.is_loaded()
                && let Err(e) = p.keys.load().await
            {
                tracing::warn!(provider = %p.config.name, error = %e, "provider keys not loaded yet");
            }
        }
    }

    /// Ready: connected to NATS and every provider's keys loaded. Managed SSF streams do
    /// not count: the transmitter's management API being down (or the credential
    /// expired) during a restart must not make every replica unready while the stream
    /// itself still delivers; see [`Receiver::stream_report`].
    pub fn is_ready(&self) -> Result<(), String> {
        if self.nats.connection_state() != async_nats::connection::State::Connected {
            return Err("not connected to NATS".into());
        }
        if let Some(p) = self.providers.iter().find(|p| !p.keys.is_loaded()) {
            return Err(format!("keys of provider {} not loaded", p.config.name));
        }
        Ok(())
    }

    /// One line per managed SSF stream: configured (and its id) or why not yet, for the
    /// `/readyz` body (informational: it does not decide readiness).
    pub fn stream_report(&self) -> String {
        let mut report = String::new();
        for p in &self.providers {
            let Some(stream) = &p.stream else { continue };
            let state = stream.state();
            let line = match (&state.stream_id, &state.last_error) {
                (Some(id), None) => format!("SSF stream of provider {}: {id}", p.config.name),
                (Some(id), Some(e)) => format!(
                    "SSF stream of provider {}: {id}, last resync failed: {e}",
                    p.config.name
                ),
                (None, e) => format!(
                    "SSF stream of provider {} not configured yet: {}",
                    p.config.name,
                    e.as_deref().unwrap_or("first attempt under way")
                ),
            };
            report.push_str(&line);
            report.push('\n');
        }
        report
    }

    /// Handles a logout token (Back-Channel Logout 1.0 §2.6) from `provider` at `now`
    /// (Unix seconds): verified, refused if its `jti` was acted on, then its revocation is
    /// published.
    pub async fn logout(
        &self,
        provider: &Provider,
        token: &str,
        now: i64,
    ) -> Result<Outcome, SignalError> {
        let started = Instant::now();
        let label = SignalType::BackchannelLogout.as_str();
        let result = async {
            let verified = token::verify(
                token,
                &provider.keys,
                &provider.logout_policy,
                LOGOUT_TYP,
                now,
            )
            .await?;
            let signal = signal::logout_signal(&verified, &provider.config.issuer)?;
            if !provider
                .config
                .events
                .contains(&SignalType::BackchannelLogout)
            {
                return Ok(Outcome::Acknowledged("ignored"));
            }
            if self.replay.contains(&signal.issuer, &signal.jti, now) {
                return Err(SignalError::Replayed(format!(
                    "a logout token with jti {:?} was already received",
                    signal.jti
                )));
            }
            self.act(
                provider,
                &signal,
                &verified,
                &provider.logout_policy,
                now,
                started,
            )
            .await
        }
        .await;
        self.count(provider, label, &result);
        result
    }

    /// Handles a SET from `provider` at `now` (Unix seconds). A SET whose `jti` was already
    /// acted on is acknowledged again without publishing (transmitters retry deliveries).
    pub async fn set(
        &self,
        provider: &Provider,
        set: &str,
        now: i64,
    ) -> Result<Outcome, SignalError> {
        let started = Instant::now();
        let mut label = "set";
        let result = async {
            let verified =
                token::verify(set, &provider.keys, &provider.set_policy, SET_TYP, now).await?;
            let content = signal::set_content(&verified, &provider.config)?;
            match content {
                SetContent::Revoke(signal) => {
                    label = signal.signal_type.as_str();
                    if self.replay.contains(&signal.issuer, &signal.jti, now) {
                        return Ok(Outcome::Duplicate);
                    }
                    self.act(provider, &signal, &verified, &provider.set_policy, now, started)
                        .await
                }
                SetContent::Verification { stream_id, state } => {
                    label = "verification";
                    let outcome = match &provider.stream {
                        Some(stream) => stream.verification(
                            &self.metrics,
                            stream_id.as_deref(),
                            state.as_deref(),
                            now,
                        ),
                        None => {
                            tracing::info!(provider = %provider.config.name, ?stream_id, ?state, "SSF verification event received");
                            "acknowledged"
                        }
                    };
                    Ok(Outcome::Acknowledged(outcome))
                }
                SetContent::StreamUpdated {
                    stream_id,
                    status,
                    reason,
                } => {
                    label = "stream-updated";
                    match &provider.stream {
                        Some(stream) => stream.stream_updated(
                            &self.metrics,
                            stream_id.as_deref(),
                            &status,
                            reason.as_deref(),
                        ),
                        None => {
                            tracing::warn!(provider = %provider.config.name, ?stream_id, status, ?reason, "the transmitter changed the SSF stream's status");
                        }
                    }
                    Ok(Outcome::Acknowledged("acknowledged"))
                }
                SetContent::Ignored(t) => {
                    label = t.as_str();
                    tracing::info!(provider = %provider.config.name, event = t.as_str(), jti = %verified.jti, "event type not enabled for this provider; acknowledged");
                    Ok(Outcome::Acknowledged("ignored"))
                }
                SetContent::Unknown(uri) => {
                    label = "unknown";
                    tracing::warn!(provider = %provider.config.name, event = %uri, jti = %verified.jti, "unknown event type; acknowledged, not acted on");
                    Ok(Outcome::Acknowledged("unknown"))
                }
            }
        }
        .await;
        self.count(provider, label, &result);
        result
    }

    /// Publishes a signal's revocations (each retried until the publish timeout), then
    /// records its `jti`.
    async fn act(
        &self,
        provider: &Provider,
        signal: &Signal,
        verified: &VerifiedToken,
        policy: &TokenPolicy,
        now: i64,
        started: Instant,
    ) -> Result<Outcome, SignalError> {
        let events = signal::events_for(signal, &provider.config, crate::timespec::now_ms());
        for event in &events {
            event.validate().map_err(|e| {
                SignalError::Malformed(format!("the signal cannot become a revocation: {e}"))
            })?;
        }
        let published = self.publish(&events, started).await?;
        self.metrics.publish_latency(started.elapsed());
        self.replay.record(
            &signal.issuer,
            &signal.jti,
            verified.iat + policy.max_age_secs + policy.leeway_secs,
            now,
        );
        for p in &published {
            tracing::info!(
                provider = %provider.config.name,
                signal = signal.signal_type.as_str(),
                jti = %signal.jti,
                event_id = %p.event_id,
                sequence = p.sequence,
                duplicate = p.duplicate,
                "revocation published"
            );
        }
        Ok(Outcome::Published(published))
    }

    async fn publish(
        &self,
        events: &[Event],
        started: Instant,
    ) -> Result<Vec<Published>, SignalError> {
        let mut published = Vec::with_capacity(events.len());
        for event in events {
            let left = self.publish_timeout.saturating_sub(started.elapsed());
            let stored = self
                .publisher
                .publish_with_retry(event, left.max(Duration::from_millis(50)))
                .await
                .map_err(|e: PublishError| {
                    SignalError::Publish(format!("the revocation could not be stored: {e}"))
                })?;
            published.push(stored);
        }
        Ok(published)
    }

    fn count(&self, provider: &Provider, label: &str, result: &Result<Outcome, SignalError>) {
        let outcome = match result {
            Ok(Outcome::Published(p)) if p.iter().all(|p| p.duplicate) => "duplicate",
            Ok(Outcome::Published(_)) => "published",
            Ok(Outcome::Duplicate) => "duplicate",
            Ok(Outcome::Acknowledged(what)) => what,
            Err(e) => {
                tracing::warn!(provider = %provider.config.name, signal = label, error = %e, "signal refused");
                e.outcome()
            }
        };
        self.metrics.signal(&provider.config.name, label, outcome);
    }
}

/// Serves `receiver` on `listener` and runs its pollers and key loader until `shutdown`
/// completes; then stops accepting, lets requests in flight finish (at most `grace`), and
/// waits for the pollers to deliver their last acknowledgements.
pub async fn serve(
    receiver: Arc<Receiver>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    for p in &receiver.providers {
        if p.config.poll_config().is_some() {
            tasks.spawn(poll::run(
                receiver.clone(),
                p.config.name.clone(),
                stopped.clone(),
            ));
        }
        if p.stream.is_some() {
            tasks.spawn(stream::run(
                receiver.clone(),
                p.config.name.clone(),
                stopped.clone(),
            ));
        }
    }
    {
        // Keys that could not be loaded at start are retried, so readiness comes without
        // waiting for a first signal.
        let receiver = receiver.clone();
        let mut stopped = stopped.clone();
        tasks.spawn(async move {
            loop {
                receiver.load_keys().await;
                tokio::select! {
                    _ = stopped.changed() => return,
                    () = tokio::time::sleep(Duration::from_secs(10)) => {}
                }
            }
        });
    }
    let mut http_stopped = stopped.clone();
    let server = axum::serve(listener, http::router(receiver)).with_graceful_shutdown(async move {
        let _ = http_stopped.changed().await;
    });
    let server = tokio::spawn(async move { server.await });
    shutdown.await;
    let _ = stop.send(true);
    let drained = tokio::time::timeout(grace, async {
        let served = server.await;
        while tasks.join_next().await.is_some() {}
        served
    })
    .await;
    match drained {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => Err(std::io::Error::other(join)),
        Err(_) => {
            tracing::warn!(
                ?grace,
                "requests still in flight when the shutdown grace ended"
            );
            Ok(())
        }
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// Now, Unix seconds.
pub fn now_secs() -> i64 {
    crate::timespec::now_ms().div_euclid(1000)
}

#[cfg(test)]
mod tests;
