//! The main job: data → pretrain → transfer → fine-tune → evaluate against baselines → report.

mod classifier;
pub mod plots;
mod pretrain;
pub mod recipe;
pub mod report;

pub use crate::model::{encode, probabilities};
pub use classifier::{train_classifier, RoundLog, TrainedClassifier, Unlabelled};
pub use pretrain::{pretrain, PhaseHistory, Pretrained};
pub use recipe::{Preset, PretrainMode, Recipe};
pub use report::Report;

use crate::data::{stratified_subset, DataError, FashionMnist, Split};
use crate::model::{
    classifier_from_encoder, classifier_from_scratch, CheckpointError, Model, ModelMeta,
};
use crate::train::metrics::{
    accuracy, choose_threshold, confusion, coverage_at, per_class_accuracy, predictions,
};
use crate::train::{Observer, Prefixed};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use report::{
    reference_for, AutoLabelReport, BaselineReport, Baselines, ClassifierReport, DataReport,
    PretrainReport, VariantReport, REFERENCE_TOLERANCE,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Everything `aelabel pipeline` needs, already validated by the CLI.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// Directory with the four Fashion-MNIST IDX files.
    pub data_dir: PathBuf,
    /// Where the model, report and pictures go.
    pub out_dir: PathBuf,
    /// Recipe preset.
    pub preset: Preset,
    /// Labelled training images.
    pub labels: usize,
    /// Seed for everything random.
    pub seed: u64,
    /// Threads for matrix products.
    pub threads: usize,
    /// Overrides the preset's pretraining mode.
    pub mode: Option<PretrainMode>,
    /// Overrides the preset's encoder widths.
    pub layers: Option<Vec<usize>>,
    /// Overrides how many of the lowest layers stay frozen.
    pub freeze: Option<usize>,
    /// Overrides pretraining epochs.
    pub pretrain_epochs: Option<usize>,
    /// Overrides fine-tuning epochs.
    pub finetune_epochs: Option<usize>,
    /// Overrides the number of self-training rounds.
    pub self_training_rounds: Option<usize>,
    /// Accuracy the auto-accepted predictions should reach.
    pub target_accuracy: f64,
    /// Use only the first N training images (quick runs and tests).
    pub train_limit: Option<usize>,
    /// Use only the first N validation and test images (quick runs and tests).
    pub eval_limit: Option<usize>,
    /// Validation images placed on the t-SNE map (t-SNE is quadratic-ish in this).
    pub tsne_points: usize,
}

impl PipelineConfig {
    /// The recipe this configuration runs: the preset with the overrides applied.
    pub fn recipe(&self) -> Recipe {
        let mut r = Recipe::new(self.preset, self.labels);
        if let Some(mode) = self.mode {
            r.pretrain.mode = mode;
            if self.preset == Preset::Seed {
                r.pretrain.epochs = Recipe::seed_epochs(mode);
            }
        }
        if let Some(layers) = &self.layers {
            r.pretrain.widths = layers.clone();
        }
        if let Some(k) = self.freeze {
            r.finetune.freeze = k;
        }
        if let Some(e) = self.pretrain_epochs {
            r.pretrain.epochs = e;
        }
        if let Some(e) = self.finetune_epochs {
            r.finetune.epochs = e;
        }
        if let Some(n) = self.self_training_rounds {
            r.finetune.self_training_rounds = n;
        }
        r
    }
}

/// Why a pipeline run stopped.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Reading the data failed.
    #[error(transparent)]
    Data(#[from] DataError),
    /// Writing the model failed.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// Rendering a picture failed.
    #[error(transparent)]
    Plot(#[from] plots::PlotError),
    /// The configuration does not fit the data.
    #[error("{0}")]
    Config(String),
    /// Writing an output file failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Assigns each labelled example to one of `folds` cross-validation folds, stratified by class.
fn assign_folds(labels: &[u8], folds: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let mut by_class: BTreeMap<u8, Vec<usize>> = BTreeMap::new();
    for (i, &l) in labels.iter().enumerate() {
        by_class.entry(l).or_default().push(i);
    }
    let mut fold = vec![0; labels.len()];
    let mut next = 0;
    for members in by_class.values_mut() {
        members.shuffle(rng);
        for &i in members.iter() {
            fold[i] = next % folds;
            next += 1;
        }
    }
    fold
}

/// Out-of-fold confidence and correctness for every labelled example: each fold is predicted
/// by a classifier trained, with the full recipe, on the other folds. Only labelled data is
/// used, so the auto-accept threshold chosen from it never sees a test label.
#[allow(clippy::too_many_arguments)]
fn cross_validate(
    pretrained: &crate::model::Network,
    recipe: &Recipe,
    labelled: &Split,
    labelled_rows: &[usize],
    classes: usize,
    images: &[f32],
    rng: &mut ChaCha8Rng,
    threads: usize,
    observer: &dyn Observer,
) -> (Vec<f32>, Vec<bool>) {
    let folds = recipe.calibration_folds.clamp(2, labelled.len());
    let fold_of = assign_folds(&labelled.labels, folds, rng);
    let mut confidence = vec![0.0; labelled.len()];
    let mut correct = vec![false; labelled.len()];
    for k in 0..folds {
        let (train_idx, held_idx): (Vec<usize>, Vec<usize>) =
            (0..labelled.len()).partition(|&i| fold_of[i] != k);
        let train = labelled.select(&train_idx);
        let held = labelled.select(&held_idx);
        observer.note(&format!(
            "cross-validation fold {}/{folds}: {} train, {} held out",
            k + 1,
            train.len(),
            held.len()
        ));
        let net = classifier_from_encoder(pretrained, classes, rng);
        // The held-out fold is unlabelled for this classifier, like the rest of the pool.
        let rows: Vec<usize> = train_idx.iter().map(|&i| labelled_rows[i]).collect();
        let unlabelled = Unlabelled {
            images,
            labelled_rows: &rows,
            labels: &train.labels,
        };
        let trained = train_classifier(
            net,
            &recipe.finetune,
            &train.pixels,
            &train.labels,
            Some(unlabelled),
            (labelled.width, labelled.height),
            rng,
            threads,
            &Prefixed {
                prefix: format!("fold {}/{folds}: ", k + 1),
                inner: observer,
                epoch_lines: false,
            },
        );
        let held_predictions = predictions(
            &probabilities(&trained.network, &held.pixels, threads),
            classes,
        );
        for ((&i, p), &t) in held_idx.iter().zip(&held_predictions).zip(&held.labels) {
            confidence[i] = p.1;
            correct[i] = p.0 == t;
        }
    }
    (confidence, correct)
}

fn write_file(path: &Path, contents: &str) -> Result<(), PipelineError> {
    std::fs::write(path, contents).map_err(|source| PipelineError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Runs the whole job and writes `model.safetensors`, `report.json`, `report.md` and PNGs.
pub fn run(config: &PipelineConfig, observer: &dyn Observer) -> Result<Report, PipelineError> {
    let started = Instant::now();
    let mut phase_seconds = BTreeMap::new();
    let mut clock = Instant::now();
    let mut lap = |name: &str, phase_seconds: &mut BTreeMap<String, f64>| {
        phase_seconds.insert(name.to_string(), clock.elapsed().as_secs_f64());
        clock = Instant::now();
    };
    let recipe = config.recipe();
    let threads = config.threads.max(1);
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);

    let FashionMnist {
        train,
        valid,
        test,
        class_names,
    } = FashionMnist::load(&config.data_dir)?;
    let train = match config.train_limit {
        Some(n) => train.head(n),
        None => train,
    };
    let (valid, test) = match config.eval_limit {
        Some(n) => (valid.head(n), test.head(n)),
        None => (valid, test),
    };
    let image_size = train.image_size();
    if recipe.pretrain.widths.first() != Some(&image_size) {
        return Err(PipelineError::Config(format!(
            "--layers must start with the image size {image_size} ({}×{}), got {:?}",
            train.width, train.height, recipe.pretrain.widths
        )));
    }
    let depth = recipe.pretrain.widths.len() - 1;
    if recipe.finetune.freeze > depth {
        return Err(PipelineError::Config(format!(
            "--freeze {} is more than the {depth} encoder layers of --layers {:?}",
            recipe.finetune.freeze, recipe.pretrain.widths
        )));
    }
    let classes = class_names.len();
    let labelled = stratified_subset(&train.labels, classes, config.labels, config.seed)?;
    let labelled_set = train.select(&labelled);
    // From here on the training labels are gone: only the chosen labelled subsets remain.
    let Split {
        pixels: train_images,
        width,
        height,
        ..
    } = train;
    lap("load data", &mut phase_seconds);

    // Pretraining on every training image, labelled or not, without labels.
    let pretrained = pretrain(
        &recipe.pretrain,
        &train_images,
        &valid.pixels,
        &mut rng,
        threads,
        observer,
    );
    lap("pretrain", &mut phase_seconds);
    let mut variants = Vec::new();
    if recipe.preset == Preset::Seed {
        variants = reproduce_reference(
            &recipe,
            &pretrained,
            &train_images,
            &valid.pixels,
            config.seed,
            threads,
            observer,
        );
        lap("reference variants", &mut phase_seconds);
    }

    let transferred = classifier_from_encoder(&pretrained.network, classes, &mut rng);
    let trained = train_classifier(
        transferred,
        &recipe.finetune,
        &labelled_set.pixels,
        &labelled_set.labels,
        Some(Unlabelled {
            images: &train_images,
            labelled_rows: &labelled,
            labels: &labelled_set.labels,
        }),
        (width, height),
        &mut rng,
        threads,
        observer,
    );
    lap("classifier", &mut phase_seconds);

    // Baselines: same labelled images, no pretraining, no unlabelled images.
    let mut baseline_recipe = recipe.finetune.clone();
    baseline_recipe.head_epochs = 0;
    baseline_recipe.freeze = 0;
    baseline_recipe.epochs += recipe.finetune.head_epochs;
    baseline_recipe.optimizer = recipe::OptimizerSpec::Adam { lr: 1e-3 };
    let scratch = classifier_from_scratch(&recipe.pretrain.widths, classes, &mut rng);
    let scratch = train_classifier(
        scratch,
        &baseline_recipe,
        &labelled_set.pixels,
        &labelled_set.labels,
        None,
        (width, height),
        &mut rng,
        threads,
        &Prefixed {
            prefix: "scratch baseline: ".into(),
            inner: observer,
            epoch_lines: true,
        },
    );
    let logreg = classifier_from_scratch(&recipe.pretrain.widths[..1], classes, &mut rng);
    let logreg = train_classifier(
        logreg,
        &baseline_recipe,
        &labelled_set.pixels,
        &labelled_set.labels,
        None,
        (width, height),
        &mut rng,
        threads,
        &Prefixed {
            prefix: "logreg baseline: ".into(),
            inner: observer,
            epoch_lines: true,
        },
    );
    lap("baselines", &mut phase_seconds);

    // Evaluation: the test labels are read here and only here.
    let test_accuracy_of = |net| {
        let p = predictions(&probabilities(net, &test.pixels, threads), classes);
        let predicted: Vec<u8> = p.iter().map(|x| x.0).collect();
        (accuracy(&predicted, &test.labels), p)
    };
    let (test_accuracy, test_predictions) = test_accuracy_of(&trained.network);
    let test_predicted: Vec<u8> = test_predictions.iter().map(|x| x.0).collect();
    let test_confusion = confusion(&test_predicted, &test.labels, classes);
    let (scratch_accuracy, _) = test_accuracy_of(&scratch.network);
    let (logreg_accuracy, _) = test_accuracy_of(&logreg.network);

    let (calib_conf, calib_ok) = cross_validate(
        &pretrained.network,
        &recipe,
        &labelled_set,
        &labelled,
        classes,
        &train_images,
        &mut rng,
        threads,
        observer,
    );
    let cross_validated_accuracy =
        calib_ok.iter().filter(|&&ok| ok).count() as f64 / calib_ok.len().max(1) as f64;
    let threshold = choose_threshold(&calib_conf, &calib_ok, config.target_accuracy);
    let calib_cov = coverage_at(threshold, &calib_conf, &calib_ok);
    let test_conf: Vec<f32> = test_predictions.iter().map(|p| p.1).collect();
    let test_ok: Vec<bool> = test_predicted
        .iter()
        .zip(&test.labels)
        .map(|(p, t)| p == t)
        .collect();
    let test_cov = coverage_at(threshold, &test_conf, &test_ok);
    lap("evaluate and cross-validate threshold", &mut phase_seconds);

    // Model file.
    std::fs::create_dir_all(&config.out_dir).map_err(|source| PipelineError::Io {
        path: config.out_dir.clone(),
        source,
    })?;
    let mut model = Model {
        meta: ModelMeta {
            version: String::new(),
            widths: recipe.pretrain.widths.clone(),
            decoder: if recipe.pretrain.mode == PretrainMode::Tied {
                crate::model::Decoder::Tied
            } else {
                crate::model::Decoder::Separate
            },
            input_width: width,
            input_height: height,
            class_names: class_names.clone(),
            auto_accept_threshold: threshold,
            training: serde_json::json!({
                "preset": recipe.preset,
                "labels": config.labels,
                "seed": config.seed,
                "pretrain_valid_bce": pretrained.valid_bce,
                "pretrain_valid_rounded_accuracy": pretrained.valid_rounded_accuracy,
                "test_accuracy": test_accuracy,
                "auto_label_test_coverage": test_cov.coverage,
                "auto_label_test_accuracy": test_cov.accuracy,
                "target_accuracy": config.target_accuracy,
            }),
        },
        autoencoder: pretrained.network.clone(),
        classifier: trained.network.clone(),
    };
    for p in &mut model.classifier.params {
        p.frozen = false;
    }
    model.meta.version = format!(
        "{}-{}-{:012x}",
        preset_name(recipe.preset),
        config.labels,
        model.weights_hash() & 0xffff_ffff_ffff
    );
    let model_path = config.out_dir.join("model.safetensors");
    model.save(&model_path)?;
    let mut artifacts = vec!["model.safetensors".to_string()];

    // Pictures.
    let out = |name: &str| config.out_dir.join(name);
    let shown = 10.min(valid.len());
    let originals = &valid.pixels[..shown * image_size];
    let reconstructions = pretrained.network.forward(originals, shown, threads);
    plots::reconstructions_png(
        &out("reconstructions.png"),
        originals,
        &reconstructions,
        shown,
        width,
        height,
    )?;
    artifacts.push("reconstructions.png".into());
    let tsne_n = config.tsne_points.min(valid.len());
    if tsne_n >= 10 {
        let codes = encode(
            &pretrained.network,
            &valid.pixels[..tsne_n * image_size],
            threads,
        );
        let title = format!(
            "t-SNE of {tsne_n} validation images' {}-d codes",
            model.embedding_size()
        );
        let classes: Vec<u32> = valid.labels[..tsne_n].iter().map(|&c| c.into()).collect();
        let draw = || {
            plots::tsne_png(
                &out("tsne.png"),
                &title,
                &codes,
                model.embedding_size(),
                &classes,
                &class_names,
                config.seed,
            )
        };
        // t-SNE's parallel sums depend on thread timing; one thread makes the map reproducible.
        match rayon::ThreadPoolBuilder::new().num_threads(1).build() {
            Ok(pool) => pool.install(draw)?,
            Err(_) => draw()?,
        };
        artifacts.push("tsne.png".into());
    }
    let pretrain_curves: Vec<plots::Curve> = pretrained
        .phases
        .iter()
        .flat_map(|p| {
            [
                plots::Curve {
                    name: format!("{} train {}", p.name, p.loss),
                    values: p.epochs.iter().map(|e| e.loss).collect(),
                },
                plots::Curve {
                    name: format!("{} valid {}", p.name, p.loss),
                    values: p.epochs.iter().filter_map(|e| e.valid_loss).collect(),
                },
            ]
        })
        .filter(|c| !c.values.is_empty())
        .collect();
    plots::curves_png(
        &out("pretrain_curves.png"),
        "Autoencoder pretraining",
        "loss",
        &pretrain_curves,
    )?;
    artifacts.push("pretrain_curves.png".into());
    let classifier_curves: Vec<plots::Curve> = trained
        .phases
        .iter()
        .map(|p| plots::Curve {
            name: format!("{} loss", p.name),
            values: p.epochs.iter().map(|e| e.loss).collect(),
        })
        .chain([plots::Curve {
            name: "from scratch (baseline) loss".into(),
            values: scratch
                .phases
                .iter()
                .flat_map(|p| p.epochs.iter().map(|e| e.loss))
                .collect(),
        }])
        .collect();
    plots::curves_png(
        &out("classifier_curves.png"),
        "Classifier training (labels, then teacher predictions on unlabelled images)",
        "cross-entropy",
        &classifier_curves,
    )?;
    artifacts.push("classifier_curves.png".into());
    plots::confusion_png(
        &out("confusion.png"),
        &format!(
            "Test confusion matrix, accuracy {:.2} %",
            100.0 * test_accuracy
        ),
        &test_confusion,
        &class_names,
    )?;
    artifacts.push("confusion.png".into());
    lap("report and pictures", &mut phase_seconds);

    let epoch_seconds: Vec<f64> = pretrained
        .phases
        .iter()
        .flat_map(|p| p.epochs.iter().map(|e| e.seconds))
        .collect();
    let mut gain_points = BTreeMap::new();
    gain_points.insert(
        "scratch".to_string(),
        100.0 * (test_accuracy - scratch_accuracy),
    );
    gain_points.insert(
        "logreg_pixels".to_string(),
        100.0 * (test_accuracy - logreg_accuracy),
    );
    artifacts.splice(1..1, ["report.json".to_string(), "report.md".to_string()]);
    let mut report = Report {
        model_version: model.meta.version.clone(),
        preset: recipe.preset,
        seed: config.seed,
        labels: config.labels,
        threads,
        wall_seconds: 0.0,
        phase_seconds,
        data: DataReport {
            dir: config.data_dir.display().to_string(),
            train_images: train_images.len() / image_size,
            valid_images: valid.len(),
            test_images: test.len(),
            labelled: labelled_set.len(),
            unlabelled: train_images.len() / image_size - labelled.len(),
        },
        recipe: recipe.clone(),
        pretrain: PretrainReport {
            mode: recipe.pretrain.mode,
            layers: recipe.pretrain.widths.clone(),
            epochs: recipe.pretrain.epochs,
            valid_bce: pretrained.valid_bce,
            valid_rounded_accuracy: pretrained.valid_rounded_accuracy,
            epoch_seconds,
            history: pretrained.phases.clone(),
            variants,
        },
        classifier: ClassifierReport {
            test_accuracy,
            per_class_accuracy: per_class_accuracy(&test_confusion),
            confusion: test_confusion,
            class_names,
            self_training: trained.rounds.clone(),
            history: trained.phases.clone(),
        },
        baselines: Baselines {
            scratch: BaselineReport {
                description: format!("same network {:?} from scratch", recipe.pretrain.widths),
                test_accuracy: scratch_accuracy,
            },
            logreg_pixels: BaselineReport {
                description: "logistic regression on raw pixels".into(),
                test_accuracy: logreg_accuracy,
            },
        },
        gain_points,
        auto_label: AutoLabelReport {
            target_accuracy: config.target_accuracy,
            threshold,
            calibration: format!(
                "{}-fold cross-validation over the labelled images",
                recipe.calibration_folds.clamp(2, labelled_set.len())
            ),
            cross_validated_accuracy,
            calibration_accuracy: calib_cov.accuracy,
            calibration_coverage: calib_cov.coverage,
            test_coverage: test_cov.coverage,
            test_accuracy: test_cov.accuracy,
        },
        artifacts,
    };
    report.wall_seconds = started.elapsed().as_secs_f64();
    let json =
        serde_json::to_string_pretty(&report).map_err(|e| PipelineError::Config(e.to_string()))?;
    write_file(&out("report.json"), &json)?;
    write_file(&out("report.md"), &report.to_markdown())?;
    Ok(report)
}

fn preset_name(preset: Preset) -> &'static str {
    match preset {
        Preset::Default => "default",
        Preset::Seed => "seed",
    }
}

/// Seed preset: trains every pretraining run of the reference and compares it with its numbers.
fn reproduce_reference(
    recipe: &Recipe,
    main: &Pretrained,
    images: &[f32],
    valid: &[f32],
    seed: u64,
    threads: usize,
    observer: &dyn Observer,
) -> Vec<VariantReport> {
    let variant = |run: &str, epochs: usize, loss: &str, valid_loss: f64, acc: Option<f64>| {
        let reference = reference_for(run);
        VariantReport {
            run: run.to_string(),
            epochs,
            loss: loss.to_string(),
            valid_loss,
            valid_rounded_accuracy: acc,
            reference,
            within_tolerance: reference.map(|r| valid_loss <= r.valid_loss + REFERENCE_TOLERANCE),
        }
    };
    let mut out = Vec::new();
    for mode in [
        PretrainMode::Joint,
        PretrainMode::Tied,
        PretrainMode::Greedy,
    ] {
        let run = if mode == recipe.pretrain.mode {
            main.clone()
        } else {
            let mut r = recipe.pretrain.clone();
            r.mode = mode;
            r.epochs = Recipe::seed_epochs(mode);
            // Each variant draws from its own stream, so its numbers do not depend on which
            // other variants ran before it.
            let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_add(1 + mode as u64));
            pretrain(&r, images, valid, &mut rng, threads, observer)
        };
        let epochs = Recipe::seed_epochs(mode);
        match mode {
            PretrainMode::Joint => out.push(variant(
                "joint",
                epochs,
                "bce",
                run.valid_bce,
                Some(run.valid_rounded_accuracy),
            )),
            PretrainMode::Tied => out.push(variant(
                "tied",
                epochs,
                "bce",
                run.valid_bce,
                Some(run.valid_rounded_accuracy),
            )),
            PretrainMode::Greedy => {
                for (i, phase) in run.phases.iter().enumerate() {
                    let last = phase.epochs.last();
                    let valid_loss = last.and_then(|e| e.valid_loss).unwrap_or(f64::NAN);
                    let acc = if i == 0 {
                        last.and_then(|e| e.valid_metric)
                    } else {
                        None
                    };
                    out.push(variant(
                        &format!("greedy layer {}", i + 1),
                        epochs,
                        phase.loss,
                        valid_loss,
                        acc,
                    ));
                }
                out.push(variant(
                    "greedy stack",
                    0,
                    "bce",
                    run.valid_bce,
                    Some(run.valid_rounded_accuracy),
                ));
            }
        }
    }
    out
}
