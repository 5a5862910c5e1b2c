//! `inference.GRPCInferenceService` on the gRPC port: protobuf ↔ [`tensors`](super::tensors)
//! mapping around the [`OpenInference`] facade.
//!
//! Outputs come back as `raw_output_contents` when the request sent `raw_input_contents`
//! (what Triton's clients send, and the only form their `InferResult.as_numpy` reads for
//! numeric outputs) and as typed `contents` otherwise.

use super::tensors::{
    Datatype, InferRequest, InputTensor, ModelMetadata, OipError, OutputTensor, RequestedOutput,
    TensorData, TensorSpec, TensorValues,
};
use super::{code, InferAnswer, OpenInference, SERVER_NAME};
use crate::wire::inference as pb;
use pb::grpc_inference_service_server::GrpcInferenceService;
use tonic::{Request, Response, Status};

/// The protocol extensions aelabel's gRPC and REST doors serve (Triton's binary tensor data
/// over REST).
pub const EXTENSIONS: &[&str] = &["binary_tensor_data"];

impl From<OipError> for Status {
    fn from(error: OipError) -> Self {
        Status::new(code(&error), error.to_string())
    }
}

/// A request's tensors in plain types; raw contents are matched to inputs by index.
fn infer_request(request: pb::ModelInferRequest) -> Result<(InferRequest, bool), OipError> {
    let raw = !request.raw_input_contents.is_empty();
    if raw && request.raw_input_contents.len() != request.inputs.len() {
        return Err(OipError::Invalid(format!(
            "raw_input_contents: {} entries for {} inputs; send one per input, in the order of inputs",
            request.raw_input_contents.len(),
            request.inputs.len()
        )));
    }
    let mut raw_contents = request.raw_input_contents.into_iter();
    let inputs = request
        .inputs
        .into_iter()
        .map(|input| {
            let data = match (raw_contents.next(), input.contents) {
                (Some(_), Some(_)) => {
                    return Err(OipError::Invalid(format!(
                        "{}: both contents and raw_input_contents are set; send one of them",
                        input.name
                    )))
                }
                (Some(bytes), None) => TensorData::Raw(bytes),
                (None, Some(c)) if !c.uint_contents.is_empty() => TensorData::Uint(c.uint_contents),
                (None, Some(c)) if !c.fp32_contents.is_empty() => TensorData::Fp32(c.fp32_contents),
                (None, Some(_)) | (None, None) => match input.datatype.as_str() {
                    "UINT8" => TensorData::Uint(Vec::new()),
                    "FP32" => TensorData::Fp32(Vec::new()),
                    _ => TensorData::Other,
                },
            };
            Ok(InputTensor {
                name: input.name,
                datatype: input.datatype,
                shape: input.shape,
                data,
            })
        })
        .collect::<Result<_, _>>()?;
    let outputs = request
        .outputs
        .into_iter()
        .map(|o| RequestedOutput { name: o.name })
        .collect();
    Ok((
        InferRequest {
            model: request.model_name,
            version: request.model_version,
            id: request.id,
            inputs,
            outputs,
        },
        raw,
    ))
}

fn tensor_metadata(spec: TensorSpec) -> pb::model_metadata_response::TensorMetadata {
    pb::model_metadata_response::TensorMetadata {
        name: spec.name.into(),
        datatype: spec.datatype.name().into(),
        shape: spec.shape,
    }
}

fn metadata_response(metadata: ModelMetadata) -> pb::ModelMetadataResponse {
    pb::ModelMetadataResponse {
        name: metadata.name.into(),
        versions: vec![metadata.version],
        platform: SERVER_NAME.into(),
        inputs: metadata.inputs.into_iter().map(tensor_metadata).collect(),
        outputs: metadata.outputs.into_iter().map(tensor_metadata).collect(),
    }
}

fn infer_response(answer: InferAnswer, raw: bool) -> pb::ModelInferResponse {
    let mut raw_outputs = Vec::new();
    let outputs = answer
        .outputs
        .into_iter()
        .map(|OutputTensor { spec, values }| {
            let contents = if raw {
                raw_outputs.push(values.to_le_bytes().into());
                None
            } else {
                Some(match values {
                    TensorValues::Fp32(v) => pb::InferTensorContents {
                        fp32_contents: v,
                        ..Default::default()
                    },
                    TensorValues::Int64(v) => pb::InferTensorContents {
                        int64_contents: v,
                        ..Default::default()
                    },
                })
            };
            debug_assert!(matches!(spec.datatype, Datatype::Fp32 | Datatype::Int64));
            pb::model_infer_response::InferOutputTensor {
                name: spec.name.into(),
                datatype: spec.datatype.name().into(),
                shape: spec.shape,
                parameters: Default::default(),
                contents,
            }
        })
        .collect();
    pb::ModelInferResponse {
        model_name: answer.model.into(),
        model_version: answer.version,
        id: answer.id,
        parameters: Default::default(),
        outputs,
        raw_output_contents: raw_outputs,
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for OpenInference {
    async fn server_live(
        &self,
        _request: Request<pb::ServerLiveRequest>,
    ) -> Result<Response<pb::ServerLiveResponse>, Status> {
        // Answering at all is being live; readiness is what follows the model.
        Ok(Response::new(pb::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _request: Request<pb::ServerReadyRequest>,
    ) -> Result<Response<pb::ServerReadyResponse>, Status> {
        Ok(Response::new(pb::ServerReadyResponse {
            ready: self.ready().await,
        }))
    }

    async fn model_ready(
        &self,
        request: Request<pb::ModelReadyRequest>,
    ) -> Result<Response<pb::ModelReadyResponse>, Status> {
        let request = request.into_inner();
        let ready = OpenInference::model_ready(self, &request.name, &request.version).await?;
        Ok(Response::new(pb::ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _request: Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        Ok(Response::new(pb::ServerMetadataResponse {
            name: SERVER_NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: EXTENSIONS.iter().map(|e| e.to_string()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        let request = request.into_inner();
        let metadata = self.metadata(&request.name, &request.version)?;
        Ok(Response::new(metadata_response(metadata)))
    }

    async fn model_infer(
        &self,
        request: Request<pb::ModelInferRequest>,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        let (request, raw) = infer_request(request.into_inner())?;
        let answer = self.infer("ModelInfer", request, None).await?;
        let elements = answer.outputs.iter().map(|o| o.values.len()).sum();
        let response = super::off_reactor(elements, move || infer_response(answer, raw)).await?;
        Ok(Response::new(response))
    }
}
