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

    // The Open Inference Protocol keeps prost's own codec (its messages carry tensors, not
    // `aelabel.v1` images) and its own descriptor set; raw tensor bytes as `Bytes` for the
    // same reason as images above.
    let inference = "proto/inference/grpc_service.proto";
    println!("cargo:rerun-if-changed={inference}");
    let descriptors = protox::compile([inference], ["proto"])?;
    std::fs::write(
        out.join("inference_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .bytes(".inference.ModelInferRequest.raw_input_contents")
        .bytes(".inference.ModelInferResponse.raw_output_contents")
        .compile_fds(descriptors)?;
    Ok(())
}
