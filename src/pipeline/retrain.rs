//! Retrain: the serving model's pretrained autoencoder, fine-tuned again on the labels it was
//! trained with plus what people decided in a label job, then measured against that model on
//! the same test images. Pretraining is not repeated: the unlabelled images are the same.

use super::artifacts::write_file;
use super::classifier::{train_classifier, Labelled, Unlabelled};
use super::stages::{calibrate, evaluate, load, save, TestResult};
use super::{plots, PipelineConfig, PipelineError, Preset, PretrainMode, Recipe};
use crate::data::{DataOptions, ImageSet, TrainingData};
use crate::model::{classifier_from_encoder, sha256_hex, Decoder, Inputs, Model};
use crate::train::Observer;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// One image a person labelled, at the model's input size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReviewedExample {
    /// 8-bit grayscale pixels, row-major.
    pub pixels: Vec<u8>,
    /// The class name the person chose.
    pub class_name: String,
}

/// How one model does on the test images.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModelScore {
    /// Model version.
    pub version: String,
    /// Accuracy over every test image.
    pub test_accuracy: f64,
    /// The model's auto-accept threshold.
    pub threshold: f32,
    /// Share of test images at or above the threshold.
    pub auto_accepted: f64,
    /// Accuracy among those.
    pub auto_accepted_accuracy: Option<f64>,
}

/// What a retrain did and how the new model compares with the one it started from.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RetrainReport {
    /// The model it started from.
    pub previous: ModelScore,
    /// The new model.
    pub retrained: ModelScore,
    /// Test accuracy change, in points (new − previous).
    pub accuracy_change_points: f64,
    /// Auto-accepted share change, in points.
    pub auto_accepted_change_points: f64,
    /// Labels the previous model was trained with.
    pub original_labels: usize,
    /// Reviews used.
    pub reviews: usize,
    /// Of those, images that were not in the training pool (added to it).
    pub reviews_outside_pool: usize,
    /// Of those, reviews that changed an original label (the person's wins).
    pub reviews_overriding_labels: usize,
    /// Test images both models were measured on.
    pub test_images: usize,
    /// The new model file.
    pub model_path: PathBuf,
    /// Wall time.
    pub wall_seconds: f64,
}

impl RetrainReport {
    /// Whether the new model is better on the test images.
    pub fn improved(&self) -> bool {
        self.retrained.test_accuracy > self.previous.test_accuracy
    }

    /// The report as Markdown.
    pub fn to_markdown(&self) -> String {
        let pct = |x: f64| format!("{:.2} %", 100.0 * x);
        let opt = |x: Option<f64>| x.map_or("–".into(), pct);
        let row = |name: &str, s: &ModelScore| {
            format!(
                "| {name} | `{}` | {} | {:.3} | {} | {} |\n",
                s.version,
                pct(s.test_accuracy),
                s.threshold,
                pct(s.auto_accepted),
                opt(s.auto_accepted_accuracy)
            )
        };
        format!(
            "# Retrain\n\nTrained on the {} original labels plus {} reviews ({} images new to the pool, {} overriding an original label), from the previous model's pretrained autoencoder; both models measured on the same {} test images.\n\n| model | version | test accuracy | threshold | auto-accepted | their accuracy |\n| --- | --- | --- | --- | --- | --- |\n{}{}\nChange: **{:+.2} points** of test accuracy, **{:+.2} points** auto-accepted. {:.0} s.\n\n![confusion](confusion.png)\n",
            self.original_labels,
            self.reviews,
            self.reviews_outside_pool,
            self.reviews_overriding_labels,
            self.test_images,
            row("previous", &self.previous),
            row("retrained", &self.retrained),
            self.accuracy_change_points,
            self.auto_accepted_change_points,
            self.wall_seconds
        )
    }
}

/// The pipeline settings a model was trained with, read from its `training` header, so that
/// a retrain cuts the data exactly as the first run did. `out_dir` and `threads` are the
/// retrain's own; `data_dir` overrides where the data set is now.
pub fn config_of(
    model: &Model,
    out_dir: PathBuf,
    threads: usize,
    data_dir: Option<PathBuf>,
) -> Result<PipelineConfig, PipelineError> {
    let t = &model.meta.training;
    let run = &t["run"];
    let text = |v: &serde_json::Value| v.as_str().map(PathBuf::from);
    let count = |v: &serde_json::Value| v.as_u64().map(|n| n as usize);
    let dir = data_dir
        .or_else(|| text(&run["data"]))
        .or_else(|| text(&t["dataset"]))
        .ok_or_else(|| {
            PipelineError::Config(format!(
                "model {} does not say which data set it was trained on; pass --data DIR",
                model.meta.version
            ))
        })?;
    let preset = match t["preset"].as_str() {
        Some("seed") => Preset::Seed,
        _ => Preset::Default,
    };
    Ok(PipelineConfig {
        data: DataOptions {
            dir,
            labels_file: text(&run["labels_file"]),
            test: text(&run["test"]),
            input_size: Some((model.meta.input_width, model.meta.input_height)),
            strict: false,
            merge_idx_valid: false,
        },
        out_dir,
        preset,
        labels: count(&run["labels"]).or_else(|| count(&t["labels"])),
        valid_fraction: run["valid_fraction"].as_f64(),
        seed: t["seed"].as_u64().unwrap_or(42),
        threads,
        mode: None,
        layers: Some(model.meta.widths.clone()),
        freeze: None,
        pretrain_epochs: None,
        finetune_epochs: count(&run["finetune_epochs"]),
        self_training_rounds: count(&run["self_training_rounds"]),
        epoch_images: count(&run["epoch_images"]),
        target_accuracy: t["target_accuracy"].as_f64().unwrap_or(0.95),
        train_limit: count(&run["train_limit"]),
        eval_limit: count(&run["eval_limit"]),
        tsne_points: 0,
    })
}

/// How reviews joined the labelled set.
struct Merged {
    outside_pool: usize,
    overriding: usize,
    /// Per label (in `labelled_rows` order): whether it is an original label, not a review.
    original: Vec<bool>,
}

/// Adds each review to the labelled set: an image already in the pool (by content) becomes
/// labelled (a person's class replacing an original label), any other image joins the pool.
fn merge_reviews(
    data: &mut TrainingData,
    reviews: &[ReviewedExample],
) -> Result<Merged, PipelineError> {
    let size = data.pool.image_size();
    let class_of: HashMap<&str, u32> = data
        .class_names
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i as u32))
        .collect();
    let row_of: HashMap<String, usize> = data
        .pool
        .pixels
        .chunks_exact(size)
        .enumerate()
        .map(|(i, px)| (sha256_hex(px), i))
        .collect();
    let mut label_of: HashMap<usize, u32> = data
        .labelled_rows
        .iter()
        .copied()
        .zip(data.labels.iter().copied())
        .collect();
    let mut merged = Merged {
        outside_pool: 0,
        overriding: 0,
        original: Vec::new(),
    };
    let mut reviewed_rows = std::collections::HashSet::new();
    for (i, r) in reviews.iter().enumerate() {
        let class = *class_of.get(r.class_name.as_str()).ok_or_else(|| {
            PipelineError::Config(format!(
                "review {i} is class `{}`, which the model's data set does not have ({})",
                r.class_name,
                data.class_names.join(", ")
            ))
        })?;
        if r.pixels.len() != size {
            return Err(PipelineError::Config(format!(
                "review {i} has {} pixels; the model takes {size}",
                r.pixels.len()
            )));
        }
        let row = match row_of.get(&sha256_hex(&r.pixels)) {
            Some(&row) => row,
            None => {
                data.pool.push(&r.pixels, None);
                merged.outside_pool += 1;
                data.pool.len() - 1
            }
        };
        reviewed_rows.insert(row);
        if label_of.insert(row, class).is_some_and(|old| old != class) {
            merged.overriding += 1;
        }
        data.pool.labels[row] = Some(class);
    }
    let mut pairs: Vec<(usize, u32)> = label_of.into_iter().collect();
    pairs.sort_unstable();
    (data.labelled_rows, data.labels) = pairs.into_iter().unzip();
    merged.original = data
        .labelled_rows
        .iter()
        .map(|row| !reviewed_rows.contains(row))
        .collect();
    Ok(merged)
}

fn score(model_version: &str, threshold: f32, r: &TestResult, test: &ImageSet) -> ModelScore {
    let c = r.coverage_at(threshold, test);
    ModelScore {
        version: model_version.to_string(),
        test_accuracy: r.accuracy,
        threshold,
        auto_accepted: c.coverage,
        auto_accepted_accuracy: c.accuracy,
    }
}

/// Fine-tunes a new model from `base`'s pretrained autoencoder on its original labels plus
/// `reviews`, saves it in `config.out_dir` with `retrain.json`, `retrain.md` and a confusion
/// matrix, and compares it with `base` on the test images.
pub fn retrain(
    config: &PipelineConfig,
    base: &Model,
    reviews: &[ReviewedExample],
    provenance: serde_json::Value,
    observer: &dyn Observer,
) -> Result<RetrainReport, PipelineError> {
    let started = Instant::now();
    let threads = config.threads.max(1);
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let folds = Recipe::new(config.preset, 0).calibration_folds;
    let (mut data, _) = load(config, folds, observer)?;
    if data.class_names != base.meta.class_names {
        return Err(PipelineError::Config(format!(
            "the data set's classes ({}) are not the model's ({})",
            data.class_names.join(", "),
            base.meta.class_names.join(", ")
        )));
    }
    let test = data.test.clone().filter(|t| !t.is_empty()).ok_or_else(|| {
        PipelineError::Config("the data set has no test images to compare the models on".into())
    })?;
    let original_labels = data.labels.len();
    let merged = merge_reviews(&mut data, reviews)?;
    let mut recipe = config.recipe(&data);
    // The saved model records its decoder from the recipe's mode: keep the base model's.
    recipe.pretrain.mode = match (base.meta.decoder, recipe.pretrain.mode) {
        (Decoder::Tied, _) => PretrainMode::Tied,
        (Decoder::Separate, PretrainMode::Tied) => PretrainMode::Joint,
        (Decoder::Separate, mode) => mode,
    };
    let classes = data.classes();
    let labelled_set = data.labelled();
    observer.note(&format!(
        "retraining on {} labels ({original_labels} original, {} reviews)",
        data.labels.len(),
        reviews.len()
    ));
    let pretrained = &base.autoencoder;
    let trained = train_classifier(
        classifier_from_encoder(pretrained, classes, &mut rng),
        &recipe.finetune,
        Labelled {
            images: Inputs::Bytes(&labelled_set.pixels),
            labels: &data.labels,
        },
        Some(Unlabelled {
            images: Inputs::Bytes(&data.pool.pixels),
            labelled_rows: &data.labelled_rows,
            labels: &data.labels,
        }),
        (data.pool.width, data.pool.height),
        &mut rng,
        threads,
        observer,
    );
    let calibration = calibrate(
        pretrained,
        &trained.network,
        &recipe,
        &data,
        &labelled_set,
        config.target_accuracy,
        // The threshold is judged on the original labels, a random sample like the images
        // the model will label; reviews are the model's hardest cases and only train.
        Some(&merged.original),
        &mut rng,
        threads,
        observer,
    );
    let new_result = evaluate(&trained.network, &test, classes, threads);
    let old_result = evaluate(&base.classifier, &test, classes, threads);
    let coverage = new_result.coverage_at(calibration.threshold, &test);
    let mut training = base.meta.training.clone();
    training["labels"] = serde_json::json!(data.labels.len());
    training["test_accuracy"] = serde_json::json!(new_result.accuracy);
    training["cross_validated_accuracy"] = serde_json::json!(calibration.cross_validated_accuracy);
    training["auto_label_test_coverage"] = serde_json::json!(coverage.coverage);
    training["auto_label_test_accuracy"] = serde_json::json!(coverage.accuracy);
    training["retrained_from"] = serde_json::json!(base.meta.version);
    training["reviews"] = serde_json::json!(reviews.len());
    training["provenance"] = provenance;
    let (model, path) = save(
        &config.out_dir,
        &recipe,
        pretrained,
        &trained.network,
        &data,
        &calibration,
        training,
    )?;
    plots::confusion_png(
        &config.out_dir.join("confusion.png"),
        &format!(
            "Retrained {}: test accuracy {:.2} %",
            model.meta.version,
            100.0 * new_result.accuracy
        ),
        &new_result.confusion,
        &data.class_names,
    )?;
    let previous = score(
        &base.meta.version,
        base.meta.auto_accept_threshold,
        &old_result,
        &test,
    );
    let retrained = score(
        &model.meta.version,
        calibration.threshold,
        &new_result,
        &test,
    );
    let report = RetrainReport {
        accuracy_change_points: 100.0 * (retrained.test_accuracy - previous.test_accuracy),
        auto_accepted_change_points: 100.0 * (retrained.auto_accepted - previous.auto_accepted),
        previous,
        retrained,
        original_labels,
        reviews: reviews.len(),
        reviews_outside_pool: merged.outside_pool,
        reviews_overriding_labels: merged.overriding,
        test_images: test.len(),
        model_path: path,
        wall_seconds: started.elapsed().as_secs_f64(),
    };
    write_report(&config.out_dir, &report)?;
    Ok(report)
}

fn write_report(dir: &Path, report: &RetrainReport) -> Result<(), PipelineError> {
    let json =
        serde_json::to_string_pretty(report).map_err(|e| PipelineError::Config(e.to_string()))?;
    write_file(&dir.join("retrain.json"), &json)?;
    write_file(&dir.join("retrain.md"), &report.to_markdown())
}
