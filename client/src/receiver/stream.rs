//! The SSF stream a provider's `[providers.stream]` asks for, created and kept configured
//! at the transmitter through its stream management API (SSF 1.0 §8; the client is
//! [`super::ssf`]), and verified end to end with verification events (§8.1.4).
//!
//! **Which stream.** A stream is this receiver's when its delivery matches: the same method
//! and, for push, the same `endpoint_url` (every replica configures the same public URL;
//! for poll the management credential identifies the receiver). Streams with another
//! delivery are left alone. With none, one is created; with several (two replicas that
//! started together each created one), the lowest `stream_id` is kept and the others are
//! deleted by whichever replica sees them — every replica picks the same one. A replica
//! whose view was stale (it chose a stream another replica then deleted) finds out at its
//! next resync, or at once when its poll endpoint answers 404. The kept stream is updated
//! (PATCH) when its `events_requested` differ from the provider's `events`, or when the
//! transmitter echoes a push `authorization_header` other than `[providers.push]`'s.
//!
//! **Retries.** While the transmitter cannot be reached, or refuses, the work is retried
//! with jittered exponential backoff (0.5 s doubling to 60 s); the other endpoints keep
//! serving, and readiness does not depend on it (a management API outage must not make
//! every replica unready while the stream itself still delivers). A resync asked for by
//! the poller (its endpoint answered 404) waits for the running backoff, so a stream that
//! keeps answering 404 cannot make the receiver hammer the management API. The optional
//! steps — reading the stream's status, deleting a duplicate — are logged and counted when
//! refused, and the stream is configured without them (status unknown; the duplicate stays
//! until the next resync).
//!
//! **Credential.** The management `Authorization` value is read from its file for every
//! request (and again after a 401), so a refresher may rewrite it (short-lived OAuth
//! tokens).
//!
//! **Verification.** After the stream is configured (and every `verify_interval`, if set)
//! a verification event is requested with a fresh `state`: a timestamp, a nonce and a MAC
//! under a key derived from the receiver's signing key, so whichever replica the
//! transmitter delivers it to can tell it comes from this deployment for that stream. A
//! verification SET whose `state` does not check out (another deployment, a rotated
//! signing key, issued more than [`ManagedStream::max_state_age`] ago or more than
//! [`STATE_FUTURE_LEEWAY_SECS`] ahead) or that has none (the transmitter's own) is
//! acknowledged and counted, not refused: refusing could make the transmitter disable a
//! stream that works. The MAC key is derived from the signing key's PKCS#8 bytes, not its
//! PEM text, so replicas whose PEM files differ in line breaks agree.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::{constant_time, hmac, rand};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::config::{ConfigError, Delivery, ProviderConfig, StreamConfig, read_secret};
use super::metrics::{Metrics, StreamGauges};
use super::ssf::{self, ApiError, Credential, Written};
use super::{Receiver, now_secs};

#[path = "stream_plan.rs"]
mod stream_plan;
pub use stream_plan::{Plan, Wanted, plan, stream_id};

/// First wait after a failed attempt; doubled per failure up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(500);
/// Longest wait between attempts while the transmitter fails.
const MAX_RETRY: Duration = Duration::from_secs(60);
/// Bytes of the verification state's MAC kept (128 bits).
const MAC_LEN: usize = 16;
/// A verification state issued further ahead than this (clock skew between replicas) is
/// not this deployment's.
pub const STATE_FUTURE_LEEWAY_SECS: i64 = 60;

/// What the receiver knows of its stream now.
#[derive(Debug, Clone, Default)]
pub struct State {
    /// Configured (created or found, checked, updated) at least once since start.
    pub configured: bool,
    /// The stream in use.
    pub stream_id: Option<String>,
    /// Poll delivery: the endpoint the transmitter assigned.
    pub poll_endpoint: Option<String>,
    /// `enabled`, `paused` or `disabled`, from the status endpoint or a `stream-updated`
    /// event; `None` when unknown.
    pub status: Option<String>,
    /// Why the last attempt failed, while it does.
    pub last_error: Option<String>,
    /// A verification event of this deployment for the stream in use arrived here.
    pub verified: bool,
    /// When the last one arrived (Unix seconds).
    pub last_verified: Option<i64>,
}

/// One provider's managed stream. Shared by the management task, the poller and the
/// push handler.
pub struct ManagedStream {
    provider: String,
    issuer: String,
    audiences: Vec<String>,
    metadata_url: String,
    resync_interval: Duration,
    verify_interval: Option<Duration>,
    wanted: Wanted,
    api: ssf::Client,
    state_key: hmac::Key,
    state: Mutex<State>,
    resync: Notify,
}

impl std::fmt::Debug for ManagedStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagedStream")
            .field("provider", &self.provider)
            .field("metadata_url", &self.metadata_url)
            .field("wanted", &self.wanted.delivery)
            .field("state", &*self.state.lock())
            .finish_non_exhaustive()
    }
}

/// What one successful reconciliation found.
#[derive(Debug, Clone)]
struct Reconciled {
    stream_id: String,
    verification_endpoint: Option<String>,
    min_verification_interval: Option<Duration>,
}

impl ManagedStream {
    /// The managed stream of `provider` (at `index` in the config, for error messages).
    /// `key_material` (the receiver's signing key, see [`state_key_material`]) keys the
    /// verification states, so that every replica checks the others' states. The
    /// management credential file is read once here so a missing one fails at start.
    pub fn new(
        provider: &ProviderConfig,
        index: usize,
        stream: &StreamConfig,
        push_authorization: Option<&str>,
        http: reqwest::Client,
        key_material: &[u8],
    ) -> Result<Self, ConfigError> {
        let authorization = Credential {
            field: format!("providers[{index}].stream.authorization_file"),
            path: stream.authorization_file.clone(),
        };
        read_secret(&authorization.field, &authorization.path)?;
        let derive = hmac::Key::new(
            hmac::HMAC_SHA256,
            b"denylist-receiver/ssf-verification-state/v1",
        );
        let state_key = hmac::Key::new(
            hmac::HMAC_SHA256,
            hmac::sign(&derive, key_material).as_ref(),
        );
        Ok(Self {
            provider: provider.name.clone(),
            issuer: provider.issuer.clone(),
            audiences: provider.audiences.clone(),
            metadata_url: stream.metadata_url(&provider.issuer),
            resync_interval: stream.resync_interval,
            verify_interval: stream.verify_interval,
            wanted: Wanted::new(provider, stream, push_authorization),
            api: ssf::Client::new(http, authorization),
            state_key,
            state: Mutex::new(State::default()),
            resync: Notify::new(),
        })
    }

    /// A snapshot of the state.
    pub fn state(&self) -> State {
        self.state.lock().clone()
    }

    /// The poll endpoint the transmitter assigned, once known.
    pub fn poll_endpoint(&self) -> Option<String> {
        self.state.lock().poll_endpoint.clone()
    }

    /// Asks the management task to read the stream again now (e.g. its poll endpoint
    /// answered 404: another replica deleted it).
    pub fn request_resync(&self) {
        self.resync.notify_one();
    }

    /// How old a verification state may be when it comes back: twice the longer of
    /// `verify_interval` and `resync_interval`, so a state replayed long after (a
    /// transmitter echoing an old one) does not keep a stream "verified".
    pub fn max_state_age(&self) -> Duration {
        2 * self
            .resync_interval
            .max(self.verify_interval.unwrap_or_default())
    }

    /// Handles a verification event for `stream_id` carrying `state`; returns the
    /// `outcome` label it is counted under: `verified`, `acknowledged` (no state: the
    /// transmitter's own) or `unknown_state` (not issued here, too old, or from the
    /// future).
    pub fn verification(
        &self,
        metrics: &Metrics,
        stream_id: Option<&str>,
        state: Option<&str>,
        now: i64,
    ) -> &'static str {
        let Some(state) = state else {
            tracing::info!(provider = %self.provider, stream_id, "SSF verification event without state (sent by the transmitter itself); acknowledged");
            return "acknowledged";
        };
        let current = self.state.lock().stream_id.clone();
        let Some(stream_id) = stream_id.map(str::to_owned).or(current) else {
            return "unknown_state";
        };
        let Some(issued) = self.check_state(&stream_id, state) else {
            tracing::warn!(provider = %self.provider, stream_id, state, "SSF verification event with a state this deployment did not issue; acknowledged");
            return "unknown_state";
        };
        let max_age = i64::try_from(self.max_state_age().as_secs()).unwrap_or(i64::MAX);
        if issued < now.saturating_sub(max_age) || issued > now + STATE_FUTURE_LEEWAY_SECS {
            tracing::warn!(provider = %self.provider, stream_id, issued, now, max_age_secs = max_age, "SSF verification event with a state too old or from the future; acknowledged, not counted as verified");
            return "unknown_state";
        }
        {
            let mut s = self.state.lock();
            if s.stream_id.is_none() || s.stream_id.as_deref() == Some(stream_id.as_str()) {
                s.verified = true;
                s.last_verified = Some(now);
            }
        }
        tracing::info!(
            provider = %self.provider,
            stream_id,
            round_trip_secs = now - issued,
            "SSF stream verified: the verification event requested came back"
        );
        self.publish_gauges(metrics);
        "verified"
    }

    /// Handles a `stream-updated` event (SSF 1.0 §8.1.5): records the new status.
    pub fn stream_updated(
        &self,
        metrics: &Metrics,
        stream_id: Option<&str>,
        status: &str,
        reason: Option<&str>,
    ) {
        {
            let mut s = self.state.lock();
            if stream_id.is_some() && s.stream_id.is_some() && s.stream_id.as_deref() != stream_id {
                tracing::info!(provider = %self.provider, stream_id, status, "stream-updated event for a stream not in use; acknowledged");
                return;
            }
            s.status = Some(status.to_owned());
        }
        if status == "enabled" {
            tracing::info!(provider = %self.provider, stream_id, status, reason, "the transmitter changed the SSF stream's status");
        } else {
            tracing::warn!(provider = %self.provider, stream_id, status, reason, "the transmitter changed the SSF stream's status: no SETs are delivered until it is enabled again");
        }
        self.publish_gauges(metrics);
    }

    /// A fresh verification state for `stream_id`: `<issued>.<nonce>.<mac>`.
    pub fn new_state(&self, stream_id: &str, now: i64) -> String {
        let mut nonce = [0u8; 12];
        // Should the system RNG fail, the nonce stays zero: the state is still bound to
        // the stream and the time, and the MAC does not rely on the nonce being secret.
        let _ = rand::fill(&mut nonce);
        let mac = self.mac(stream_id, now, &nonce);
        format!(
            "{now}.{}.{}",
            URL_SAFE_NO_PAD.encode(nonce),
            URL_SAFE_NO_PAD.encode(&mac[..MAC_LEN])
        )
    }

    /// When `state` was issued, if this deployment issued it for `stream_id`.
    pub fn check_state(&self, stream_id: &str, state: &str) -> Option<i64> {
        let mut parts = state.split('.');
        let (issued, nonce, mac) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let issued: i64 = issued.parse().ok()?;
        let nonce = URL_SAFE_NO_PAD.decode(nonce).ok()?;
        let mac = URL_SAFE_NO_PAD.decode(mac).ok()?;
        let expected = self.mac(stream_id, issued, &nonce);
        constant_time::verify_slices_are_equal(&mac, &expected[..MAC_LEN])
            .ok()
            .map(|()| issued)
    }

    fn mac(&self, stream_id: &str, issued: i64, nonce: &[u8]) -> Vec<u8> {
        let mut ctx = hmac::Context::with_key(&self.state_key);
        for part in [self.provider.as_bytes(), stream_id.as_bytes(), nonce] {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part);
        }
        ctx.update(&issued.to_be_bytes());
        ctx.sign().as_ref().to_vec()
    }

    fn publish_gauges(&self, metrics: &Metrics) {
        let s = self.state.lock().clone();
        metrics.stream_gauges(
            &self.provider,
            StreamGauges {
                configured: s.configured,
                stream_id: s.stream_id,
                status: s.status,
                verified: s.verified,
                last_verified: s.last_verified,
            },
        );
    }

    fn count<T>(&self, metrics: &Metrics, operation: &str, result: &Result<T, ApiError>) {
        let outcome = result.as_ref().map_or_else(ApiError::outcome, |_| "ok");
        metrics.stream_request(&self.provider, operation, outcome);
    }

    /// Reads the transmitter's metadata and streams, and makes one stream what is wanted.
    async fn reconcile(&self, metrics: &Metrics) -> Result<Reconciled, ApiError> {
        let meta = self.api.metadata(&self.metadata_url, &self.issuer).await;
        self.count(metrics, "metadata", &meta);
        let meta = meta?;
        let method = self.wanted.delivery.method();
        if !meta.delivery_methods_supported.is_empty()
            && !meta.delivery_methods_supported.iter().any(|m| m == method)
        {
            return Err(ApiError::BadResponse(format!(
                "the transmitter does not offer delivery {method} (delivery_methods_supported: {:?})",
                meta.delivery_methods_supported
            )));
        }
        let endpoint = &meta.configuration_endpoint;
        let mut plan = plan(&self.wanted, &self.list(metrics, endpoint).await?);
        if plan == Plan::Create {
            let created = self.api.create(endpoint, &self.wanted.create_body()).await;
            self.count(metrics, "create", &created);
            match created? {
                Written::Stream(s) => {
                    tracing::info!(provider = %self.provider, stream_id = stream_id(&s), "SSF stream created");
                }
                Written::Accepted => {}
                Written::Conflict => self.adopt(metrics, endpoint).await?,
            }
            // Another replica may have created one at the same time: list again and keep
            // the lowest stream_id, as it will.
            plan = self::plan(&self.wanted, &self.list(metrics, endpoint).await?);
        }
        let Plan::Use {
            keep,
            delete,
            update,
        } = plan
        else {
            return Err(ApiError::BadResponse(format!(
                "GET {endpoint}: the stream just created is not listed"
            )));
        };
        for id in &delete {
            let deleted = self.api.delete(endpoint, id).await;
            self.count(metrics, "delete", &deleted);
            // Optional: the kept stream works without it; the next resync tries again.
            match deleted {
                Ok(()) => {
                    tracing::info!(provider = %self.provider, stream_id = %id, "duplicate SSF stream deleted (replicas created one each)");
                }
                Err(e) => {
                    tracing::warn!(provider = %self.provider, stream_id = %id, error = %e, "duplicate SSF stream not deleted; it stays until the next resync");
                }
            }
        }
        let mut stream = keep;
        if let Some(body) = update {
            let updated = self.api.update(endpoint, &body).await;
            self.count(metrics, "update", &updated);
            match updated? {
                Written::Stream(s) => stream = s,
                Written::Accepted => {}
                Written::Conflict => {
                    return Err(ApiError::Http(format!(
                        "PATCH {endpoint}: HTTP 409 Conflict"
                    )));
                }
            }
            tracing::info!(provider = %self.provider, stream_id = stream_id(&stream), events_requested = ?self.wanted.events, "SSF stream updated");
        }
        let id = self.check(&stream)?;
        let status = match &meta.status_endpoint {
            Some(status_endpoint) => {
                let status = self.api.status(status_endpoint, &id).await;
                self.count(metrics, "status", &status);
                // Optional: a transmitter may not let this credential read the status.
                status
                    .inspect_err(|e| {
                        tracing::warn!(provider = %self.provider, stream_id = %id, error = %e, "the SSF stream's status could not be read; it stays unknown");
                    })
                    .ok()
            }
            None => None,
        };
        let poll_endpoint = stream["delivery"]["endpoint_url"]
            .as_str()
            .map(str::to_owned);
        let changed = {
            let mut s = self.state.lock();
            let changed = s.stream_id.as_deref() != Some(id.as_str());
            if changed {
                s.verified = false;
            }
            s.configured = true;
            s.stream_id = Some(id.clone());
            s.last_error = None;
            if self.wanted.delivery == Delivery::Poll {
                s.poll_endpoint = poll_endpoint;
            }
            if let Some((status, _)) = &status {
                s.status = Some(status.clone());
            }
            changed
        };
        if changed {
            tracing::info!(provider = %self.provider, stream_id = %id, delivery = method, "SSF stream configured");
        }
        if let Some((status, reason)) = &status
            && status != "enabled"
        {
            tracing::warn!(provider = %self.provider, stream_id = %id, status, reason, "the SSF stream is not enabled: no SETs are delivered until the transmitter enables it");
        }
        self.publish_gauges(metrics);
        Ok(Reconciled {
            stream_id: id,
            verification_endpoint: meta.verification_endpoint,
            min_verification_interval: stream["min_verification_interval"]
                .as_u64()
                .map(Duration::from_secs),
        })
    }

    async fn list(&self, metrics: &Metrics, endpoint: &str) -> Result<Vec<Value>, ApiError> {
        let listed = self.api.list(endpoint).await;
        self.count(metrics, "list", &listed);
        listed
    }

    /// The transmitter allows one stream per receiver and has one with another delivery
    /// (409 on create, SSF 1.0 §8.1.1.1): update that one to what is wanted.
    async fn adopt(&self, metrics: &Metrics, endpoint: &str) -> Result<(), ApiError> {
        let streams = self.list(metrics, endpoint).await?;
        let Some(existing) = streams.iter().filter_map(stream_id).min() else {
            return Err(ApiError::Http(format!(
                "POST {endpoint}: HTTP 409 Conflict, yet no stream is listed"
            )));
        };
        let mut body = self.wanted.patch_body(existing);
        body["delivery"] = self.wanted.delivery();
        let updated = self.api.update(endpoint, &body).await;
        self.count(metrics, "update", &updated);
        updated?;
        tracing::info!(provider = %self.provider, stream_id = existing, "the transmitter allows one stream per receiver: its existing stream was updated to this delivery");
        Ok(())
    }

    /// Checks the kept stream (SSF 1.0 §8.1.1: `iss` is the transmitter's issuer; `aud` is
    /// what the receiver verifies SETs against) and returns its id.
    fn check(&self, stream: &Value) -> Result<String, ApiError> {
        let id = stream_id(stream)
            .ok_or_else(|| ApiError::BadResponse("the stream has no stream_id".into()))?
            .to_owned();
        // SSF 1.0 §8.1.1: the receiver MUST confirm that `iss` is the transmitter's
        // issuer, and the spec says identical, so no trailing-slash tolerance.
        match stream["iss"].as_str() {
            Some(iss) if iss == self.issuer => {}
            Some(iss) => {
                return Err(ApiError::BadResponse(format!(
                    "stream {id}: its iss {iss:?} is not the provider's issuer {:?}",
                    self.issuer
                )));
            }
            None => {
                return Err(ApiError::BadResponse(format!(
                    "stream {id}: it has no iss (SSF 1.0 §8.1.1 requires one)"
                )));
            }
        }
        let aud: Vec<&str> = match &stream["aud"] {
            Value::String(a) => vec![a.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !aud.is_empty() && !aud.iter().any(|a| self.audiences.iter().any(|x| x == a)) {
            return Err(ApiError::BadResponse(format!(
                "stream {id}: its aud {aud:?} is none of the provider's audiences {:?}, so its \
                 SETs would be refused: add it to providers.audiences",
                self.audiences
            )));
        }
        if self.wanted.delivery == Delivery::Poll {
            let url = stream["delivery"]["endpoint_url"]
                .as_str()
                .unwrap_or_default();
            // The poll credential goes there.
            ssf::check_secure_url(url).map_err(|e| {
                ApiError::BadResponse(format!(
                    "stream {id}: its poll delivery's endpoint_url is not usable: {e}"
                ))
            })?;
        }
        if let Some(delivered) = stream["events_delivered"].as_array() {
            let missing: Vec<&String> = self
                .wanted
                .events
                .iter()
                .filter(|e| !delivered.iter().any(|d| d == e.as_str()))
                .collect();
            if !missing.is_empty() {
                tracing::warn!(provider = %self.provider, stream_id = %id, ?missing, "the transmitter will not deliver some requested event types");
            }
        }
        Ok(id)
    }

    fn failed(&self, metrics: &Metrics, error: &ApiError, retry_in: Duration) {
        let message = error.to_string();
        tracing::warn!(provider = %self.provider, error = %message, ?retry_in, "the SSF stream could not be configured; retrying");
        self.state.lock().last_error = Some(message);
        self.publish_gauges(metrics);
    }

    async fn request_verification(
        &self,
        metrics: &Metrics,
        endpoint: &str,
        stream_id: &str,
    ) -> Result<(), ApiError> {
        let state = self.new_state(stream_id, now_secs());
        let result = self.api.verify(endpoint, stream_id, &state).await;
        self.count(metrics, "verify", &result);
        if result.is_ok() {
            tracing::info!(provider = %self.provider, stream_id, "SSF verification event requested");
        }
        result
    }
}

/// Keeps `provider`'s stream configured until `shutdown` turns true (see the module docs).
pub async fn run(receiver: Arc<Receiver>, provider: String, shutdown: watch::Receiver<bool>) {
    if let Some(stream) = receiver.provider(&provider).and_then(|p| p.stream.as_ref()) {
        stream.keep_configured(receiver.metrics(), shutdown).await;
    }
}

impl ManagedStream {
    /// Reconciles, verifies and resyncs until `shutdown` turns true.
    pub async fn keep_configured(&self, metrics: &Metrics, mut shutdown: watch::Receiver<bool>) {
        self.publish_gauges(metrics);
        let mut backoff = FIRST_RETRY;
        // The stream last verified (requested) and when the next request is due.
        let mut verified: Option<String> = None;
        let mut next_verification: Option<Instant> = None;
        loop {
            let started = Instant::now();
            let wait = match self.reconcile(metrics).await {
                Ok(r) => {
                    backoff = FIRST_RETRY;
                    let mut wait = self.resync_interval;
                    let due = verified.as_deref() != Some(r.stream_id.as_str())
                        || next_verification.is_some_and(|t| Instant::now() >= t);
                    if due {
                        match &r.verification_endpoint {
                            Some(endpoint) => {
                                match self
                                    .request_verification(metrics, endpoint, &r.stream_id)
                                    .await
                                {
                                    Ok(()) => {
                                        verified = Some(r.stream_id.clone());
                                        next_verification = self.verify_interval.map(|i| {
                                            Instant::now()
                                                + i.max(
                                                    r.min_verification_interval.unwrap_or_default(),
                                                )
                                        });
                                    }
                                    Err(e) => {
                                        tracing::warn!(provider = %self.provider, error = %e, "SSF verification request failed; retrying");
                                        wait = wait.min(jitter(backoff));
                                        backoff = (backoff * 2).min(MAX_RETRY);
                                    }
                                }
                            }
                            None => {
                                tracing::info!(provider = %self.provider, "the transmitter offers no verification endpoint; the stream is not verified");
                                verified = Some(r.stream_id.clone());
                            }
                        }
                    }
                    if let Some(at) = next_verification {
                        wait = wait.min(at.saturating_duration_since(Instant::now()));
                    }
                    wait
                }
                Err(e) => {
                    let wait = jitter(backoff);
                    self.failed(metrics, &e, wait);
                    backoff = (backoff * 2).min(MAX_RETRY);
                    wait
                }
            };
            // A resync asked for (the poll endpoint answered 404) is honoured no sooner than
            // one backoff period after this attempt started: while a retry wait runs it
            // cannot cut it short (the doubled backoff outlasts the jittered wait), and a
            // stream that keeps answering 404 costs at most one attempt per period.
            let resync_at = started + backoff;
            tokio::select! {
                _ = shutdown.changed() => return,
                () = tokio::time::sleep(wait) => {}
                () = async {
                    self.resync.notified().await;
                    tokio::time::sleep_until(resync_at).await;
                } => {}
            }
        }
    }
}

/// The bytes the verification states are keyed with: the DER of the receiver's PKCS#8 PEM
/// signing key, so the same key in PEM files that differ in line breaks or trailing
/// whitespace keys the same states. Text that is not PEM is used as it is.
pub fn state_key_material(signing_key_pem: &str) -> Vec<u8> {
    let der = signing_key_pem
        .split_once("-----BEGIN PRIVATE KEY-----")
        .and_then(|(_, rest)| rest.split_once("-----END PRIVATE KEY-----"))
        .and_then(|(body, _)| {
            let body: String = body.split_whitespace().collect();
            base64::engine::general_purpose::STANDARD.decode(body).ok()
        });
    der.unwrap_or_else(|| signing_key_pem.as_bytes().to_vec())
}

/// `d` scaled by a random factor in [0.5, 1.5), so replicas that failed together do not
/// retry together.
fn jitter(d: Duration) -> Duration {
    let mut byte = [0u8; 1];
    let _ = rand::fill(&mut byte);
    d.mul_f64(0.5 + f64::from(byte[0]) / 256.0)
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "stream_fault_tests.rs"]
mod fault_tests;
