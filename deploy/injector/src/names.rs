//! Every name the injector shares with users and with the sidecar: annotation and label
//! keys, volume and container names, paths in the pod, and environment variables.
//!
//! They live in one place because they are a contract: manifests, docs and tests refer to
//! them, and a rename here is a breaking change.

/// Pod annotation that opts a pod in (`"true"`) or out (`"false"`).
pub const ANNOTATION_INJECT: &str = "denylist.dev/inject";
/// Pod annotation written by the injector; its presence marks a pod as injected.
pub const ANNOTATION_INJECTED: &str = "denylist.dev/injected";
/// Annotation override: sidecar image.
pub const ANNOTATION_IMAGE: &str = "denylist.dev/image";
/// Annotation override: name of the ConfigMap holding `config.toml`.
pub const ANNOTATION_CONFIG: &str = "denylist.dev/config";
/// Annotation override: name of the Secret holding the NATS credentials (empty: none).
pub const ANNOTATION_NATS_SECRET: &str = "denylist.dev/nats-secret";
/// Annotation override: `"false"` gives the sidecar no local state volume (default
/// `"true"`).
pub const ANNOTATION_LOCAL_STATE: &str = "denylist.dev/local-state";
/// Annotation override: sidecar CPU request.
pub const ANNOTATION_CPU_REQUEST: &str = "denylist.dev/cpu-request";
/// Annotation override: sidecar CPU limit.
pub const ANNOTATION_CPU_LIMIT: &str = "denylist.dev/cpu-limit";
/// Annotation override: sidecar memory request.
pub const ANNOTATION_MEMORY_REQUEST: &str = "denylist.dev/memory-request";
/// Annotation override: sidecar memory limit.
pub const ANNOTATION_MEMORY_LIMIT: &str = "denylist.dev/memory-limit";
/// Standard annotation naming the container `kubectl logs/exec` pick by default.
pub const ANNOTATION_DEFAULT_CONTAINER: &str = "kubectl.kubernetes.io/default-container";

/// Namespace label that opts every pod of the namespace in (value [`NAMESPACE_LABEL_ENABLED`]).
///
/// The injector never reads it: the `MutatingWebhookConfiguration` selects labelled
/// namespaces and sends their pods to [`crate::server::PATH_NAMESPACE`].
pub const NAMESPACE_LABEL: &str = "denylist.dev/injection";
/// Value of [`NAMESPACE_LABEL`] that enables injection.
pub const NAMESPACE_LABEL_ENABLED: &str = "enabled";

/// Name of the injected sidecar container.
pub const SIDECAR_CONTAINER: &str = "denylist-sidecar";
/// The sidecar binary in the image (`/usr/local/bin/denylist-sidecar`, on `PATH`).
pub const SIDECAR_COMMAND: &str = "denylist-sidecar";
/// Volume holding the sidecar's Unix socket, shared with the app containers.
pub const VOLUME_SOCKET: &str = "denylist-socket";
/// Volume holding the sidecar's config (from a ConfigMap).
pub const VOLUME_CONFIG: &str = "denylist-config";
/// Volume holding the sidecar's NATS credentials (from a Secret).
pub const VOLUME_NATS_CREDENTIALS: &str = "denylist-nats-credentials";
/// Volume holding the sidecar's local state (its last applied denylist), mounted into
/// the sidecar alone: an app container that could write it could plant revocations or
/// erase them for the next restart.
pub const VOLUME_STATE: &str = "denylist-state";
/// Every volume name the injector adds; a pod that already has one is denied.
pub const VOLUMES: [&str; 4] = [
    VOLUME_SOCKET,
    VOLUME_CONFIG,
    VOLUME_NATS_CREDENTIALS,
    VOLUME_STATE,
];

/// Where the socket volume is mounted, in the sidecar and every app container.
pub const SOCKET_DIR: &str = "/var/run/denylist";
/// The sidecar's socket inside [`SOCKET_DIR`].
pub const SOCKET_PATH: &str = "/var/run/denylist/sidecar.sock";
/// Where the config volume is mounted in the sidecar.
pub const CONFIG_DIR: &str = "/etc/denylist";
/// The config file the sidecar is started with (`--config`); the ConfigMap key is `config.toml`.
pub const CONFIG_FILE: &str = "/etc/denylist/config.toml";
/// Where the state volume is mounted in the sidecar (`state.dir`).
pub const STATE_DIR: &str = "/var/lib/denylist";
/// Where the NATS credentials Secret is mounted in the sidecar.
pub const NATS_CREDENTIALS_DIR: &str = "/var/run/secrets/denylist";

/// Environment variable naming the sidecar's socket (set in app containers and the sidecar).
pub const ENV_SOCKET: &str = "DENYLIST_SOCKET";
/// Environment variable setting the sidecar's HTTP admin listener.
pub const ENV_ADMIN: &str = "DENYLIST_ADMIN";
/// Environment variable setting the sidecar's local state directory (`state.dir`).
pub const ENV_STATE_DIR: &str = "DENYLIST_STATE_DIR";
/// Environment variable selecting the sidecar's log format.
pub const ENV_LOG_FORMAT: &str = "DENYLIST_LOG_FORMAT";
/// Downward-API pod name, reported by the sidecar in fleet status answers.
pub const ENV_POD_NAME: &str = "POD_NAME";
/// Downward-API pod namespace.
pub const ENV_POD_NAMESPACE: &str = "POD_NAMESPACE";

/// The sidecar's loopback gRPC port: an app container declaring it would clash.
pub const SIDECAR_GRPC_PORT: i32 = 50151;
/// Name of the sidecar's admin port in the pod spec.
pub const SIDECAR_ADMIN_PORT_NAME: &str = "denylist-admin";

/// UID and GID the sidecar runs as (the distroless `nonroot` user).
pub const SIDECAR_UID: i64 = 65532;
