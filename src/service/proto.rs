//! The generated wire types and tonic stubs of `proto/aelabel/v1/labeller.proto`.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("aelabel.v1");

/// The encoded descriptor set of `aelabel.v1`, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/aelabel_descriptor.bin"));
