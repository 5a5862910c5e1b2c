//! The Open Inference Protocol's tensors as plain types, shared by the gRPC and REST doors:
//! the models aelabel offers and what they declare, an inference request's `images` turned
//! into an [`ImageBatch`] (or refused naming the tensor), and results turned into output
//! tensors. Nothing here knows about protobuf or JSON.

use crate::inference::{ImageBatch, Output, Prediction};
use crate::model::ModelMeta;
use prost::bytes::Bytes;

/// The one input every model takes.
pub const IMAGES: &str = "images";

/// Why a request is refused; each message names the tensor or field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OipError {
    /// No such model, version or route (`NOT_FOUND`, HTTP 404).
    #[error("{0}")]
    NotFound(String),
    /// The request breaks a rule (`INVALID_ARGUMENT`, HTTP 400).
    #[error("{0}")]
    Invalid(String),
    /// A limit is hit for now (`RESOURCE_EXHAUSTED`, HTTP 429).
    #[error("{0}")]
    Busy(String),
    /// The server cannot answer now (`UNAVAILABLE`, HTTP 503).
    #[error("{0}")]
    Unavailable(String),
    /// The server's own fault (`INTERNAL`, HTTP 500).
    #[error("{0}")]
    Internal(String),
}

fn invalid(message: String) -> OipError {
    OipError::Invalid(message)
}

/// A tensor element type, named as the protocol names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Datatype {
    /// 8-bit unsigned pixels.
    Uint8,
    /// 32-bit floats.
    Fp32,
    /// 64-bit signed integers.
    Int64,
}

impl Datatype {
    /// The protocol's name (`UINT8`, `FP32`, `INT64`).
    pub fn name(self) -> &'static str {
        match self {
            Datatype::Uint8 => "UINT8",
            Datatype::Fp32 => "FP32",
            Datatype::Int64 => "INT64",
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Datatype::Uint8 => 1,
            Datatype::Fp32 => 4,
            Datatype::Int64 => 8,
        }
    }
}

/// The models aelabel offers over the protocol, all answered by the one served checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelKind {
    /// `aelabel-encoder`: images → `embedding`.
    Encoder,
    /// `aelabel-classifier`: images → `probabilities`, `class_index`, `confidence`.
    Classifier,
    /// `aelabel-decoder`: images → `reconstruction` through the whole autoencoder.
    Decoder,
}

impl ModelKind {
    /// Every model, in the order listings show them.
    pub const ALL: [ModelKind; 3] = [
        ModelKind::Encoder,
        ModelKind::Classifier,
        ModelKind::Decoder,
    ];

    /// The model's protocol name.
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Encoder => "aelabel-encoder",
            ModelKind::Classifier => "aelabel-classifier",
            ModelKind::Decoder => "aelabel-decoder",
        }
    }

    /// The model called `name`, or `NOT_FOUND` listing the ones there are.
    pub fn find(name: &str) -> Result<Self, OipError> {
        Self::ALL.into_iter().find(|m| m.name() == name).ok_or_else(|| {
            OipError::NotFound(format!(
                "model `{name}` is not served here; the models are aelabel-encoder, aelabel-classifier and aelabel-decoder"
            ))
        })
    }

    /// The output tensors this model produces for `meta`'s checkpoint, batch dimension -1.
    pub fn outputs(self, meta: &ModelMeta) -> Vec<TensorSpec> {
        let spec = |name, datatype, shape: &[i64]| TensorSpec {
            name,
            datatype,
            shape: shape.to_vec(),
        };
        match self {
            ModelKind::Encoder => {
                let width = meta.widths.last().copied().unwrap_or(0) as i64;
                vec![spec("embedding", Datatype::Fp32, &[-1, width])]
            }
            ModelKind::Classifier => {
                let classes = meta.class_names.len() as i64;
                vec![
                    spec("probabilities", Datatype::Fp32, &[-1, classes]),
                    spec("class_index", Datatype::Int64, &[-1]),
                    spec("confidence", Datatype::Fp32, &[-1]),
                ]
            }
            ModelKind::Decoder => {
                let pixels = (meta.input_width * meta.input_height) as i64;
                vec![spec("reconstruction", Datatype::Fp32, &[-1, pixels])]
            }
        }
    }
}

/// A tensor's declared name, datatype and shape (-1: any size).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    /// The tensor name.
    pub name: &'static str,
    /// Its element type.
    pub datatype: Datatype,
    /// Its shape, -1 for the batch dimension.
    pub shape: Vec<i64>,
}

/// What `ModelMetadata` answers for one model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelMetadata {
    /// The model name.
    pub name: &'static str,
    /// The one version served.
    pub version: String,
    /// The `images` input (the declared form; `[N, H*W]` and FP32 are accepted as well).
    pub inputs: Vec<TensorSpec>,
    /// The outputs.
    pub outputs: Vec<TensorSpec>,
}

impl ModelMetadata {
    /// The metadata of `kind` served from `meta`'s checkpoint.
    pub fn new(kind: ModelKind, meta: &ModelMeta) -> Self {
        Self {
            name: kind.name(),
            version: meta.version.clone(),
            inputs: vec![TensorSpec {
                name: IMAGES,
                datatype: Datatype::Uint8,
                shape: vec![-1, meta.input_height as i64, meta.input_width as i64],
            }],
            outputs: kind.outputs(meta),
        }
    }
}

/// An input tensor's values as they arrived.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    /// Little-endian bytes (`raw_input_contents` or the REST binary extension).
    Raw(Bytes),
    /// Typed unsigned integers (`uint_contents`, or JSON numbers).
    Uint(Vec<u32>),
    /// Typed floats (`fp32_contents`, or JSON numbers).
    Fp32(Vec<f32>),
    /// Typed values of a datatype aelabel does not take; the datatype check refuses them.
    Other,
}

/// One input tensor of a request.
#[derive(Clone, Debug, PartialEq)]
pub struct InputTensor {
    /// The tensor name.
    pub name: String,
    /// The datatype as sent.
    pub datatype: String,
    /// The shape as sent.
    pub shape: Vec<i64>,
    /// The values.
    pub data: TensorData,
}

/// An output the client asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestedOutput {
    /// The output name.
    pub name: String,
}

/// An inference request, whichever door it came through.
#[derive(Clone, Debug, PartialEq)]
pub struct InferRequest {
    /// The model name.
    pub model: String,
    /// The version asked for; empty for the served one.
    pub version: String,
    /// The request id, echoed back.
    pub id: String,
    /// The inputs.
    pub inputs: Vec<InputTensor>,
    /// The outputs asked for; empty for all.
    pub outputs: Vec<RequestedOutput>,
}

/// A request checked against the served model: the images to run and the outputs to send.
#[derive(Debug)]
pub struct ParsedInfer {
    /// The model asked for.
    pub kind: ModelKind,
    /// The images at the model's input size.
    pub images: ImageBatch,
    /// The outputs to send, in the order to send them (the request's, else the model's).
    pub outputs: Vec<TensorSpec>,
}

/// The version `asked` resolves to on a server serving `served`; `NOT_FOUND` naming the
/// served one otherwise.
pub fn check_version(kind: ModelKind, asked: &str, served: &str) -> Result<(), OipError> {
    if asked.is_empty() || asked == served {
        Ok(())
    } else {
        Err(OipError::NotFound(format!(
            "model {} has no version `{asked}` here; this server serves version `{served}` (leave the version empty for it)",
            kind.name()
        )))
    }
}

/// The size of a shape's dimensions as a count of elements, refusing negative ones.
fn element_count(shape: &[i64]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| {
        usize::try_from(d).ok().and_then(|d| n.checked_mul(d))
    })
}

/// Checks `request` against the served model (`meta`) and the batch limit, and turns its
/// `images` into pixels. FP32 values are scaled by 255 and rounded to the 8-bit pixels the
/// model computes on.
pub fn parse(
    request: InferRequest,
    meta: &ModelMeta,
    max_batch: usize,
) -> Result<ParsedInfer, OipError> {
    let kind = ModelKind::find(&request.model)?;
    check_version(kind, &request.version, &meta.version)?;
    let declared = kind.outputs(meta);
    let outputs = if request.outputs.is_empty() {
        declared
    } else {
        request
            .outputs
            .iter()
            .enumerate()
            .map(|(i, asked)| {
                declared
                    .iter()
                    .find(|d| d.name == asked.name)
                    .cloned()
                    .ok_or_else(|| {
                        let names: Vec<_> = declared.iter().map(|d| d.name).collect();
                        invalid(format!(
                            "outputs[{i}]: model {} has no output `{}`; its outputs are {}",
                            kind.name(),
                            asked.name,
                            names.join(", ")
                        ))
                    })
            })
            .collect::<Result<_, _>>()?
    };
    let mut inputs = request.inputs.into_iter();
    let input = match (inputs.next(), inputs.next()) {
        (Some(input), None) => input,
        (None, _) => {
            return Err(invalid(format!(
                "inputs: the request has no input; model {} takes one input `images`",
                kind.name()
            )))
        }
        (Some(_), Some(extra)) => {
            return Err(invalid(format!(
                "inputs[1]: unexpected input `{}`; model {} takes one input `images`",
                extra.name,
                kind.name()
            )))
        }
    };
    if input.name != IMAGES {
        return Err(invalid(format!(
            "inputs[0]: unknown input `{}`; model {} takes one input `images`",
            input.name,
            kind.name()
        )));
    }
    let images = parse_images(input, meta, max_batch)?;
    Ok(ParsedInfer {
        kind,
        images,
        outputs,
    })
}

/// The `images` tensor as pixels at the model's input size.
fn parse_images(
    input: InputTensor,
    meta: &ModelMeta,
    max_batch: usize,
) -> Result<ImageBatch, OipError> {
    let (height, width) = (meta.input_height as i64, meta.input_width as i64);
    let pixels = height * width;
    let datatype = match input.datatype.as_str() {
        "UINT8" => Datatype::Uint8,
        "FP32" => Datatype::Fp32,
        other => {
            return Err(invalid(format!(
                "images: datatype {other} is not accepted; send UINT8 [N, {height}, {width}] or [N, {pixels}], or FP32 [N, {pixels}] in [0, 1]"
            )))
        }
    };
    let shape = input.shape.as_slice();
    let shape_ok = match (datatype, shape) {
        (Datatype::Uint8, [n, h, w]) => *n >= 0 && (*h, *w) == (height, width),
        (_, [n, p]) => *n >= 0 && *p == pixels,
        _ => false,
    };
    if !shape_ok {
        let wanted = match datatype {
            Datatype::Uint8 => format!("[N, {height}, {width}] or [N, {pixels}]"),
            _ => format!("[N, {pixels}]"),
        };
        return Err(invalid(format!(
            "images: shape {shape:?} is not {wanted} for {} images of this model ({width}×{height})",
            datatype.name()
        )));
    }
    let n = usize::try_from(shape[0]).unwrap_or(0);
    if n == 0 {
        return Err(invalid(
            "images: the batch is empty; send at least one image".into(),
        ));
    }
    if n > max_batch {
        return Err(invalid(format!(
            "images: a batch of {n} images is more than this server's --max-batch of {max_batch}; split the request"
        )));
    }
    let count = element_count(shape).unwrap_or(usize::MAX);
    let pixels = match (datatype, input.data) {
        (_, TensorData::Raw(bytes)) => {
            let want = count.saturating_mul(datatype.size());
            if bytes.len() != want {
                return Err(invalid(format!(
                    "images: the raw contents hold {} bytes but {} shape {shape:?} needs {want}",
                    bytes.len(),
                    datatype.name()
                )));
            }
            match datatype {
                Datatype::Uint8 => bytes.to_vec(),
                _ => fp32_to_pixels(
                    bytes
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                )?,
            }
        }
        (Datatype::Uint8, TensorData::Uint(values)) => {
            check_count(values.len(), count, shape, datatype)?;
            values
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    u8::try_from(v).map_err(|_| {
                        invalid(format!(
                            "images: element {i} is {v}, not a UINT8 in 0..=255"
                        ))
                    })
                })
                .collect::<Result<_, _>>()?
        }
        (Datatype::Fp32, TensorData::Fp32(values)) => {
            check_count(values.len(), count, shape, datatype)?;
            fp32_to_pixels(values.into_iter())?
        }
        _ => {
            return Err(invalid(format!(
                "images: the contents are not of datatype {}; fill {} (or send raw contents)",
                datatype.name(),
                match datatype {
                    Datatype::Uint8 => "uint_contents",
                    _ => "fp32_contents",
                }
            )))
        }
    };
    ImageBatch::new(pixels, (height * width) as usize)
        .ok_or_else(|| OipError::Internal("images: parsed pixels do not fill whole images".into()))
}

fn check_count(got: usize, want: usize, shape: &[i64], datatype: Datatype) -> Result<(), OipError> {
    if got == want {
        Ok(())
    } else {
        Err(invalid(format!(
            "images: the contents hold {got} elements but {} shape {shape:?} needs {want}",
            datatype.name()
        )))
    }
}

/// FP32 values in [0, 1] as 8-bit pixels (×255, rounded), refusing any outside.
fn fp32_to_pixels(values: impl Iterator<Item = f32>) -> Result<Vec<u8>, OipError> {
    values
        .enumerate()
        .map(|(i, v)| {
            if (0.0..=1.0).contains(&v) {
                Ok((v * 255.0).round() as u8)
            } else {
                Err(invalid(format!(
                    "images: element {i} is {v}, outside [0, 1]; FP32 pixels are intensities from 0 to 1"
                )))
            }
        })
        .collect()
}

/// An output tensor's values.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorValues {
    /// FP32 values.
    Fp32(Vec<f32>),
    /// INT64 values.
    Int64(Vec<i64>),
}

impl TensorValues {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            TensorValues::Fp32(v) => v.len(),
            TensorValues::Int64(v) => v.len(),
        }
    }

    /// True when there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values as little-endian bytes (the raw form).
    pub fn to_le_bytes(&self) -> Vec<u8> {
        match self {
            TensorValues::Fp32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorValues::Int64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }
}

/// One output tensor of an answer.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputTensor {
    /// Name, datatype and shape (the batch dimension filled in).
    pub spec: TensorSpec,
    /// The values, row-major.
    pub values: TensorValues,
}

/// What the engine computed for one request, before it becomes output tensors.
pub enum Computed {
    /// An encoder or decoder output.
    Rows(Output),
    /// The classifier's predictions.
    Predictions(Vec<Prediction>),
}

impl Computed {
    /// Values per image.
    pub fn width(&self) -> usize {
        match self {
            Computed::Rows(output) => output.width,
            Computed::Predictions(p) => p.first().map_or(0, |p| p.probabilities.len() + 2),
        }
    }
}

/// The output tensors `outputs` from what the engine computed for `n` images.
pub fn output_tensors(
    outputs: &[TensorSpec],
    mut computed: Computed,
    n: usize,
) -> Vec<OutputTensor> {
    outputs
        .iter()
        .map(|spec| {
            let values = match (&mut computed, spec.name) {
                // Encoder and decoder have one output each: move the rows, do not copy them.
                (Computed::Rows(output), _) => {
                    TensorValues::Fp32(std::mem::take(&mut output.values))
                }
                (Computed::Predictions(p), "class_index") => {
                    TensorValues::Int64(p.iter().map(|p| p.class_index as i64).collect())
                }
                (Computed::Predictions(p), "confidence") => {
                    TensorValues::Fp32(p.iter().map(|p| p.confidence).collect())
                }
                (Computed::Predictions(p), _) => TensorValues::Fp32(
                    p.iter()
                        .flat_map(|p| p.probabilities.iter().copied())
                        .collect(),
                ),
            };
            let mut shape = spec.shape.clone();
            shape[0] = n as i64;
            OutputTensor {
                spec: TensorSpec {
                    shape,
                    ..spec.clone()
                },
                values,
            }
        })
        .collect()
}
