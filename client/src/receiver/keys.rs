//! A provider's signing keys: its JWKS, from a file, a URL, or the URL its discovery
//! document names, prepared once per key for jsonwebtoken.
//!
//! Only public signature keys are kept: RSA of at least 2048 bits, EC P-256/P-384, Ed25519.
//! A key marked for encryption (`use` other than `sig`, `key_ops` without `verify`), an
//! HMAC (`oct`) key, or one carrying private material is skipped with a warning. An unknown
//! `kid` refetches the set (at most once per [`REFETCH_INTERVAL`]), so a key rotation at the
//! provider is picked up without a restart; a set older than [`MAX_SET_AGE`] is refreshed
//! on next use, so a withdrawn key stops verifying.

use std::path::PathBuf;
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, jwk::Jwk};
use parking_lot::RwLock;
use tokio::time::Instant;

use super::SignalError;
use super::config::ProviderConfig;

/// Least time between two refetches caused by unknown `kid`s (a flood of forged tokens
/// must not become a flood of requests to the provider).
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(10);
/// A fetched set is refreshed on use once it is this old.
pub const MAX_SET_AGE: Duration = Duration::from_secs(3600);
/// Bound on one JWKS or discovery request.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest discovery document or JWKS read (the sidecar's JWKS bound too).
const MAX_DOCUMENT_BYTES: usize = 1 << 20;
/// Largest RSA modulus accepted.
const MAX_RSA_BITS: usize = 8192;
/// Smallest RSA modulus accepted.
const MIN_RSA_BITS: usize = 2048;

/// Where the keys come from.
#[derive(Debug, Clone)]
enum Source {
    File(PathBuf),
    Url(String),
    Discovery(String),
}

/// One verification key.
struct Key {
    kid: Option<String>,
    /// The JWK's `alg`, if any: then the only algorithm it verifies.
    alg: Option<Algorithm>,
    algorithms: &'static [Algorithm],
    decoding: Arc<DecodingKey>,
}

impl Key {
    fn accepts(&self, alg: Algorithm) -> bool {
        self.algorithms.contains(&alg) && self.alg.is_none_or(|a| a == alg)
    }
}

#[derive(Default)]
struct Loaded {
    keys: Vec<Key>,
    fetched_at: Option<Instant>,
    last_refetch: Option<Instant>,
}

/// The keys of one provider. Cheap to share (behind an `Arc` in the receiver).
pub struct KeySet {
    provider: String,
    source: Source,
    http: reqwest::Client,
    loaded: RwLock<Loaded>,
    /// Serialises fetches so that concurrent unknown `kid`s cause one request.
    fetching: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("provider", &self.provider)
            .field("source", &self.source)
            .field("keys", &self.loaded.read().keys.len())
            .finish_non_exhaustive()
    }
}

impl KeySet {
    /// The key set a provider's config describes (nothing is fetched yet).
    pub fn new(provider: &ProviderConfig, http: reqwest::Client) -> Self {
        let source = if let Some(url) = &provider.jwks_url {
            Source::Url(url.clone())
        } else if let Some(path) = &provider.jwks_file {
            Source::File(path.clone())
        } else if let Some(url) = &provider.discovery_url {
            Source::Discovery(url.clone())
        } else {
            Source::Discovery(format!(
                "{}/.well-known/openid-configuration",
                provider.issuer.trim_end_matches('/')
            ))
        };
        Self {
            provider: provider.name.clone(),
            source,
            http,
            loaded: RwLock::new(Loaded::default()),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// Whether keys have been loaded at least once.
    pub fn is_loaded(&self) -> bool {
        self.loaded.read().fetched_at.is_some()
    }

    /// Loads (or reloads) the keys now.
    pub async fn load(&self) -> Result<usize, SignalError> {
        let _guard = self.fetching.lock().await;
        self.load_locked().await
    }

    async fn load_locked(&self) -> Result<usize, SignalError> {
        let document = self.fetch().await.map_err(|message| {
            SignalError::KeysUnavailable(format!(
                "provider {}: cannot load its keys: {message}",
                self.provider
            ))
        })?;
        let keys = parse_jwks(&self.provider, &document).map_err(|message| {
            SignalError::KeysUnavailable(format!(
                "provider {}: its JWKS is unusable: {message}",
                self.provider
            ))
        })?;
        let count = keys.len();
        let mut loaded = self.loaded.write();
        loaded.keys = keys;
        loaded.fetched_at = Some(Instant::now());
        tracing::info!(provider = %self.provider, keys = count, "provider keys loaded");
        Ok(count)
    }

    /// The key that verifies a token signed with `alg` under `kid`. An unknown `kid` (or no
    /// keys yet, or a set older than [`MAX_SET_AGE`]) fetches the set again first, at most
    /// once per [`REFETCH_INTERVAL`] for unknown `kid`s.
    pub async fn key_for(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Arc<DecodingKey>, SignalError> {
        let stale = {
            let loaded = self.loaded.read();
            match loaded.fetched_at {
                None => true,
                Some(at) => at.elapsed() > MAX_SET_AGE,
            }
        };
        if stale {
            let _guard = self.fetching.lock().await;
            // Another request may have loaded it while this one waited.
            let still_stale = self
                .loaded
                .read()
                .fetched_at
                .is_none_or(|at| at.elapsed() > MAX_SET_AGE);
            if still_stale && let Err(e) = self.load_locked().await {
                let mut loaded = self.loaded.write();
                if loaded.fetched_at.is_none() {
                    return Err(e);
                }
                // The provider is unreachable now: its keys of an hour ago are better than
                // refusing every signal. Try again after REFETCH_INTERVAL, not per request.
                tracing::warn!(provider = %self.provider, error = %e, "keeping the provider's previous keys");
                let now = Instant::now();
                loaded.fetched_at = Some(
                    now.checked_sub(MAX_SET_AGE.saturating_sub(REFETCH_INTERVAL))
                        .unwrap_or(now),
                );
            }
        }
        match self.find(kid, alg) {
            Ok(key) => return Ok(key),
            Err(SignalError::UnknownKey(_)) if kid.is_some() => {}
            Err(e) => return Err(e),
        }
        {
            let _guard = self.fetching.lock().await;
            let may_refetch = {
                let loaded = self.loaded.read();
                loaded
                    .last_refetch
                    .is_none_or(|at| at.elapsed() >= REFETCH_INTERVAL)
            };
            if may_refetch && self.find(kid, alg).is_err() {
                self.loaded.write().last_refetch = Some(Instant::now());
                self.load_locked().await?;
            }
        }
        self.find(kid, alg)
    }

    fn find(&self, kid: Option<&str>, alg: Algorithm) -> Result<Arc<DecodingKey>, SignalError> {
        let loaded = self.loaded.read();
        let mut fitting = loaded.keys.iter().filter(|k| k.accepts(alg));
        let found = match kid {
            Some(kid) => fitting.find(|k| k.kid.as_deref() == Some(kid)),
            None => {
                let first = fitting.next();
                if fitting.next().is_some() {
                    return Err(SignalError::UnknownKey(format!(
                        "the token names no `kid` and provider {} has several {alg:?} keys",
                        self.provider
                    )));
                }
                first
            }
        };
        found.map(|k| k.decoding.clone()).ok_or_else(|| {
            SignalError::UnknownKey(format!(
                "provider {} has no {alg:?} key with kid {:?}",
                self.provider,
                kid.unwrap_or("<none>")
            ))
        })
    }

    async fn fetch(&self) -> Result<serde_json::Value, String> {
        match &self.source {
            Source::File(path) => {
                let text = tokio::fs::read_to_string(path)
                    .await
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
            }
            Source::Url(url) => self.get_json(url).await,
            Source::Discovery(url) => {
                let document = self.get_json(url).await?;
                let jwks_uri = document
                    .get("jwks_uri")
                    .and_then(serde_json::Value::as_str)
                    .ok_or_else(|| format!("{url}: the discovery document has no `jwks_uri`"))?;
                self.get_json(jwks_uri).await
            }
        }
    }

    async fn get_json(&self, url: &str) -> Result<serde_json::Value, String> {
        let response = self
            .http
            .get(url)
            .timeout(FETCH_TIMEOUT)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("GET {url}: HTTP {status}"));
        }
        // Bounded: the provider's server is not trusted to send a sane amount.
        let body = super::ssf::read_body(response, MAX_DOCUMENT_BYTES)
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        serde_json::from_slice(&body).map_err(|e| format!("GET {url}: not JSON: {e}"))
    }
}

/// The usable signature keys of a JWKS document. An error only when the document is not a
/// JWKS at all; unusable keys are skipped with a warning.
fn parse_jwks(provider: &str, document: &serde_json::Value) -> Result<Vec<Key>, String> {
    let entries = document
        .get("keys")
        .and_then(serde_json::Value::as_array)
        .ok_or("no `keys` array")?;
    let mut keys = Vec::new();
    for entry in entries {
        match parse_jwk(entry) {
            Ok(Some(key)) => keys.push(key),
            Ok(None) => {}
            Err(message) => {
                let kid = entry.get("kid").and_then(serde_json::Value::as_str);
                tracing::warn!(provider, kid, "JWKS key skipped: {message}");
            }
        }
    }
    Ok(keys)
}

/// One JWK: `Ok(None)` for a key that is not for signatures (skipped quietly).
fn parse_jwk(entry: &serde_json::Value) -> Result<Option<Key>, String> {
    use Algorithm::*;
    let text = |name: &str| entry.get(name).and_then(serde_json::Value::as_str);
    if text("use").is_some_and(|u| u != "sig") {
        return Ok(None);
    }
    if let Some(ops) = entry.get("key_ops").and_then(serde_json::Value::as_array)
        && !ops.iter().any(|o| o == "verify")
    {
        return Ok(None);
    }
    if entry.get("d").is_some() {
        return Err("it carries private key material (`d`)".into());
    }
    let algorithms: &'static [Algorithm] = match (text("kty"), text("crv")) {
        (Some("RSA"), _) => {
            let n = URL_SAFE_NO_PAD
                .decode(text("n").ok_or("RSA key without `n`")?)
                .map_err(|e| format!("RSA `n` is not base64url: {e}"))?;
            let n = &n[n.iter().take_while(|b| **b == 0).count()..];
            let bits = n
                .first()
                .map_or(0, |f| (n.len() - 1) * 8 + (8 - f.leading_zeros() as usize));
            if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
                return Err(format!(
                    "RSA key has {bits} bits; {MIN_RSA_BITS} to {MAX_RSA_BITS} are accepted"
                ));
            }
            &[RS256, RS384, RS512, PS256, PS384, PS512]
        }
        (Some("EC"), Some("P-256")) => &[ES256],
        (Some("EC"), Some("P-384")) => &[ES384],
        (Some("OKP"), Some("Ed25519")) => &[EdDSA],
        (Some("oct"), _) => return Ok(None),
        (kty, crv) => return Err(format!("unsupported key type {kty:?} (curve {crv:?})")),
    };
    let alg = match text("alg") {
        None => None,
        Some(name) => {
            let alg =
                Algorithm::from_str(name).map_err(|_| format!("unsupported `alg` {name:?}"))?;
            if !algorithms.contains(&alg) {
                return Err(format!("`alg` {name} does not fit the key type"));
            }
            Some(alg)
        }
    };
    let jwk: Jwk =
        serde_json::from_value(entry.clone()).map_err(|e| format!("not a valid JWK: {e}"))?;
    let decoding =
        DecodingKey::from_jwk(&jwk).map_err(|e| format!("not a usable public key: {e}"))?;
    Ok(Some(Key {
        kid: text("kid").map(str::to_owned),
        alg,
        algorithms,
        decoding: Arc::new(decoding),
    }))
}
