//! Verification keys: loading them from each issuer's key source, keeping them fresh,
//! and finding the one a token names.
//!
//! The module owns everything between an issuer's configured key source (a JWKS URL, a
//! JWKS file, PEM files or HMAC secret files) and the signature check:
//!
//! - [`VerifyingKey`] is one key, validated once at load (aws-lc parses it; RSA sizes
//!   and HMAC secret lengths are checked) and prepared as the jsonwebtoken
//!   `DecodingKey` the Verify path hands to `jsonwebtoken::decode`.
//! - [`IssuerKeys`] holds one issuer's immutable key set behind an `ArcSwap`:
//!   [`IssuerKeys::key_for`] is lock-free and does not allocate. A refresh builds a new
//!   set and swaps it in; readers never wait for it.
//! - [`KeyStore`] holds every issuer, loads them at start ([`KeyStore::load`]) and keeps
//!   them fresh ([`KeyStore::run_refresh`]).
//!
//! A refresh that fails never drops keys: the last good set stays in place, the failure
//! is logged, counted (`denylist_key_fetches_total{result="error"}`) and shown in
//! [`IssuerKeyStatus`].

use std::collections::HashMap;
use std::sync::Arc;

use crate::clock::SharedClock;
use crate::config::IssuerConfig;

mod fetch;
mod issuer;
mod jwk;
mod jwks;
mod key_set;
mod pem;
mod verifying_key;

pub use issuer::{IssuerKeyStatus, IssuerKeys};
pub use verifying_key::VerifyingKey;

/// Largest JWKS document accepted, from a URL or a file.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// Most keys accepted in one JWKS document.
pub const MAX_JWKS_KEYS: usize = 100;

/// Shortest HMAC secret accepted, in bytes (256 bits).
pub const MIN_HMAC_SECRET_BYTES: usize = 32;

/// Smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;

/// Largest RSA modulus accepted, in bits (the upper bound of aws-lc's verifiers).
pub const MAX_RSA_BITS: usize = 8192;

/// Why a key, a key file or a key source could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Not a usable key: malformed encoding, unsupported key type or curve, private key
    /// material where a public key belongs.
    #[error("invalid key: {0}")]
    Invalid(String),
    /// A well-formed key that is too weak: RSA under 2048 bits, an HMAC secret under 32
    /// bytes or shorter than the hash of an algorithm it is to verify.
    #[error("weak key: {0}")]
    Weak(String),
    /// A JWK that is not meant for signature verification (`"use": "enc"`, or `key_ops`
    /// without `verify`).
    #[error("key is not for signature verification: {0}")]
    NotForSignatures(String),
    /// A JWKS document that cannot be used as a whole (not JSON, no usable key, too big).
    #[error("invalid JWKS document: {0}")]
    Jwks(String),
    /// A JWKS URL could not be fetched (connection, timeout, HTTP status, body too big).
    #[error("fetch failed: {0}")]
    Fetch(String),
    /// A key file could not be read.
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    /// An issuer's key source failed: names the issuer and the file or URL.
    #[error("issuer {issuer:?}: {location}: {source}")]
    Source {
        /// The issuer (`iss`).
        issuer: String,
        /// The file path or URL that failed.
        location: String,
        /// What went wrong.
        source: Box<KeyError>,
    },
    /// An issuer whose configuration names no single key source.
    #[error("issuer {issuer:?}: {message}")]
    Config {
        /// The issuer (`iss`).
        issuer: String,
        /// What is wrong.
        message: String,
    },
}

/// Why [`VerifyingKey::verify`] refused a signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The algorithm does not fit the key: another key family, or the JWK's `alg` names
    /// another algorithm.
    #[error("the algorithm does not fit the key")]
    WrongKeyType,
    /// The signature does not verify (wrong key, altered input, malformed signature).
    #[error("invalid signature")]
    Invalid,
}

/// Why no key was found for a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyLookupError {
    /// No key has the token's `kid`, and no single key fits without one.
    #[error("no key matches the token's kid and algorithm")]
    UnknownKey,
    /// The issuer has no keys at all (its JWKS has not been fetched yet).
    #[error("the issuer has no keys loaded")]
    NoKeys,
}

/// Every issuer's keys.
#[derive(Debug)]
pub struct KeyStore {
    issuers: HashMap<String, Arc<IssuerKeys>>,
}

impl KeyStore {
    /// Loads every issuer's keys.
    ///
    /// Key files (PEM, HMAC secret, JWKS file) must load: the error names the issuer and
    /// the file, so bad config fails at start. A JWKS URL whose first fetch fails is not
    /// fatal: the failure is logged and shown in [`KeyStore::status`], the refresh loop
    /// retries it, and meanwhile [`IssuerKeys::key_for`] answers
    /// [`KeyLookupError::NoKeys`]. JWKS URLs are fetched concurrently.
    pub async fn load(issuers: &[IssuerConfig], clock: SharedClock) -> Result<Self, KeyError> {
        // One HTTP client (connection pool, TLS roots) for every JWKS URL; built only if needed.
        let client = if issuers.iter().any(|i| i.keys.jwks_url.is_some()) {
            Some(fetch::http_client()?)
        } else {
            None
        };
        let loads = issuers
            .iter()
            .map(|config| IssuerKeys::load(config, clock.clone(), client.clone()));
        let mut map = HashMap::with_capacity(issuers.len());
        for loaded in futures::future::join_all(loads).await {
            let keys = loaded?;
            map.insert(keys.issuer().to_owned(), Arc::new(keys));
        }
        Ok(Self { issuers: map })
    }

    /// The keys of the issuer whose `iss` is exactly `iss`.
    pub fn issuer(&self, iss: &str) -> Option<&Arc<IssuerKeys>> {
        self.issuers.get(iss)
    }

    /// Keeps the keys fresh until `shutdown` turns true (or its sender is dropped).
    ///
    /// Every issuer is refreshed every `refresh_interval`: JWKS URLs are refetched, key
    /// files re-read and swapped in when their content changed. After a failure the
    /// issuer is retried sooner (1 s, doubling, up to `refresh_interval`); the last good
    /// keys stay in place meanwhile. Issuers refresh concurrently, so one slow JWKS
    /// endpoint does not hold up the others. A fetch in flight is abandoned at shutdown.
    pub async fn run_refresh(self: Arc<Self>, shutdown: tokio::sync::watch::Receiver<bool>) {
        if self.issuers.is_empty() {
            issuer::wait_for_shutdown(&mut shutdown.clone()).await;
            return;
        }
        let loops = self
            .issuers
            .values()
            .map(|keys| keys.refresh_loop(shutdown.clone()));
        futures::future::join_all(loops).await;
    }

    /// The status of every issuer's keys, sorted by issuer.
    pub fn status(&self) -> Vec<IssuerKeyStatus> {
        let mut all: Vec<_> = self.issuers.values().map(|k| k.status()).collect();
        all.sort_by(|a, b| a.issuer.cmp(&b.issuer));
        all
    }

    /// The number of keys loaded, over all issuers.
    pub fn key_count(&self) -> usize {
        self.issuers.values().map(|k| k.key_count()).sum()
    }
}

#[cfg(test)]
mod tests;
