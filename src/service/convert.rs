//! The one place where wire types become domain types and back.
//!
//! A request is parsed whole before any work: images become one [`ImageBatch`] at the model's
//! input size, or the request is refused with `INVALID_ARGUMENT` naming the field and the index
//! of the first bad image.

use crate::data::{decode_to_input, raw_to_input, ImageError, ImageLimits};
use crate::inference::{ImageBatch, Output, Prediction};
use crate::model::ModelMeta;
use crate::wire as pb;
use tonic::Status;

/// What the server accepts in one request.
#[derive(Clone, Copy, Debug)]
pub struct ImageRules {
    /// Model input width.
    pub width: u32,
    /// Model input height.
    pub height: u32,
    /// Size limits before decoding.
    pub limits: ImageLimits,
    /// Most images in one request.
    pub max_batch: usize,
    /// Bytes all in-flight decodes together may hold (decoded pixels at their widest).
    pub decode_budget: u64,
}

/// Peak bytes preparing `images` can hold: each encoded file at its header's size and widest
/// pixel type, each raw image that needs resizing at its own size. Images that validation
/// refuses cost nothing, so that they are told what is wrong rather than to retry later.
pub fn decode_cost(images: &[pb::Image], rules: &ImageRules) -> u64 {
    images
        .iter()
        .map(|i| match &i.data {
            Some(pb::image::Data::Encoded(bytes)) => crate::data::decode_cost(bytes, rules.limits),
            Some(pb::image::Data::Raw(raw))
                if (raw.width, raw.height) != (rules.width, rules.height)
                    && raw.width <= rules.limits.max_side
                    && raw.height <= rules.limits.max_side
                    && raw.pixels.len() as u64 == u64::from(raw.width) * u64::from(raw.height) =>
            {
                u64::from(raw.width) * u64::from(raw.height) * 2
            }
            _ => 0,
        })
        .sum()
}

/// A validated request's images: client ids and pixels at the model's input size.
#[derive(Debug)]
pub struct ParsedImages {
    /// One id per image, as sent (possibly empty).
    pub ids: Vec<String>,
    /// The pixels.
    pub images: ImageBatch,
}

/// True when parsing does real CPU work and so belongs off the async reactor: some image is
/// an encoded file, or raw pixels of another size that must be resized.
pub fn needs_decoding(images: &[pb::Image], rules: &ImageRules) -> bool {
    images.iter().any(|i| match &i.data {
        Some(pb::image::Data::Encoded(_)) => true,
        Some(pb::image::Data::Raw(raw)) => (raw.width, raw.height) != (rules.width, rules.height),
        None => false,
    })
}

/// Checks the batch size, then turns every image into model-sized pixels.
pub fn parse_images(images: Vec<pb::Image>, rules: &ImageRules) -> Result<ParsedImages, Status> {
    if images.is_empty() {
        return Err(Status::invalid_argument(
            "images: the batch is empty; send at least one image",
        ));
    }
    if images.len() > rules.max_batch {
        return Err(Status::invalid_argument(format!(
            "images: {} images is more than this server's --max-batch of {}; split the request",
            images.len(),
            rules.max_batch
        )));
    }
    let size = (rules.width * rules.height) as usize;
    let target = (rules.width, rules.height);
    let mut pixels = Vec::with_capacity(images.len() * size);
    let mut ids = Vec::with_capacity(images.len());
    for (i, image) in images.into_iter().enumerate() {
        let (field, parsed) = match image.data {
            Some(pb::image::Data::Raw(raw)) => (
                "raw",
                raw_to_input(raw.width, raw.height, raw.pixels, target, rules.limits),
            ),
            Some(pb::image::Data::Encoded(bytes)) => {
                ("encoded", decode_to_input(&bytes, target, rules.limits))
            }
            None => ("data", Err(ImageError::Missing)),
        };
        match parsed {
            Ok(p) => pixels.extend_from_slice(&p),
            Err(e) => {
                return Err(Status::invalid_argument(format!(
                    "images[{i}].{field}: image {i} {e}"
                )))
            }
        }
        ids.push(image.id);
    }
    let images = ImageBatch::new(pixels, size)
        .ok_or_else(|| Status::internal("parsed images do not fill whole images"))?;
    Ok(ParsedImages { ids, images })
}

/// The review threshold of a Label request: the override if valid, else the model's.
pub fn review_threshold(value: Option<f32>, default: f32) -> Result<f32, Status> {
    match value {
        None => Ok(default),
        Some(t) if (0.0..=1.0).contains(&t) => Ok(t),
        Some(t) => Err(Status::invalid_argument(format!(
            "review_threshold: {t} is not a probability; use a value in [0, 1] or leave it unset"
        ))),
    }
}

/// Embeddings in request order.
pub fn encode_response(ids: Vec<String>, output: &Output, version: &str) -> pb::EncodeResponse {
    pb::EncodeResponse {
        embeddings: ids
            .into_iter()
            .enumerate()
            .map(|(i, id)| pb::Embedding {
                id,
                values: output.row(i).to_vec(),
            })
            .collect(),
        embedding_size: output.width as u32,
        model_version: version.to_string(),
    }
}

/// A decoder value in [0, 1] as an 8-bit pixel.
fn to_pixel(v: f32) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0).round() as u8
}

/// Reconstructions in request order.
pub fn reconstruct_response(
    ids: Vec<String>,
    output: &Output,
    include_values: bool,
    meta: &ModelMeta,
) -> pb::ReconstructResponse {
    pb::ReconstructResponse {
        reconstructions: ids
            .into_iter()
            .enumerate()
            .map(|(i, id)| {
                let row = output.row(i);
                pb::Reconstruction {
                    id,
                    pixels: row.iter().map(|&v| to_pixel(v)).collect(),
                    values: if include_values {
                        row.to_vec()
                    } else {
                        Vec::new()
                    },
                }
            })
            .collect(),
        width: meta.input_width as u32,
        height: meta.input_height as u32,
        model_version: meta.version.clone(),
    }
}

/// Predictions in request order, paired with the request's image ids.
pub fn label_response(
    ids: Vec<String>,
    predictions: Vec<Prediction>,
    threshold: f32,
    version: &str,
) -> pb::LabelResponse {
    pb::LabelResponse {
        predictions: ids
            .into_iter()
            .zip(predictions)
            .map(|(id, p)| pb::Prediction {
                id,
                class_index: p.class_index as u32,
                class_name: p.class_name,
                confidence: p.confidence,
                probabilities: p.probabilities,
                needs_review: p.needs_review,
            })
            .collect(),
        review_threshold: threshold,
        model_version: version.to_string(),
    }
}

/// Numeric leaves of the training summary, keyed by their dotted path.
fn numeric_leaves(prefix: &str, value: &serde_json::Value, out: &mut Vec<(String, f64)>) {
    match value {
        serde_json::Value::Number(n) => {
            if let Some(v) = n.as_f64() {
                out.push((prefix.to_string(), v));
            }
        }
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                numeric_leaves(&path, v, out);
            }
        }
        _ => {}
    }
}

/// What `GetModelInfo` answers.
pub fn model_info(meta: &ModelMeta, max_batch: usize) -> pb::ModelInfo {
    let mut metrics = Vec::new();
    numeric_leaves("", &meta.training, &mut metrics);
    pb::ModelInfo {
        version: meta.version.clone(),
        input_width: meta.input_width as u32,
        input_height: meta.input_height as u32,
        embedding_size: meta.widths.last().copied().unwrap_or(0) as u32,
        class_names: meta.class_names.clone(),
        auto_accept_threshold: meta.auto_accept_threshold,
        training_metrics: metrics.into_iter().collect(),
        training_json: meta.training.to_string(),
        encoder_widths: meta.widths.iter().map(|&w| w as u32).collect(),
        max_batch: max_batch as u32,
    }
}

#[cfg(test)]
mod reactor_tests {
    use super::{decode_cost, needs_decoding, pb, ImageRules};
    use crate::data::ImageLimits;

    #[test]
    fn raw_images_of_another_size_leave_the_reactor_too() {
        let rules = ImageRules {
            width: 28,
            height: 28,
            limits: ImageLimits::default(),
            max_batch: 8,
            decode_budget: 1 << 20,
        };
        let raw = |width, height| pb::Image {
            id: String::new(),
            data: Some(pb::image::Data::Raw(pb::RawImage {
                width,
                height,
                pixels: Vec::new(),
            })),
        };
        assert!(
            !needs_decoding(&[raw(28, 28)], &rules),
            "model-sized raw pixels are a copy"
        );
        assert!(
            needs_decoding(&[raw(28, 28), raw(4096, 4000)], &rules),
            "a resize is work"
        );
        let encoded = pb::Image {
            id: String::new(),
            data: Some(pb::image::Data::Encoded(vec![1])),
        };
        assert!(needs_decoding(&[encoded], &rules));
    }

    #[test]
    fn raw_images_that_validation_refuses_cost_no_decode_budget() {
        let rules = ImageRules {
            width: 28,
            height: 28,
            limits: ImageLimits::default(),
            max_batch: 8,
            decode_budget: 1 << 20,
        };
        let raw = |width, height, pixels| pb::Image {
            id: String::new(),
            data: Some(pb::image::Data::Raw(pb::RawImage {
                width,
                height,
                pixels: vec![0; pixels],
            })),
        };
        assert_eq!(decode_cost(&[raw(40, 30, 1200)], &rules), 2400);
        assert_eq!(decode_cost(&[raw(4000, 4000, 12)], &rules), 0, "short");
        assert_eq!(decode_cost(&[raw(5000, 1, 5000)], &rules), 0, "too wide");
    }
}
