//! Report stage: everything a run found, gathered into the [`Report`] that becomes
//! `report.json` and `report.md`.

use super::classifier::TrainedClassifier;
use super::pretrain::Pretrained;
use super::recipe::Recipe;
use super::report::{
    AutoLabelReport, BaselineReport, Baselines, ClassifierReport, DataReport, PretrainReport,
    Report, VariantReport,
};
use super::stages::{Calibration, LoadSummary, TestResult};
use super::PipelineConfig;
use crate::data::TrainingData;
use crate::train::metrics::Coverage;
use std::collections::BTreeMap;

/// What the stages produced, borrowed for the report.
pub struct Outcome<'a> {
    /// The run's settings.
    pub config: &'a PipelineConfig,
    /// The data as cut for the run.
    pub data: &'a TrainingData,
    /// What loading saw (source kind, skipped files).
    pub loaded: &'a LoadSummary,
    /// The recipe trained with.
    pub recipe: &'a Recipe,
    /// The saved model's version.
    pub model_version: &'a str,
    /// The autoencoder.
    pub pretrained: &'a Pretrained,
    /// Seed preset: the reference runs.
    pub variants: Vec<VariantReport>,
    /// The final classifier.
    pub trained: &'a TrainedClassifier,
    /// Test results of the classifier, the scratch and the logistic-regression baselines.
    pub results: Option<&'a (TestResult, TestResult, TestResult)>,
    /// Test images, if there is a test set.
    pub test_size: Option<usize>,
    /// The auto-accept threshold and its evidence.
    pub calibration: &'a Calibration,
    /// What the threshold accepts on the test set.
    pub test_coverage: Option<Coverage>,
    /// Wall seconds per stage.
    pub phase_seconds: BTreeMap<String, f64>,
    /// Files written.
    pub artifacts: Vec<String>,
    /// Threads used.
    pub threads: usize,
}

/// The report of a run (wall time still 0: the caller sets it last).
pub fn build_report(o: &Outcome<'_>) -> Report {
    Report {
        model_version: o.model_version.to_string(),
        preset: o.recipe.preset,
        seed: o.config.seed,
        labels: o.data.labels.len(),
        threads: o.threads,
        wall_seconds: 0.0,
        phase_seconds: o.phase_seconds.clone(),
        data: data_report(o.config, o.data, o.loaded),
        recipe: o.recipe.clone(),
        pretrain: PretrainReport {
            mode: o.recipe.pretrain.mode,
            layers: o.recipe.pretrain.widths.clone(),
            epochs: o.recipe.pretrain.epochs,
            valid_bce: o.pretrained.valid_bce,
            valid_rounded_accuracy: o.pretrained.valid_rounded_accuracy,
            epoch_seconds: o.pretrained
                .phases
                .iter()
                .flat_map(|p| p.epochs.iter().map(|e| e.seconds))
                .collect(),
            history: o.pretrained.phases.clone(),
            variants: o.variants.clone(),
        },
        classifier: ClassifierReport {
            evaluated_on: match o.test_size {
                Some(n) => format!("{n} labelled test images"),
                None => "no test set (pass --test DIR); see the cross-validated accuracy over the labelled images".into(),
            },
            test_accuracy: o.results.map(|r| r.0.accuracy),
            per_class_accuracy: o.results.map_or_else(Vec::new, |r| {
                crate::train::metrics::per_class_accuracy(&r.0.confusion)
            }),
            confusion: o.results.map_or_else(Vec::new, |r| r.0.confusion.clone()),
            class_names: o.data.class_names.clone(),
            self_training: o.trained.rounds.clone(),
            history: o.trained.phases.clone(),
        },
        baselines: Baselines {
            scratch: BaselineReport {
                description: format!("same network {:?} from scratch", o.recipe.pretrain.widths),
                test_accuracy: o.results.map(|r| r.1.accuracy),
            },
            logreg_pixels: BaselineReport {
                description: "logistic regression on raw pixels".into(),
                test_accuracy: o.results.map(|r| r.2.accuracy),
            },
        },
        gain_points: o.results.map_or_else(BTreeMap::new, |r| {
            BTreeMap::from([
                ("scratch".to_string(), 100.0 * (r.0.accuracy - r.1.accuracy)),
                ("logreg_pixels".to_string(), 100.0 * (r.0.accuracy - r.2.accuracy)),
            ])
        }),
        auto_label: AutoLabelReport {
            target_accuracy: o.config.target_accuracy,
            threshold: o.calibration.threshold,
            calibration: format!(
                "{}-fold cross-validation ({}) over the labelled images, ranked on the served \
                 model's confidence over the unlabelled pool",
                o.calibration.folds, o.calibration.fold_models
            ),
            cross_validated_accuracy: o.calibration.cross_validated_accuracy,
            calibration_accuracy: o.calibration.coverage.accuracy,
            calibration_coverage: o.calibration.coverage.coverage,
            test_coverage: o.test_coverage.map(|c| c.coverage),
            test_accuracy: o.test_coverage.and_then(|c| c.accuracy),
        },
        artifacts: o.artifacts.clone(),
    }
}

fn data_report(config: &PipelineConfig, data: &TrainingData, loaded: &LoadSummary) -> DataReport {
    DataReport {
        source: loaded.kind,
        dir: config.data.dir.display().to_string(),
        labels_file: config
            .data
            .labels_file
            .as_ref()
            .map(|p| p.display().to_string()),
        test_dir: config.data.test.as_ref().map(|p| p.display().to_string()),
        classes: data.classes(),
        input_size: [data.pool.width, data.pool.height],
        skipped_images: loaded.skipped.len(),
        skipped: loaded.skipped.clone(),
        train_images: data.pool.len(),
        valid_images: data.valid.len(),
        test_images: data.test.as_ref().map_or(0, |t| t.len()),
        labelled: data.labels.len(),
        unlabelled: data.pool.len() - data.labels.len(),
    }
}
