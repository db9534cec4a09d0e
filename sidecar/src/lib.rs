//! The denylist sidecar: verifies JWTs locally and rejects revoked ones.
//!
//! The Verify path reads as a straight line — [`jws`] reads the header with
//! `jsonwebtoken::decode_header` and applies the header policy, [`keys`] finds the
//! key, [`verify`] has `jsonwebtoken::decode` check the signature and registered
//! claims and adds denylist's own claim checks, [`denylist`] answers whether a rule
//! revokes the token. [`app`] wires the pieces to the gRPC
//! and admin listeners; `main.rs` only parses flags and waits for a signal.

pub mod admin;
pub mod algorithm;
pub mod app;
pub mod clock;
pub mod config;
pub mod denylist;
pub mod events;
pub mod ext_authz;
pub mod fleet;
pub mod forward_auth;
pub mod freshness;
pub mod grpc;
pub mod jws;
pub mod keys;
pub mod publisher;
pub mod standalone;
pub mod state;
pub mod sync;
pub mod telemetry;
#[cfg(test)]
mod testing;
pub mod verify;
pub mod watch;
