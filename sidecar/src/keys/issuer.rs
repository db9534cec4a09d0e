//! One issuer's keys: the current key set, where it comes from, how it is refreshed,
//! and what went wrong last.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use aws_lc_rs::digest;
use reqwest::{Client, Url};
use tokio::io::AsyncReadExt as _;
use tokio::sync::watch;

use super::key_set::KeySet;
use super::{KeyError, KeyLookupError, MAX_JWKS_BYTES, VerifyingKey, fetch, jwks};
use crate::algorithm::Algorithm;
use crate::clock::SharedClock;
use crate::config::{IssuerConfig, KeyFile, KeySourceKind};

/// Largest PEM or HMAC secret file read (a certificate chain fits many times over).
const MAX_KEY_FILE_BYTES: usize = 1024 * 1024;

/// First retry delay after a failed refresh; doubles per failure up to the refresh interval.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// A snapshot of one issuer's key state, for `Status` answers, health and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerKeyStatus {
    /// The issuer (`iss`).
    pub issuer: String,
    /// The key source kind (`jwks_url`, `jwks_file`, `pem`, `hmac`).
    pub source: &'static str,
    /// Keys currently loaded.
    pub keys: u32,
    /// Clock time (Unix ms) of the last successful load or refresh; 0 if none yet.
    pub last_refresh_ms: i64,
    /// The last load or refresh error, if the last attempt failed; `None` once one succeeds.
    pub last_error: Option<String>,
    /// Failed loads and refreshes since start.
    pub fetch_failures: u64,
}

/// One issuer's keys: an immutable key set behind an `ArcSwap`, replaced whole when the
/// source changes, plus the source and its status.
pub struct IssuerKeys {
    issuer: String,
    kind: KeySourceKind,
    source: Source,
    refresh_interval: Duration,
    refetch_min_interval: Duration,
    clock: SharedClock,
    keys: ArcSwap<KeySet>,
    /// Bumped whenever a different key set is swapped in.
    generation: AtomicU64,
    /// Bumped at the start of every load attempt.
    attempts: AtomicU64,
    /// Clock time (Unix ms) of the last load attempt, for the unknown-kid rate limit.
    last_attempt_ms: AtomicI64,
    /// Serialises loads, so concurrent unknown-kid refetches share one fetch. Holds the
    /// digest of the content last loaded, so an unchanged document or file is not parsed
    /// again. A tokio mutex because it is held across the fetch.
    loading: tokio::sync::Mutex<Option<[u8; 32]>>,
    /// Never held across an await.
    status: parking_lot::Mutex<StatusState>,
}

enum Source {
    JwksUrl {
        url: Url,
        /// The URL without user info, for logs and status.
        shown: String,
        client: Client,
        timeout: Duration,
    },
    JwksFile(PathBuf),
    Pem(Vec<KeyFile>),
    Hmac {
        files: Vec<KeyFile>,
        /// Of the issuer's allowed algorithms, the one that needs the longest secret:
        /// every secret file must be long enough for it.
        longest: Option<Algorithm>,
    },
}

#[derive(Debug, Default)]
struct StatusState {
    last_refresh_ms: i64,
    last_error: Option<String>,
    fetch_failures: u64,
    consecutive_failures: u32,
}

/// A failed load: which file or URL, and why.
struct SourceError {
    location: String,
    error: KeyError,
}

impl SourceError {
    fn new(location: impl fmt::Display, error: KeyError) -> Self {
        Self {
            location: location.to_string(),
            error,
        }
    }
}

/// An HMAC key from a secret file's bytes, refused if the secret is shorter than
/// `longest`, the issuer's allowed algorithm with the longest hash, needs: a secret
/// too short for an algorithm the config allows is a config mistake, told at start.
fn hmac_key(
    secret: &[u8],
    kid: Option<String>,
    longest: Option<Algorithm>,
) -> Result<VerifyingKey, KeyError> {
    if let Some(alg) = longest
        && let Some(min) = alg.min_hmac_secret_bytes()
        && secret.len() < min
    {
        return Err(KeyError::Weak(format!(
            "HMAC secret has {} bytes; {alg}, in the issuer's algorithms, needs at least \
             {min} (RFC 7518 §3.2)",
            secret.len()
        )));
    }
    VerifyingKey::from_hmac_secret(secret, kid)
}

impl IssuerKeys {
    /// Builds the issuer's key source and loads it once. Key file errors are returned;
    /// a JWKS URL that fails is recorded in the status and left to the refresh loop.
    pub(super) async fn load(
        config: &IssuerConfig,
        clock: SharedClock,
        client: Option<Client>,
    ) -> Result<Self, KeyError> {
        let issuer = config.issuer.clone();
        let k = &config.keys;
        let config_error = |message: &str| KeyError::Config {
            issuer: issuer.clone(),
            message: message.to_owned(),
        };
        let kind = k.kind().ok_or_else(|| {
            config_error("set exactly one of jwks_url, jwks_file, pem_files, hmac_secret_files")
        })?;
        let source = match kind {
            KeySourceKind::JwksUrl => {
                let text = k.jwks_url.as_deref().unwrap_or_default();
                let url = Url::parse(text).map_err(|e| KeyError::Source {
                    issuer: issuer.clone(),
                    location: text.to_owned(),
                    source: Box::new(KeyError::Fetch(format!("not a URL: {e}"))),
                })?;
                let client = match client {
                    Some(client) => client,
                    None => fetch::http_client()?,
                };
                Source::JwksUrl {
                    shown: fetch::redacted(&url),
                    url,
                    client,
                    timeout: k.fetch_timeout,
                }
            }
            KeySourceKind::JwksFile => Source::JwksFile(
                k.jwks_file
                    .clone()
                    .ok_or_else(|| config_error("jwks_file is not set"))?,
            ),
            KeySourceKind::Pem => Source::Pem(k.pem_files.clone()),
            KeySourceKind::Hmac => Source::Hmac {
                files: k.hmac_secret_files.clone(),
                longest: config
                    .algorithms
                    .iter()
                    .copied()
                    .max_by_key(|a| a.min_hmac_secret_bytes()),
            },
        };
        let keys = Self {
            issuer,
            kind,
            source,
            refresh_interval: k.refresh_interval,
            refetch_min_interval: k.refetch_min_interval,
            clock,
            keys: ArcSwap::from_pointee(KeySet::default()),
            generation: AtomicU64::new(0),
            attempts: AtomicU64::new(0),
            last_attempt_ms: AtomicI64::new(i64::MIN),
            loading: tokio::sync::Mutex::new(None),
            status: parking_lot::Mutex::new(StatusState::default()),
        };
        keys.publish_key_count(0);
        let first = {
            let mut loading = keys.loading.lock().await;
            keys.refresh_locked(&mut loading).await
        };
        match first {
            Ok(_) => Ok(keys),
            // Not fatal: the IdP may be starting too. Tokens get NoKeys until it answers.
            Err(_) if kind == KeySourceKind::JwksUrl => Ok(keys),
            Err(e) => Err(KeyError::Source {
                issuer: keys.issuer.clone(),
                location: e.location,
                source: Box::new(e.error),
            }),
        }
    }

    /// The issuer (`iss`) these keys belong to.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The key to check a token's signature with. Lock-free and allocation-free.
    ///
    /// With a `kid`: the key with that kid; else, if exactly one key without a kid accepts
    /// `alg`, that one; else [`KeyLookupError::UnknownKey`]. Without a `kid`: the one key
    /// that accepts `alg`; several (or none) is [`KeyLookupError::UnknownKey`] — no
    /// guessing. A key "accepts" `alg` when its family fits, for a JWK with an `alg` that
    /// `alg` is the same, and for HMAC its secret is long enough for the hash.
    /// [`KeyLookupError::NoKeys`] if the issuer has no keys yet.
    ///
    /// The key found by kid is returned even if `alg` does not fit it: its
    /// [`VerifyingKey::verify`] then answers `WrongKeyType`.
    #[inline]
    pub fn key_for(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Arc<VerifyingKey>, KeyLookupError> {
        self.keys.load().key_for(kid, alg)
    }

    /// Called after [`IssuerKeys::key_for`] found no key for a token's kid: refetches the
    /// JWKS URL if the last fetch is at least `refetch_min_interval` old, and returns
    /// whether the key set changed (then look the key up again).
    ///
    /// Returns `false` at once for file sources, and for a JWKS URL fetched too recently.
    /// Callers arriving while a fetch is in flight wait for it and share its result
    /// rather than fetching again. A failed fetch keeps the last good keys.
    pub async fn refetch_for_unknown_kid(&self) -> bool {
        if !matches!(self.source, Source::JwksUrl { .. }) {
            return false;
        }
        let generation = self.generation.load(Ordering::Acquire);
        let attempts = self.attempts.load(Ordering::Acquire);
        let mut loading = match self.loading.try_lock() {
            Ok(guard) => guard,
            Err(_) => {
                // A fetch is in flight: its result is ours too.
                drop(self.loading.lock().await);
                return self.generation.load(Ordering::Acquire) != generation;
            }
        };
        if self.attempts.load(Ordering::Acquire) != attempts {
            // A fetch finished between our snapshot and taking the lock.
            return self.generation.load(Ordering::Acquire) != generation;
        }
        if !self.refetch_due() {
            return false;
        }
        // The outcome is recorded in the status and logged; the caller only needs to
        // know whether to look again.
        let _ = self.refresh_locked(&mut loading).await;
        self.generation.load(Ordering::Acquire) != generation
    }

    /// A snapshot of this issuer's key state.
    pub fn status(&self) -> IssuerKeyStatus {
        let keys = u32::try_from(self.key_count()).unwrap_or(u32::MAX);
        let s = self.status.lock();
        IssuerKeyStatus {
            issuer: self.issuer.clone(),
            source: self.kind.as_str(),
            keys,
            last_refresh_ms: s.last_refresh_ms,
            last_error: s.last_error.clone(),
            fetch_failures: s.fetch_failures,
        }
    }

    /// Whether this issuer verifies with shared secrets (HMAC) rather than public keys.
    pub fn is_symmetric(&self) -> bool {
        self.kind == KeySourceKind::Hmac
    }

    pub(super) fn key_count(&self) -> usize {
        self.keys.load().len()
    }

    /// Refreshes every `refresh_interval` (sooner after a failure) until shutdown.
    pub(super) async fn refresh_loop(&self, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.next_refresh_delay()) => {}
                () = wait_for_shutdown(&mut shutdown) => return,
            }
            tokio::select! {
                _ = self.refresh() => {}
                () = wait_for_shutdown(&mut shutdown) => return,
            }
        }
    }

    /// Loads the source now (after a load in flight, if any). Returns whether the key
    /// set changed, or the error as the status shows it.
    pub(super) async fn refresh(&self) -> Result<bool, String> {
        let mut loading = self.loading.lock().await;
        self.refresh_locked(&mut loading)
            .await
            .map_err(|e| format!("{}: {}", e.location, e.error))
    }

    fn refetch_due(&self) -> bool {
        let last = self.last_attempt_ms.load(Ordering::Acquire);
        if last == i64::MIN {
            return true;
        }
        let elapsed = self.clock.now_ms().saturating_sub(last);
        // A clock stepped backwards would otherwise block refetches until it catches up.
        elapsed < 0
            || elapsed >= i64::try_from(self.refetch_min_interval.as_millis()).unwrap_or(i64::MAX)
    }

    pub(super) fn next_refresh_delay(&self) -> Duration {
        let failures = self.status.lock().consecutive_failures;
        if failures == 0 {
            return self.refresh_interval;
        }
        let backoff = FIRST_RETRY.saturating_mul(1 << (failures - 1).min(16));
        backoff.min(self.refresh_interval)
    }

    /// One load attempt, with the load lock held: counts it, loads, records the outcome.
    async fn refresh_locked(
        &self,
        last_digest: &mut Option<[u8; 32]>,
    ) -> Result<bool, SourceError> {
        self.attempts.fetch_add(1, Ordering::AcqRel);
        self.last_attempt_ms
            .store(self.clock.now_ms(), Ordering::Release);
        let result = self.load_source(last_digest).await;
        self.record(&result);
        result
    }

    /// Reads the source and swaps in its keys if they differ. Returns whether they did.
    async fn load_source(&self, last_digest: &mut Option<[u8; 32]>) -> Result<bool, SourceError> {
        match &self.source {
            Source::JwksUrl {
                url,
                shown,
                client,
                timeout,
            } => {
                let body = fetch::fetch_jwks(client, url, *timeout)
                    .await
                    .map_err(|e| SourceError::new(shown, e))?;
                self.install_jwks(&body, shown, last_digest)
                    .map_err(|e| SourceError::new(shown, e))
            }
            Source::JwksFile(path) => {
                let shown = path.display().to_string();
                let body = read_file(path, MAX_JWKS_BYTES)
                    .await
                    .map_err(|e| SourceError::new(&shown, e))?;
                self.install_jwks(&body, &shown, last_digest)
                    .map_err(|e| SourceError::new(&shown, e))
            }
            Source::Pem(files) | Source::Hmac { files, .. } => {
                let longest = match &self.source {
                    Source::Hmac { longest, .. } => Some(*longest),
                    _ => None,
                };
                let mut contents = Vec::with_capacity(files.len());
                let mut ctx = digest::Context::new(&digest::SHA256);
                for file in files {
                    let bytes = read_file(&file.path, MAX_KEY_FILE_BYTES)
                        .await
                        .map_err(|e| SourceError::new(file.path.display(), e))?;
                    ctx.update(&(bytes.len() as u64).to_be_bytes());
                    ctx.update(&bytes);
                    contents.push(bytes);
                }
                let content_digest = digest_array(ctx.finish());
                if *last_digest == Some(content_digest) {
                    return Ok(false);
                }
                let mut keys = Vec::with_capacity(files.len());
                for (file, bytes) in files.iter().zip(&contents) {
                    let key = if let Some(longest) = longest {
                        if bytes.ends_with(b"\n") {
                            tracing::warn!(
                                issuer = %self.issuer,
                                file = %file.path.display(),
                                "HMAC secret file ends with a newline, which is part of the secret"
                            );
                        }
                        hmac_key(bytes, file.kid.clone(), longest)
                    } else {
                        VerifyingKey::from_pem(bytes, file.kid.clone())
                    };
                    keys.push(key.map_err(|e| SourceError::new(file.path.display(), e))?);
                }
                Ok(self.swap(keys, content_digest, last_digest))
            }
        }
    }

    fn install_jwks(
        &self,
        body: &[u8],
        location: &str,
        last_digest: &mut Option<[u8; 32]>,
    ) -> Result<bool, KeyError> {
        let content_digest = digest_array(digest::digest(&digest::SHA256, body));
        if *last_digest == Some(content_digest) {
            return Ok(false);
        }
        let keys = jwks::parse_jwks(body, &self.issuer, location)?;
        Ok(self.swap(keys, content_digest, last_digest))
    }

    /// Swaps in `keys` if they differ from the current set. Returns whether they did.
    fn swap(
        &self,
        keys: Vec<VerifyingKey>,
        content_digest: [u8; 32],
        last_digest: &mut Option<[u8; 32]>,
    ) -> bool {
        *last_digest = Some(content_digest);
        let set = KeySet::new(keys);
        if self.keys.load().same_keys(&set) {
            return false;
        }
        let count = set.len();
        self.keys.store(Arc::new(set));
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.publish_key_count(count);
        tracing::info!(issuer = %self.issuer, source = self.kind.as_str(), keys = count, "keys loaded");
        true
    }

    fn record(&self, result: &Result<bool, SourceError>) {
        let now = self.clock.now_ms();
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::counter!(
            "denylist_key_fetches_total",
            "issuer" => self.issuer.clone(),
            "result" => outcome,
        )
        .increment(1);
        let mut s = self.status.lock();
        match result {
            Ok(_) => {
                s.last_refresh_ms = now;
                s.last_error = None;
                s.consecutive_failures = 0;
            }
            Err(e) => {
                s.fetch_failures += 1;
                s.consecutive_failures = s.consecutive_failures.saturating_add(1);
                s.last_error = Some(format!("{}: {}", e.location, e.error));
                drop(s);
                // At start there is nothing to keep; saying so avoids a false comfort.
                let kept = if self.keys.load().len() == 0 {
                    "no keys are loaded yet"
                } else {
                    "keeping the last good keys"
                };
                if self.kind == KeySourceKind::JwksUrl {
                    tracing::warn!(
                        issuer = %self.issuer,
                        url = %e.location,
                        error = %e.error,
                        "JWKS fetch failed; {kept}"
                    );
                } else {
                    tracing::warn!(
                        issuer = %self.issuer,
                        file = %e.location,
                        error = %e.error,
                        "key file load failed; {kept}"
                    );
                }
            }
        }
    }

    fn publish_key_count(&self, count: usize) {
        metrics::gauge!("denylist_keys", "issuer" => self.issuer.clone()).set(count as f64);
    }
}

impl fmt::Debug for IssuerKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let location = match &self.source {
            Source::JwksUrl { shown, .. } => shown.clone(),
            Source::JwksFile(path) => path.display().to_string(),
            Source::Pem(files) | Source::Hmac { files, .. } => format!("{} file(s)", files.len()),
        };
        f.debug_struct("IssuerKeys")
            .field("issuer", &self.issuer)
            .field("source", &self.kind.as_str())
            .field("location", &location)
            .field("keys", &self.key_count())
            .finish_non_exhaustive()
    }
}

/// Resolves once `shutdown` is true, or its sender is gone (which also means stop).
pub(super) async fn wait_for_shutdown(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Reads at most `limit` bytes; a longer file (or a device that never ends) is an error.
async fn read_file(path: &Path, limit: usize) -> Result<Vec<u8>, KeyError> {
    let file = tokio::fs::File::open(path).await?;
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1).read_to_end(&mut bytes).await?;
    if bytes.len() > limit {
        return Err(KeyError::Invalid(format!(
            "file is larger than {limit} bytes"
        )));
    }
    Ok(bytes)
}

fn digest_array(d: digest::Digest) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}
