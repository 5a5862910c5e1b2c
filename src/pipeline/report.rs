//! `report.json` and `report.md`: what a run did and how well it worked.

use super::classifier::RoundLog;
use super::pretrain::PhaseHistory;
use super::recipe::{Preset, PretrainMode, Recipe};
use crate::data::{Skipped, SourceKind};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// A reference number from `REFERENCE.md` (Keras, same data, seed 42).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct ReferenceNumbers {
    /// Validation BCE (MSE for the inner greedy autoencoder).
    pub valid_loss: f64,
    /// Validation rounded accuracy, when the reference gives one.
    pub valid_rounded_accuracy: Option<f64>,
}

/// How far above the reference's validation loss a reproduction may land.
pub const REFERENCE_TOLERANCE: f64 = 0.002;

/// The reference's numbers for each pretraining run, by the names the report uses.
pub fn reference_for(run: &str) -> Option<ReferenceNumbers> {
    let (valid_loss, acc) = match run {
        "joint" => (0.2864, Some(0.9283)),
        "tied" => (0.2848, Some(0.9323)),
        "greedy layer 1" => (0.2786, Some(0.9459)),
        "greedy layer 2" => (0.1710, None),
        "greedy stack" => (0.2887, Some(0.9323)),
        _ => return None,
    };
    Some(ReferenceNumbers {
        valid_loss,
        valid_rounded_accuracy: acc,
    })
}

/// One pretraining run compared with the reference (seed preset).
#[derive(Clone, Debug, Serialize)]
pub struct VariantReport {
    /// `joint`, `tied`, `greedy layer 1`, `greedy layer 2` or `greedy stack`.
    pub run: String,
    /// Epochs trained (0 for the stack, which is only evaluated).
    pub epochs: usize,
    /// Loss minimised: `bce` or `mse`.
    pub loss: String,
    /// Validation loss measured here.
    pub valid_loss: f64,
    /// Validation rounded accuracy measured here (BCE runs).
    pub valid_rounded_accuracy: Option<f64>,
    /// The reference's numbers.
    pub reference: Option<ReferenceNumbers>,
    /// `valid_loss ≤ reference + REFERENCE_TOLERANCE`.
    pub within_tolerance: Option<bool>,
}

/// Pretraining summary.
#[derive(Clone, Debug, Serialize)]
pub struct PretrainReport {
    /// Joint, tied or greedy.
    pub mode: PretrainMode,
    /// Encoder widths.
    pub layers: Vec<usize>,
    /// Epochs (per layer when greedy).
    pub epochs: usize,
    /// Validation BCE of the saved autoencoder.
    pub valid_bce: f64,
    /// Validation rounded accuracy of the saved autoencoder.
    pub valid_rounded_accuracy: f64,
    /// Seconds of each training epoch, all phases in order.
    pub epoch_seconds: Vec<f64>,
    /// Per-epoch curves.
    pub history: Vec<PhaseHistory>,
    /// Seed preset: every reference pretraining run reproduced and compared.
    pub variants: Vec<VariantReport>,
}

/// The classifier's test-set results.
#[derive(Clone, Debug, Serialize)]
pub struct ClassifierReport {
    /// What the accuracy was measured on: the test set, or (without one) nothing but the
    /// cross-validation over the labelled images (`auto_label.cross_validated_accuracy`).
    pub evaluated_on: String,
    /// Accuracy on the test images (`null` without a test set).
    pub test_accuracy: Option<f64>,
    /// Recall of each class on the test images (empty without a test set).
    pub per_class_accuracy: Vec<f64>,
    /// `confusion[true][predicted]` on the test images (empty without a test set).
    pub confusion: Vec<Vec<u64>>,
    /// Class names in index order.
    pub class_names: Vec<String>,
    /// Self-training rounds.
    pub self_training: Vec<RoundLog>,
    /// Per-epoch curves of every classifier phase.
    pub history: Vec<PhaseHistory>,
}

/// A baseline's test accuracy.
#[derive(Clone, Debug, Serialize)]
pub struct BaselineReport {
    /// What was trained.
    pub description: String,
    /// Accuracy on the test images (`null` without a test set).
    pub test_accuracy: Option<f64>,
}

/// Baselines trained on the same labelled images in the same run.
#[derive(Clone, Debug, Serialize)]
pub struct Baselines {
    /// The classifier's architecture from random weights, labelled images only.
    pub scratch: BaselineReport,
    /// Softmax regression on raw pixels, labelled images only.
    pub logreg_pixels: BaselineReport,
}

/// Auto-accepting confident predictions.
#[derive(Clone, Debug, Serialize)]
pub struct AutoLabelReport {
    /// Accuracy the accepted predictions should reach.
    pub target_accuracy: f64,
    /// Max-softmax confidence at or above which a prediction is accepted.
    pub threshold: f32,
    /// How the threshold was chosen (only labelled images are used).
    pub calibration: String,
    /// Accuracy of out-of-fold predictions on the labelled images: an estimate of test accuracy
    /// that needs no test labels.
    pub cross_validated_accuracy: f64,
    /// Fraction of out-of-fold predictions accepted at the threshold.
    pub calibration_coverage: f64,
    /// Accuracy of the accepted out-of-fold predictions (`null` when none is accepted).
    pub calibration_accuracy: Option<f64>,
    /// Fraction of test images accepted (`null` without a test set).
    pub test_coverage: Option<f64>,
    /// Accuracy of the accepted test predictions (`null` when none is accepted).
    pub test_accuracy: Option<f64>,
}

/// Sizes of the data the run used.
#[derive(Clone, Debug, Serialize)]
pub struct DataReport {
    /// `idx` or `folder`.
    pub source: SourceKind,
    /// Directory read.
    pub dir: String,
    /// The `--labels-file` CSV, if one labelled the folder.
    pub labels_file: Option<String>,
    /// The `--test` directory, if one was given.
    pub test_dir: Option<String>,
    /// Number of classes.
    pub classes: usize,
    /// Width and height every image was converted to (the model's input).
    pub input_size: [usize; 2],
    /// Image files left out because they could not be decoded (see the warnings).
    pub skipped_images: usize,
    /// The files left out and why.
    pub skipped: Vec<Skipped>,
    /// Training images (all used, without labels, for pretraining).
    pub train_images: usize,
    /// Validation images (autoencoder validation and t-SNE).
    pub valid_images: usize,
    /// Test images (final evaluation only).
    pub test_images: usize,
    /// Labelled images the classifier trains on.
    pub labelled: usize,
    /// Training images whose labels are never read (the self-training pool).
    pub unlabelled: usize,
}

/// The whole report, written as `report.json`.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Version string stored in the model file.
    pub model_version: String,
    /// Recipe preset.
    pub preset: Preset,
    /// Seed for initialisation, sampling and shuffling.
    pub seed: u64,
    /// Labelled images requested.
    pub labels: usize,
    /// Threads used for matrix products.
    pub threads: usize,
    /// Wall time of the whole run, loading to last file written.
    pub wall_seconds: f64,
    /// Wall time of each phase.
    pub phase_seconds: BTreeMap<String, f64>,
    /// Data sizes.
    pub data: DataReport,
    /// The full recipe.
    pub recipe: Recipe,
    /// Pretraining.
    pub pretrain: PretrainReport,
    /// The transferred classifier.
    pub classifier: ClassifierReport,
    /// Baselines on the same labels.
    pub baselines: Baselines,
    /// Test accuracy gain of the classifier over each baseline, in percentage points.
    pub gain_points: BTreeMap<String, f64>,
    /// Auto-labelling.
    pub auto_label: AutoLabelReport,
    /// Files written, relative to the output directory.
    pub artifacts: Vec<String>,
}

fn pct(x: f64) -> String {
    format!("{:.2} %", 100.0 * x)
}

fn opt_pct(x: Option<f64>) -> String {
    x.map_or_else(|| "– (no test set)".into(), pct)
}

impl Report {
    /// The same story as `report.json`, for a person.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# aelabel run `{}`\n", self.model_version);
        let _ = writeln!(
            s,
            "Preset **{:?}**, {} labels, seed {}, {} thread(s); whole run {:.1} s.\n",
            self.preset, self.labels, self.seed, self.threads, self.wall_seconds
        );
        self.data_markdown(&mut s);
        let _ = writeln!(
            s,
            "## Headline\n\nMeasured on: {}.\n\n| model | test accuracy |\n|---|---|",
            self.classifier.evaluated_on
        );
        let _ = writeln!(
            s,
            "| aelabel classifier ({:?} recipe) | **{}** |",
            self.preset,
            opt_pct(self.classifier.test_accuracy)
        );
        let _ = writeln!(
            s,
            "| {} | {} |",
            self.baselines.scratch.description,
            opt_pct(self.baselines.scratch.test_accuracy)
        );
        let _ = writeln!(
            s,
            "| {} | {} |\n",
            self.baselines.logreg_pixels.description,
            opt_pct(self.baselines.logreg_pixels.test_accuracy)
        );
        let _ = writeln!(
            s,
            "Cross-validated accuracy over the labelled images: **{}**.\n",
            pct(self.auto_label.cross_validated_accuracy)
        );
        for (k, v) in &self.gain_points {
            let _ = writeln!(s, "- gain over {k}: {v:+.2} points");
        }
        let a = &self.auto_label;
        if let Some(calibration_accuracy) = a.calibration_accuracy {
            let on_test = match a.test_coverage {
                Some(coverage) => format!(
                    "On the test set that accepts **{}** of the images, and {} of those are right",
                    pct(coverage),
                    opt_pct(a.test_accuracy)
                ),
                None => "There is no test set to check it on".into(),
            };
            let _ = writeln!(
            s,
            "\n## Auto-labelling\n\nPredictions with confidence ≥ **{:.4}** are auto-accepted, chosen by {} for a \
             target accuracy of {} (out-of-fold accuracy {}, accepted {} at {}). {on_test}; the rest go to review.\n",
            a.threshold,
            a.calibration,
            pct(a.target_accuracy),
            pct(a.cross_validated_accuracy),
            pct(a.calibration_coverage),
            pct(calibration_accuracy),
        );
        } else {
            let _ = writeln!(
                s,
                "\n## Auto-labelling\n\nNo confidence threshold reaches {} on {} (out-of-fold accuracy {}), so \
                 nothing is auto-accepted: every prediction goes to review. More labels raise the accuracy \
                 and the calibration evidence.\n",
                pct(a.target_accuracy),
                a.calibration,
                pct(a.cross_validated_accuracy)
            );
        }
        let p = &self.pretrain;
        let _ = writeln!(
            s,
            "## Pretraining\n\n{:?}{} autoencoder {:?} (mirrored decoder), {} epochs: validation BCE **{:.4}**, \
             rounded accuracy {:.4}. Median epoch {:.2} s.\n",
            p.mode,
            match self.recipe.pretrain.input_noise {
                x if x > 0.0 => format!(" denoising ({:.0} % of pixels masked)", 100.0 * x),
                _ => String::new(),
            },
            p.layers,
            p.epochs,
            p.valid_bce,
            p.valid_rounded_accuracy,
            median(&p.epoch_seconds)
        );
        if !p.variants.is_empty() {
            let _ = writeln!(s, "Reproduction of the reference (valid loss must be ≤ reference + {REFERENCE_TOLERANCE}):\n");
            let _ = writeln!(s, "| run | epochs | loss | valid loss | reference | valid rounded acc. | reference | ok |\n|---|---|---|---|---|---|---|---|");
            for v in &p.variants {
                let r = v.reference;
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {:.4} | {} | {} | {} | {} |",
                    v.run,
                    v.epochs,
                    v.loss,
                    v.valid_loss,
                    r.map_or("–".into(), |r| format!("{:.4}", r.valid_loss)),
                    v.valid_rounded_accuracy
                        .map_or("–".into(), |x| format!("{x:.4}")),
                    r.and_then(|r| r.valid_rounded_accuracy)
                        .map_or("–".into(), |x| format!("{x:.4}")),
                    match v.within_tolerance {
                        Some(true) => "yes",
                        Some(false) => "**no**",
                        None => "–",
                    }
                );
            }
            let _ = writeln!(s);
        }
        let c = &self.classifier;
        if !c.per_class_accuracy.is_empty() {
            let _ = writeln!(
                s,
                "## Classifier per class (test)\n\n| class | accuracy |\n|---|---|"
            );
            for (name, acc) in c.class_names.iter().zip(&c.per_class_accuracy) {
                let _ = writeln!(s, "| {name} | {} |", pct(*acc));
            }
        }
        if !c.self_training.is_empty() {
            let _ = writeln!(s, "\nSelf-training rounds (student learns the teacher's soft predictions on unlabelled images):\n");
            for r in &c.self_training {
                let _ = writeln!(
                    s,
                    "- round {}: {} unlabelled images, teacher's mean confidence {:.3}, student agrees on {}",
                    r.round,
                    r.unlabelled_images,
                    r.mean_teacher_confidence,
                    pct(r.student_agreement)
                );
            }
        }
        let _ = writeln!(s, "\n## Time\n\n| phase | seconds |\n|---|---|");
        for (k, v) in &self.phase_seconds {
            let _ = writeln!(s, "| {k} | {v:.1} |");
        }
        let _ = writeln!(s, "\n## Pictures\n");
        for a in self.artifacts.iter().filter(|a| a.ends_with(".png")) {
            let _ = writeln!(s, "![{a}]({a})\n");
        }
        s
    }
}

impl Report {
    fn data_markdown(&self, s: &mut String) {
        let d = &self.data;
        let _ = writeln!(
            s,
            "Data from `{}` ({:?}, {} classes, {}×{} grayscale): {} training images pretrain the autoencoder \
             without labels; {} labelled images train the classifier; the other {} are used without labels. \
             {} validation and {} test images.\n",
            d.dir,
            d.source,
            d.classes,
            d.input_size[0],
            d.input_size[1],
            d.train_images,
            d.labelled,
            d.unlabelled,
            d.valid_images,
            d.test_images
        );
        if d.skipped_images > 0 {
            let _ = writeln!(
                s,
                "**{} image file(s) could not be decoded and were left out**, e.g. `{}`.\n",
                d.skipped_images,
                d.skipped
                    .first()
                    .map_or(String::new(), |k| k.path.display().to_string())
            );
        }
    }
}

/// Median of a slice (0 when empty).
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
