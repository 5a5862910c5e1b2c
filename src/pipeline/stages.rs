//! The pipeline's stages besides pretraining and the classifier's own (in `classifier`): load,
//! baselines, evaluation, calibration of the auto-accept threshold, and saving the model.

use super::classifier::{train_classifier, Labelled, TrainedClassifier, Unlabelled};
use super::recipe::{OptimizerSpec, PretrainMode, Recipe};
use super::{PipelineConfig, PipelineError};
use crate::data::{split, DataOptions, Dataset, ImageSet, SplitOptions, TrainingData};
use crate::model::{
    classifier_from_encoder, classifier_from_scratch, probabilities_rows, Decoder, Inputs, Model,
    ModelMeta, Network, OutOfFold,
};
use crate::train::folds::stratified_folds;
use crate::train::metrics::{
    accuracy, choose_threshold, confusion, coverage_at, predictions, Coverage,
};
use crate::train::{Observer, Prefixed};
use rand_chacha::ChaCha8Rng;
use std::path::PathBuf;

/// Load stage: reads the data set (decoding with a progress bar) and cuts it for the run.
pub fn load(
    config: &PipelineConfig,
    folds: usize,
    observer: &dyn Observer,
) -> Result<(TrainingData, LoadSummary), PipelineError> {
    let options = DataOptions {
        merge_idx_valid: config.valid_fraction.is_some(),
        ..config.data.clone()
    };
    let started = std::sync::Mutex::new(false);
    let progress = |done: usize, total: usize| {
        let mut s = started.lock().unwrap_or_else(|e| e.into_inner());
        if !*s {
            observer.phase_started("decode images", 1, total);
            *s = true;
        }
        observer.step_done();
        if done == total {
            observer.phase_done("decode images");
        }
    };
    let dataset = Dataset::open(&options, &progress)?;
    // Each skipped file was already logged as a warning naming it; the report counts them.
    let summary = LoadSummary {
        kind: dataset.kind,
        skipped: dataset.skipped.clone(),
    };
    let data = split(
        dataset,
        &SplitOptions {
            labels: config.labels,
            valid_fraction: config.valid_fraction,
            train_limit: config.train_limit,
            eval_limit: config.eval_limit,
            seed: config.seed,
            folds,
        },
    )?;
    Ok((data, summary))
}

/// What the load stage saw besides the images themselves.
#[derive(Clone, Debug)]
pub struct LoadSummary {
    /// IDX or folder.
    pub kind: crate::data::SourceKind,
    /// Files left out.
    pub skipped: Vec<crate::data::Skipped>,
}

/// The baselines trained on the same labels: the same network from scratch and logistic
/// regression on pixels, neither seeing unlabelled images.
pub struct BaselineModels {
    /// Same widths, random start.
    pub scratch: TrainedClassifier,
    /// Softmax regression on raw pixels.
    pub logreg: TrainedClassifier,
}

/// Baselines stage: same labelled images, same schedule (head epochs folded into the rest),
/// Adam 1e-3, no pretraining, no unlabelled images.
pub fn baselines(
    recipe: &Recipe,
    labelled: Labelled<'_>,
    classes: usize,
    shape: (usize, usize),
    rng: &mut ChaCha8Rng,
    threads: usize,
    observer: &dyn Observer,
) -> BaselineModels {
    let mut baseline_recipe = recipe.finetune.clone();
    baseline_recipe.head_epochs = 0;
    baseline_recipe.freeze = 0;
    baseline_recipe.epochs += recipe.finetune.head_epochs;
    baseline_recipe.optimizer = OptimizerSpec::Adam { lr: 1e-3 };
    let train = |widths: &[usize], name: &str, rng: &mut ChaCha8Rng| {
        let net = classifier_from_scratch(widths, classes, rng);
        train_classifier(
            net,
            &baseline_recipe,
            labelled,
            None,
            shape,
            rng,
            threads,
            &Prefixed {
                prefix: format!("{name} baseline: "),
                inner: observer,
                epoch_lines: true,
            },
        )
    };
    let scratch = train(&recipe.pretrain.widths, "scratch", rng);
    let logreg = train(&recipe.pretrain.widths[..1], "logreg", rng);
    BaselineModels { scratch, logreg }
}

/// A classifier's predictions on the test images: the only place test labels are read.
#[derive(Clone, Debug)]
pub struct TestResult {
    /// Fraction right.
    pub accuracy: f64,
    /// Predicted class per test image.
    pub predicted: Vec<u32>,
    /// Confidence per test image.
    pub confidence: Vec<f32>,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<u64>>,
}

/// Evaluate stage: `network` on the test images.
pub fn evaluate(network: &Network, test: &ImageSet, classes: usize, threads: usize) -> TestResult {
    let truth: Vec<u32> = test.labels.iter().map(|l| l.unwrap_or(u32::MAX)).collect();
    let p = predictions(
        &probabilities_rows(network, Inputs::Bytes(&test.pixels), threads),
        classes,
    );
    let predicted: Vec<u32> = p.iter().map(|x| x.0).collect();
    TestResult {
        accuracy: accuracy(&predicted, &truth),
        confusion: confusion(&predicted, &truth, classes),
        confidence: p.iter().map(|x| x.1).collect(),
        predicted,
    }
}

impl TestResult {
    /// Coverage and accuracy of auto-accepting at `threshold` on the test images.
    pub fn coverage_at(&self, threshold: f32, test: &ImageSet) -> Coverage {
        let ok: Vec<bool> = self
            .predicted
            .iter()
            .zip(&test.labels)
            .map(|(&p, &t)| Some(p) == t)
            .collect();
        coverage_at(threshold, &self.confidence, &ok)
    }
}

/// The auto-accept threshold and the out-of-fold evidence it rests on.
#[derive(Clone, Debug)]
pub struct Calibration {
    /// Folds used.
    pub folds: usize,
    /// Chosen threshold.
    pub threshold: f32,
    /// Out-of-fold accuracy over the labelled images.
    pub cross_validated_accuracy: f64,
    /// What the threshold accepts out of fold.
    pub coverage: Coverage,
    /// The out-of-fold predictions themselves, saved with the model so that a threshold for
    /// another target accuracy can be chosen later.
    pub evidence: OutOfFold,
}

/// Calibrate stage: out-of-fold confidence and correctness for every labelled image (each fold
/// predicted by a classifier trained with the full recipe on the other folds, its held-out
/// images unlabelled like the rest of the pool), then the lowest threshold whose accepted
/// predictions reach `target`. Only labelled images are used; when `judged` is given, only
/// those marked `true` judge the threshold (all still train): a sample picked for being hard,
/// such as least-confident reviews, would say little about the images the model will label.
#[allow(clippy::too_many_arguments)]
pub fn calibrate(
    pretrained: &Network,
    recipe: &Recipe,
    data: &TrainingData,
    labelled: &ImageSet,
    target: f64,
    judged: Option<&[bool]>,
    rng: &mut ChaCha8Rng,
    threads: usize,
    observer: &dyn Observer,
) -> Calibration {
    let n = data.labels.len();
    let folds = recipe.calibration_folds.clamp(2, n);
    let fold_of = stratified_folds(&data.labels, folds, rng);
    let classes = data.classes();
    let mut confidence = vec![0.0; n];
    let mut correct = vec![false; n];
    for k in 0..folds {
        let (train_idx, held_idx): (Vec<usize>, Vec<usize>) =
            (0..n).partition(|&i| fold_of[i] != k);
        let train = labelled.select(&train_idx);
        let held = labelled.select(&held_idx);
        let train_labels: Vec<u32> = train_idx.iter().map(|&i| data.labels[i]).collect();
        observer.note(&format!(
            "cross-validation fold {}/{folds}: {} train, {} held out",
            k + 1,
            train.len(),
            held.len()
        ));
        let net = classifier_from_encoder(pretrained, classes, rng);
        let rows: Vec<usize> = train_idx.iter().map(|&i| data.labelled_rows[i]).collect();
        let trained = train_classifier(
            net,
            &recipe.finetune,
            Labelled {
                images: Inputs::Bytes(&train.pixels),
                labels: &train_labels,
            },
            Some(Unlabelled {
                images: Inputs::Bytes(&data.pool.pixels),
                labelled_rows: &rows,
                labels: &train_labels,
            }),
            (data.pool.width, data.pool.height),
            rng,
            threads,
            &Prefixed {
                prefix: format!("fold {}/{folds}: ", k + 1),
                inner: observer,
                epoch_lines: false,
            },
        );
        let held_predictions = predictions(
            &probabilities_rows(&trained.network, Inputs::Bytes(&held.pixels), threads),
            classes,
        );
        for (&i, p) in held_idx.iter().zip(&held_predictions) {
            confidence[i] = p.1;
            correct[i] = p.0 == data.labels[i];
        }
    }
    if let Some(judged) = judged {
        let keep = |i: &usize| judged.get(*i).copied().unwrap_or(false);
        confidence = (0..n).filter(keep).map(|i| confidence[i]).collect();
        correct = (0..n).filter(keep).map(|i| correct[i]).collect();
    }
    let n = correct.len();
    let threshold = choose_threshold(&confidence, &correct, target);
    Calibration {
        folds,
        threshold,
        cross_validated_accuracy: correct.iter().filter(|&&ok| ok).count() as f64 / n.max(1) as f64,
        coverage: coverage_at(threshold, &confidence, &correct),
        evidence: OutOfFold {
            confidence,
            correct,
        },
    }
}

/// Save stage: the autoencoder and classifier with everything a server needs (input size,
/// class names, threshold, preprocessing, headline metrics) as `model.safetensors`.
pub fn save(
    out_dir: &std::path::Path,
    recipe: &Recipe,
    pretrained: &Network,
    classifier: &Network,
    data: &TrainingData,
    calibration: &Calibration,
    training: serde_json::Value,
) -> Result<(Model, PathBuf), PipelineError> {
    std::fs::create_dir_all(out_dir).map_err(|source| PipelineError::Io {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let mut model = Model {
        meta: ModelMeta {
            version: String::new(),
            widths: recipe.pretrain.widths.clone(),
            decoder: if recipe.pretrain.mode == PretrainMode::Tied {
                Decoder::Tied
            } else {
                Decoder::Separate
            },
            input_width: data.pool.width,
            input_height: data.pool.height,
            class_names: data.class_names.clone(),
            auto_accept_threshold: calibration.threshold,
            training,
            calibration: Some(calibration.evidence.clone()),
        },
        autoencoder: pretrained.clone(),
        classifier: classifier.clone(),
    };
    for p in &mut model.classifier.params {
        p.frozen = false;
    }
    model.meta.version = format!(
        "{}-{}-{:012x}",
        super::preset_name(recipe.preset),
        data.labels.len(),
        model.weights_hash() & 0xffff_ffff_ffff
    );
    let path = out_dir.join("model.safetensors");
    model.save(&path)?;
    Ok((model, path))
}
