//! Compiles `proto/` with protox (pure Rust, no protoc) into tonic/prost code and a descriptor
//! set for server reflection.

use protox::prost::Message;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/aelabel/v1/labeller.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("aelabel_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    // The service's codec refuses undecodable requests naming the bad image (service::codec).
    tonic_prost_build::configure()
        .codec_path("crate::service::codec::WireCodec")
        .compile_fds(descriptors)?;
    Ok(())
}
