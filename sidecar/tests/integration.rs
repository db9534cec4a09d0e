//! The sidecar's integration tests: one test binary, as STYLE.md asks.
//!
//! - [`harness`] starts a sidecar in-process on a Unix socket in a temp dir, connects a
//!   gRPC client to it, and mints tokens with keys generated at test time.
//! - [`hostile`] sends hostile and broken tokens through the real gRPC server and checks
//!   each gets its own reason; then the claim checks and the denylist.
//! - [`rfc_vectors`] checks the JWS examples of RFC 7515, RFC 7520 and RFC 8037.
//! - [`binary`] runs the `denylist-sidecar` executable: bad configuration, SIGTERM.
//!
//! Every await is bounded by a timeout; nothing sleeps.

// The crate root is `tests/integration.rs`, so its modules live in `tests/integration/`.
#[path = "integration/binary.rs"]
mod binary;
#[path = "integration/ext_authz.rs"]
mod ext_authz;
#[path = "integration/harness.rs"]
mod harness;
#[path = "integration/hostile.rs"]
mod hostile;
#[path = "integration/rfc_vectors.rs"]
mod rfc_vectors;
#[path = "integration/uds_authority.rs"]
mod uds_authority;
#[path = "integration/watch.rs"]
mod watch;
