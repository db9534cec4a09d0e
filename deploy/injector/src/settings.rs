//! What the injector puts into a pod: the sidecar image, where its config and credentials
//! come from, its resources, and whether it runs as a native or a legacy sidecar.
//!
//! [`InjectionSettings`] is built from flags and environment by the binary (see
//! [`crate::cli`]) and validated before the listener is bound, so a bad default fails the
//! injector at start rather than every pod at admission.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use crate::quantity::{Quantity, QuantityError};

/// Requests and limits of the sidecar container. `None` leaves that entry out.
#[derive(Debug, Clone)]
pub struct SidecarResources {
    /// CPU request. Default `50m`.
    pub cpu_request: Option<Quantity>,
    /// CPU limit. Default none: a CPU limit throttles the verification hot path.
    pub cpu_limit: Option<Quantity>,
    /// Memory request. Default `64Mi`.
    pub memory_request: Option<Quantity>,
    /// Memory limit. Default `256Mi` (room for a few million revocations; see docs/BENCHMARKS.md).
    pub memory_limit: Option<Quantity>,
}

impl Default for SidecarResources {
    fn default() -> Self {
        let q = |s: &str| Some(Quantity::parse(s).expect("built-in default is a valid quantity"));
        Self {
            cpu_request: q("50m"),
            cpu_limit: None,
            memory_request: q("64Mi"),
            memory_limit: q("256Mi"),
        }
    }
}

/// Where a resources check failed: names the setting (flag or annotation) at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourcesError {
    /// A request is above its limit.
    #[error("{resource} request {request} is above the {resource} limit {limit}")]
    RequestAboveLimit {
        /// `cpu` or `memory`.
        resource: &'static str,
        /// The request.
        request: String,
        /// The limit.
        limit: String,
    },
    /// A limit of zero would never let the sidecar run.
    #[error("{resource} limit must be above zero")]
    ZeroLimit {
        /// `cpu` or `memory`.
        resource: &'static str,
    },
}

impl SidecarResources {
    /// Checks that each request fits under its limit.
    pub fn validate(&self) -> Result<(), ResourcesError> {
        for (resource, request, limit) in [
            ("cpu", &self.cpu_request, &self.cpu_limit),
            ("memory", &self.memory_request, &self.memory_limit),
        ] {
            if let Some(limit) = limit {
                if limit.is_zero() {
                    return Err(ResourcesError::ZeroLimit { resource });
                }
                if let Some(request) = request
                    && request > limit
                {
                    return Err(ResourcesError::RequestAboveLimit {
                        resource,
                        request: request.to_string(),
                        limit: limit.to_string(),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Everything the injector needs to build a sidecar, before per-pod annotation overrides.
#[derive(Debug, Clone)]
pub struct InjectionSettings {
    /// Sidecar image, e.g. `ghcr.io/example/denylist:0.1.0`.
    pub image: String,
    /// `imagePullPolicy` of the sidecar. Default `IfNotPresent`.
    pub image_pull_policy: String,
    /// ConfigMap (in the pod's namespace) with the sidecar's `config.toml`.
    pub config_map: String,
    /// Secret (in the pod's namespace) with the NATS credentials; `None` mounts none
    /// (standalone sidecars reading a revocations file).
    pub nats_secret: Option<String>,
    /// Inject a regular container instead of a native sidecar (clusters before 1.29).
    pub legacy_sidecar: bool,
    /// Address the sidecar's HTTP admin listener binds inside the pod. Its port is probed by
    /// the kubelet, which connects to the pod IP, so it must not be loopback.
    pub sidecar_admin_addr: SocketAddr,
    /// Default resources of the sidecar.
    pub resources: SidecarResources,
    /// Namespaces whose pods are never injected, whatever the webhook configuration says.
    pub excluded_namespaces: BTreeSet<String>,
}

impl Default for InjectionSettings {
    fn default() -> Self {
        Self {
            image: "denylist:latest".to_owned(),
            image_pull_policy: "IfNotPresent".to_owned(),
            config_map: "denylist-sidecar-config".to_owned(),
            nats_secret: Some("denylist-sidecar-nats".to_owned()),
            legacy_sidecar: false,
            sidecar_admin_addr: SocketAddr::from(([0, 0, 0, 0], 9151)),
            resources: SidecarResources::default(),
            excluded_namespaces: ["kube-system", "kube-public", "kube-node-lease"]
                .into_iter()
                .map(str::to_owned)
                .collect(),
        }
    }
}

/// A setting that cannot work; names the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// A field is invalid.
    #[error("setting `{field}`: {message}")]
    Invalid {
        /// Which setting.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
}

fn invalid(field: &'static str, message: impl Into<String>) -> SettingsError {
    SettingsError::Invalid {
        field,
        message: message.into(),
    }
}

impl InjectionSettings {
    /// Checks every setting; the first problem is returned, naming its setting.
    pub fn validate(&self) -> Result<(), SettingsError> {
        validate_image(&self.image).map_err(|m| invalid("image", m))?;
        if !["Always", "IfNotPresent", "Never"].contains(&self.image_pull_policy.as_str()) {
            return Err(invalid(
                "image_pull_policy",
                format!(
                    "{:?} is not Always, IfNotPresent or Never",
                    self.image_pull_policy
                ),
            ));
        }
        validate_object_name(&self.config_map).map_err(|m| invalid("config_map", m))?;
        if let Some(secret) = &self.nats_secret {
            validate_object_name(secret).map_err(|m| invalid("nats_secret", m))?;
        }
        if self.sidecar_admin_addr.ip().is_loopback() {
            return Err(invalid(
                "sidecar_admin_addr",
                "must not be loopback: the kubelet probes the admin port on the pod IP",
            ));
        }
        if [crate::names::SIDECAR_GRPC_PORT, 0].contains(&i32::from(self.sidecar_admin_addr.port()))
        {
            return Err(invalid(
                "sidecar_admin_addr",
                "port must be set and differ from the sidecar's gRPC port 50151",
            ));
        }
        self.resources
            .validate()
            .map_err(|e| invalid("resources", e.to_string()))?;
        Ok(())
    }
}

/// Parses an optional resource quantity given as a flag.
pub fn parse_optional_quantity(s: &str) -> Result<Option<Quantity>, QuantityError> {
    if s.is_empty() || s == "none" {
        Ok(None)
    } else {
        Quantity::parse(s).map(Some)
    }
}

/// An image reference must be non-empty and free of whitespace and control characters;
/// the registry resolves the rest.
pub fn validate_image(image: &str) -> Result<(), String> {
    if image.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if image.len() > 1024 {
        return Err("is longer than 1024 characters".to_owned());
    }
    if image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{image:?} contains whitespace or control characters"
        ));
    }
    Ok(())
}

/// ConfigMap and Secret names are DNS-1123 subdomains: at most 253 characters of lower-case
/// letters, digits, `-` and `.`, starting and ending with a letter or digit.
pub fn validate_object_name(name: &str) -> Result<(), String> {
    let ok_edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if name.is_empty() || name.len() > 253 {
        return Err(format!("{name:?} must be 1 to 253 characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        || !ok_edge(name.chars().next())
        || !ok_edge(name.chars().last())
    {
        return Err(format!(
            "{name:?} is not a valid object name (lower-case letters, digits, '-' and '.', starting and ending with a letter or digit)"
        ));
    }
    Ok(())
}
