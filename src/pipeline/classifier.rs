//! Training the classifier: head warm-up, fine-tuning, then self-training in which a student
//! learns the teacher's soft predictions on the unlabelled pool under random shifts.

use super::pretrain::PhaseHistory;
use super::recipe::FinetuneRecipe;
use crate::model::net::argmax;
use crate::model::probabilities;
use crate::model::{Loss, Network, Target};
use crate::train::knn::{knn_graph, Metric};
use crate::train::spreading::spread_labels;
use crate::train::{fit, Examples, FitOptions, Observer, Shift};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// The training images a student learns from: all of them, with the labelled rows' classes.
/// Rows not in `labelled_rows` are unlabelled for this classifier; their labels are never read.
#[derive(Clone, Copy, Debug)]
pub struct Unlabelled<'a> {
    /// All training images, row-major.
    pub images: &'a [f32],
    /// Rows of `images` whose labels this classifier may use.
    pub labelled_rows: &'a [usize],
    /// The classes of `labelled_rows`, in the same order.
    pub labels: &'a [u8],
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
    /// The network (logits; softmax applied by [`probabilities`]).
    pub network: Network,
    /// Learning curves of each phase.
    pub phases: Vec<PhaseHistory>,
    /// Self-training rounds (empty when the recipe has none).
    pub rounds: Vec<RoundLog>,
}

/// Spreading's α (how far labels travel) and steps; Zhou et al.'s usual values.
const SPREADING_ALPHA: f32 = 0.99;
const SPREADING_STEPS: usize = 20;

/// Label distributions spread from the labelled rows over the k-NN graph of the classifier's
/// last hidden layer (its learned features) for every image of `source`.
fn spread_over_teacher_features(
    teacher: &Network,
    source: &Unlabelled<'_>,
    recipe: &FinetuneRecipe,
    threads: usize,
) -> Vec<f32> {
    let depth = teacher.layers.len();
    let n = source.images.len() / teacher.input_size();
    let features = teacher.forward_range(source.images, n, 0..depth - 1, threads);
    let dim = teacher.layer_dims(depth - 1).0;
    let graph = knn_graph(
        &features,
        dim,
        recipe.spreading_neighbours,
        Metric::Cosine,
        threads,
    );
    spread_labels(
        &graph,
        source.labelled_rows,
        source.labels,
        teacher.output_size(),
        SPREADING_ALPHA,
        SPREADING_STEPS,
    )
}

/// Trains `network` (a transferred encoder or a fresh one) on the labelled images; then, if
/// the recipe has self-training rounds and `unlabelled` is given, replaces it by students
/// trained on the labels plus the teacher's soft predictions on the unlabelled images.
#[allow(clippy::too_many_arguments)]
pub fn train_classifier(
    mut network: Network,
    recipe: &FinetuneRecipe,
    images: &[f32],
    labels: &[u8],
    unlabelled: Option<Unlabelled<'_>>,
    shape: (usize, usize),
    rng: &mut ChaCha8Rng,
    threads: usize,
    observer: &dyn Observer,
) -> TrainedClassifier {
    let depth = network.layers.len();
    let initial = network.clone();
    let labelled = Examples {
        inputs: images,
        targets: Target::Classes(labels),
        len: labels.len(),
    };
    let options = |epochs, batch_size, shift, mixup| FitOptions {
        epochs,
        batch_size,
        loss: Loss::SoftmaxCrossEntropy,
        input_noise: 0.0,
        threads,
        shift,
        mixup,
    };
    let mut phases = Vec::new();
    if recipe.head_epochs > 0 {
        network.freeze_lowest(depth - 1);
        let mut opt = recipe.head_optimizer.build();
        let opts = options(recipe.head_epochs, recipe.batch_size, None, 0.0);
        let epochs = fit(
            &mut network,
            &mut opt,
            &labelled,
            None,
            &opts,
            rng,
            "head warm-up",
            observer,
        );
        phases.push(PhaseHistory {
            name: "head warm-up".into(),
            loss: "cross-entropy",
            epochs,
        });
    }
    network.freeze_lowest(recipe.freeze);
    if recipe.epochs > 0 {
        let mut opt = recipe.optimizer.build();
        let opts = options(recipe.epochs, recipe.batch_size, None, 0.0);
        let epochs = fit(
            &mut network,
            &mut opt,
            &labelled,
            None,
            &opts,
            rng,
            "fine-tune",
            observer,
        );
        phases.push(PhaseHistory {
            name: "fine-tune".into(),
            loss: "cross-entropy",
            epochs,
        });
    }

    let mut rounds = Vec::new();
    let classes = network.output_size();
    let width = network.input_size();
    let source = unlabelled.filter(|u| !u.images.is_empty() && recipe.self_training_rounds > 0);
    if let Some(source) = source {
        let total = source.images.len() / width;
        let unlabelled_count = total - source.labelled_rows.len();
        let shift = Some(Shift {
            width: shape.0,
            height: shape.1,
            max: recipe.self_training_shift,
        });
        let mut is_labelled = vec![false; total];
        source
            .labelled_rows
            .iter()
            .for_each(|&r| is_labelled[r] = true);
        let unlabelled_rows = || (0..total).filter(|&r| !is_labelled[r]);
        for round in 1..=recipe.self_training_rounds {
            let teacher = probabilities(&network, source.images, threads);
            // Unlabelled rows learn the teacher's distribution, blended with labels spread
            // over the neighbourhoods of the teacher's last hidden layer; labelled rows learn
            // their true class.
            let mut targets = teacher.clone();
            if recipe.spreading_weight > 0.0 {
                let spread = spread_over_teacher_features(&network, &source, recipe, threads);
                let w = recipe.spreading_weight;
                for (t, s) in targets.iter_mut().zip(&spread) {
                    *t = (1.0 - w) * *t + w * s;
                }
            }
            for (&row, &label) in source.labelled_rows.iter().zip(source.labels) {
                let t = &mut targets[row * classes..(row + 1) * classes];
                t.fill(0.0);
                t[usize::from(label)] = 1.0;
            }
            let mean_teacher_confidence = unlabelled_rows()
                .map(|r| {
                    let p = &teacher[r * classes..(r + 1) * classes];
                    f64::from(p[argmax(p)])
                })
                .sum::<f64>()
                / unlabelled_count.max(1) as f64;
            let mut student = initial.clone();
            student.freeze_lowest(recipe.freeze);
            let mut opt = recipe.self_training_optimizer.build();
            let examples = Examples {
                inputs: source.images,
                targets: Target::Values(&targets),
                len: total,
            };
            let name = format!("self-training {round}");
            let opts = options(
                recipe.self_training_epochs,
                recipe.self_training_batch_size,
                shift,
                recipe.self_training_mixup,
            );
            let epochs = fit(
                &mut student,
                &mut opt,
                &examples,
                None,
                &opts,
                rng,
                &name,
                observer,
            );
            phases.push(PhaseHistory {
                name,
                loss: "cross-entropy",
                epochs,
            });
            let after = probabilities(&student, source.images, threads);
            let agree = unlabelled_rows()
                .filter(|&r| {
                    let range = r * classes..(r + 1) * classes;
                    argmax(&after[range.clone()]) == argmax(&teacher[range])
                })
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
            rounds.push(log);
            network = student;
        }
    }
    TrainedClassifier {
        network,
        phases,
        rounds,
    }
}
