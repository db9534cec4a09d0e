//! Compiles `denylist/v1/*.proto` with protox (pure Rust, no system `protoc`) and
//! generates prost types and tonic stubs. The encoded descriptor set is written to
//! `OUT_DIR` too, because protox does not hand it to tonic-reflection for us.

use std::path::PathBuf;

use prost::Message;

const PROTOS: &[&str] = &[
    "denylist/v1/events.proto",
    "denylist/v1/verifier.proto",
    "denylist/v1/publisher.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=denylist");
    let fds = protox::compile(PROTOS, ["."])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("denylist_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
