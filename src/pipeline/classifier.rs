//! The classifier stages: the *teacher* (head warm-up, then fine-tuning on the labels), the
//! *spreading* of labels over the k-NN graph of the teacher's features into soft targets, and
//! the *student* that learns those targets over the whole pool under shifts and mixup.

use super::pretrain::PhaseHistory;
use super::recipe::FinetuneRecipe;
use crate::model::{
    forward_rows, probabilities_rows, softmax_rows, top_class, Inputs, Loss, Network,
};
use crate::train::knn::{knn_graph, Metric};
use crate::train::spreading::spread_labels;
use crate::train::{fit, Examples, FitOptions, Observer, Shift, Targets};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// Labelled images a classifier learns from, with their classes.
#[derive(Clone, Copy, Debug)]
pub struct Labelled<'a> {
    /// The images, row-major.
    pub images: Inputs<'a>,
    /// One class per image.
    pub labels: &'a [u32],
}

/// The training images a student learns from: all of them, with the labelled rows' classes.
/// Rows not in `labelled_rows` are unlabelled for this classifier; their labels are never read.
#[derive(Clone, Copy, Debug)]
pub struct Unlabelled<'a> {
    /// All training images, row-major.
    pub images: Inputs<'a>,
    /// Rows of `images` whose labels this classifier may use.
    pub labelled_rows: &'a [usize],
    /// The classes of `labelled_rows`, in the same order.
    pub labels: &'a [u32],
}

/// One self-training round.
#[derive(Clone, Debug, Serialize)]
pub struct RoundLog {
    /// 1-based round number.
    pub round: usize,
    /// Unlabelled images the student learned the teacher's predictions on.
    pub unlabelled_images: usize,
    /// Mean max-probability of the teacher over the pool.
    pub mean_teacher_confidence: f64,
    /// Fraction of pool images where the student's class equals the teacher's afterwards.
    pub student_agreement: f64,
}

/// A trained classifier and its history.
#[derive(Clone, Debug)]
pub struct TrainedClassifier {
    /// The network (logits; softmax applied by [`crate::model::probabilities`]).
    pub network: Network,
    /// Learning curves of each phase.
    pub phases: Vec<PhaseHistory>,
    /// Self-training rounds (empty when the recipe has none).
    pub rounds: Vec<RoundLog>,
}

/// What a student learns for every pool image: a distribution per row (`rows × classes`).
#[derive(Clone, Debug)]
pub struct SoftTargets {
    /// `rows × classes` probabilities; labelled rows are one-hot on their class.
    pub values: Vec<f32>,
    /// The teacher's own probabilities, for the round's log.
    pub teacher: Vec<f32>,
}

/// Spreading's α (how far labels travel) and steps. Zhou et al.'s usual α = 0.99 keeps less of
/// each image's own label; 0.9 measured 0.2 points better in the student
/// (docs/labelling-quality.md).
const SPREADING_ALPHA: f32 = 0.9;
const SPREADING_STEPS: usize = 20;

fn options(
    epochs: usize,
    batch_size: usize,
    shift: Option<Shift>,
    mixup: f32,
    threads: usize,
    cosine_decay: bool,
    epoch_rows: Option<usize>,
) -> FitOptions {
    FitOptions {
        epochs,
        batch_size,
        loss: Loss::SoftmaxCrossEntropy,
        input_noise: 0.0,
        threads,
        shift,
        mixup,
        cosine_decay,
        epoch_rows,
    }
}

/// Teacher stage: trains `network` (a transferred encoder or a fresh one) on the labelled
/// images: the head alone first, then every layer above `recipe.freeze`.
pub fn teacher(
    mut network: Network,
    recipe: &FinetuneRecipe,
    labelled: Labelled<'_>,
    rng: &mut ChaCha8Rng,
    threads: usize,
    observer: &dyn Observer,
) -> TrainedClassifier {
    let depth = network.layers.len();
    let examples = Examples {
        inputs: labelled.images,
        targets: Targets::Classes(labelled.labels),
        len: labelled.labels.len(),
        again: &[],
    };
    let mut phases = Vec::new();
    let mut phase =
        |network: &mut Network, name: &str, epochs, optimizer: super::recipe::OptimizerSpec| {
            let opts = options(epochs, recipe.batch_size, None, 0.0, threads, false, None);
            let mut opt = optimizer.build();
            let logs = fit(
                network, &mut opt, &examples, None, &opts, rng, name, observer,
            );
            phases.push(PhaseHistory {
                name: name.into(),
                loss: "cross-entropy",
                epochs: logs,
            });
        };
    if recipe.head_epochs > 0 {
        network.freeze_lowest(depth - 1);
        phase(
            &mut network,
            "head warm-up",
            recipe.head_epochs,
            recipe.head_optimizer,
        );
    }
    network.freeze_lowest(recipe.freeze);
    if recipe.epochs > 0 {
        phase(&mut network, "fine-tune", recipe.epochs, recipe.optimizer);
    }
    TrainedClassifier {
        network,
        phases,
        rounds: Vec::new(),
    }
}

/// Spreading stage: the teacher's probabilities on every pool image, blended with labels
/// spread over the k-NN graph of its last hidden layer; labelled rows learn their true class.
/// Its three parts (the teacher over the pool, the graph, the spreading) are the steps of a
/// "label spreading" phase on `observer`.
pub fn spreading(
    teacher: &Network,
    pool: &Unlabelled<'_>,
    recipe: &FinetuneRecipe,
    threads: usize,
    observer: &dyn Observer,
) -> SoftTargets {
    const PHASE: &str = "label spreading";
    let spread = recipe.spreading_weight > 0.0;
    observer.phase_started(PHASE, 1, if spread { 3 } else { 1 });
    let classes = teacher.output_size();
    let depth = teacher.layers.len();
    // The last hidden layer once: the graph's features, and the head's input.
    let features = spread.then(|| forward_rows(teacher, pool.images, 0..depth - 1, threads));
    let probs = match &features {
        Some(f) => softmax_rows(
            forward_rows(teacher, Inputs::Floats(f), depth - 1..depth, threads),
            classes,
        ),
        None => probabilities_rows(teacher, pool.images, threads),
    };
    observer.step_done();
    let mut values = probs.clone();
    if let Some(features) = features {
        let dim = teacher.layer_dims(depth - 1).0;
        let graph = knn_graph(
            &features,
            dim,
            recipe.spreading_neighbours,
            Metric::Cosine,
            threads,
        );
        drop(features);
        observer.step_done();
        let spread = spread_labels(
            &graph,
            pool.labelled_rows,
            pool.labels,
            classes,
            SPREADING_ALPHA,
            SPREADING_STEPS,
        );
        let w = recipe.spreading_weight;
        for (t, s) in values.iter_mut().zip(&spread) {
            *t = (1.0 - w) * *t + w * s;
        }
        observer.step_done();
    }
    observer.phase_done(PHASE);
    for (&row, &label) in pool.labelled_rows.iter().zip(pool.labels) {
        let t = &mut values[row * classes..(row + 1) * classes];
        t.fill(0.0);
        t[label as usize] = 1.0;
    }
    SoftTargets {
        values,
        teacher: probs,
    }
}

/// Student stage: a fresh copy of `initial` (the pretrained start) learns `targets` over the
/// whole pool under random shifts and mixup. Returns the student and its round log.
#[allow(clippy::too_many_arguments)]
pub fn student(
    initial: &Network,
    pool: &Unlabelled<'_>,
    targets: &SoftTargets,
    recipe: &FinetuneRecipe,
    shape: (usize, usize),
    round: usize,
    rng: &mut ChaCha8Rng,
    threads: usize,
    observer: &dyn Observer,
) -> (Network, PhaseHistory, RoundLog) {
    let classes = initial.output_size();
    let total = pool.images.rows(initial.input_size());
    let mut is_labelled = vec![false; total];
    pool.labelled_rows
        .iter()
        .for_each(|&r| is_labelled[r] = true);
    let unlabelled_count = total - pool.labelled_rows.len();
    let unlabelled_rows = || (0..total).filter(|&r| !is_labelled[r]);
    let row = |v: &[f32], r: usize| top_class(&v[r * classes..(r + 1) * classes]);
    let mean_teacher_confidence = unlabelled_rows()
        .map(|r| f64::from(row(&targets.teacher, r).1))
        .sum::<f64>()
        / unlabelled_count.max(1) as f64;
    let mut network = initial.clone();
    network.freeze_lowest(recipe.freeze);
    let mut opt = recipe.self_training_optimizer.build();
    // The labelled rows come round `self_training_label_repeats` more times per epoch.
    let again: Vec<usize> = (0..recipe.self_training_label_repeats)
        .flat_map(|_| pool.labelled_rows.iter().copied())
        .collect();
    let examples = Examples {
        inputs: pool.images,
        targets: Targets::Values(&targets.values),
        len: total,
        again: &again,
    };
    let name = format!("self-training {round}");
    let shift = (recipe.self_training_shift > 0).then_some(Shift {
        width: shape.0,
        height: shape.1,
        max: recipe.self_training_shift,
    });
    let opts = options(
        recipe.self_training_epochs,
        recipe.self_training_batch_size,
        shift,
        recipe.self_training_mixup,
        threads,
        recipe.self_training_cosine,
        recipe.self_training_epoch_images,
    );
    let epochs = fit(
        &mut network,
        &mut opt,
        &examples,
        None,
        &opts,
        rng,
        &name,
        observer,
    );
    let after = probabilities_rows(&network, pool.images, threads);
    let agree = unlabelled_rows()
        .filter(|&r| row(&after, r).0 == row(&targets.teacher, r).0)
        .count();
    let log = RoundLog {
        round,
        unlabelled_images: unlabelled_count,
        mean_teacher_confidence,
        student_agreement: agree as f64 / unlabelled_count.max(1) as f64,
    };
    observer.note(&format!(
        "self-training round {round}: student agrees with its teacher on {:.1} % of {unlabelled_count} unlabelled images",
        100.0 * log.student_agreement
    ));
    let history = PhaseHistory {
        name,
        loss: "cross-entropy",
        epochs,
    };
    (network, history, log)
}

/// Gradient steps [`teacher`] takes on `labelled` images: for a progress bar over several
/// classifiers trained side by side.
pub fn teacher_steps(recipe: &FinetuneRecipe, labelled: usize) -> usize {
    labelled.div_ceil(recipe.batch_size.max(1)) * (recipe.head_epochs + recipe.epochs)
}

/// Gradient steps one [`student`] round takes over `pool` images of which `labelled` carry
/// labels (each visited `self_training_label_repeats` more times an epoch), likewise.
pub fn student_steps(recipe: &FinetuneRecipe, pool: usize, labelled: usize) -> usize {
    let visited = recipe
        .self_training_epoch_images
        .map_or(pool, |cap| pool.min(cap));
    let rows = visited + recipe.self_training_label_repeats * labelled;
    rows.div_ceil(recipe.self_training_batch_size.max(1)) * recipe.self_training_epochs
}

/// Teacher, then (if the recipe has self-training rounds and a pool is given) spreading and
/// student per round, each student becoming the next round's teacher.
#[allow(clippy::too_many_arguments)]
pub fn train_classifier(
    network: Network,
    recipe: &FinetuneRecipe,
    labelled: Labelled<'_>,
    pool: Option<Unlabelled<'_>>,
    shape: (usize, usize),
    rng: &mut ChaCha8Rng,
    threads: usize,
    observer: &dyn Observer,
) -> TrainedClassifier {
    let initial = network.clone();
    let mut trained = teacher(network, recipe, labelled, rng, threads, observer);
    let width = initial.input_size();
    let pool = pool.filter(|u| u.images.rows(width) > 0 && recipe.self_training_rounds > 0);
    if let Some(pool) = pool {
        for round in 1..=recipe.self_training_rounds {
            let targets = spreading(&trained.network, &pool, recipe, threads, observer);
            let (network, history, log) = student(
                &initial, &pool, &targets, recipe, shape, round, rng, threads, observer,
            );
            trained.network = network;
            trained.phases.push(history);
            trained.rounds.push(log);
        }
    }
    trained
}
