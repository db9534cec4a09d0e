//! TLS for the webhook: a certificate resolver that re-reads the certificate and key files
//! when they change, so a rotated certificate (cert-manager renews before expiry) is served
//! without restarting the injector.
//!
//! Files are polled rather than watched: Kubernetes updates Secret volumes by swapping a
//! symlink, which inotify-based watchers are known to miss, and a poll every few seconds
//! costs nothing here. A pair that does not load (a half-written file, a key that does not
//! match the certificate) is logged and counted, and the previous pair stays in use.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::metrics::{ErrorKind, InjectorMetrics};

/// A certificate/key pair that cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The certificate file holds no PEM certificate.
    #[error("{path}: no PEM certificate found: {source}")]
    Certificate {
        /// The file.
        path: PathBuf,
        /// The PEM error.
        source: rustls::pki_types::pem::Error,
    },
    /// The key file holds no usable PEM private key.
    #[error("{path}: no PEM private key found: {source}")]
    Key {
        /// The file.
        path: PathBuf,
        /// The PEM error.
        source: rustls::pki_types::pem::Error,
    },
    /// The key is unsupported or does not belong to the certificate.
    #[error("certificate {cert} with key {key}: {source}")]
    Pair {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        source: rustls::Error,
    },
}

/// The crypto provider used for every TLS config in this crate. Chosen explicitly, so the
/// outcome does not depend on which rustls features other crates in the build enable.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Serves the current certificate and reloads it from its files when they change.
pub struct ReloadingCertResolver {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<CertifiedKey>,
    /// The file contents behind `current`, to tell a change from a re-read of the same pair.
    loaded: std::sync::Mutex<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for ReloadingCertResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCertResolver")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

impl ReloadingCertResolver {
    /// Loads the pair; fails if it cannot be used, so a bad pair stops the injector at start.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        let provider = crypto_provider();
        let (cert_pem, key_pem) = (read(cert_path)?, read(key_path)?);
        let key = parse_pair(&provider, cert_path, &cert_pem, key_path, &key_pem)?;
        Ok(Self {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            provider,
            current: ArcSwap::from_pointee(key),
            loaded: std::sync::Mutex::new((cert_pem, key_pem)),
        })
    }

    /// Re-reads both files; if they changed and load, serves the new pair from the next
    /// handshake on. Returns whether the pair was replaced.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let (cert_pem, key_pem) = (read(&self.cert_path)?, read(&self.key_path)?);
        // A std mutex: held only to compare and swap a few KiB, never across an await.
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if loaded.0 == cert_pem && loaded.1 == key_pem {
            return Ok(false);
        }
        let key = parse_pair(
            &self.provider,
            &self.cert_path,
            &cert_pem,
            &self.key_path,
            &key_pem,
        )?;
        self.current.store(Arc::new(key));
        *loaded = (cert_pem, key_pem);
        Ok(true)
    }

    /// The certificate chain currently served (leaf first).
    pub fn current_chain(&self) -> Vec<CertificateDer<'static>> {
        self.current.load().cert.clone()
    }

    /// Polls the files every `interval` until `shutdown` completes.
    pub async fn watch(
        self: Arc<Self>,
        interval: Duration,
        metrics: Arc<InjectorMetrics>,
        shutdown: impl Future<Output = ()>,
    ) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await; // The first tick is immediate; the pair was just loaded.
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = ticker.tick() => match self.reload_if_changed() {
                    Ok(true) => {
                        metrics.cert_reloaded();
                        tracing::info!(cert = %self.cert_path.display(), "reloaded TLS certificate");
                    }
                    Ok(false) => {}
                    Err(error) => {
                        metrics.error(ErrorKind::CertReload);
                        tracing::warn!(%error, "TLS certificate not reloaded; serving the previous one");
                    }
                },
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCertResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn parse_pair(
    provider: &CryptoProvider,
    cert_path: &Path,
    cert_pem: &[u8],
    key_path: &Path,
    key_pem: &[u8],
) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .and_then(|chain| {
            if chain.is_empty() {
                Err(rustls::pki_types::pem::Error::NoItemsFound)
            } else {
                Ok(chain)
            }
        })
        .map_err(|source| TlsError::Certificate {
            path: cert_path.to_owned(),
            source,
        })?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|source| TlsError::Key {
        path: key_path.to_owned(),
        source,
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|source| TlsError::Pair {
        cert: cert_path.to_owned(),
        key: key_path.to_owned(),
        source,
    })
}

/// A server config that takes its certificate from `resolver` and offers HTTP/2 and
/// HTTP/1.1 (the API server uses either).
pub fn server_config(resolver: Arc<ReloadingCertResolver>) -> Arc<rustls::ServerConfig> {
    let mut config = rustls::ServerConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .expect("the aws-lc-rs provider supports the default TLS versions")
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}
