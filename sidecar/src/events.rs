//! Revocation events. The model lives in `denylist-proto` (it is part of the wire
//! contract, shared with the publisher); re-exported here for the sidecar's modules.

pub use denylist_proto::events::*;
