//! Command-line flags of `denylist-injector`, each with an environment variable, and their
//! translation into [`InjectionSettings`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::quantity::Quantity;
use crate::settings::{
    InjectionSettings, SettingsError, SidecarResources, parse_optional_quantity,
};

/// Environment variables the injector reads (flags override them).
pub mod env {
    /// `--listen`.
    pub const LISTEN: &str = "DENYLIST_INJECTOR_LISTEN";
    /// `--tls-cert`.
    pub const TLS_CERT: &str = "DENYLIST_INJECTOR_TLS_CERT";
    /// `--tls-key`.
    pub const TLS_KEY: &str = "DENYLIST_INJECTOR_TLS_KEY";
    /// `--cert-reload-interval`.
    pub const CERT_RELOAD_INTERVAL: &str = "DENYLIST_INJECTOR_CERT_RELOAD_INTERVAL";
    /// `--image`.
    pub const IMAGE: &str = "DENYLIST_INJECTOR_IMAGE";
    /// `--image-pull-policy`.
    pub const IMAGE_PULL_POLICY: &str = "DENYLIST_INJECTOR_IMAGE_PULL_POLICY";
    /// `--config-map`.
    pub const CONFIG_MAP: &str = "DENYLIST_INJECTOR_CONFIG_MAP";
    /// `--nats-secret`.
    pub const NATS_SECRET: &str = "DENYLIST_INJECTOR_NATS_SECRET";
    /// `--legacy-sidecar`.
    pub const LEGACY_SIDECAR: &str = "DENYLIST_INJECTOR_LEGACY_SIDECAR";
    /// `--sidecar-admin-addr`.
    pub const SIDECAR_ADMIN_ADDR: &str = "DENYLIST_INJECTOR_SIDECAR_ADMIN_ADDR";
    /// `--cpu-request`.
    pub const CPU_REQUEST: &str = "DENYLIST_INJECTOR_CPU_REQUEST";
    /// `--cpu-limit`.
    pub const CPU_LIMIT: &str = "DENYLIST_INJECTOR_CPU_LIMIT";
    /// `--memory-request`.
    pub const MEMORY_REQUEST: &str = "DENYLIST_INJECTOR_MEMORY_REQUEST";
    /// `--memory-limit`.
    pub const MEMORY_LIMIT: &str = "DENYLIST_INJECTOR_MEMORY_LIMIT";
    /// `--exclude-namespaces`.
    pub const EXCLUDE_NAMESPACES: &str = "DENYLIST_INJECTOR_EXCLUDE_NAMESPACES";
    /// `--shutdown-grace`.
    pub const SHUTDOWN_GRACE: &str = "DENYLIST_INJECTOR_SHUTDOWN_GRACE";
    /// `--shutdown-delay`.
    pub const SHUTDOWN_DELAY: &str = "DENYLIST_INJECTOR_SHUTDOWN_DELAY";
    /// `--log-format`.
    pub const LOG_FORMAT: &str = "DENYLIST_INJECTOR_LOG_FORMAT";
    /// Log filter (`tracing_subscriber` syntax), default `info`.
    pub const LOG: &str = "DENYLIST_INJECTOR_LOG";
    /// The injector's own namespace (downward API); always excluded from injection.
    pub const POD_NAMESPACE: &str = "POD_NAMESPACE";
}

/// Mutating admission webhook that injects the denylist sidecar into pods.
#[derive(Debug, Clone, Parser)]
#[command(name = "denylist-injector", version, about)]
pub struct Args {
    /// Address of the HTTPS listener.
    #[arg(long, env = env::LISTEN, default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// PEM certificate chain served to the API server (re-read when it changes).
    #[arg(long, env = env::TLS_CERT, default_value = "/etc/denylist-injector/tls/tls.crt")]
    pub tls_cert: PathBuf,
    /// PEM private key of the certificate (re-read when it changes).
    #[arg(long, env = env::TLS_KEY, default_value = "/etc/denylist-injector/tls/tls.key")]
    pub tls_key: PathBuf,
    /// How often the certificate and key files are checked for changes.
    #[arg(long, env = env::CERT_RELOAD_INTERVAL, default_value = "10s", value_parser = positive_duration)]
    pub cert_reload_interval: Duration,
    /// Sidecar image (per pod: annotation `denylist.dev/image`).
    #[arg(long, env = env::IMAGE)]
    pub image: String,
    /// Sidecar imagePullPolicy: Always, IfNotPresent or Never.
    #[arg(long, env = env::IMAGE_PULL_POLICY, default_value = "IfNotPresent")]
    pub image_pull_policy: String,
    /// ConfigMap in the pod's namespace with the sidecar's `config.toml`
    /// (per pod: annotation `denylist.dev/config`).
    #[arg(long, env = env::CONFIG_MAP, default_value = "denylist-sidecar-config")]
    pub config_map: String,
    /// Secret in the pod's namespace with the sidecar's NATS credentials; empty mounts none
    /// (per pod: annotation `denylist.dev/nats-secret`).
    #[arg(long, env = env::NATS_SECRET, default_value = "denylist-sidecar-nats")]
    pub nats_secret: String,
    /// Inject a regular container instead of a native sidecar (Kubernetes before 1.29).
    #[arg(long, env = env::LEGACY_SIDECAR)]
    pub legacy_sidecar: bool,
    /// Where the sidecar's HTTP admin listener binds in the pod; its port is probed by the
    /// kubelet. Use `[::]:9151` on IPv6-only clusters.
    #[arg(long, env = env::SIDECAR_ADMIN_ADDR, default_value = "0.0.0.0:9151")]
    pub sidecar_admin_addr: SocketAddr,
    /// Default sidecar CPU request (`none` for no request).
    #[arg(long, env = env::CPU_REQUEST, default_value = "50m")]
    pub cpu_request: String,
    /// Default sidecar CPU limit (`none`, the default: a CPU limit throttles verification).
    #[arg(long, env = env::CPU_LIMIT, default_value = "none")]
    pub cpu_limit: String,
    /// Default sidecar memory request.
    #[arg(long, env = env::MEMORY_REQUEST, default_value = "64Mi")]
    pub memory_request: String,
    /// Default sidecar memory limit.
    #[arg(long, env = env::MEMORY_LIMIT, default_value = "256Mi")]
    pub memory_limit: String,
    /// Namespaces never injected, comma-separated. The injector's own namespace
    /// (`POD_NAMESPACE`) is always added.
    #[arg(
        long,
        env = env::EXCLUDE_NAMESPACES,
        value_delimiter = ',',
        default_value = "kube-system,kube-public,kube-node-lease"
    )]
    pub exclude_namespaces: Vec<String>,
    /// How long SIGTERM waits for open connections before exiting anyway.
    #[arg(long, env = env::SHUTDOWN_GRACE, default_value = "20s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    /// How long SIGTERM keeps accepting new connections first, while the API server stops
    /// routing admission calls here (with `failurePolicy: Fail`, a refused call fails the
    /// pod creation).
    #[arg(long, env = env::SHUTDOWN_DELAY, default_value = "5s", value_parser = humantime::parse_duration)]
    pub shutdown_delay: Duration,
    /// Log format: `text` or `json`.
    #[arg(long, env = env::LOG_FORMAT, default_value = "json", value_parser = ["text", "json"])]
    pub log_format: String,
}

/// A humantime duration above zero (`10s`, `1m`).
fn positive_duration(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("must be above zero".to_owned()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

impl Args {
    /// Builds and validates the injection settings. `own_namespace` is added to the
    /// excluded namespaces.
    pub fn settings(
        &self,
        own_namespace: Option<&str>,
    ) -> Result<InjectionSettings, SettingsError> {
        let quantity =
            |field: &'static str, value: &str| -> Result<Option<Quantity>, SettingsError> {
                parse_optional_quantity(value).map_err(|e| SettingsError::Invalid {
                    field,
                    message: e.to_string(),
                })
            };
        let mut excluded: std::collections::BTreeSet<String> = self
            .exclude_namespaces
            .iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        excluded.extend(own_namespace.filter(|s| !s.is_empty()).map(str::to_owned));
        let settings = InjectionSettings {
            image: self.image.clone(),
            image_pull_policy: self.image_pull_policy.clone(),
            config_map: self.config_map.clone(),
            nats_secret: (!self.nats_secret.is_empty()).then(|| self.nats_secret.clone()),
            legacy_sidecar: self.legacy_sidecar,
            sidecar_admin_addr: self.sidecar_admin_addr,
            resources: SidecarResources {
                cpu_request: quantity("cpu_request", &self.cpu_request)?,
                cpu_limit: quantity("cpu_limit", &self.cpu_limit)?,
                memory_request: quantity("memory_request", &self.memory_request)?,
                memory_limit: quantity("memory_limit", &self.memory_limit)?,
            },
            excluded_namespaces: excluded,
        };
        settings.validate()?;
        Ok(settings)
    }
}

#[cfg(test)]
mod tests;
