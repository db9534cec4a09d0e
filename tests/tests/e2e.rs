//! End-to-end tests of denylist: real `nats-server` processes (single and clustered),
//! real `denylist-sidecar` processes, real faults (killed servers and sidecars, cut
//! connections, forged events). One test binary; the harness is the `denylist_tests`
//! library (`tests/src/`). See `tests/README.md` for how to run them.

// The crate root is `tests/e2e.rs`, so its modules live in `tests/e2e/`.
#[path = "e2e/authenticity.rs"]
mod authenticity;
#[path = "e2e/catch_up.rs"]
mod catch_up;
#[path = "e2e/cli_failover.rs"]
mod cli_failover;
#[path = "e2e/cluster.rs"]
mod cluster;
#[path = "e2e/denylistctl.rs"]
mod denylistctl;
#[path = "e2e/direct_get.rs"]
mod direct_get;
#[path = "e2e/fleet_status.rs"]
mod fleet_status;
#[path = "e2e/harness.rs"]
mod harness;
#[path = "e2e/heartbeat.rs"]
mod heartbeat;
#[path = "e2e/local_state.rs"]
mod local_state;
#[path = "e2e/propagation.rs"]
mod propagation;
#[path = "e2e/receiver.rs"]
mod receiver;
#[path = "e2e/receiver_stream.rs"]
mod receiver_stream;
#[path = "e2e/scopes.rs"]
mod scopes;
#[path = "e2e/snapshot.rs"]
mod snapshot;
#[path = "e2e/staleness.rs"]
mod staleness;
#[path = "e2e/startup.rs"]
mod startup;
#[path = "e2e/stream_changes.rs"]
mod stream_changes;
#[path = "e2e/watch.rs"]
mod watch;
