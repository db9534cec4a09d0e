//! The client side of denylist.
//!
//! - [`Client`]: a typed client for the sidecar's `denylist.v1.Verifier` service, over the
//!   pod's Unix socket or loopback TCP, with a per-call deadline and bounded retries of
//!   `UNAVAILABLE`.
//! - [`VerifyLayer`]: a `tower` layer for HTTP services. It takes the bearer token, asks the
//!   sidecar, answers 401/503 itself, and hands the verified [`pb::Claims`] to the service in
//!   the request extensions.
//! - [`Publisher`]: signs revocation events and publishes them to the JetStream stream, waiting
//!   for the stream's acknowledgement (with [`NatsOptions`] for the connection and its auth;
//!   [`publisher::revocation`] and [`publisher::lift`] build events).
//! - [`stream`]: creates, updates and describes the JetStream stream every sidecar follows.
//! - [`heartbeat`]: the fleet heartbeat publisher behind `denylistctl heartbeat` — one signed
//!   message a second on a core subject tells every sidecar the stream's last sequence, so
//!   no sidecar polls the stream.
//! - [`snapshot`]: builds the signed snapshots that let a starting sidecar skip replaying
//!   the whole stream, and checks the stored one as a sidecar would.
//! - [`replay`], [`fleet`], [`bulk`]: what `denylistctl` builds on — reading the stream back
//!   (live rules, history), asking every sidecar for its state, and validating bulk files.
//!
//! The `denylistctl` binary is a thin layer of flags over these modules; see `docs/CLI.md`.
//!
//! [`pb::Claims`]: denylist_proto::pb::Claims

pub mod bulk;
pub mod env;
pub mod fleet;
pub mod heartbeat;
pub mod ids;
pub mod layer;
pub mod nats;
pub mod publisher;
pub mod receiver;
pub mod render;
pub mod replay;
pub mod snapshot;
pub mod stream;
pub mod timespec;
pub mod verifier;

#[cfg(test)]
mod fake_verifier;

pub use layer::{Freshness, VerifyLayer, VerifyService};
pub use nats::{NatsError, NatsOptions};
pub use publisher::{PublishError, Published, Publisher};
pub use stream::{StreamError, StreamSettings};
pub use verifier::{Client, ClientError, RetryPolicy};

/// The wire types, re-exported so callers need not depend on `denylist-proto` directly.
pub use denylist_proto::{envelope, events, pb, subjects};
