//! The sidecar's integration tests: one test binary, as STYLE.md asks.
//!
//! - [`harness`] starts a sidecar in-process on a Unix socket in a temp dir, connects a
//!   gRPC client to it, and mints tokens with keys generated at test time.
//! - [`hostile`] sends hostile and broken tokens through the real gRPC server and checks
//!   each gets its own reason; then the claim checks and the denylist.
//! - [`rfc_vectors`] checks the JWS examples of RFC 7515, RFC 7520 and RFC 8037.
//! - [`binary`] runs the `denylist-sidecar` executable: bad configuration, SIGTERM.
//! - [`clients`] runs real Python (`grpcio`), Node (`@grpc/grpc-js`) and Rust clients
//!   against the executable over its Unix socket: Verify, Check and Watch.
//! - [`forward_auth`] puts a real nginx (`auth_request`) in front of a test upstream and
//!   the forward-auth endpoint.
//! - [`uds_authority`] speaks raw HTTP/2 to the socket with every `:authority` form
//!   gRPC clients send.
//!
//! Every await is bounded by a timeout; nothing sleeps.

// The crate root is `tests/integration.rs`, so its modules live in `tests/integration/`.
#[path = "integration/binary.rs"]
mod binary;
#[path = "integration/clients.rs"]
mod clients;
#[path = "integration/ext_authz.rs"]
mod ext_authz;
#[path = "integration/forward_auth.rs"]
mod forward_auth;
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
