//! The main job as named stages: load → pretrain → teacher → spreading → student → baselines →
//! calibrate → save → report. Each stage is a function with typed inputs and outputs (in
//! `stages`, `pretrain` and `classifier`), so a retrain can reuse them; `run` only sequences
//! them and times each.

mod artifacts;
mod classifier;
pub mod job_retrain;
pub mod job_round;
pub mod job_training;
pub mod loop_sim;
pub mod plots;
mod pretrain;
pub mod recipe;
mod reference;
pub mod report;
pub mod retrain;
mod stages;
mod summary;

pub use crate::model::{encode, probabilities};
pub use classifier::{
    spreading, student, teacher, train_classifier, Labelled, RoundLog, SoftTargets,
    TrainedClassifier, Unlabelled,
};
pub use pretrain::{pretrain, PhaseHistory, Pretrained};
pub use recipe::{Preset, PretrainMode, Recipe};
pub use report::Report;
pub use stages::{
    baselines, calibrate, evaluate, load, save, BaselineModels, Calibration, LoadSummary,
    TestResult,
};

use crate::data::{DataError, DataOptions, TrainingData};
use crate::model::{classifier_from_encoder, CheckpointError, Inputs};
use crate::train::Observer;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

/// Everything `aelabel pipeline` needs, already validated by the CLI.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// Where the images come from and how they are prepared.
    pub data: DataOptions,
    /// Where the model, report and pictures go.
    pub out_dir: PathBuf,
    /// Recipe preset.
    pub preset: Preset,
    /// Labelled training images (stratified subset); `None` = 1,000 of an IDX set, every
    /// labelled image of a folder.
    pub labels: Option<usize>,
    /// Share of the unlabelled images set apart to validate the autoencoder; `None` = the
    /// source's own split (IDX: the last 5,000), else 10 %.
    pub valid_fraction: Option<f64>,
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
    /// Overrides the images an epoch (and cross-validation's pool) takes from a larger pool.
    pub epoch_images: Option<usize>,
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
    /// The recipe this configuration runs on `data`: the preset sized to the data (input
    /// width, enough optimisation steps for small pools) with the overrides applied.
    pub fn recipe(&self, data: &TrainingData) -> Recipe {
        let mut r = Recipe::new(self.preset, data.labels.len());
        if let Some(n) = self.epoch_images {
            r.set_epoch_images(n);
        }
        r.fit_to_data((data.pool.width, data.pool.height), data.pool.len());
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

/// Wall time of each stage, in order.
struct Stopwatch {
    clock: Instant,
    seconds: BTreeMap<String, f64>,
}

impl Stopwatch {
    fn lap(&mut self, stage: &str) {
        self.seconds
            .insert(stage.to_string(), self.clock.elapsed().as_secs_f64());
        self.clock = Instant::now();
    }
}

/// Refuses layer settings that do not fit the data's input size or depth.
fn check_recipe(recipe: &Recipe, data: &TrainingData) -> Result<(), PipelineError> {
    let image_size = data.pool.image_size();
    if recipe.pretrain.widths.first() != Some(&image_size) {
        return Err(PipelineError::Config(format!(
            "--layers must start with the image size {image_size} ({}×{}), got {:?}",
            data.pool.width, data.pool.height, recipe.pretrain.widths
        )));
    }
    let depth = recipe.pretrain.widths.len() - 1;
    if recipe.finetune.freeze > depth {
        return Err(PipelineError::Config(format!(
            "--freeze {} is more than the {depth} encoder layers of --layers {:?}",
            recipe.finetune.freeze, recipe.pretrain.widths
        )));
    }
    Ok(())
}

/// Runs every stage and writes `model.safetensors`, `report.json`, `report.md` and PNGs.
pub fn run(config: &PipelineConfig, observer: &dyn Observer) -> Result<Report, PipelineError> {
    let started = Instant::now();
    let mut watch = Stopwatch {
        clock: Instant::now(),
        seconds: BTreeMap::new(),
    };
    let threads = config.threads.max(1);
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let folds = Recipe::new(config.preset, 0).calibration_folds;

    // Load: from here on only the labelled subset's classes exist in the pool.
    let (data, loaded) = load(config, folds, observer)?;
    let recipe = config.recipe(&data);
    check_recipe(&recipe, &data)?;
    let classes = data.classes();
    let shape = (data.pool.width, data.pool.height);
    let labelled_set = data.labelled();
    let labelled = Labelled {
        images: Inputs::Bytes(&labelled_set.pixels),
        labels: &data.labels,
    };
    let pool = Unlabelled {
        images: Inputs::Bytes(&data.pool.pixels),
        labelled_rows: &data.labelled_rows,
        labels: &data.labels,
    };
    watch.lap("load data");

    // Pretrain on every pool image, labelled or not, without labels.
    let (images, valid) = (pool.images, Inputs::Bytes(&data.valid.pixels));
    let pretrained = pretrain(&recipe.pretrain, images, valid, &mut rng, threads, observer);
    watch.lap("pretrain");
    let mut variants = Vec::new();
    if recipe.preset == Preset::Seed {
        variants = reference::reproduce_reference(
            &recipe,
            &pretrained,
            images,
            valid,
            config.seed,
            threads,
            observer,
        );
        watch.lap("reference variants");
    }

    // Teacher, then spreading and student per self-training round.
    let transferred = classifier_from_encoder(&pretrained.network, classes, &mut rng);
    let trained = train_classifier(
        transferred,
        &recipe.finetune,
        labelled,
        Some(pool),
        shape,
        &mut rng,
        threads,
        observer,
    );
    watch.lap("classifier");
    let base = baselines(
        &recipe, labelled, classes, shape, &mut rng, threads, observer,
    );
    watch.lap("baselines");

    // Evaluate (the only place test labels are read), then calibrate on labelled images only.
    let test = data.test.as_ref().filter(|t| !t.is_empty());
    let results = test.map(|t| {
        (
            evaluate(&trained.network, t, classes, threads),
            evaluate(&base.scratch.network, t, classes, threads),
            evaluate(&base.logreg.network, t, classes, threads),
        )
    });
    // The pictures need only the trained networks: drawn on a thread of their own beside the
    // cross-validation, they fill the core its last, odd fold leaves idle.
    std::fs::create_dir_all(&config.out_dir).map_err(|source| PipelineError::Io {
        path: config.out_dir.clone(),
        source,
    })?;
    let (calibration, pictures) = std::thread::scope(|scope| {
        let pictures = scope.spawn(|| {
            artifacts::pictures(
                &config.out_dir,
                recipe.pretrain.widths.last().copied().unwrap_or(0),
                &pretrained,
                &trained,
                &base.scratch,
                &data,
                results.as_ref().map(|r| (&r.0.confusion[..], r.0.accuracy)),
                config.tsne_points,
                config.seed,
                1,
            )
        });
        let calibration = calibrate(
            &pretrained.network,
            &trained.network,
            &recipe,
            &data,
            &labelled_set,
            config.target_accuracy,
            None,
            &mut rng,
            threads,
            observer,
        );
        let pictures = pictures
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (calibration, pictures)
    });
    let pictures = pictures?;
    let test_coverage = results
        .as_ref()
        .zip(test)
        .map(|((r, _, _), t)| r.coverage_at(calibration.threshold, t));
    watch.lap("cross-validate threshold and draw pictures");

    let training = serde_json::json!({
        "preset": recipe.preset,
        "labels": data.labels.len(),
        "seed": config.seed,
        "pretrain_valid_bce": pretrained.valid_bce,
        "pretrain_valid_rounded_accuracy": pretrained.valid_rounded_accuracy,
        "test_accuracy": results.as_ref().map(|r| r.0.accuracy),
        "cross_validated_accuracy": calibration.cross_validated_accuracy,
        "auto_label_test_coverage": test_coverage.map(|c| c.coverage),
        "auto_label_test_accuracy": test_coverage.and_then(|c| c.accuracy),
        "target_accuracy": config.target_accuracy,
        "dataset": config.data.dir.display().to_string(),
        // How the data was cut, so a retrain can cut it the same way.
        "run": {
            "data": absolute(&config.data.dir),
            "labels_file": config.data.labels_file.as_deref().map(absolute),
            "test": config.data.test.as_deref().map(absolute),
            "labels": config.labels,
            "valid_fraction": config.valid_fraction,
            "train_limit": config.train_limit,
            "eval_limit": config.eval_limit,
            "finetune_epochs": config.finetune_epochs,
            "self_training_rounds": config.self_training_rounds,
            "epoch_images": config.epoch_images,
        },
    });
    let (model, _) = save(
        &config.out_dir,
        &recipe,
        &pretrained.network,
        &trained.network,
        &data,
        &calibration,
        training,
    )?;
    let mut artifacts = ["model.safetensors", "report.json", "report.md"]
        .map(String::from)
        .to_vec();
    artifacts.extend(pictures);
    watch.lap("save and report");

    let mut report = summary::build_report(&summary::Outcome {
        config,
        data: &data,
        loaded: &loaded,
        recipe: &recipe,
        model_version: &model.meta.version,
        pretrained: &pretrained,
        variants,
        trained: &trained,
        results: results.as_ref(),
        test_size: test.map(|t| t.len()),
        calibration: &calibration,
        test_coverage,
        phase_seconds: std::mem::take(&mut watch.seconds),
        artifacts,
        threads,
    });
    report.wall_seconds = started.elapsed().as_secs_f64();
    let json =
        serde_json::to_string_pretty(&report).map_err(|e| PipelineError::Config(e.to_string()))?;
    artifacts::write_file(&config.out_dir.join("report.json"), &json)?;
    artifacts::write_file(&config.out_dir.join("report.md"), &report.to_markdown())?;
    Ok(report)
}

/// `path` made absolute (as it is now) for the model's record, else as given.
fn absolute(path: &std::path::Path) -> String {
    std::fs::canonicalize(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

/// Short name of a preset, as used in model versions and default output directories.
pub fn preset_name(preset: Preset) -> &'static str {
    match preset {
        Preset::Default => "default",
        Preset::Seed => "seed",
    }
}
