//! The Open Inference Protocol's REST door (`/v2/...`) on the HTTP port: JSON tensors (`data`
//! flat or nested) and Triton's binary tensor data extension (`Inference-Header-Content-Length`,
//! `binary_data_size`, `binary_data` and `binary_data_output`), which `tritonclient.http` uses
//! by default. Errors answer `{"error": "..."}` with 400, 404, 413, 429 or 503.

use super::grpc::EXTENSIONS;
use super::tensors::{
    InferRequest, InputTensor, ModelMetadata, OipError, RequestedOutput, TensorData, TensorSpec,
    TensorValues,
};
use super::{InferAnswer, OpenInference, SERVER_NAME};
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;

/// The header that splits a binary request or answer into its JSON part and the tensor bytes.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// The facade and the body limit, shared by every route.
#[derive(Clone)]
struct Rest {
    oip: OpenInference,
    max_body_bytes: usize,
}

/// The `/v2` routes over `oip`, refusing request bodies over `max_body_bytes`.
pub fn routes(oip: OpenInference, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(|| async { StatusCode::OK }))
        .route("/v2/health/ready", get(server_ready))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/versions/{version}", get(model_metadata))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route(
            "/v2/models/{name}/versions/{version}/ready",
            get(model_ready),
        )
        .route("/v2/models/{name}/infer", post(infer))
        .route("/v2/models/{name}/versions/{version}/infer", post(infer))
        .route("/v2/{*rest}", any(unknown_route))
        .with_state(Rest {
            oip,
            max_body_bytes,
        })
}

/// A refusal as `{"error": "..."}` with its HTTP status.
fn error_response(error: &OipError) -> Response {
    let status = match error {
        OipError::NotFound(_) => StatusCode::NOT_FOUND,
        OipError::Invalid(_) => StatusCode::BAD_REQUEST,
        OipError::Busy(_) => StatusCode::TOO_MANY_REQUESTS,
        OipError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        OipError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    json_response(status, &json!({ "error": error.to_string() }))
}

fn json_response(status: StatusCode, value: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

/// The model name and version (empty when the path names none).
fn model_path(params: &HashMap<String, String>) -> (&str, &str) {
    let get = |key: &str| params.get(key).map_or("", String::as_str);
    (get("name"), get("version"))
}

async fn unknown_route(uri: axum::http::Uri) -> Response {
    error_response(&OipError::NotFound(format!(
        "{}: no such route; the protocol's routes are /v2, /v2/health/{{live,ready}} and /v2/models/NAME[/versions/V][/ready|/infer]",
        uri.path()
    )))
}

async fn server_metadata() -> Response {
    json_response(
        StatusCode::OK,
        &json!({
            "name": SERVER_NAME,
            "version": env!("CARGO_PKG_VERSION"),
            "extensions": EXTENSIONS,
        }),
    )
}

async fn server_ready(State(rest): State<Rest>) -> Response {
    if rest.oip.ready().await {
        StatusCode::OK.into_response()
    } else if !rest.oip.has_model() {
        error_response(&OipError::Unavailable(crate::service::NO_MODEL.into()))
    } else {
        error_response(&OipError::Unavailable(
            "the server is not ready: the model is loading, or the server is shutting down".into(),
        ))
    }
}

async fn model_ready(
    State(rest): State<Rest>,
    Path(params): Path<HashMap<String, String>>,
) -> Response {
    let (name, version) = model_path(&params);
    match rest.oip.model_ready(name, version).await {
        Ok(true) => StatusCode::OK.into_response(),
        Ok(false) if !rest.oip.has_model() => error_response(&OipError::Unavailable(format!(
            "model {name} is not ready: {}",
            crate::service::NO_MODEL
        ))),
        Ok(false) => error_response(&OipError::Unavailable(format!("model {name} is not ready"))),
        Err(e) => error_response(&e),
    }
}

fn spec_json(spec: &TensorSpec) -> Value {
    json!({ "name": spec.name, "datatype": spec.datatype.name(), "shape": spec.shape })
}

fn metadata_json(metadata: &ModelMetadata) -> Value {
    json!({
        "name": metadata.name,
        "versions": [metadata.version],
        "platform": SERVER_NAME,
        "inputs": metadata.inputs.iter().map(spec_json).collect::<Vec<_>>(),
        "outputs": metadata.outputs.iter().map(spec_json).collect::<Vec<_>>(),
    })
}

async fn model_metadata(
    State(rest): State<Rest>,
    Path(params): Path<HashMap<String, String>>,
) -> Response {
    let (name, version) = model_path(&params);
    match rest.oip.metadata(name, version) {
        Ok(metadata) => json_response(StatusCode::OK, &metadata_json(&metadata)),
        Err(e) => error_response(&e),
    }
}

async fn infer(
    State(rest): State<Rest>,
    Path(params): Path<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (name, version) = model_path(&params);
    let (name, version) = (name.to_string(), version.to_string());
    // The slot first: --max-in-flight bounds the bodies held and parsed at once.
    let admitted = match rest.oip.admit().await {
        Ok(admitted) => admitted,
        Err(e) => return error_response(&e),
    };
    let body = match axum::body::to_bytes(body, rest.max_body_bytes).await {
        Ok(body) => body,
        Err(_) => {
            let message = format!(
                "the request body is over the server's limit of {} bytes (--max-message-bytes), or was cut off; send fewer images per request",
                rest.max_body_bytes
            );
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                [(header::CONTENT_TYPE, "application/json")],
                json!({ "error": message }).to_string(),
            )
                .into_response();
        }
    };
    let header_length = match headers
        .get(HEADER_LENGTH)
        .map(|v| v.to_str().ok().and_then(|v| v.trim().parse::<usize>().ok()))
    {
        None => None,
        Some(Some(length)) => Some(length),
        Some(None) => {
            return error_response(&OipError::Invalid(format!(
                "{HEADER_LENGTH}: not a byte count; give the length of the JSON part"
            )))
        }
    };
    // Parsing JSON tensors is real work: keep it off the reactor.
    let parsed =
        tokio::task::spawn_blocking(move || parse_body(&body, header_length, name, version)).await;
    let (request, binary) = match parsed {
        Ok(Ok(parsed)) => parsed,
        Ok(Err(e)) => return error_response(&e),
        Err(_) => return error_response(&OipError::Internal("parsing stopped".into())),
    };
    let answer = match rest.oip.infer("v2/infer", request, Some(admitted)).await {
        Ok(answer) => answer,
        Err(e) => return error_response(&e),
    };
    match tokio::task::spawn_blocking(move || answer_body(answer, &binary)).await {
        Ok(response) => response,
        Err(_) => error_response(&OipError::Internal("answering stopped".into())),
    }
}

/// The parameters aelabel reads; others are ignored.
#[derive(Default, Deserialize)]
struct Parameters {
    binary_data_size: Option<usize>,
    binary_data: Option<bool>,
    binary_data_output: Option<bool>,
}

#[derive(Deserialize)]
struct RestInput {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Parameters,
    #[serde(default)]
    data: Option<Numbers>,
}

#[derive(Deserialize)]
struct RestOutput {
    name: String,
    #[serde(default)]
    parameters: Parameters,
}

#[derive(Deserialize)]
struct RestRequest {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Parameters,
    inputs: Vec<RestInput>,
    #[serde(default)]
    outputs: Vec<RestOutput>,
}

/// Which outputs go back as binary data: by name, and the default for the others.
struct BinaryOutputs {
    named: HashMap<String, bool>,
    default: bool,
}

/// A request body (JSON, then the binary tensors when `header_length` is given) as a plain
/// request.
fn parse_body(
    body: &Bytes,
    header_length: Option<usize>,
    model: String,
    version: String,
) -> Result<(InferRequest, BinaryOutputs), OipError> {
    let header_length = header_length.unwrap_or(body.len());
    if header_length > body.len() {
        return Err(OipError::Invalid(format!(
            "{HEADER_LENGTH}: {header_length} is more than the body's {} bytes",
            body.len()
        )));
    }
    let request: RestRequest = serde_json::from_slice(&body[..header_length])
        .map_err(|e| OipError::Invalid(format!("request body: not an inference request: {e}")))?;
    let mut offset = header_length;
    let mut inputs = Vec::with_capacity(request.inputs.len());
    for (i, input) in request.inputs.into_iter().enumerate() {
        let data = match (input.parameters.binary_data_size, input.data) {
            (Some(size), _) => {
                let end = offset.checked_add(size).filter(|&end| end <= body.len());
                let end = end.ok_or_else(|| {
                    OipError::Invalid(format!(
                        "{}: binary_data_size {size} is more than the {} bytes left after the JSON header",
                        input.name,
                        body.len() - offset
                    ))
                })?;
                let bytes = body.slice(offset..end);
                offset = end;
                TensorData::Raw(bytes)
            }
            (None, Some(data)) => typed_data(&input.name, &input.datatype, data.0)?,
            (None, None) => {
                return Err(OipError::Invalid(format!(
                    "inputs[{i}] ({}): no data; give `data` or a binary_data_size parameter",
                    input.name
                )))
            }
        };
        inputs.push(InputTensor {
            name: input.name,
            datatype: input.datatype,
            shape: input.shape,
            data,
        });
    }
    if offset != body.len() {
        return Err(OipError::Invalid(format!(
            "request body: {} bytes after the inputs' binary data; binary_data_size must cover every byte",
            body.len() - offset
        )));
    }
    let binary = BinaryOutputs {
        named: request
            .outputs
            .iter()
            .filter_map(|o| o.parameters.binary_data.map(|b| (o.name.clone(), b)))
            .collect(),
        default: request.parameters.binary_data_output.unwrap_or(false),
    };
    let outputs = request
        .outputs
        .into_iter()
        .map(|o| RequestedOutput { name: o.name })
        .collect();
    Ok((
        InferRequest {
            model,
            version,
            id: request.id.unwrap_or_default(),
            inputs,
            outputs,
        },
        binary,
    ))
}

/// JSON `data` as typed values of `datatype`.
fn typed_data(name: &str, datatype: &str, numbers: Vec<f64>) -> Result<TensorData, OipError> {
    Ok(match datatype {
        "UINT8" => TensorData::Uint(
            numbers
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    if v.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&v) {
                        Ok(v as u32)
                    } else {
                        Err(OipError::Invalid(format!(
                            "{name}: data element {i} is {v}, not an unsigned integer"
                        )))
                    }
                })
                .collect::<Result<_, _>>()?,
        ),
        "FP32" => TensorData::Fp32(numbers.iter().map(|&v| v as f32).collect()),
        _ => TensorData::Other,
    })
}

/// A tensor's JSON `data`: numbers, flat or nested in arrays, collected in row-major order
/// while the body is read (no JSON tree in between, so a body costs at most 8 bytes an
/// element beyond itself).
struct Numbers(Vec<f64>);

impl<'de> Deserialize<'de> for Numbers {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut numbers = Vec::new();
        deserializer.deserialize_any(Flatten(&mut numbers))?;
        Ok(Numbers(numbers))
    }
}

/// Appends the numbers of one JSON value (a number or an array of values) to its vector.
struct Flatten<'a>(&'a mut Vec<f64>);

impl<'de> serde::de::Visitor<'de> for Flatten<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("numbers, flat or nested in arrays")
    }

    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.0.push(v as f64);
        Ok(())
    }

    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.0.push(v as f64);
        Ok(())
    }

    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.0.push(v);
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Flatten(&mut *self.0))?.is_some() {}
        Ok(())
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Flatten<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

/// The answer as JSON, with binary outputs appended after it when any are asked for.
fn answer_body(answer: InferAnswer, binary: &BinaryOutputs) -> Response {
    let mut tail = Vec::new();
    let outputs: Vec<Value> = answer
        .outputs
        .iter()
        .map(|output| {
            let name = output.spec.name;
            let mut value = spec_json(&output.spec);
            if *binary.named.get(name).unwrap_or(&binary.default) {
                let bytes = output.values.to_le_bytes();
                value["parameters"] = json!({ "binary_data_size": bytes.len() });
                tail.extend_from_slice(&bytes);
            } else {
                value["data"] = match &output.values {
                    TensorValues::Fp32(v) => json!(v),
                    TensorValues::Int64(v) => json!(v),
                };
            }
            value
        })
        .collect();
    let mut header = json!({
        "model_name": answer.model,
        "model_version": answer.version,
        "outputs": outputs,
    });
    if !answer.id.is_empty() {
        header["id"] = json!(answer.id);
    }
    let header = header.to_string();
    if tail.is_empty() {
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            header,
        )
            .into_response();
    }
    let length = HeaderValue::from(header.len());
    let mut body = header.into_bytes();
    body.append(&mut tail);
    let mut response = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/octet-stream")],
        body,
    )
        .into_response();
    response.headers_mut().insert(HEADER_LENGTH, length);
    response
}
