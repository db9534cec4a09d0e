//! End-to-end test harness of denylist: real `nats-server` processes (single and
//! clustered, on ports they pick themselves), real `denylist-sidecar` processes, and
//! the helpers tests need around them.
//!
//! - [`NatsServer`] / [`NatsCluster`]: JetStream servers in temp dirs; restart keeping
//!   port and store; kill a cluster node and bring it back.
//! - [`TcpProxy`]: cuts one client's connection while the server stays up.
//! - [`Sidecar`] / [`SidecarOptions`]: the sidecar binary with a generated config and a
//!   gRPC client on its Unix socket; kill and restart; its log on failure.
//! - [`Issuer`]: HS256 token minting; [`EventPublisher`] and [`events`]: signed
//!   revocation events on the stream, exactly as the contract says.
//! - [`Fleet`]: one server, the stream, a publisher and N ready sidecars.
//! - [`Denylistctl`]: the CLI as a child process, bounded; [`heartbeat`]: the fleet
//!   heartbeat (`denylistctl heartbeat`) as a child process, forged heartbeats, metrics.
//! - [`fleet_sim`]: the servers' own counters (`/jsz`, `/varz`) sampled for the fleet
//!   simulator (`benches/fleet.rs`).
//! - [`wait`]: every await bounded ([`within`]), every "eventually" polled with a
//!   deadline ([`wait_until`], [`wait_for`]), never a bare sleep.
//!
//! The tests themselves are one binary, `tests/e2e.rs`; see the crate README.

pub mod bench;
pub mod binaries;
pub mod cli;
pub mod events;
pub mod fleet;
pub mod fleet_sim;
pub mod heartbeat;
pub mod nats;
pub mod proxy;
pub mod sidecar;
pub mod tokens;
pub mod transmitter;
pub mod wait;

pub use cli::{CliOutput, Denylistctl};
pub use events::{EventPublisher, StreamOptions, init_stream, stream_state};
pub use fleet::{
    Fleet, PROPAGATION_TIMEOUT, expect_all_tokens, expect_reason, expect_sequence, fleet_status,
};
pub use nats::{NatsCluster, NatsServer};
pub use proxy::TcpProxy;
pub use sidecar::{READY_TIMEOUT, Sidecar, SidecarOptions, StalenessPolicy};
pub use tokens::{Issuer, now_secs, unique};
pub use wait::{STEP, holds_for, wait_for, wait_until, within, within_for};
