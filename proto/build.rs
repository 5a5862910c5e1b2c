//! Compiles `proto/` with protox (pure Rust, no protoc) into tonic/prost code and a descriptor
//! set for server reflection.

use protox::prost::Message;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Compiled together: one descriptor set, so reflection sees every service.
    let protos = [
        "proto/aelabel/v1/labeller.proto",
        "proto/aelabel/v1/jobs.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("aelabel_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    // The service's codec refuses undecodable requests naming the bad image (service::codec).
    // Image bytes as `bytes::Bytes`: decoding a request slices its buffer instead of copying
    // megabytes of pixels on the async reactor.
    tonic_prost_build::configure()
        .codec_path("crate::service::codec::WireCodec")
        .bytes(".aelabel.v1.RawImage.pixels")
        .bytes(".aelabel.v1.Image.encoded")
        .compile_fds(descriptors)?;
    Ok(())
}
