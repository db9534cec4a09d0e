//! Environment variables and defaults the client and `denylistctl` read, in one place.

/// Path of the sidecar's Unix socket (the injector sets it in every app container).
pub const SOCKET: &str = "DENYLIST_SOCKET";
/// NATS server URL(s), comma-separated.
pub const NATS_URL: &str = "DENYLIST_NATS_URL";
/// NATS credentials file (JWT + nkey seed).
pub const NATS_CREDS: &str = "DENYLIST_NATS_CREDS";
/// File holding an nkey seed.
pub const NATS_NKEY: &str = "DENYLIST_NATS_NKEY";
/// NATS user name (with [`NATS_PASSWORD`]).
pub const NATS_USER: &str = "DENYLIST_NATS_USER";
/// NATS password.
pub const NATS_PASSWORD: &str = "DENYLIST_NATS_PASSWORD";
/// NATS token.
pub const NATS_TOKEN: &str = "DENYLIST_NATS_TOKEN";
/// CA bundle that verifies the NATS servers' certificates.
pub const NATS_TLS_CA: &str = "DENYLIST_NATS_TLS_CA";
/// Client certificate for mutual TLS with NATS.
pub const NATS_TLS_CERT: &str = "DENYLIST_NATS_TLS_CERT";
/// Client key for mutual TLS with NATS.
pub const NATS_TLS_KEY: &str = "DENYLIST_NATS_TLS_KEY";
/// JetStream stream name.
pub const STREAM: &str = "DENYLIST_STREAM";
/// The publisher's Ed25519 PKCS#8 PEM signing key.
pub const PUBLISHER_KEY: &str = "DENYLIST_PUBLISHER_KEY";
/// Trusted publisher public keys (comma-separated), to check events read back from the stream.
pub const TRUSTED_PUBLISHERS: &str = "DENYLIST_TRUSTED_PUBLISHERS";
/// A sidecar configuration file whose `[nats]` trusted publishers (scopes included) check
/// events read back from the stream.
pub const TRUST_CONFIG: &str = "DENYLIST_TRUST_CONFIG";
/// Object store bucket of the snapshots (default `<stream>_SNAPSHOTS`).
pub const SNAPSHOT_BUCKET: &str = "DENYLIST_SNAPSHOT_BUCKET";
/// Who publishes, when `--actor` is not given.
pub const USER: &str = "USER";

/// The sidecar's default Unix socket.
pub const DEFAULT_SOCKET: &str = "/var/run/denylist/sidecar.sock";
/// The sidecar's default loopback TCP listener.
pub const DEFAULT_TCP: &str = "127.0.0.1:50151";
/// The NATS URL used when none is given.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
