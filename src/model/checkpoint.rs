//! `model.safetensors`: autoencoder and classifier tensors plus the metadata a server needs.

use super::{autoencoder, classifier_from_scratch, Activation, Decoder, Network};
use rand::SeedableRng;
use safetensors::tensor::{Dtype, TensorView};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Value of the `format` header key; bumped when the layout changes incompatibly.
pub const MODEL_FORMAT: &str = "aelabel/1";

/// How an image becomes the network's input, recorded in every checkpoint (`preprocessing`
/// header key) so a server reproduces the training data's preparation exactly: any colour
/// type to 8-bit luma, resized to the input size with a triangle filter, each byte scaled by
/// 1/255.
pub const PREPROCESSING: &str = r#"{"color":"luma8","resize":"triangle","scale":"pixel/255"}"#;

/// Everything about a trained model besides its tensors; stored in the safetensors header.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    /// Identifies these exact weights (preset and a hash of the tensors).
    pub version: String,
    /// Encoder widths from input to code, e.g. `[784, 100, 30]`; the decoder mirrors them.
    pub widths: Vec<usize>,
    /// Whether the decoder has its own weights or reuses the encoder's transposed.
    pub decoder: Decoder,
    /// Input image width in pixels.
    pub input_width: usize,
    /// Input image height in pixels.
    pub input_height: usize,
    /// Class names in output order.
    pub class_names: Vec<String>,
    /// Max-softmax confidence at or above which a prediction is auto-accepted.
    pub auto_accept_threshold: f32,
    /// Training summary (the report's headline metrics).
    pub training: serde_json::Value,
    /// Out-of-fold evidence the threshold was chosen from, so that a threshold for another
    /// target accuracy can be chosen the same way later (`None` in models saved without it).
    pub calibration: Option<OutOfFold>,
}

/// Out-of-fold predictions on the labelled images: each one's confidence and whether it was
/// right, from a classifier that did not train on it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OutOfFold {
    /// Max-softmax confidence per labelled image.
    pub confidence: Vec<f32>,
    /// Whether that prediction was the true class.
    pub correct: Vec<bool>,
}

/// The header form of [`OutOfFold`]: correctness as a string of `0`/`1`, to stay small.
#[derive(Serialize, Deserialize)]
struct OutOfFoldHeader {
    confidence: Vec<f32>,
    correct: String,
}

/// A trained model: the autoencoder (for embeddings and reconstructions) and the classifier.
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    /// Architecture and training metadata.
    pub meta: ModelMeta,
    /// Encoder + decoder; the encoder half yields the embeddings.
    pub autoencoder: Network,
    /// Transferred encoder layers + softmax head.
    pub classifier: Network,
}

/// Why a checkpoint could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// File system error.
    #[error("cannot access model file {path}: {source}")]
    Io {
        /// The model file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not an aelabel safetensors checkpoint.
    #[error("{path} is not an aelabel model: {reason}")]
    Format {
        /// The model file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// One tensor is missing or has the wrong dtype or shape.
    #[error("{path}: tensor `{name}` {reason}")]
    Tensor {
        /// The model file.
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// What was wrong.
        reason: String,
    },
}

impl Model {
    /// Number of classes the classifier predicts.
    pub fn classes(&self) -> usize {
        self.meta.class_names.len()
    }

    /// Width of the embedding (the innermost encoder layer).
    pub fn embedding_size(&self) -> usize {
        self.meta.widths.last().copied().unwrap_or(0)
    }

    /// A 64-bit FNV-1a hash of every tensor value, in name order: equal weights, equal hash.
    pub fn weights_hash(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut params: Vec<_> = self
            .autoencoder
            .params
            .iter()
            .chain(&self.classifier.params)
            .collect();
        params.sort_by(|a, b| a.name.cmp(&b.name));
        for p in params {
            for byte in p
                .name
                .bytes()
                .chain(p.value.iter().flat_map(|v| v.to_le_bytes()))
            {
                h ^= u64::from(byte);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
        h
    }

    /// Writes the model as safetensors with the metadata in the header.
    pub fn save(&self, path: &Path) -> Result<(), CheckpointError> {
        let format_err = |reason: String| CheckpointError::Format {
            path: path.to_path_buf(),
            reason,
        };
        let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = self
            .autoencoder
            .params
            .iter()
            .chain(&self.classifier.params)
            .map(|p| {
                let data = p.value.iter().flat_map(|v| v.to_le_bytes()).collect();
                (p.name.clone(), data, p.shape.to_vec())
            })
            .collect();
        let mut views = Vec::with_capacity(bytes.len());
        for (name, data, shape) in &bytes {
            let view = TensorView::new(Dtype::F32, shape.clone(), data)
                .map_err(|e| format_err(e.to_string()))?;
            views.push((name.clone(), view));
        }
        let mut header = HashMap::new();
        header.insert("format".to_string(), MODEL_FORMAT.to_string());
        header.insert("version".to_string(), self.meta.version.clone());
        let json =
            |v: &serde_json::Value| serde_json::to_string(v).map_err(|e| format_err(e.to_string()));
        header.insert(
            "architecture".to_string(),
            json(&serde_json::json!({
                "widths": self.meta.widths,
                "decoder": self.meta.decoder,
                "input_width": self.meta.input_width,
                "input_height": self.meta.input_height,
                "hidden_activation": Activation::Selu.name(),
                "output_activation": Activation::Sigmoid.name(),
                "classifier_head": "softmax",
            }))?,
        );
        header.insert(
            "class_names".to_string(),
            json(&serde_json::json!(self.meta.class_names))?,
        );
        header.insert(
            "auto_accept_threshold".to_string(),
            self.meta.auto_accept_threshold.to_string(),
        );
        header.insert("training".to_string(), json(&self.meta.training)?);
        header.insert("preprocessing".to_string(), PREPROCESSING.to_string());
        if let Some(oof) = &self.meta.calibration {
            let compact = OutOfFoldHeader {
                confidence: oof.confidence.clone(),
                correct: oof
                    .correct
                    .iter()
                    .map(|&ok| if ok { '1' } else { '0' })
                    .collect(),
            };
            header.insert(
                "calibration".to_string(),
                serde_json::to_string(&compact).map_err(|e| format_err(e.to_string()))?,
            );
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| CheckpointError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        }
        safetensors::serialize_to_file(views, Some(header), path).map_err(|e| match e {
            safetensors::SafeTensorError::IoError(source) => CheckpointError::Io {
                path: path.to_path_buf(),
                source,
            },
            other => format_err(other.to_string()),
        })
    }

    /// Reads a model written by [`Model::save`], checking every tensor's name, dtype and shape.
    pub fn load(path: &Path) -> Result<Self, CheckpointError> {
        Self::load_with_sha256(path).map(|(model, _)| model)
    }

    /// [`Model::load`], plus the SHA-256 of the file's bytes (lower-case hex) from the same
    /// read, so a registry checksum is checked against exactly what was loaded.
    pub fn load_with_sha256(path: &Path) -> Result<(Self, String), CheckpointError> {
        let bytes = std::fs::read(path).map_err(|source| CheckpointError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let sha256 = sha256_hex(&bytes);
        Ok((Self::from_bytes(path, &bytes)?, sha256))
    }

    /// Parses checkpoint `bytes` read from `path` (named in errors).
    fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self, CheckpointError> {
        let format_err = |reason: String| CheckpointError::Format {
            path: path.to_path_buf(),
            reason,
        };
        let (_, file_meta) = safetensors::SafeTensors::read_metadata(bytes)
            .map_err(|e| format_err(format!("unreadable safetensors header ({e})")))?;
        let header = file_meta.metadata().clone().unwrap_or_default();
        let field = |key: &str| {
            header
                .get(key)
                .ok_or_else(|| format_err(format!("header key `{key}` is missing")))
        };
        let format = field("format")?;
        if format != MODEL_FORMAT {
            return Err(format_err(format!(
                "format is `{format}`, this build reads `{MODEL_FORMAT}`"
            )));
        }
        if let Some(p) = header.get("preprocessing").filter(|p| *p != PREPROCESSING) {
            return Err(format_err(format!(
                "its images were prepared as {p}, this build prepares them as {PREPROCESSING}; retrain the model with this build"
            )));
        }
        let arch: Architecture = serde_json::from_str(field("architecture")?)
            .map_err(|e| format_err(format!("header `architecture` is invalid ({e})")))?;
        let class_names: Vec<String> = serde_json::from_str(field("class_names")?)
            .map_err(|e| format_err(format!("header `class_names` is invalid ({e})")))?;
        let auto_accept_threshold: f32 = field("auto_accept_threshold")?.parse().map_err(|e| {
            format_err(format!(
                "header `auto_accept_threshold` is not a number ({e})"
            ))
        })?;
        let training = serde_json::from_str(field("training")?)
            .map_err(|e| format_err(format!("header `training` is invalid ({e})")))?;
        let calibration = header
            .get("calibration")
            .map(|text| {
                let h: OutOfFoldHeader = serde_json::from_str(text)
                    .map_err(|e| format_err(format!("header `calibration` is invalid ({e})")))?;
                if h.correct.len() != h.confidence.len()
                    || h.correct.contains(|c| c != '0' && c != '1')
                {
                    return Err(format_err(
                        "header `calibration` needs one 0/1 per confidence".into(),
                    ));
                }
                Ok(OutOfFold {
                    confidence: h.confidence,
                    correct: h.correct.chars().map(|c| c == '1').collect(),
                })
            })
            .transpose()?;
        if arch.widths.len() < 2 || arch.widths.contains(&0) || class_names.len() < 2 {
            return Err(format_err(
                "architecture needs ≥ 2 non-zero widths and ≥ 2 classes".into(),
            ));
        }
        if arch.input_width * arch.input_height != arch.widths[0] {
            return Err(format_err(format!(
                "input {}×{} does not match the first width {}",
                arch.input_width, arch.input_height, arch.widths[0]
            )));
        }
        let tensors = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| format_err(format!("unreadable tensors ({e})")))?;

        // Build the expected shapes, then fill every parameter from the file.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let mut ae = autoencoder(&arch.widths, arch.decoder, Activation::Sigmoid, &mut rng);
        let mut classifier = classifier_from_scratch(&arch.widths, class_names.len(), &mut rng);
        let mut expected = 0;
        for net in [&mut ae, &mut classifier] {
            for p in &mut net.params {
                expected += 1;
                let tensor_err = |reason: String| CheckpointError::Tensor {
                    path: path.to_path_buf(),
                    name: p.name.clone(),
                    reason,
                };
                let t = tensors
                    .tensor(&p.name)
                    .map_err(|_| tensor_err("is missing".into()))?;
                if t.dtype() != Dtype::F32 {
                    return Err(tensor_err(format!(
                        "has dtype {:?}, expected F32",
                        t.dtype()
                    )));
                }
                if t.shape() != p.shape {
                    return Err(tensor_err(format!(
                        "has shape {:?}, expected {:?}",
                        t.shape(),
                        p.shape
                    )));
                }
                p.value = t
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
            }
        }
        if tensors.len() != expected {
            let known: Vec<&str> = ae
                .params
                .iter()
                .chain(&classifier.params)
                .map(|p| p.name.as_str())
                .collect();
            let extra: Vec<String> = tensors
                .names()
                .into_iter()
                .filter(|n| !known.contains(n))
                .map(str::to_string)
                .collect();
            return Err(format_err(format!("unexpected tensors {extra:?}")));
        }
        Ok(Self {
            meta: ModelMeta {
                version: field("version")?.clone(),
                widths: arch.widths,
                decoder: arch.decoder,
                input_width: arch.input_width,
                input_height: arch.input_height,
                class_names,
                auto_accept_threshold,
                training,
                calibration,
            },
            autoencoder: ae,
            classifier,
        })
    }
}

#[derive(Deserialize)]
struct Architecture {
    widths: Vec<usize>,
    decoder: Decoder,
    input_width: usize,
    input_height: usize,
}

/// SHA-256 of `bytes` as lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
