//! The receiver's configuration file (TOML): where it listens, how it reaches NATS, the key
//! it signs revocations with, and one `[[providers]]` table per identity provider.
//!
//! Every field is documented on its struct; [`ReceiverConfig::validate`] checks the whole
//! file before anything starts and its error names the field (`providers[0].jwks_url`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde::Deserialize;

use crate::nats::NatsOptions;

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (unknown or missing fields included).
    #[error("{}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the TOML parser said (it names the field and line).
        message: String,
    },
    /// A field has an unusable value.
    #[error("config field `{field}`: {message}")]
    Invalid {
        /// The field at fault, e.g. `providers[1].audiences`.
        field: String,
        /// What is wrong.
        message: String,
    },
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    /// HTTP listen address for the signal endpoints, `/metrics`, `/healthz` and `/readyz`.
    /// Default `0.0.0.0:8080`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Ed25519 PKCS#8 PEM key (`denylistctl keygen`) the revocations are signed with. Its
    /// public key goes into the sidecars' trusted publishers.
    pub signing_key_file: PathBuf,
    /// How long one signal may wait for its revocations' JetStream acknowledgement (retrying)
    /// before the provider is answered 503. Default 5 s.
    #[serde(default = "default_publish_timeout", with = "humantime_serde")]
    pub publish_timeout: Duration,
    /// Largest request body accepted (a logout token or SET is a few KiB). Default 64 KiB.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Most `jti`s remembered for replay detection (oldest dropped first). Default 100 000.
    #[serde(default = "default_replay_cache_entries")]
    pub replay_cache_entries: usize,
    /// How to reach NATS.
    #[serde(default)]
    pub nats: NatsSection,
    /// The identity providers, at least one.
    pub providers: Vec<ProviderConfig>,
}

/// `[nats]`: the same options as `denylistctl`'s, with secrets in files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSection {
    /// Server URLs. Default `["nats://127.0.0.1:4222"]`.
    #[serde(default = "default_servers")]
    pub servers: Vec<String>,
    /// NATS credentials file (JWT + nkey seed).
    pub creds_file: Option<PathBuf>,
    /// File holding an nkey seed.
    pub nkey_seed_file: Option<PathBuf>,
    /// User name (with `password_file`).
    pub user: Option<String>,
    /// File holding the password.
    pub password_file: Option<PathBuf>,
    /// File holding a token.
    pub token_file: Option<PathBuf>,
    /// CA bundle for the servers' certificates.
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate (mutual TLS).
    pub tls_cert_file: Option<PathBuf>,
    /// Client key (mutual TLS).
    pub tls_key_file: Option<PathBuf>,
    /// Require TLS.
    #[serde(default)]
    pub tls_required: bool,
    /// Bound on one connection attempt. Default 5 s.
    #[serde(default = "five_seconds", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Bound on each publish acknowledgement. Default 2 s.
    #[serde(default = "two_seconds", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// How long the receiver tries to connect at start before giving up. Default 60 s.
    #[serde(default = "sixty_seconds", with = "humantime_serde")]
    pub startup_timeout: Duration,
}

impl Default for NatsSection {
    fn default() -> Self {
        Self {
            servers: default_servers(),
            creds_file: None,
            nkey_seed_file: None,
            user: None,
            password_file: None,
            token_file: None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_required: false,
            connect_timeout: five_seconds(),
            request_timeout: two_seconds(),
            startup_timeout: sixty_seconds(),
        }
    }
}

impl NatsSection {
    /// The client's [`NatsOptions`], with the secret files read.
    pub fn to_options(&self) -> Result<NatsOptions, ConfigError> {
        let secret = |field: &str, path: &Option<PathBuf>| -> Result<Option<String>, ConfigError> {
            path.as_deref()
                .map(|p| read_secret(&format!("nats.{field}"), p))
                .transpose()
        };
        let options = NatsOptions {
            url: self.servers.join(","),
            creds_file: self.creds_file.clone(),
            nkey_seed_file: self.nkey_seed_file.clone(),
            user: self.user.clone(),
            password: secret("password_file", &self.password_file)?,
            token: secret("token_file", &self.token_file)?,
            tls_ca_file: self.tls_ca_file.clone(),
            tls_cert_file: self.tls_cert_file.clone(),
            tls_key_file: self.tls_key_file.clone(),
            tls_required: self.tls_required,
            connect_timeout: self.connect_timeout,
            request_timeout: self.request_timeout,
            name: "denylist-receiver".to_owned(),
        };
        options
            .validate()
            .map_err(|e| invalid("nats", e.to_string()))?;
        Ok(options)
    }
}

/// The signals a provider's events are acted on; others are acknowledged and counted only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignalType {
    /// OpenID Connect Back-Channel Logout 1.0 logout token.
    BackchannelLogout,
    /// CAEP `session-revoked`.
    SessionRevoked,
    /// CAEP `credential-change`.
    CredentialChange,
    /// RISC `account-disabled`.
    AccountDisabled,
    /// RISC `account-purged`.
    AccountPurged,
    /// RISC `credential-compromise`.
    CredentialCompromise,
    /// RISC `sessions-revoked`.
    SessionsRevoked,
}

impl SignalType {
    /// Every type, the default of `providers[].events`.
    pub const ALL: [Self; 7] = [
        Self::BackchannelLogout,
        Self::SessionRevoked,
        Self::CredentialChange,
        Self::AccountDisabled,
        Self::AccountPurged,
        Self::CredentialCompromise,
        Self::SessionsRevoked,
    ];

    /// The short name used in config, metrics and revocation reasons.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BackchannelLogout => "backchannel-logout",
            Self::SessionRevoked => "session-revoked",
            Self::CredentialChange => "credential-change",
            Self::AccountDisabled => "account-disabled",
            Self::AccountPurged => "account-purged",
            Self::CredentialCompromise => "credential-compromise",
            Self::SessionsRevoked => "sessions-revoked",
        }
    }

    /// The event type URI a token carries in `events`.
    pub fn uri(self) -> &'static str {
        match self {
            Self::BackchannelLogout => "http://schemas.openid.net/event/backchannel-logout",
            Self::SessionRevoked => {
                "https://schemas.openid.net/secevent/caep/event-type/session-revoked"
            }
            Self::CredentialChange => {
                "https://schemas.openid.net/secevent/caep/event-type/credential-change"
            }
            Self::AccountDisabled => {
                "https://schemas.openid.net/secevent/risc/event-type/account-disabled"
            }
            Self::AccountPurged => {
                "https://schemas.openid.net/secevent/risc/event-type/account-purged"
            }
            Self::CredentialCompromise => {
                "https://schemas.openid.net/secevent/risc/event-type/credential-compromise"
            }
            Self::SessionsRevoked => {
                "https://schemas.openid.net/secevent/risc/event-type/sessions-revoked"
            }
        }
    }

    /// The type whose URI is `uri`.
    pub fn from_uri(uri: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.uri() == uri)
    }
}

/// One identity provider (`[[providers]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Short name: the endpoint paths (`/backchannel-logout/<name>`, `/ssf/push/<name>`),
    /// metrics labels and the revocations' actor `receiver/<name>`. Letters, digits, `-`, `_`.
    pub name: String,
    /// The provider's issuer: the exact `iss` of its logout tokens and SETs.
    pub issuer: String,
    /// Accepted `aud` values: the receiver's client id at the provider (logout tokens) and
    /// the stream audience (SETs). At least one.
    pub audiences: Vec<String>,
    /// The token issuers whose tokens the provider's subjects and sessions belong to (the
    /// `iss` of the access tokens the sidecars verify). Default: `[issuer]`.
    #[serde(default)]
    pub token_issuers: Vec<String>,
    /// The signal types acted on. Default: all. Others are acknowledged, logged and counted.
    #[serde(default = "all_signal_types")]
    pub events: Vec<SignalType>,
    /// The JWKS URL. At most one of `jwks_url`, `jwks_file`, `discovery_url`; with none,
    /// the JWKS URL is discovered from `<issuer>/.well-known/openid-configuration`.
    pub jwks_url: Option<String>,
    /// A JWKS file (read at start).
    pub jwks_file: Option<PathBuf>,
    /// A discovery document whose `jwks_uri` names the keys (e.g. the transmitter's
    /// `/.well-known/ssf-configuration`).
    pub discovery_url: Option<String>,
    /// Signature algorithms accepted. Default: RS256, RS384, RS512, PS256, PS384, PS512,
    /// ES256, ES384, EdDSA. HMAC algorithms are refused: a signal must be signed by the
    /// provider's own key.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<Algorithm>,
    /// Oldest logout token `iat` accepted (an older one is refused). Default 10 min.
    #[serde(default = "ten_minutes", with = "humantime_serde")]
    pub max_age: Duration,
    /// Oldest SET `iat` accepted. Longer than `max_age` because a transmitter keeps a SET
    /// until it is acknowledged (a poll receiver or NATS that was down for a while); an
    /// older SET is refused and so never enforced, so keep it above the longest outage you
    /// plan for. Default 24 h.
    #[serde(default = "one_day", with = "humantime_serde")]
    pub set_max_age: Duration,
    /// Clock skew allowed for `iat` in the future and `exp`. Default 30 s.
    #[serde(default = "thirty_seconds", with = "humantime_serde")]
    pub leeway: Duration,
    /// `email` subjects mapped to the `sub` of the provider's tokens.
    #[serde(default)]
    pub email_subjects: BTreeMap<String, String>,
    /// SSF push delivery (RFC 8935) to `/ssf/push/<name>`; off without it.
    pub push: Option<PushConfig>,
    /// SSF poll delivery (RFC 8936); off without it, unless `stream.delivery = "poll"`.
    pub poll: Option<PollConfig>,
    /// The SSF stream the receiver creates and keeps configured at the transmitter (SSF 1.0
    /// §8); without it the stream is configured by hand.
    pub stream: Option<StreamConfig>,
}

/// How SETs reach the receiver on a managed stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    /// RFC 8935: the transmitter POSTs to `/ssf/push/<provider>` (`[providers.push]`).
    Push,
    /// RFC 8936: the receiver polls the endpoint the transmitter assigns to the stream.
    Poll,
}

impl Delivery {
    /// The delivery method URI of SSF 1.0 §6.1.
    pub fn method(self) -> &'static str {
        match self {
            Self::Push => "urn:ietf:rfc:8935",
            Self::Poll => "urn:ietf:rfc:8936",
        }
    }
}

/// `[providers.stream]`: the SSF stream the receiver manages through the transmitter's
/// stream management API (SSF 1.0 §8).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    /// The transmitter configuration metadata (SSF 1.0 §7). Default: the issuer with
    /// `/.well-known/ssf-configuration` inserted between host and path.
    pub metadata_url: Option<String>,
    /// File holding the `Authorization` header value for the management API (e.g.
    /// `Bearer eyJ…`); also sent to a stream's poll endpoint unless
    /// `[providers.poll].authorization_file` is set.
    pub authorization_file: PathBuf,
    /// `push` or `poll`.
    pub delivery: Delivery,
    /// Push only: the public URL the transmitter POSTs SETs to (this receiver's
    /// `/ssf/push/<provider>` behind its ingress). The same for every replica.
    pub endpoint_url: Option<String>,
    /// The stream's `description`. Default `denylist-receiver <provider>`.
    pub description: Option<String>,
    /// How often the stream is read again and repaired (another replica may have replaced
    /// it, the transmitter may have paused it). Default 5 min.
    #[serde(default = "five_minutes", with = "humantime_serde")]
    pub resync_interval: Duration,
    /// How often a verification event is requested after the first one (at start and
    /// whenever the stream changes); never again without it. Raised to the stream's
    /// `min_verification_interval`.
    #[serde(default, with = "humantime_serde")]
    pub verify_interval: Option<Duration>,
}

impl StreamConfig {
    /// The metadata URL: configured, or derived from `issuer` (SSF 1.0 §7.2).
    pub fn metadata_url(&self, issuer: &str) -> String {
        if let Some(url) = &self.metadata_url {
            return url.clone();
        }
        let issuer = issuer.trim_end_matches('/');
        match url::Url::parse(issuer) {
            Ok(u) if u.path() != "/" && !u.path().is_empty() => {
                let origin = u.origin().ascii_serialization();
                format!("{origin}/.well-known/ssf-configuration{}", u.path())
            }
            _ => format!("{issuer}/.well-known/ssf-configuration"),
        }
    }
}

/// `[providers.push]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushConfig {
    /// File holding the exact `Authorization` header value the transmitter sends (the
    /// `authorization_header` of the SSF stream's push delivery).
    pub authorization_file: PathBuf,
}

/// `[providers.poll]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollConfig {
    /// The transmitter's poll endpoint (the stream's `delivery.endpoint_url`). Required
    /// unless `[providers.stream]` has `delivery = "poll"`, which takes it from the stream.
    pub endpoint: Option<String>,
    /// File holding the `Authorization` header value sent to it.
    pub authorization_file: Option<PathBuf>,
    /// Wait between polls that returned nothing. Default 5 s.
    #[serde(default = "five_seconds", with = "humantime_serde")]
    pub interval: Duration,
    /// `maxEvents` per poll. Default 100.
    #[serde(default = "default_max_events")]
    pub max_events: u32,
    /// Bound on one poll request. Default 30 s.
    #[serde(default = "thirty_seconds", with = "humantime_serde")]
    pub request_timeout: Duration,
}

impl Default for PollConfig {
    fn default() -> Self {
        Self {
            endpoint: None,
            authorization_file: None,
            interval: five_seconds(),
            max_events: default_max_events(),
            request_timeout: thirty_seconds(),
        }
    }
}

impl ReceiverConfig {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config = Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML (no validation).
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<config>"),
            message: e.to_string().trim().replace('\n', " "),
        })
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.publish_timeout < Duration::from_millis(100) {
            return Err(invalid("publish_timeout", "must be at least 100ms"));
        }
        if !(1024..=1 << 20).contains(&self.max_body_bytes) {
            return Err(invalid(
                "max_body_bytes",
                "must be between 1024 and 1048576",
            ));
        }
        if self.replay_cache_entries == 0 {
            return Err(invalid("replay_cache_entries", "must be at least 1"));
        }
        if self.nats.servers.is_empty() {
            return Err(invalid("nats.servers", "give at least one server URL"));
        }
        if self.providers.is_empty() {
            return Err(invalid("providers", "configure at least one [[providers]]"));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, p) in self.providers.iter().enumerate() {
            p.validate(&format!("providers[{i}]"))?;
            if !names.insert(p.name.as_str()) {
                return Err(invalid(
                    format!("providers[{i}].name"),
                    format!("{:?} is used by another provider", p.name),
                ));
            }
        }
        Ok(())
    }
}

impl ProviderConfig {
    /// The token issuers, `[issuer]` when none are configured.
    pub fn token_issuers(&self) -> Vec<String> {
        if self.token_issuers.is_empty() {
            vec![self.issuer.clone()]
        } else {
            self.token_issuers.clone()
        }
    }

    /// The poll settings in force: `[providers.poll]`, or its defaults for a stream with
    /// poll delivery.
    pub fn poll_config(&self) -> Option<PollConfig> {
        match (&self.poll, &self.stream) {
            (Some(poll), _) => Some(poll.clone()),
            (None, Some(s)) if s.delivery == Delivery::Poll => Some(PollConfig::default()),
            (None, _) => None,
        }
    }

    /// Whether the poll endpoint comes from the managed stream.
    pub fn polls_managed_stream(&self) -> bool {
        self.stream
            .as_ref()
            .is_some_and(|s| s.delivery == Delivery::Poll)
    }

    fn validate(&self, at: &str) -> Result<(), ConfigError> {
        let field = |name: &str| format!("{at}.{name}");
        if self.name.is_empty()
            || self.name.len() > 64
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(invalid(
                field("name"),
                "1 to 64 ASCII letters, digits, `-` or `_`",
            ));
        }
        if self.issuer.is_empty() {
            return Err(invalid(field("issuer"), "must not be empty"));
        }
        if self.audiences.is_empty() || self.audiences.iter().any(String::is_empty) {
            return Err(invalid(
                field("audiences"),
                "give at least one non-empty audience (the receiver's client id)",
            ));
        }
        if self.token_issuers.iter().any(String::is_empty) {
            return Err(invalid(
                field("token_issuers"),
                "must not hold empty issuers",
            ));
        }
        if self.events.is_empty() {
            return Err(invalid(
                field("events"),
                "give at least one signal type (leave it out for all)",
            ));
        }
        let sources = [
            self.jwks_url.is_some(),
            self.jwks_file.is_some(),
            self.discovery_url.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() > 1 {
            return Err(invalid(
                field("jwks_url"),
                "give at most one of jwks_url, jwks_file, discovery_url",
            ));
        }
        for (name, url) in [
            ("jwks_url", &self.jwks_url),
            ("discovery_url", &self.discovery_url),
        ] {
            if let Some(url) = url {
                check_http_url(&field(name), url)?;
            }
        }
        if self.jwks_url.is_none() && self.jwks_file.is_none() && self.discovery_url.is_none() {
            check_http_url(&field("issuer"), &self.issuer).map_err(|_| {
                invalid(
                    field("jwks_url"),
                    "the issuer is not an http(s) URL, so its keys cannot be discovered: \
                     give jwks_url, jwks_file or discovery_url",
                )
            })?;
        }
        if self.algorithms.is_empty() {
            return Err(invalid(field("algorithms"), "give at least one algorithm"));
        }
        if let Some(hs) = self
            .algorithms
            .iter()
            .find(|a| matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512))
        {
            return Err(invalid(
                field("algorithms"),
                format!(
                    "{hs:?} is not accepted: signals must be signed with the provider's public key"
                ),
            ));
        }
        if self.max_age < Duration::from_secs(1) {
            return Err(invalid(field("max_age"), "must be at least 1s"));
        }
        if self.set_max_age < Duration::from_secs(1) {
            return Err(invalid(field("set_max_age"), "must be at least 1s"));
        }
        if self.leeway > Duration::from_secs(600) {
            return Err(invalid(field("leeway"), "must be at most 10m"));
        }
        if let Some((email, sub)) = self
            .email_subjects
            .iter()
            .find(|(e, s)| e.is_empty() || s.is_empty())
        {
            return Err(invalid(
                field("email_subjects"),
                format!("empty email or subject in {email:?} = {sub:?}"),
            ));
        }
        if let Some(poll) = &self.poll {
            match (&poll.endpoint, self.polls_managed_stream()) {
                // The poll credential goes there.
                (Some(endpoint), false) => check_secure_url(&field("poll.endpoint"), endpoint)?,
                (None, false) => {
                    return Err(invalid(
                        field("poll.endpoint"),
                        "give the transmitter's poll endpoint, or a [providers.stream] with \
                         delivery = \"poll\" to take it from the stream",
                    ));
                }
                (Some(_), true) => {
                    return Err(invalid(
                        field("poll.endpoint"),
                        "the managed stream (delivery = \"poll\") assigns the poll endpoint: \
                         leave it out",
                    ));
                }
                (None, true) => {}
            }
            if poll.interval < Duration::from_millis(50) {
                return Err(invalid(field("poll.interval"), "must be at least 50ms"));
            }
            if !(1..=10_000).contains(&poll.max_events) {
                return Err(invalid(
                    field("poll.max_events"),
                    "must be between 1 and 10000",
                ));
            }
            if poll.request_timeout < Duration::from_millis(100) {
                return Err(invalid(
                    field("poll.request_timeout"),
                    "must be at least 100ms",
                ));
            }
        }
        if let Some(stream) = &self.stream {
            self.validate_stream(at, stream)?;
        }
        Ok(())
    }

    fn validate_stream(&self, at: &str, stream: &StreamConfig) -> Result<(), ConfigError> {
        let field = |name: &str| format!("{at}.stream.{name}");
        // The endpoints the metadata names receive the management credential; the
        // metadata itself must not be open to tampering on the way either.
        match &stream.metadata_url {
            Some(url) => check_secure_url(&field("metadata_url"), url)?,
            None => check_secure_url(&field("metadata_url"), &stream.metadata_url(&self.issuer))
                .map_err(|e| match e {
                    ConfigError::Invalid { field, message } => ConfigError::Invalid {
                        field,
                        message: format!(
                            "derived from the issuer {:?}: {message}; give metadata_url",
                            self.issuer
                        ),
                    },
                    other => other,
                })?,
        }
        match (stream.delivery, &stream.endpoint_url) {
            // The transmitter sends the push Authorization value and the SETs there.
            (Delivery::Push, Some(url)) => check_secure_url(&field("endpoint_url"), url)?,
            (Delivery::Push, None) => {
                return Err(invalid(
                    field("endpoint_url"),
                    "push delivery needs the public URL of this receiver's \
                     /ssf/push/<provider> endpoint",
                ));
            }
            (Delivery::Poll, Some(_)) => {
                return Err(invalid(
                    field("endpoint_url"),
                    "with poll delivery the transmitter assigns the endpoint: leave it out",
                ));
            }
            (Delivery::Poll, None) => {}
        }
        if stream.delivery == Delivery::Push && self.push.is_none() {
            return Err(invalid(
                format!("{at}.push"),
                "push delivery needs [providers.push]: its authorization value is the \
                 stream's authorization_header",
            ));
        }
        if stream.description.as_ref().is_some_and(String::is_empty) {
            return Err(invalid(field("description"), "must not be empty"));
        }
        if self.ssf_events().is_empty() {
            return Err(invalid(
                format!("{at}.events"),
                "a stream needs at least one SSF event type (backchannel-logout is not one)",
            ));
        }
        if stream.resync_interval < Duration::from_secs(1) {
            return Err(invalid(field("resync_interval"), "must be at least 1s"));
        }
        if stream
            .verify_interval
            .is_some_and(|d| d < Duration::from_secs(1))
        {
            return Err(invalid(field("verify_interval"), "must be at least 1s"));
        }
        Ok(())
    }

    /// The event type URIs a managed stream requests: the provider's `events` but
    /// back-channel logout, sorted.
    pub fn ssf_events(&self) -> Vec<String> {
        let mut uris: Vec<String> = self
            .events
            .iter()
            .filter(|t| **t != SignalType::BackchannelLogout)
            .map(|t| t.uri().to_owned())
            .collect();
        uris.sort();
        uris.dedup();
        uris
    }
}

fn check_http_url(field: &str, url: &str) -> Result<(), ConfigError> {
    match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        Ok(_) => Err(invalid(field, format!("{url:?} is not an http(s) URL"))),
        Err(e) => Err(invalid(field, format!("{url:?}: {e}"))),
    }
}

/// [`check_http_url`], and `https` unless the host is a loopback one (a credential is sent
/// to `url`).
fn check_secure_url(field: &str, url: &str) -> Result<(), ConfigError> {
    check_http_url(field, url)?;
    super::ssf::check_secure_url(url).map_err(|message| invalid(field, message))
}

/// Reads a secret file, trimmed; the error names the field.
pub(crate) fn read_secret(field: &str, path: &Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| invalid(field, format!("cannot read {}: {e}", path.display())))?;
    let text = text.trim().to_owned();
    if text.is_empty() {
        return Err(invalid(field, format!("{} is empty", path.display())));
    }
    Ok(text)
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8080))
}
fn default_publish_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_max_body_bytes() -> usize {
    64 * 1024
}
fn default_replay_cache_entries() -> usize {
    100_000
}
fn default_servers() -> Vec<String> {
    vec![crate::env::DEFAULT_NATS_URL.to_owned()]
}
fn default_max_events() -> u32 {
    100
}
fn all_signal_types() -> Vec<SignalType> {
    SignalType::ALL.to_vec()
}
fn default_algorithms() -> Vec<Algorithm> {
    use Algorithm::*;
    vec![
        RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA,
    ]
}
fn two_seconds() -> Duration {
    Duration::from_secs(2)
}
fn five_seconds() -> Duration {
    Duration::from_secs(5)
}
fn thirty_seconds() -> Duration {
    Duration::from_secs(30)
}
fn sixty_seconds() -> Duration {
    Duration::from_secs(60)
}
fn five_minutes() -> Duration {
    Duration::from_secs(300)
}
fn ten_minutes() -> Duration {
    Duration::from_secs(600)
}
fn one_day() -> Duration {
    Duration::from_secs(24 * 3600)
}
