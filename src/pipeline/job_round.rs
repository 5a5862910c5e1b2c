//! One training round of a label job: the model that labels the job's own pile next.
//!
//! The first run of a job pretrains an autoencoder on the job's own images (no labels needed),
//! so that its first batch can cover the pile. Each later round trains a classifier on what
//! people labelled: a teacher, label spreading over the teacher's features of the whole pile,
//! and a student over the pile. A round warm-starts from the job's last model, so it costs a
//! fraction of a pipeline run. The reviewed random slice (evidence) never trains: it judges
//! the auto-accept threshold, on items drawn from the population the threshold faces.

use super::classifier::{spreading, student, teacher, Labelled, Unlabelled};
use super::{pretrain, Preset, Recipe};
use crate::model::{
    classifier_from_encoder, encode_rows, encoder_depth, forward_rows, probabilities_rows,
    top_class, Decoder, Inputs, Model, ModelMeta, Network, OutOfFold,
};
use crate::train::metrics::{choose_threshold_at, coverage_at, wilson_lower};
use crate::train::Observer;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::time::Instant;

/// Pool images that validate the job's autoencoder (its loss curve only; they still train).
const PRETRAIN_VALID: usize = 2_000;

/// Student epochs of a round that warm-starts from the job's last model (a fresh student
/// takes the recipe's 20).
pub const WARM_STUDENT_EPOCHS: usize = 6;

/// Fine-tuning epochs of a warm-started teacher (a fresh one takes the recipe's 20 head + 40).
pub const WARM_TEACHER_EPOCHS: usize = 10;

/// How many standard errors a job's accepted evidence must clear its target by (one-sided
/// Wilson bound, 95 %). The threshold is the lowest that passes, so the pick favours lucky
/// evidence; at z = 1 a simulated round accepted items 95.05 % right while its evidence said
/// 95.98 % (`aelabel bench loop`, round 5).
pub const JOB_BOUND_Z: f64 = 1.645;

/// What a round trains on: every image of the job and what people said about some of them.
#[derive(Clone, Copy, Debug)]
pub struct RoundData<'a> {
    /// Every image of the job, row-major 8-bit gray, in the job's order.
    pub pixels: &'a [u8],
    /// Image width.
    pub width: usize,
    /// Image height.
    pub height: usize,
    /// The job's classes, in class-index order.
    pub class_names: &'a [String],
    /// `(row, class)` people gave that train.
    pub training: &'a [(usize, u32)],
    /// `(row, class)` of the reviewed random slice: judge the threshold, never train.
    pub evidence: &'a [(usize, u32)],
}

/// Where a round starts.
#[derive(Clone, Copy, Debug)]
pub enum RoundStart<'a> {
    /// Nothing yet: pretrain an autoencoder on the job's images first.
    Nothing,
    /// The job's pretrained autoencoder, no classifier yet.
    Autoencoder(&'a Network),
    /// The job's last model: warm start.
    Previous(&'a Model),
}

/// Settings of one round.
#[derive(Clone, Copy, Debug)]
pub struct RoundSettings {
    /// Accuracy the auto-accepted items must reach.
    pub target_accuracy: f64,
    /// Seed for everything random in the round.
    pub seed: u64,
    /// Threads for the matrix products.
    pub threads: usize,
}

/// The auto-accepted items' accuracy as the evidence estimates it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct AcceptedEstimate {
    /// Share of evidence items at or above the threshold.
    pub share: f64,
    /// Accuracy among them (`None` when none is accepted).
    pub accuracy: Option<f64>,
    /// Its one-sided Wilson lower bound ([`JOB_BOUND_Z`]).
    pub bound: Option<f64>,
    /// Accuracy of the model over every evidence item.
    pub overall_accuracy: Option<f64>,
}

/// A trained round's classifier and what it says about the pile.
#[derive(Clone, Debug)]
pub struct TrainedRound {
    /// The model, ready to save and register (version set from its weights).
    pub model: Model,
    /// `rows × classes` probabilities of every job image under it.
    pub probabilities: Vec<f32>,
    /// The evidence's estimate of the accepted items' accuracy.
    pub accepted: AcceptedEstimate,
}

/// What a round produced.
#[derive(Clone, Debug)]
pub struct RoundOutcome {
    /// The job's autoencoder (pretrained now, or the one it started from).
    pub autoencoder: Network,
    /// Whether the autoencoder was pretrained in this round.
    pub pretrained: bool,
    /// The classifier, unless the round only pretrained (no labels yet).
    pub trained: Option<TrainedRound>,
    /// Wall seconds of each stage, in order.
    pub stage_seconds: Vec<(String, f64)>,
}

/// Why a round cannot run.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RoundError {
    /// Fewer training labels than the round needs.
    #[error("{have} training labels cover {classes_seen} of the {classes} classes; a round needs at least one label of every class (label more items with `aelabel jobs next` and `jobs review`)")]
    TooFewLabels {
        /// Training labels.
        have: usize,
        /// Distinct classes among them.
        classes_seen: usize,
        /// The job's classes.
        classes: usize,
    },
    /// The data does not fit the model it starts from.
    #[error("{0}")]
    Mismatch(String),
}

/// The recipe a job round trains with: the default preset sized to the job's pile.
pub fn round_recipe(data: &RoundData<'_>) -> Recipe {
    let mut recipe = Recipe::new(Preset::Default, data.training.len());
    recipe.fit_to_data(
        (data.width, data.height),
        data.pixels.len() / image_len(data),
    );
    recipe
}

fn image_len(data: &RoundData<'_>) -> usize {
    (data.width * data.height).max(1)
}

/// Trains one round. Without training labels it only pretrains (when it starts from
/// nothing): that is the first batch's autoencoder.
pub fn train_round(
    data: &RoundData<'_>,
    start: RoundStart<'_>,
    settings: &RoundSettings,
    observer: &dyn Observer,
) -> Result<RoundOutcome, RoundError> {
    let size = image_len(data);
    let rows = data.pixels.len() / size;
    let classes = data.class_names.len();
    check(data, start, rows)?;
    let mut rng = ChaCha8Rng::seed_from_u64(settings.seed);
    let threads = settings.threads.max(1);
    let mut recipe = round_recipe(data);
    let mut stages = Vec::new();
    let mut clock = Instant::now();
    let mut lap = |stages: &mut Vec<(String, f64)>, name: &str| {
        stages.push((name.to_string(), clock.elapsed().as_secs_f64()));
        clock = Instant::now();
    };
    let images = Inputs::Bytes(data.pixels);
    let (autoencoder, pretrained) = match start {
        RoundStart::Nothing => {
            let mut valid_rows: Vec<usize> = (0..rows).collect();
            valid_rows.shuffle(&mut rng);
            valid_rows.truncate(PRETRAIN_VALID.min(rows / 10));
            let valid: Vec<u8> = valid_rows
                .iter()
                .flat_map(|&r| data.pixels[r * size..(r + 1) * size].iter().copied())
                .collect();
            let p = pretrain(
                &recipe.pretrain,
                images,
                Inputs::Bytes(&valid),
                &mut rng,
                threads,
                observer,
            );
            lap(&mut stages, "pretrain");
            (p.network, true)
        }
        RoundStart::Autoencoder(ae) => (ae.clone(), false),
        RoundStart::Previous(model) => (model.autoencoder.clone(), false),
    };
    if data.training.is_empty() {
        return Ok(RoundOutcome {
            autoencoder,
            pretrained,
            trained: None,
            stage_seconds: stages,
        });
    }
    let (rows_l, labels): (Vec<usize>, Vec<u32>) = data.training.iter().copied().unzip();
    let labelled_pixels: Vec<u8> = rows_l
        .iter()
        .flat_map(|&r| data.pixels[r * size..(r + 1) * size].iter().copied())
        .collect();
    let labelled = Labelled {
        images: Inputs::Bytes(&labelled_pixels),
        labels: &labels,
    };
    // Rows sorted for the student's bookkeeping; labels follow them.
    let mut pairs = data.training.to_vec();
    pairs.sort_unstable();
    let (pool_rows, pool_labels): (Vec<usize>, Vec<u32>) = pairs.into_iter().unzip();
    let pool = Unlabelled {
        images,
        labelled_rows: &pool_rows,
        labels: &pool_labels,
    };
    let warm = match start {
        RoundStart::Previous(model) => Some(&model.classifier),
        _ => None,
    };
    let initial = match warm {
        Some(previous) => previous.clone(),
        None => classifier_from_encoder(&autoencoder, classes, &mut rng),
    };
    if warm.is_some() {
        recipe.finetune.head_epochs = 0;
        recipe.finetune.epochs = WARM_TEACHER_EPOCHS;
        recipe.finetune.self_training_rounds = 1;
        recipe.finetune.self_training_epochs = WARM_STUDENT_EPOCHS;
    }
    let taught = teacher(
        initial.clone(),
        &recipe.finetune,
        labelled,
        &mut rng,
        threads,
        observer,
    );
    lap(&mut stages, "teacher");
    let mut network = taught.network;
    for round in 1..=recipe.finetune.self_training_rounds {
        let targets = spreading(&network, &pool, &recipe.finetune, threads, observer);
        lap(&mut stages, "spreading");
        let (trained, _, _) = student(
            &initial,
            &pool,
            &targets,
            &recipe.finetune,
            (data.width, data.height),
            round,
            &mut rng,
            threads,
            observer,
        );
        network = trained;
        lap(&mut stages, "student");
    }
    let probabilities = probabilities_rows(&network, images, threads);
    let (evidence, accepted, threshold) = judge(
        &probabilities,
        classes,
        data.evidence,
        settings.target_accuracy,
    );
    lap(&mut stages, "label the pile");
    let decoder = match start {
        RoundStart::Previous(m) => m.meta.decoder,
        _ => Decoder::Separate,
    };
    let model = assemble(
        data,
        settings,
        Assembly {
            widths: recipe.pretrain.widths.clone(),
            decoder,
            threshold,
            evidence,
            accepted,
            warm: warm.is_some(),
        },
        autoencoder.clone(),
        network,
    );
    Ok(RoundOutcome {
        autoencoder,
        pretrained,
        trained: Some(TrainedRound {
            model,
            probabilities,
            accepted,
        }),
        stage_seconds: stages,
    })
}

/// What a round decided about its model besides the networks.
struct Assembly {
    widths: Vec<usize>,
    decoder: Decoder,
    threshold: f32,
    evidence: OutOfFold,
    accepted: AcceptedEstimate,
    warm: bool,
}

/// The round's model: networks, the job's classes and input size, the threshold with the
/// evidence it was judged on (and the bound, so a threshold for another target is judged the
/// same way), and a version from its weights.
fn assemble(
    data: &RoundData<'_>,
    settings: &RoundSettings,
    a: Assembly,
    autoencoder: Network,
    mut classifier: Network,
) -> Model {
    for p in &mut classifier.params {
        p.frozen = false;
    }
    let mut model = Model {
        meta: ModelMeta {
            version: String::new(),
            widths: a.widths,
            decoder: a.decoder,
            input_width: data.width,
            input_height: data.height,
            class_names: data.class_names.to_vec(),
            auto_accept_threshold: a.threshold,
            training: serde_json::json!({
                "preset": "job",
                "labels": data.training.len(),
                "evidence_labels": data.evidence.len(),
                "seed": settings.seed,
                "target_accuracy": settings.target_accuracy,
                "bound_z": JOB_BOUND_Z,
                "warm_start": a.warm,
                "evidence_accuracy": a.accepted.overall_accuracy,
                "auto_label_evidence_coverage": a.accepted.share,
                "auto_label_evidence_accuracy": a.accepted.accuracy,
            }),
            calibration: Some(a.evidence),
        },
        autoencoder,
        classifier,
    };
    model.meta.version = format!(
        "job-{}-{:012x}",
        data.training.len() + data.evidence.len(),
        model.weights_hash() & 0xffff_ffff_ffff
    );
    model
}

/// Refuses data that cannot train: labels outside the classes or rows, too few labels, a
/// model of another size.
fn check(data: &RoundData<'_>, start: RoundStart<'_>, rows: usize) -> Result<(), RoundError> {
    let classes = data.class_names.len();
    let size = image_len(data);
    let input = match start {
        RoundStart::Nothing => None,
        RoundStart::Autoencoder(ae) => Some(ae.input_size()),
        RoundStart::Previous(m) => Some(m.meta.input_width * m.meta.input_height),
    };
    if let Some(input) = input.filter(|&i| i != size) {
        return Err(RoundError::Mismatch(format!(
            "the job's images are {}×{} ({size} pixels) but its model takes {input} pixels",
            data.width, data.height
        )));
    }
    if let RoundStart::Previous(m) = start {
        if m.meta.class_names != data.class_names {
            return Err(RoundError::Mismatch(format!(
                "the job's classes ({}) are not its model's ({})",
                data.class_names.join(", "),
                m.meta.class_names.join(", ")
            )));
        }
    }
    for &(row, class) in data.training.iter().chain(data.evidence) {
        if row >= rows || class as usize >= classes {
            return Err(RoundError::Mismatch(format!(
                "label (row {row}, class {class}) is outside the job's {rows} images or {classes} classes"
            )));
        }
    }
    if data.training.is_empty() {
        return Ok(());
    }
    let mut seen = vec![false; classes];
    data.training
        .iter()
        .for_each(|&(_, c)| seen[c as usize] = true);
    let classes_seen = seen.iter().filter(|&&s| s).count();
    if classes_seen < classes {
        return Err(RoundError::TooFewLabels {
            have: data.training.len(),
            classes_seen,
            classes,
        });
    }
    Ok(())
}

/// The model's confidence and correctness on the evidence, what accepting at the chosen
/// threshold yields there, and that threshold (the lowest whose accepted evidence clears
/// `target` by the Wilson bound; accept nothing without evidence).
fn judge(
    probabilities: &[f32],
    classes: usize,
    evidence: &[(usize, u32)],
    target: f64,
) -> (OutOfFold, AcceptedEstimate, f32) {
    let mut oof = OutOfFold::default();
    for &(row, class) in evidence {
        let (predicted, confidence) = top_class(&probabilities[row * classes..(row + 1) * classes]);
        oof.confidence.push(confidence);
        oof.correct.push(predicted == class as usize);
    }
    let threshold = choose_threshold_at(&oof.confidence, &oof.correct, target, JOB_BOUND_Z);
    let c = coverage_at(threshold, &oof.confidence, &oof.correct);
    let accepted_n = (c.coverage * oof.confidence.len() as f64).round();
    let right = oof.correct.iter().filter(|&&ok| ok).count();
    let estimate = AcceptedEstimate {
        share: c.coverage,
        accuracy: c.accuracy,
        bound: c
            .accuracy
            .map(|a| wilson_lower(a * accepted_n, accepted_n, JOB_BOUND_Z)),
        overall_accuracy: (!oof.correct.is_empty())
            .then(|| right as f64 / oof.correct.len() as f64),
    };
    (oof, estimate, threshold)
}

/// What item selection looks at for a job's images: the features it clusters (the last
/// hidden layer of the job's classifier, else the autoencoder's codes) and the classifier's
/// probabilities (`None` before the first classifier).
pub fn selection_inputs(
    model: Option<&Network>,
    autoencoder: &Network,
    pixels: &[u8],
    threads: usize,
) -> (Vec<f32>, usize, Option<Vec<f32>>) {
    let images = Inputs::Bytes(pixels);
    match model {
        Some(classifier) => {
            let depth = classifier.layers.len();
            let features = forward_rows(classifier, images, 0..depth - 1, threads);
            let dim = classifier.layer_dims(depth - 1).0;
            (
                features,
                dim,
                Some(probabilities_rows(classifier, images, threads)),
            )
        }
        None => {
            let codes = encode_rows(autoencoder, images, threads);
            let dim = autoencoder.layer_dims(encoder_depth(autoencoder) - 1).1;
            (codes, dim, None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_needs_a_label_of_every_class() {
        let names = vec!["a".to_string(), "b".to_string()];
        let pixels = vec![0u8; 4 * 3];
        let data = RoundData {
            pixels: &pixels,
            width: 2,
            height: 2,
            class_names: &names,
            training: &[(0, 0), (1, 0)],
            evidence: &[],
        };
        assert_eq!(
            check(&data, RoundStart::Nothing, 3),
            Err(RoundError::TooFewLabels {
                have: 2,
                classes_seen: 1,
                classes: 2
            })
        );
    }

    #[test]
    fn evidence_judges_the_threshold() {
        // 40 evidence items: 20 confident and right, 20 unsure and half wrong. 20 of 20 right
        // has a Wilson bound of 0.881 at z = 1.645, which clears 80 %; 10 of 10 (0.787) would not.
        let mut probs = Vec::new();
        let mut evidence = Vec::new();
        for i in 0..40usize {
            let p = if i < 20 { 0.99 } else { 0.6 };
            probs.extend([p, 1.0 - p]);
            let truth = if i >= 20 && i % 2 == 0 { 1 } else { 0 };
            evidence.push((i, truth));
        }
        let (oof, estimate, threshold) = judge(&probs, 2, &evidence, 0.8);
        assert_eq!(oof.correct.iter().filter(|&&c| c).count(), 30);
        assert_eq!(threshold, 0.99);
        assert_eq!(estimate.share, 0.5);
        assert_eq!(estimate.accuracy, Some(1.0));
        assert!(
            (estimate.bound.unwrap() - 0.8808).abs() < 1e-4,
            "{estimate:?}"
        );
        assert_eq!(estimate.overall_accuracy, Some(0.75));
        let (_, _, none) = judge(&probs[..20], 2, &evidence[..10], 0.8);
        assert_eq!(none, crate::train::metrics::ACCEPT_NOTHING);
    }
}
