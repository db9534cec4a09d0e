//! The admission decision for one pod, and the JSON patch that injects the sidecar.
//!
//! [`decide`] is a pure function of the settings, which webhook was called, and the
//! `AdmissionRequest`: it answers skip (allow, no patch), deny (with a message for the
//! user), or inject (allow with a patch). Nothing here does I/O, so every rule is tested
//! without a server.
//!
//! Rules, in order:
//! 1. Anything but a pod `CREATE` is allowed untouched; so is a pod in an excluded namespace.
//! 2. `denylist.dev/inject: "false"` always opts out. `"true"` opts in. Without the
//!    annotation, a pod is injected only when it came through the namespace webhook
//!    ([`OptIn::Namespace`]). Any other value is denied: it is a typo, and silently not
//!    injecting would leave an app without its verifier.
//! 3. An injected pod (annotation `denylist.dev/injected`, or our container *and* our socket
//!    volume) is allowed untouched: injection is idempotent.
//! 4. Overrides from annotations are validated; a bad one is denied, naming the annotation.
//! 5. A pod we cannot patch safely is denied: a container called `denylist-sidecar` that we
//!    did not inject, a volume with one of our names, a mount on our socket directory, a
//!    port the sidecar uses, `hostNetwork` (the sidecar's fixed ports would clash on the node).
//!
//! The patch only *adds*: it never replaces a value the user wrote. Paths to existing arrays
//! append (`/-`) or insert at index 0, so fields this crate's Kubernetes types do not know
//! (a newer API server) survive untouched; the typed [`Pod`] is only read.

use std::collections::BTreeMap;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, ObjectFieldSelector, Pod, Probe, ResourceRequirements,
    SeccompProfile, SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, Operation};
use serde_json::Value;

use crate::names::*;
use crate::quantity::Quantity;
use crate::settings::{InjectionSettings, SidecarResources, validate_image, validate_object_name};

/// Which webhook the API server called, i.e. why the pod is being looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptIn {
    /// The webhook for pods of namespaces *without* the injection label: inject only pods
    /// annotated `denylist.dev/inject: "true"`.
    PodAnnotation,
    /// The webhook for namespaces labelled `denylist.dev/injection=enabled`: inject every pod
    /// unless it is annotated `denylist.dev/inject: "false"`.
    Namespace,
}

/// Why a pod was allowed without a patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// Not a pod `CREATE` (wrong kind, subresource, or operation).
    NotPodCreate,
    /// The pod's namespace is in the injector's exclusion list.
    ExcludedNamespace,
    /// The pod did not ask for injection.
    NotRequested,
    /// The pod is annotated `denylist.dev/inject: "false"`.
    OptedOut,
    /// The pod already has the sidecar.
    AlreadyInjected,
}

impl SkipReason {
    /// Label value used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotPodCreate => "not_pod_create",
            Self::ExcludedNamespace => "excluded_namespace",
            Self::NotRequested => "not_requested",
            Self::OptedOut => "opted_out",
            Self::AlreadyInjected => "already_injected",
        }
    }
}

/// Why a pod was denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// An annotation of ours has a value we cannot use.
    InvalidAnnotation,
    /// A container or volume already carries one of our names.
    NameClash,
    /// A container already mounts something on the socket directory.
    MountClash,
    /// A container declares a port the sidecar listens on, or the pod uses the host network.
    PortClash,
    /// The pod object is incomplete (no spec).
    InvalidPod,
}

impl DenyReason {
    /// Label value used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidAnnotation => "invalid_annotation",
            Self::NameClash => "name_clash",
            Self::MountClash => "mount_clash",
            Self::PortClash => "port_clash",
            Self::InvalidPod => "invalid_pod",
        }
    }
}

/// A denial: the reason for metrics, the message for the user (shown by `kubectl`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// Machine-readable reason.
    pub reason: DenyReason,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// An injection: the patch, and warnings returned to the client (`kubectl` prints them).
#[derive(Debug, Clone)]
pub struct Injection {
    /// JSON patch against the pod as submitted.
    pub patch: Patch,
    /// Things the user should know (e.g. an existing `DENYLIST_SOCKET` left alone).
    pub warnings: Vec<String>,
}

/// The answer for one admission request.
#[derive(Debug, Clone)]
pub enum Decision {
    /// Allow without a patch.
    Skip(SkipReason),
    /// Deny with a message.
    Deny(Denial),
    /// Allow with a patch that adds the sidecar.
    Inject(Injection),
}

/// A request that is not a well-formed pod admission: answered with HTTP 400.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    /// A pod `CREATE` without an object.
    #[error("request for a pod CREATE carries no object")]
    NoObject,
    /// The object does not deserialise as a `v1` Pod.
    #[error("object is not a valid v1 Pod: {0}")]
    NotAPod(#[source] serde_json::Error),
}

fn deny(reason: DenyReason, message: impl Into<String>) -> Decision {
    Decision::Deny(Denial {
        reason,
        message: message.into(),
    })
}

/// Decides what to do with one admission request.
pub fn decide(
    settings: &InjectionSettings,
    opt_in: OptIn,
    req: &AdmissionRequest<DynamicObject>,
) -> Result<Decision, InjectError> {
    let is_pod = req.kind.group.is_empty() && req.kind.version == "v1" && req.kind.kind == "Pod";
    if !is_pod || req.operation != Operation::Create || req.sub_resource.is_some() {
        return Ok(Decision::Skip(SkipReason::NotPodCreate));
    }
    if req
        .namespace
        .as_ref()
        .is_some_and(|ns| settings.excluded_namespaces.contains(ns))
    {
        return Ok(Decision::Skip(SkipReason::ExcludedNamespace));
    }
    let object = req.object.as_ref().ok_or(InjectError::NoObject)?;
    // Opt-in is read from the metadata alone, before the spec is parsed: a pod that did not
    // ask for us is allowed even if its spec is something our types cannot read.
    let empty = BTreeMap::new();
    let annotations = object.metadata.annotations.as_ref().unwrap_or(&empty);
    match (
        annotations.get(ANNOTATION_INJECT).map(String::as_str),
        opt_in,
    ) {
        (Some("false"), _) => return Ok(Decision::Skip(SkipReason::OptedOut)),
        (Some("true"), _) | (None, OptIn::Namespace) => {}
        (None, OptIn::PodAnnotation) => return Ok(Decision::Skip(SkipReason::NotRequested)),
        (Some(other), _) => {
            return Ok(deny(
                DenyReason::InvalidAnnotation,
                format!(
                    "annotation {ANNOTATION_INJECT} must be \"true\" or \"false\", got {other:?}"
                ),
            ));
        }
    }
    if annotations.contains_key(ANNOTATION_INJECTED) {
        return Ok(Decision::Skip(SkipReason::AlreadyInjected));
    }
    let pod: Pod = serde_json::to_value(object)
        .and_then(serde_json::from_value)
        .map_err(InjectError::NotAPod)?;
    Ok(plan(settings, annotations, &pod))
}

/// The sidecar as this pod gets it: settings with the pod's annotation overrides applied.
#[derive(Debug, Clone)]
struct PodSidecar {
    image: String,
    config_map: String,
    nats_secret: Option<String>,
    /// Mount the local state volume (`denylist.dev/local-state`).
    local_state: bool,
    resources: SidecarResources,
}

fn overrides(
    settings: &InjectionSettings,
    annotations: &BTreeMap<String, String>,
) -> Result<PodSidecar, Denial> {
    let bad = |key: &str, message: String| Denial {
        reason: DenyReason::InvalidAnnotation,
        message: format!("annotation {key}: {message}"),
    };
    let mut sidecar = PodSidecar {
        image: settings.image.clone(),
        config_map: settings.config_map.clone(),
        nats_secret: settings.nats_secret.clone(),
        local_state: true,
        resources: settings.resources.clone(),
    };
    if let Some(image) = annotations.get(ANNOTATION_IMAGE) {
        validate_image(image).map_err(|m| bad(ANNOTATION_IMAGE, m))?;
        sidecar.image = image.clone();
    }
    if let Some(name) = annotations.get(ANNOTATION_CONFIG) {
        validate_object_name(name).map_err(|m| bad(ANNOTATION_CONFIG, m))?;
        sidecar.config_map = name.clone();
    }
    if let Some(name) = annotations.get(ANNOTATION_NATS_SECRET) {
        // An empty value means "no NATS credentials" (a standalone sidecar).
        if name.is_empty() {
            sidecar.nats_secret = None;
        } else {
            validate_object_name(name).map_err(|m| bad(ANNOTATION_NATS_SECRET, m))?;
            sidecar.nats_secret = Some(name.clone());
        }
    }
    if let Some(value) = annotations.get(ANNOTATION_LOCAL_STATE) {
        sidecar.local_state = match value.as_str() {
            "true" => true,
            "false" => false,
            _ => {
                return Err(bad(
                    ANNOTATION_LOCAL_STATE,
                    "must be \"true\" or \"false\"".into(),
                ));
            }
        };
    }
    let r = &mut sidecar.resources;
    for (key, slot) in [
        (ANNOTATION_CPU_REQUEST, &mut r.cpu_request),
        (ANNOTATION_CPU_LIMIT, &mut r.cpu_limit),
        (ANNOTATION_MEMORY_REQUEST, &mut r.memory_request),
        (ANNOTATION_MEMORY_LIMIT, &mut r.memory_limit),
    ] {
        if let Some(value) = annotations.get(key) {
            *slot = Some(Quantity::parse(value).map_err(|e| bad(key, e.to_string()))?);
        }
    }
    sidecar.resources.validate().map_err(|e| Denial {
        reason: DenyReason::InvalidAnnotation,
        message: format!(
            "sidecar resources (defaults with this pod's denylist.dev/* annotations): {e}; \
             adjust the request or the limit annotation"
        ),
    })?;
    Ok(sidecar)
}

/// Checks that the pod can take the sidecar, then builds the patch.
fn plan(
    settings: &InjectionSettings,
    annotations: &BTreeMap<String, String>,
    pod: &Pod,
) -> Decision {
    let Some(spec) = &pod.spec else {
        return deny(DenyReason::InvalidPod, "pod has no spec");
    };
    let sidecar = match overrides(settings, annotations) {
        Ok(s) => s,
        Err(denial) => return Decision::Deny(denial),
    };
    let containers = &spec.containers;
    let init_containers = spec.init_containers.as_deref().unwrap_or_default();
    let volumes = spec.volumes.as_deref().unwrap_or_default();

    let has_sidecar = containers
        .iter()
        .chain(init_containers)
        .any(|c| c.name == SIDECAR_CONTAINER);
    let has_socket_volume = volumes.iter().any(|v| v.name == VOLUME_SOCKET);
    if has_sidecar && has_socket_volume {
        // Injected before, and the marker annotation was lost (e.g. a pod spec copied from
        // an injected pod). Patching again would duplicate everything.
        return Decision::Skip(SkipReason::AlreadyInjected);
    }
    if has_sidecar {
        return deny(
            DenyReason::NameClash,
            format!(
                "pod already has a container named {SIDECAR_CONTAINER:?} that denylist-injector did not add \
                 (no {ANNOTATION_INJECTED} annotation, no {VOLUME_SOCKET:?} volume); rename that container, \
                 or annotate the pod {ANNOTATION_INJECT}: \"false\" to manage the sidecar yourself"
            ),
        );
    }
    if let Some(v) = volumes.iter().find(|v| VOLUMES.contains(&v.name.as_str())) {
        return deny(
            DenyReason::NameClash,
            format!(
                "pod already has a volume named {:?}, a name denylist-injector reserves for the sidecar; \
                 rename the volume, or annotate the pod {ANNOTATION_INJECT}: \"false\"",
                v.name
            ),
        );
    }
    if spec.host_network == Some(true) {
        return deny(
            DenyReason::PortClash,
            format!(
                "pod uses hostNetwork: the sidecar's fixed ports ({SIDECAR_GRPC_PORT}, {}) would clash \
                 between pods on a node; annotate the pod {ANNOTATION_INJECT}: \"false\"",
                settings.sidecar_admin_addr.port()
            ),
        );
    }
    let admin_port = i32::from(settings.sidecar_admin_addr.port());
    // Init containers get the socket only from a native sidecar: a legacy sidecar is a regular
    // container, which starts after every init container has finished.
    let targets: Vec<(&str, usize, &Container)> = containers
        .iter()
        .enumerate()
        .map(|(i, c)| ("containers", i, c))
        .chain(
            init_containers
                .iter()
                .enumerate()
                .filter(|_| !settings.legacy_sidecar)
                .map(|(i, c)| ("initContainers", i, c)),
        )
        .collect();
    for c in containers.iter().chain(init_containers) {
        let mounts = c.volume_mounts.as_deref().unwrap_or_default();
        if let Some(m) = mounts
            .iter()
            .find(|m| m.mount_path.trim_end_matches('/') == SOCKET_DIR)
        {
            return deny(
                DenyReason::MountClash,
                format!(
                    "container {:?} already mounts volume {:?} at {SOCKET_DIR}, where the sidecar's socket \
                     is mounted; move that mount, or annotate the pod {ANNOTATION_INJECT}: \"false\"",
                    c.name, m.name
                ),
            );
        }
        let ports = c.ports.as_deref().unwrap_or_default();
        if let Some(p) = ports.iter().find(|p| {
            p.container_port == admin_port
                || p.container_port == SIDECAR_GRPC_PORT
                || p.name.as_deref() == Some(SIDECAR_ADMIN_PORT_NAME)
        }) {
            return deny(
                DenyReason::PortClash,
                format!(
                    "container {:?} declares port {}{}, which the sidecar uses ({SIDECAR_GRPC_PORT} gRPC, \
                     {admin_port} {SIDECAR_ADMIN_PORT_NAME}); containers of a pod share one network namespace",
                    c.name,
                    p.container_port,
                    p.name
                        .as_deref()
                        .map(|n| format!(" ({n})"))
                        .unwrap_or_default()
                ),
            );
        }
    }

    let mut ops = Vec::new();
    let mut warnings = Vec::new();
    let socket_mount = to_value(&VolumeMount {
        name: VOLUME_SOCKET.to_owned(),
        mount_path: SOCKET_DIR.to_owned(),
        ..Default::default()
    });
    let socket_env = to_value(&env_value(ENV_SOCKET, SOCKET_PATH));
    for (list, i, c) in &targets {
        let index = i.to_string();
        append(
            &mut ops,
            &["spec", list, &index, "volumeMounts"],
            c.volume_mounts.is_some(),
            vec![socket_mount.clone()],
        );
        let env = c.env.as_deref().unwrap_or_default();
        if env.iter().any(|e| e.name == ENV_SOCKET) {
            warnings.push(format!(
                "container {:?} already sets {ENV_SOCKET}; denylist-injector left it unchanged (the sidecar listens on {SOCKET_PATH})",
                c.name
            ));
        } else {
            append(
                &mut ops,
                &["spec", list, &index, "env"],
                c.env.is_some(),
                vec![socket_env.clone()],
            );
        }
    }
    let volumes = sidecar_volumes(&sidecar).iter().map(to_value).collect();
    append(
        &mut ops,
        &["spec", "volumes"],
        spec.volumes.is_some(),
        volumes,
    );
    let container = to_value(&sidecar_container(settings, &sidecar));
    // The sidecar goes first: a native sidecar must start before the init containers that
    // use its socket, and a legacy one should at least be started before the app.
    let list = if settings.legacy_sidecar {
        "containers"
    } else {
        "initContainers"
    };
    let list_exists = if settings.legacy_sidecar {
        true
    } else {
        spec.init_containers.is_some()
    };
    if list_exists {
        ops.push(add(&["spec", list, "0"], container));
    } else {
        ops.push(add(&["spec", list], Value::Array(vec![container])));
    }

    let mut new_annotations = vec![(ANNOTATION_INJECTED, Value::from(env!("CARGO_PKG_VERSION")))];
    if settings.legacy_sidecar {
        // Our container is now first in `containers`: keep `kubectl logs/exec` on the app.
        if let Some(app) = containers.first()
            && !annotations.contains_key(ANNOTATION_DEFAULT_CONTAINER)
        {
            new_annotations.push((ANNOTATION_DEFAULT_CONTAINER, Value::from(app.name.clone())));
        }
        if spec
            .restart_policy
            .as_deref()
            .is_some_and(|p| p != "Always")
        {
            warnings.push(
                "legacy sidecar mode: the sidecar keeps running after the app exits, so this pod will not \
                 complete; use native sidecars (Kubernetes 1.29+) for Jobs"
                    .to_owned(),
            );
        }
    }
    if pod.metadata.annotations.is_some() {
        for (key, value) in new_annotations {
            ops.push(add(&["metadata", "annotations", key], value));
        }
    } else {
        let map = new_annotations
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect::<serde_json::Map<_, _>>();
        ops.push(add(&["metadata", "annotations"], Value::Object(map)));
    }
    Decision::Inject(Injection {
        patch: Patch(ops),
        warnings,
    })
}

fn add(path: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: PointerBuf::from_tokens(path.iter().copied()),
        value,
    })
}

/// Appends `values` to the array at `path`, creating the array if the pod has none.
fn append(ops: &mut Vec<PatchOperation>, path: &[&str], exists: bool, values: Vec<Value>) {
    if exists {
        let mut end = path.to_vec();
        end.push("-");
        ops.extend(values.into_iter().map(|v| add(&end, v)));
    } else {
        ops.push(add(path, Value::Array(values)));
    }
}

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    // Serialising k8s-openapi types into a `Value` cannot fail: they are plain data with
    // string keys.
    serde_json::to_value(v).expect("k8s-openapi types serialise to JSON")
}

fn env_value(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        ..Default::default()
    }
}

fn env_field(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: field_path.to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

const READ_ONLY_FILES: i32 = 0o444;

fn sidecar_volumes(sidecar: &PodSidecar) -> Vec<Volume> {
    let mut volumes = vec![
        Volume {
            name: VOLUME_SOCKET.to_owned(),
            empty_dir: Some(EmptyDirVolumeSource {
                // A socket needs no space; the limit only stops misuse of the volume.
                medium: Some("Memory".to_owned()),
                size_limit: Some(K8sQuantity("1Mi".to_owned())),
            }),
            ..Default::default()
        },
        Volume {
            name: VOLUME_CONFIG.to_owned(),
            config_map: Some(ConfigMapVolumeSource {
                name: sidecar.config_map.clone(),
                default_mode: Some(READ_ONLY_FILES),
                ..Default::default()
            }),
            ..Default::default()
        },
    ];
    if sidecar.local_state {
        volumes.push(Volume {
            name: VOLUME_STATE.to_owned(),
            // On disk, not in memory: it holds a copy of the live revocations. It survives
            // container restarts (the point: no snapshot download), not the pod. No size
            // limit: the sidecar bounds it (`state.max_bytes`, twice that during a write),
            // and crossing a limit would evict the whole pod.
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        });
    }
    if let Some(secret) = &sidecar.nats_secret {
        volumes.push(Volume {
            name: VOLUME_NATS_CREDENTIALS.to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.clone()),
                // Readable by the sidecar's non-root user without a pod-wide fsGroup, which
                // would change the app's volumes too. Only the sidecar mounts this volume.
                default_mode: Some(READ_ONLY_FILES),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    volumes
}

fn http_probe(path: &str, port: i32, period: i32, failures: i32, timeout: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::Int(port),
            scheme: Some("HTTP".to_owned()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(timeout),
        ..Default::default()
    }
}

fn sidecar_container(settings: &InjectionSettings, sidecar: &PodSidecar) -> Container {
    let admin_port = i32::from(settings.sidecar_admin_addr.port());
    let quantities = |pairs: [(&str, &Option<Quantity>); 2]| {
        let map: BTreeMap<String, K8sQuantity> = pairs
            .into_iter()
            .filter_map(|(k, q)| {
                q.as_ref()
                    .map(|q| (k.to_owned(), K8sQuantity(q.to_string())))
            })
            .collect();
        (!map.is_empty()).then_some(map)
    };
    let r = &sidecar.resources;
    let mut mounts = vec![
        VolumeMount {
            name: VOLUME_SOCKET.to_owned(),
            mount_path: SOCKET_DIR.to_owned(),
            ..Default::default()
        },
        VolumeMount {
            name: VOLUME_CONFIG.to_owned(),
            mount_path: CONFIG_DIR.to_owned(),
            read_only: Some(true),
            ..Default::default()
        },
    ];
    let mut env = vec![
        env_value(ENV_SOCKET, SOCKET_PATH),
        env_value(ENV_ADMIN, &settings.sidecar_admin_addr.to_string()),
        env_value(ENV_LOG_FORMAT, "json"),
        env_field(ENV_POD_NAME, "metadata.name"),
        env_field(ENV_POD_NAMESPACE, "metadata.namespace"),
    ];
    if sidecar.local_state {
        mounts.push(VolumeMount {
            name: VOLUME_STATE.to_owned(),
            mount_path: STATE_DIR.to_owned(),
            ..Default::default()
        });
        env.push(env_value(ENV_STATE_DIR, STATE_DIR));
    }
    if sidecar.nats_secret.is_some() {
        mounts.push(VolumeMount {
            name: VOLUME_NATS_CREDENTIALS.to_owned(),
            mount_path: NATS_CREDENTIALS_DIR.to_owned(),
            read_only: Some(true),
            ..Default::default()
        });
    }
    Container {
        name: SIDECAR_CONTAINER.to_owned(),
        image: Some(sidecar.image.clone()),
        image_pull_policy: Some(settings.image_pull_policy.clone()),
        // Explicit, so the container does not depend on the image's entrypoint.
        command: Some(vec![SIDECAR_COMMAND.to_owned()]),
        args: Some(vec!["--config".to_owned(), CONFIG_FILE.to_owned()]),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some(SIDECAR_ADMIN_PORT_NAME.to_owned()),
            container_port: admin_port,
            protocol: Some("TCP".to_owned()),
            ..Default::default()
        }]),
        resources: Some(ResourceRequirements {
            requests: quantities([("cpu", &r.cpu_request), ("memory", &r.memory_request)]),
            limits: quantities([("cpu", &r.cpu_limit), ("memory", &r.memory_limit)]),
            ..Default::default()
        }),
        // `restartPolicy: Always` on an init container is what makes it a native sidecar.
        restart_policy: (!settings.legacy_sidecar).then(|| "Always".to_owned()),
        // The gRPC listener is loopback-only by design (the API is unauthenticated), and the
        // kubelet probes the pod IP, so gRPC probes cannot reach it. The admin listener
        // serves the same liveness and readiness over HTTP on a pod-IP address instead.
        // Startup waits for liveness only: app containers start once the socket is up, and
        // the pod turns Ready when the denylist has caught up (readiness).
        startup_probe: Some(http_probe("/livez", admin_port, 1, 30, 1)),
        readiness_probe: Some(http_probe("/readyz", admin_port, 5, 2, 2)),
        liveness_probe: Some(http_probe("/livez", admin_port, 10, 3, 2)),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(SIDECAR_UID),
            run_as_group: Some(SIDECAR_UID),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            privileged: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Default::default()
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        volume_mounts: Some(mounts),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;
