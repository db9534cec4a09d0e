//! The wire contract of denylist (`denylist.v1`): generated protobuf types and
//! gRPC stubs behind [`pb`], the validated revocation [`events`] model, and the
//! Ed25519 [`envelope`] that signs events for NATS, and the signed [`snapshot`]s
//! that let a starting sidecar skip replaying the whole stream; [`trust`] reads the
//! trusted publisher keys as a sidecar's configuration lists them.
//!
//! [`FILE_DESCRIPTOR_SET`] is the encoded descriptor set for gRPC server reflection.

pub mod envelope;
pub mod events;
pub mod snapshot;
pub mod subjects;
pub mod trust;

/// The `denylist.v1` package: messages, enums, and the `Verifier` / `Publisher`
/// client and server stubs.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("denylist.v1");
}

/// Encoded `FileDescriptorSet` of every `denylist.v1` file, for tonic-reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/denylist_descriptor.bin"));
