//! The `[nats]` section: the connection, the stream, the fleet heartbeat and its fallback,
//! and catch-up pacing (fleet mode, `denylist.source = "nats"`).

use std::path::PathBuf;
use std::time::Duration;

use denylist_proto::envelope::TrustedKeys;
use denylist_proto::trust::TrustedPublisher;
use serde::Deserialize;

use super::{ConfigError, invalid};

/// NATS connection and stream settings (fleet mode).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsConfig {
    /// Server URLs (`nats://host:4222`, `tls://host:4222`). Required in nats mode.
    pub servers: Vec<String>,
    /// JetStream stream name. Default `DENYLIST`.
    pub stream: String,
    /// Publisher public keys (base64url, raw Ed25519) whose events are applied, each
    /// with full authority. Required in nats mode unless `trusted_publisher` lists a key:
    /// events signed by anyone else are counted and dropped.
    pub trusted_publishers: Vec<String>,
    /// More publisher keys, each optionally limited to some rule kinds and issuers
    /// (`[[nats.trusted_publisher]]`): least privilege for automated publishers such as
    /// the identity-provider receiver.
    pub trusted_publisher: Vec<TrustedPublisher>,
    /// How often the fleet heartbeat (`denylistctl heartbeat`) is expected at most, and
    /// how often the sidecar asks the stream for its state itself while no trusted
    /// heartbeat is heard (the fallback). Default 2 s.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// The core subject the fleet heartbeat is published on. Default
    /// `denylist.v1.heartbeat`.
    pub heartbeat_subject: String,
    /// How long without a trusted heartbeat before the sidecar falls back to asking the
    /// stream itself every `heartbeat_interval` (jittered), until heartbeats return.
    /// Default: twice `heartbeat_interval`.
    #[serde(with = "humantime_serde")]
    pub heartbeat_fallback_after: Option<Duration>,
    /// Catch-ups after a gap, a reconnect or a recreated stream start after a random
    /// delay up to this, so a fleet that sees the same gap at once does not read the
    /// stream at once. `0s` turns it off. Default 1 s.
    #[serde(with = "humantime_serde")]
    pub catch_up_jitter: Duration,
    /// Timeout of connecting and of each JetStream request. Default 5 s. With
    /// `heartbeat_fallback_after` at most `denylist.max_staleness`, so a fallback poll
    /// that answers just in time still lands before the sidecar turns stale.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// The longest wait between two attempts to reconnect after the connection to NATS
    /// is lost. The waits start at 25–50 ms and double up to this, each a random
    /// duration between half and all of its ceiling, so a fleet that lost its server
    /// together does not come back in lockstep. Default 500 ms.
    #[serde(with = "humantime_serde")]
    pub reconnect_delay: Duration,
    /// NATS credentials file (JWT + nkey seed).
    pub creds_file: Option<PathBuf>,
    /// File holding an nkey seed.
    pub nkey_seed_file: Option<PathBuf>,
    /// User name (with `password`).
    pub user: Option<String>,
    /// Password file (with `user`): a file, so the secret stays out of the config.
    pub password_file: Option<PathBuf>,
    /// File holding a token.
    pub token_file: Option<PathBuf>,
    /// CA bundle to verify the servers' certificates.
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate for mutual TLS (with `tls_key_file`).
    pub tls_cert_file: Option<PathBuf>,
    /// Client key for mutual TLS.
    pub tls_key_file: Option<PathBuf>,
    /// Require TLS even for `nats://` URLs.
    pub tls_required: bool,
    /// Ed25519 PKCS#8 PEM key; when set, the sidecar serves `denylist.v1.Publisher`.
    pub publisher_key_file: Option<PathBuf>,
    /// Whether to start from the stream's signed snapshot (when there is a valid one)
    /// instead of replaying the whole stream. Default true.
    pub snapshots: bool,
    /// Object store bucket of the snapshots. Default `<stream>_SNAPSHOTS`.
    pub snapshot_bucket: Option<String>,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            stream: denylist_proto::subjects::DEFAULT_STREAM.to_owned(),
            trusted_publishers: Vec::new(),
            trusted_publisher: Vec::new(),
            heartbeat_interval: Duration::from_secs(2),
            heartbeat_subject: denylist_proto::envelope::HEARTBEAT_SUBJECT.to_owned(),
            heartbeat_fallback_after: None,
            catch_up_jitter: Duration::from_secs(1),
            request_timeout: Duration::from_secs(5),
            reconnect_delay: Duration::from_millis(500),
            creds_file: None,
            nkey_seed_file: None,
            user: None,
            password_file: None,
            token_file: None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_required: false,
            publisher_key_file: None,
            snapshots: true,
            snapshot_bucket: None,
        }
    }
}

impl NatsConfig {
    /// The trusted publisher keys, `trusted_publishers` (full authority) and each
    /// `trusted_publisher` entry with its scope. The error names the field at fault: a
    /// bad key, a key listed twice (anywhere), an unknown or repeated kind, an empty list.
    pub fn trusted_keys(&self) -> Result<TrustedKeys, ConfigError> {
        denylist_proto::trust::trusted_keys(&self.trusted_publishers, &self.trusted_publisher)
            .map_err(|e| invalid(e.field, e.message))
    }

    /// The object store bucket the snapshots are read from.
    pub fn snapshot_bucket(&self) -> String {
        self.snapshot_bucket
            .clone()
            .unwrap_or_else(|| denylist_proto::snapshot::default_bucket(&self.stream))
    }

    /// How long without a trusted heartbeat before the sidecar polls the stream itself.
    pub fn heartbeat_fallback_after(&self) -> Duration {
        self.heartbeat_fallback_after
            .unwrap_or(self.heartbeat_interval.saturating_mul(2))
    }

    /// Checks the fields whose bounds depend on `max_staleness`: each is a wait during
    /// which the source may not be heard, so each must fit well inside it.
    pub(super) fn validate_against_staleness(
        &self,
        max_staleness: Duration,
    ) -> Result<(), ConfigError> {
        let staleness = humantime::format_duration(max_staleness);
        if let Some(after) = self.heartbeat_fallback_after
            && after < self.heartbeat_interval
        {
            return Err(invalid(
                "nats.heartbeat_fallback_after",
                "must be at least nats.heartbeat_interval",
            ));
        }
        if self
            .heartbeat_fallback_after()
            .saturating_add(self.heartbeat_interval)
            > max_staleness
        {
            return Err(invalid(
                "nats.heartbeat_fallback_after",
                format!(
                    "plus nats.heartbeat_interval must be at most denylist.max_staleness \
                     ({staleness}), or a sidecar turns stale before its fallback poll"
                ),
            ));
        }
        if self
            .heartbeat_fallback_after()
            .saturating_add(self.request_timeout)
            > max_staleness
        {
            return Err(invalid(
                "nats.request_timeout",
                format!(
                    "plus nats.heartbeat_fallback_after must be at most denylist.max_staleness \
                     ({staleness}), or a fallback poll that answers in time still finds the \
                     sidecar stale"
                ),
            ));
        }
        if self.reconnect_delay.saturating_mul(2) > max_staleness {
            return Err(invalid(
                "nats.reconnect_delay",
                format!(
                    "must be at most half of denylist.max_staleness ({staleness}), or a \
                     sidecar waiting to reconnect turns stale"
                ),
            ));
        }
        if self.catch_up_jitter.saturating_mul(3) > max_staleness {
            return Err(invalid(
                "nats.catch_up_jitter",
                format!(
                    "must be at most a third of denylist.max_staleness ({staleness}), or a \
                     delayed catch-up turns the denylist stale"
                ),
            ));
        }
        Ok(())
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.servers.is_empty() {
            return Err(invalid(
                "nats.servers",
                "required when denylist.source = \"nats\"",
            ));
        }
        for (i, s) in self.servers.iter().enumerate() {
            let ok = ["nats://", "tls://", "ws://", "wss://"]
                .iter()
                .any(|p| s.starts_with(p));
            if !ok {
                return Err(invalid(
                    format!("nats.servers[{i}]"),
                    format!("{s:?} must start with nats://, tls://, ws:// or wss://"),
                ));
            }
            s.parse::<async_nats::ServerAddr>()
                .map_err(|e| invalid(format!("nats.servers[{i}]"), format!("{s:?}: {e}")))?;
        }
        if self.stream.is_empty() || self.stream.contains(['.', '*', '>', ' ']) {
            return Err(invalid(
                "nats.stream",
                "must be a stream name (no . * > or spaces)",
            ));
        }
        self.trusted_keys()?;
        if let Some(bucket) = &self.snapshot_bucket
            && (bucket.is_empty()
                || !bucket
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
        {
            return Err(invalid(
                "nats.snapshot_bucket",
                "must be a bucket name (letters, digits, _ and -)",
            ));
        }
        if self.heartbeat_interval < Duration::from_millis(100) {
            return Err(invalid("nats.heartbeat_interval", "must be at least 100ms"));
        }
        if self.request_timeout < Duration::from_millis(100) {
            return Err(invalid("nats.request_timeout", "must be at least 100ms"));
        }
        if self.reconnect_delay < Duration::from_millis(50) {
            return Err(invalid("nats.reconnect_delay", "must be at least 50ms"));
        }
        let subject = &self.heartbeat_subject;
        if subject.is_empty()
            || subject.contains(['*', '>', ' ', '\t', '\r', '\n'])
            || subject.split('.').any(str::is_empty)
        {
            return Err(invalid(
                "nats.heartbeat_subject",
                "must be a subject without wildcards (e.g. denylist.v1.heartbeat)",
            ));
        }
        // Heartbeats are not events: the stream must not store them, and the live
        // subscription must not see them.
        for taken in [denylist_proto::subjects::EVENTS_PREFIX, "denylist.v1.live"] {
            if subject == taken || subject.starts_with(&format!("{taken}.")) {
                return Err(invalid(
                    "nats.heartbeat_subject",
                    format!("must not be under {taken}.>"),
                ));
            }
        }
        let auth = [
            self.creds_file.is_some(),
            self.nkey_seed_file.is_some(),
            self.user.is_some() || self.password_file.is_some(),
            self.token_file.is_some(),
        ];
        if auth.iter().filter(|a| **a).count() > 1 {
            return Err(invalid(
                "nats",
                "set at most one of creds_file, nkey_seed_file, user/password_file, token_file",
            ));
        }
        if self.user.is_some() != self.password_file.is_some() {
            return Err(invalid("nats.user", "user and password_file go together"));
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err(invalid(
                "nats.tls_cert_file",
                "tls_cert_file and tls_key_file go together",
            ));
        }
        Ok(())
    }
}
