//! Sidecar configuration: defaults, then a TOML file, then environment, then flags.
//!
//! Every field has a default except the issuers. [`Config::validate`] runs before
//! anything binds or loads; its errors name the field (`issuers[1].keys.pem_files`)
//! and the file, so a typo fails the pod at start, not at the first request.
//! The reference with every field is `docs/CONFIG.md`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::algorithm::{Algorithm, KeyFamily};

mod authz;
mod nats;
mod state;

pub use authz::{ExtAuthzConfig, ForwardAuthConfig};
pub use nats::NatsConfig;
pub use state::StateConfig;

/// Largest `denylist.expected_entries`: a Bloom filter of ~180 MB at 0.1 %.
const MAX_EXPECTED_ENTRIES: usize = 100_000_000;

/// Largest `verify.cache_entries`.
const MAX_CACHE_ENTRIES: usize = 10_000_000;

/// Environment variables the sidecar reads. Flags override them.
pub mod env {
    /// Path of the TOML config file.
    pub const CONFIG: &str = "DENYLIST_CONFIG";
    /// Unix socket path of the gRPC listener (empty disables it).
    pub const SOCKET: &str = "DENYLIST_SOCKET";
    /// TCP address of the gRPC listener (empty disables it).
    pub const TCP: &str = "DENYLIST_TCP";
    /// Address of the HTTP admin listener.
    pub const ADMIN: &str = "DENYLIST_ADMIN";
    /// Name reported in status answers (defaults to `POD_NAME`, then the host name).
    pub const NAME: &str = "DENYLIST_NAME";
    /// Log format: `text` or `json`.
    pub const LOG_FORMAT: &str = "DENYLIST_LOG_FORMAT";
    /// Log filter, `tracing_subscriber` syntax (`info,denylist_sidecar=debug`).
    pub const LOG: &str = "DENYLIST_LOG";
    /// Path of the standalone revocations file.
    pub const REVOCATIONS_FILE: &str = "DENYLIST_REVOCATIONS_FILE";
    /// Kubernetes downward-API pod name, used as the default name.
    pub const POD_NAME: &str = "POD_NAME";
    /// Directory of the local state (`state.dir`; empty turns it off).
    pub const STATE_DIR: &str = "DENYLIST_STATE_DIR";
}

/// A configuration error: which file, which field, what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown or mistyped fields.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and field.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("config{}: field `{field}`: {message}", .path.as_ref().map(|p| format!(" file {}", p.display())).unwrap_or_default())]
    Invalid {
        /// The file, if the value came from one.
        path: Option<PathBuf>,
        /// Dotted path of the field.
        field: String,
        /// What is wrong.
        message: String,
    },
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        path: None,
        field: field.into(),
        message: message.into(),
    }
}

/// The whole sidecar configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Name reported in `Status` and fleet answers. Default: `POD_NAME`, else the host name.
    pub name: String,
    /// Where the sidecar listens.
    pub listen: ListenConfig,
    /// Token verification limits and the verified-token cache.
    pub verify: VerifyConfig,
    /// Where revocations come from and how stale they may get.
    pub denylist: DenylistConfig,
    /// Logging.
    pub log: LogConfig,
    /// Envoy / Istio external authorization (`envoy.service.auth.v3.Authorization`).
    pub ext_authz: ExtAuthzConfig,
    /// The HTTP forward-auth endpoint (nginx `auth_request`, Traefik `ForwardAuth`).
    pub forward_auth: ForwardAuthConfig,
    /// NATS JetStream connection, for `denylist.source = "nats"`.
    pub nats: NatsConfig,
    /// The last applied state on local disk (fleet mode).
    pub state: StateConfig,
    /// How long SIGTERM waits for in-flight calls before exiting anyway. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// The token issuers this sidecar trusts. At least one.
    pub issuers: Vec<IssuerConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            name: String::new(),
            listen: ListenConfig::default(),
            verify: VerifyConfig::default(),
            denylist: DenylistConfig::default(),
            log: LogConfig::default(),
            ext_authz: ExtAuthzConfig::default(),
            forward_auth: ForwardAuthConfig::default(),
            nats: NatsConfig::default(),
            state: StateConfig::default(),
            shutdown_grace: Duration::from_secs(10),
            issuers: Vec::new(),
        }
    }
}

/// Listener addresses.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenConfig {
    /// Unix socket for gRPC. Default `/var/run/denylist/sidecar.sock`; empty disables.
    #[serde(deserialize_with = "empty_as_none")]
    pub socket: Option<PathBuf>,
    /// Loopback TCP address for gRPC. Default `127.0.0.1:50151`; empty disables.
    #[serde(deserialize_with = "empty_as_none")]
    pub tcp: Option<SocketAddr>,
    /// HTTP admin (`/livez`, `/readyz`, `/metrics`). Default `127.0.0.1:9151`; empty disables.
    #[serde(deserialize_with = "empty_as_none")]
    pub admin: Option<SocketAddr>,
    /// Largest gRPC request accepted, in bytes. Default 64 KiB.
    pub max_request_bytes: usize,
    /// Most concurrent gRPC streams per connection. Default 1024.
    pub max_concurrent_streams: u32,
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self {
            socket: Some(PathBuf::from("/var/run/denylist/sidecar.sock")),
            tcp: Some(SocketAddr::from(([127, 0, 0, 1], 50151))),
            admin: Some(SocketAddr::from(([127, 0, 0, 1], 9151))),
            max_request_bytes: 64 * 1024,
            max_concurrent_streams: 1024,
        }
    }
}

/// Reads `""` as "disabled" and anything else with `T`'s parser.
fn empty_as_none<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let s = String::deserialize(d)?;
    if s.is_empty() {
        return Ok(None);
    }
    s.parse().map(Some).map_err(serde::de::Error::custom)
}

/// Verification limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VerifyConfig {
    /// Tokens longer than this are rejected unread (`REASON_TOKEN_TOO_LARGE`). Default 8192.
    pub max_token_bytes: usize,
    /// Verified-token cache capacity (0 disables it). Default 100 000.
    pub cache_entries: usize,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        Self {
            max_token_bytes: 8 * 1024,
            cache_entries: 100_000,
        }
    }
}

/// Where revocations come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DenylistSource {
    /// A local JSON-lines file, reloaded when it changes (standalone mode).
    #[default]
    File,
    /// The NATS JetStream stream (fleet mode).
    Nats,
}

/// What Verify answers once the denylist is older than `max_staleness`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum StalenessPolicy {
    /// Reject every token with `REASON_DENYLIST_STALE`.
    #[default]
    FailClosed,
    /// Answer as usual, with `stale = true`.
    FailOpen,
}

/// Denylist source and staleness.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DenylistConfig {
    /// `file` (standalone) or `nats`.
    pub source: DenylistSource,
    /// Standalone revocations file (JSON lines of `RevocationEvent`). Required for `file`.
    pub file: Option<PathBuf>,
    /// How often the file is checked for changes. Default 1 s.
    #[serde(with = "humantime_serde")]
    pub file_poll_interval: Duration,
    /// Beyond this age (time since the source was last heard from) the policy applies.
    /// Default 30 s. In file mode the file is "heard from" at every successful poll.
    #[serde(with = "humantime_serde")]
    pub max_staleness: Duration,
    /// `fail_closed` (default) or `fail_open`.
    pub staleness_policy: StalenessPolicy,
    /// Expected number of live rules, sizes the Bloom filter between rebuilds. Default 100 000.
    pub expected_entries: usize,
    /// Bloom filter false-positive rate. Default 0.001.
    pub bloom_fp_rate: f64,
    /// How often expired rules are pruned and the filter rebuilt. Default 60 s.
    #[serde(with = "humantime_serde")]
    pub prune_interval: Duration,
}

impl Default for DenylistConfig {
    fn default() -> Self {
        Self {
            source: DenylistSource::File,
            file: None,
            file_poll_interval: Duration::from_secs(1),
            max_staleness: Duration::from_secs(30),
            staleness_policy: StalenessPolicy::FailClosed,
            expected_entries: 100_000,
            bloom_fp_rate: 0.001,
            prune_interval: Duration::from_secs(60),
        }
    }
}

/// Log output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` (default) or `json`.
    pub format: LogFormat,
    /// Filter in `tracing_subscriber` syntax. Default `info`.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            filter: "info".to_owned(),
        }
    }
}

/// One trusted token issuer.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IssuerConfig {
    /// Exact `iss` value. Required, unique.
    pub issuer: String,
    /// Allowed `alg` values. Required; HMAC and public-key algorithms never mix.
    pub algorithms: Vec<Algorithm>,
    /// Accepted `aud` values; a token must name at least one. Empty: `aud` is not checked.
    pub audiences: Vec<String>,
    /// Clock skew tolerated on `exp`, `nbf`, `iat`. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// Longest accepted `exp - iat`, and how long cut-off rules are kept. Default 24 h.
    #[serde(with = "humantime_serde")]
    pub max_lifetime: Duration,
    /// Reject tokens without `exp`. Default true.
    pub require_exp: bool,
    /// Reject tokens without `jti` (they cannot be revoked one by one). Default true.
    pub require_jti: bool,
    /// Reject tokens without `iat`. Default true: such a token would match every
    /// cut-off rule only while that rule is kept, so once a `subject` or `issuer`
    /// rule is pruned it could outlive the revocation.
    pub require_iat: bool,
    /// Where the keys come from.
    pub keys: KeySourceConfig,
}

impl Default for IssuerConfig {
    fn default() -> Self {
        Self {
            issuer: String::new(),
            algorithms: Vec::new(),
            audiences: Vec::new(),
            leeway: Duration::from_secs(30),
            max_lifetime: Duration::from_secs(24 * 3600),
            require_exp: true,
            require_jti: true,
            require_iat: true,
            keys: KeySourceConfig::default(),
        }
    }
}

/// A key file with the `kid` tokens name it by.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    /// Path of the PEM public key or the raw HMAC secret.
    pub path: PathBuf,
    /// Key id. A key without one verifies tokens whose `kid` no other key claims.
    #[serde(default)]
    pub kid: Option<String>,
}

/// An issuer's key source: exactly one of `jwks_url`, `jwks_file`, `pem_files`, `hmac_secret_files`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeySourceConfig {
    /// JWKS endpoint (https, or http to loopback only). Refreshed periodically.
    pub jwks_url: Option<String>,
    /// A JWKS document on disk, reloaded when it changes.
    pub jwks_file: Option<PathBuf>,
    /// PEM public keys (RSA, EC P-256/P-384, Ed25519), reloaded when they change.
    pub pem_files: Vec<KeyFile>,
    /// Raw HMAC secrets (at least 32 bytes each), reloaded when they change.
    pub hmac_secret_files: Vec<KeyFile>,
    /// How often a JWKS URL is refetched, and key files re-read. Default 5 min.
    #[serde(with = "humantime_serde")]
    pub refresh_interval: Duration,
    /// An unknown `kid` triggers a JWKS refetch at most this often. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub refetch_min_interval: Duration,
    /// Timeout of one JWKS fetch. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub fetch_timeout: Duration,
}

impl Default for KeySourceConfig {
    fn default() -> Self {
        Self {
            jwks_url: None,
            jwks_file: None,
            pem_files: Vec::new(),
            hmac_secret_files: Vec::new(),
            refresh_interval: Duration::from_secs(300),
            refetch_min_interval: Duration::from_secs(30),
            fetch_timeout: Duration::from_secs(5),
        }
    }
}

/// Which kind of key source an issuer uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySourceKind {
    /// `jwks_url`.
    JwksUrl,
    /// `jwks_file`.
    JwksFile,
    /// `pem_files`.
    Pem,
    /// `hmac_secret_files`.
    Hmac,
}

impl KeySourceKind {
    /// Name used in status and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::JwksUrl => "jwks_url",
            Self::JwksFile => "jwks_file",
            Self::Pem => "pem",
            Self::Hmac => "hmac",
        }
    }
}

impl KeySourceConfig {
    /// The configured source kind, if exactly one is set.
    pub fn kind(&self) -> Option<KeySourceKind> {
        let set = [
            (self.jwks_url.is_some(), KeySourceKind::JwksUrl),
            (self.jwks_file.is_some(), KeySourceKind::JwksFile),
            (!self.pem_files.is_empty(), KeySourceKind::Pem),
            (!self.hmac_secret_files.is_empty(), KeySourceKind::Hmac),
        ];
        let mut chosen = set.iter().filter(|(on, _)| *on).map(|(_, k)| *k);
        match (chosen.next(), chosen.next()) {
            (Some(k), None) => Some(k),
            _ => None,
        }
    }
}

impl IssuerConfig {
    /// Whether this issuer verifies with shared secrets (HMAC) rather than public keys.
    pub fn is_symmetric(&self) -> bool {
        self.keys.kind() == Some(KeySourceKind::Hmac)
    }
}

impl Config {
    /// Reads and parses a TOML file. Does not validate: call [`Config::validate`]
    /// after environment and flags are layered on.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        })
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            message: e.to_string(),
        })
    }

    /// Layers the `DENYLIST_*` environment (see [`env`]) over the file's values.
    /// `lookup` is `std::env::var` in production, a map in tests.
    pub fn apply_env(
        &mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        if let Some(v) = lookup(env::SOCKET) {
            self.listen.socket = (!v.is_empty()).then(|| PathBuf::from(v));
        }
        if let Some(v) = lookup(env::TCP) {
            self.listen.tcp = parse_optional_addr(env::TCP, &v)?;
        }
        if let Some(v) = lookup(env::ADMIN) {
            self.listen.admin = parse_optional_addr(env::ADMIN, &v)?;
        }
        if let Some(v) = lookup(env::NAME).filter(|v| !v.is_empty()) {
            self.name = v;
        }
        if let Some(v) = lookup(env::LOG_FORMAT) {
            self.log.format = match v.as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => return Err(invalid(env::LOG_FORMAT, "must be `text` or `json`")),
            };
        }
        if let Some(v) = lookup(env::LOG).filter(|v| !v.is_empty()) {
            self.log.filter = v;
        }
        if let Some(v) = lookup(env::REVOCATIONS_FILE).filter(|v| !v.is_empty()) {
            self.denylist.file = Some(PathBuf::from(v));
        }
        if let Some(v) = lookup(env::STATE_DIR) {
            self.state.dir = (!v.is_empty()).then(|| PathBuf::from(v));
        }
        if self.name.is_empty() {
            self.name = lookup(env::POD_NAME)
                .or_else(|| lookup("HOSTNAME"))
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| "denylist-sidecar".to_owned());
        }
        Ok(())
    }

    /// Checks every field. The first problem is returned, naming its field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.listen.socket.is_none() && self.listen.tcp.is_none() {
            return Err(invalid(
                "listen",
                "at least one of `socket` and `tcp` must be set",
            ));
        }
        if let Some(addr) = self.listen.tcp
            && !addr.ip().is_loopback()
        {
            // The API is unauthenticated by design (it is local to the pod), so it must
            // not be reachable from the network.
            return Err(invalid(
                "listen.tcp",
                format!("{addr} is not a loopback address; the gRPC API is for the pod only"),
            ));
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.listen.max_request_bytes) {
            return Err(invalid(
                "listen.max_request_bytes",
                "must be between 1024 and 16 MiB",
            ));
        }
        if self.listen.max_concurrent_streams == 0 {
            return Err(invalid("listen.max_concurrent_streams", "must be positive"));
        }
        if !(256..=1024 * 1024).contains(&self.verify.max_token_bytes) {
            return Err(invalid(
                "verify.max_token_bytes",
                "must be between 256 and 1 MiB",
            ));
        }
        if self.verify.max_token_bytes > self.listen.max_request_bytes {
            return Err(invalid(
                "verify.max_token_bytes",
                "must not exceed listen.max_request_bytes",
            ));
        }
        if self.verify.cache_entries > MAX_CACHE_ENTRIES {
            return Err(invalid(
                "verify.cache_entries",
                format!("must be at most {MAX_CACHE_ENTRIES} (0 turns the cache off)"),
            ));
        }
        let d = &self.denylist;
        if d.source == DenylistSource::File && d.file.is_none() {
            return Err(invalid(
                "denylist.file",
                "required when denylist.source = \"file\"",
            ));
        }
        if d.source == DenylistSource::Nats {
            self.nats.validate()?;
        }
        if d.file_poll_interval < Duration::from_millis(10) {
            return Err(invalid(
                "denylist.file_poll_interval",
                "must be at least 10ms",
            ));
        }
        if d.max_staleness < Duration::from_secs(1) {
            return Err(invalid("denylist.max_staleness", "must be at least 1s"));
        }
        // A poll (file) or heartbeat (NATS) is what "heard from" means: an interval not
        // well inside max_staleness turns the denylist stale between two of them, and a
        // fail_closed sidecar then rejects every token for part of each interval.
        let (field, interval) = match d.source {
            DenylistSource::File => ("denylist.file_poll_interval", d.file_poll_interval),
            DenylistSource::Nats => ("nats.heartbeat_interval", self.nats.heartbeat_interval),
        };
        if interval.saturating_mul(3) > d.max_staleness {
            return Err(invalid(
                field,
                format!(
                    "must be at most a third of denylist.max_staleness ({}), or the denylist \
                     turns stale between two checks",
                    humantime::format_duration(d.max_staleness)
                ),
            ));
        }
        if d.source == DenylistSource::Nats {
            self.nats.validate_against_staleness(d.max_staleness)?;
        }
        if !(d.bloom_fp_rate > 0.0 && d.bloom_fp_rate < 0.5) {
            return Err(invalid(
                "denylist.bloom_fp_rate",
                "must be between 0 and 0.5 (exclusive)",
            ));
        }
        // The Bloom filter is sized from it (~1.8 bytes an entry at 0.1 %): an extra zero
        // typed by mistake must fail here, not abort on the first revocation.
        if d.expected_entries == 0 || d.expected_entries > MAX_EXPECTED_ENTRIES {
            return Err(invalid(
                "denylist.expected_entries",
                format!("must be between 1 and {MAX_EXPECTED_ENTRIES}"),
            ));
        }
        if d.prune_interval < Duration::from_secs(1) {
            return Err(invalid("denylist.prune_interval", "must be at least 1s"));
        }
        self.state.validate(d.source)?;
        if self.shutdown_grace > Duration::from_secs(600) {
            return Err(invalid("shutdown_grace", "must be at most 10 minutes"));
        }
        self.ext_authz.validate()?;
        self.forward_auth.validate(&self.listen)?;
        if self.issuers.is_empty() {
            return Err(invalid(
                "issuers",
                "at least one [[issuers]] entry is required",
            ));
        }
        let mut seen = HashSet::new();
        for (i, issuer) in self.issuers.iter().enumerate() {
            issuer.validate(&format!("issuers[{i}]"))?;
            if !seen.insert(issuer.issuer.as_str()) {
                return Err(invalid(
                    format!("issuers[{i}].issuer"),
                    format!("{:?} is configured twice", issuer.issuer),
                ));
            }
        }
        Ok(())
    }

    /// Adds the file path to an [`ConfigError::Invalid`] error.
    pub fn in_file(err: ConfigError, path: Option<&Path>) -> ConfigError {
        match err {
            ConfigError::Invalid {
                path: None,
                field,
                message,
            } => ConfigError::Invalid {
                path: path.map(Path::to_owned),
                field,
                message,
            },
            other => other,
        }
    }
}

fn parse_optional_addr(field: &str, v: &str) -> Result<Option<SocketAddr>, ConfigError> {
    if v.is_empty() {
        return Ok(None);
    }
    v.parse()
        .map(Some)
        .map_err(|e| invalid(field, format!("{v:?} is not an address: {e}")))
}

impl IssuerConfig {
    fn validate(&self, at: &str) -> Result<(), ConfigError> {
        if self.issuer.is_empty() {
            return Err(invalid(format!("{at}.issuer"), "must not be empty"));
        }
        if self.algorithms.is_empty() {
            return Err(invalid(
                format!("{at}.algorithms"),
                "list at least one algorithm, e.g. [\"RS256\"]",
            ));
        }
        let Some(kind) = self.keys.kind() else {
            return Err(invalid(
                format!("{at}.keys"),
                "set exactly one of jwks_url, jwks_file, pem_files, hmac_secret_files",
            ));
        };
        let symmetric = kind == KeySourceKind::Hmac;
        for alg in &self.algorithms {
            if alg.is_hmac() != symmetric {
                // Mixing the two is how algorithm-confusion attacks start: refuse it in config.
                return Err(invalid(
                    format!("{at}.algorithms"),
                    format!(
                        "{alg} does not fit a {} key source (HMAC and public-key algorithms never mix)",
                        kind.as_str()
                    ),
                ));
            }
        }
        if kind == KeySourceKind::Pem
            && self
                .algorithms
                .iter()
                .any(|a| a.family() == KeyFamily::Hmac)
        {
            return Err(invalid(format!("{at}.algorithms"), "HMAC with PEM keys"));
        }
        if self.leeway > Duration::from_secs(600) {
            return Err(invalid(
                format!("{at}.leeway"),
                "must be at most 10 minutes",
            ));
        }
        if self.max_lifetime < Duration::from_secs(1)
            || self.max_lifetime > Duration::from_secs(366 * 24 * 3600)
        {
            return Err(invalid(
                format!("{at}.max_lifetime"),
                "must be between 1s and 366 days",
            ));
        }
        for (j, aud) in self.audiences.iter().enumerate() {
            if aud.is_empty() {
                return Err(invalid(format!("{at}.audiences[{j}]"), "must not be empty"));
            }
        }
        let k = &self.keys;
        if let Some(url) = &k.jwks_url {
            validate_jwks_url(url).map_err(|m| invalid(format!("{at}.keys.jwks_url"), m))?;
        }
        for (field, files) in [
            ("pem_files", &k.pem_files),
            ("hmac_secret_files", &k.hmac_secret_files),
        ] {
            let mut kids = HashSet::new();
            for (j, f) in files.iter().enumerate() {
                if let Some(kid) = &f.kid {
                    if kid.is_empty() || kid.len() > 256 {
                        return Err(invalid(
                            format!("{at}.keys.{field}[{j}].kid"),
                            "must be 1 to 256 bytes",
                        ));
                    }
                    if !kids.insert(kid) {
                        return Err(invalid(
                            format!("{at}.keys.{field}[{j}].kid"),
                            format!("{kid:?} is used twice"),
                        ));
                    }
                }
            }
        }
        if k.refetch_min_interval < Duration::from_secs(1) {
            // Each unknown `kid` may trigger a fetch: without a floor, forged kids
            // would turn the sidecar into a load generator against the IdP.
            return Err(invalid(
                format!("{at}.keys.refetch_min_interval"),
                "must be at least 1s",
            ));
        }
        if k.refresh_interval < Duration::from_secs(1) {
            return Err(invalid(
                format!("{at}.keys.refresh_interval"),
                "must be at least 1s",
            ));
        }
        if k.fetch_timeout < Duration::from_millis(100) || k.fetch_timeout > Duration::from_secs(60)
        {
            return Err(invalid(
                format!("{at}.keys.fetch_timeout"),
                "must be between 100ms and 60s",
            ));
        }
        Ok(())
    }
}

/// A JWKS URL must be https, or plain http to a loopback host (local IdPs and tests).
fn validate_jwks_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" => {
            let loopback = match parsed.host() {
                Some(url::Host::Domain(d)) => d == "localhost",
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                None => false,
            };
            if loopback {
                Ok(())
            } else {
                Err("plain http is allowed only to a loopback host; use https".to_owned())
            }
        }
        other => Err(format!("scheme {other:?} is not allowed; use https")),
    }
}

#[cfg(test)]
mod tests;
