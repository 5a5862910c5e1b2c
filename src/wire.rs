//! The wire contract shared by the server and the client commands: the generated protobuf
//! types and tonic stubs of `proto/aelabel/v1/labeller.proto` and `jobs.proto`, their
//! descriptor set, and the names of gRPC status codes. Nothing here decides anything; it only names what travels.

#[allow(missing_docs, clippy::all, clippy::pedantic)]
mod generated {
    tonic::include_proto!("aelabel.v1");
}

pub use generated::*;

/// The Open Inference Protocol's messages and stubs (package `inference`,
/// `proto/inference/grpc_service.proto`), as Triton and KServe clients name them.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod inference {
    tonic::include_proto!("inference");

    /// The encoded descriptor set of `inference`, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/inference_descriptor.bin"));
}

/// The encoded descriptor set of `aelabel.v1`, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/aelabel_descriptor.bin"));

/// The gRPC status code as its canonical name (`OK`, `INVALID_ARGUMENT`, …), as metrics
/// labels, logs and client error messages show it.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}
