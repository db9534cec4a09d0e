//! Generated protobuf types and gRPC stubs of denylist (`denylist.v1`).
//!
//! Everything generated sits behind [`pb`]; [`FILE_DESCRIPTOR_SET`] is the encoded
//! descriptor set for gRPC server reflection.

/// The `denylist.v1` package: messages, enums, and the `Verifier` / `Publisher`
/// client and server stubs.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("denylist.v1");
}

/// Encoded `FileDescriptorSet` of every `denylist.v1` file, for tonic-reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/denylist_descriptor.bin"));
