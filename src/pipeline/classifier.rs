//! Training the classifier: head warm-up, fine-tuning, and self-training on pseudo-labels.

use super::pretrain::PhaseHistory;
use super::recipe::FinetuneRecipe;
use crate::model::net::{argmax, softmax_into};
use crate::model::{Loss, Network, Target};
use crate::train::{fit, Examples, FitOptions, Observer, Shift};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// One self-training round: how many pseudo-labels it used.
#[derive(Clone, Debug, Serialize)]
pub struct RoundLog {
    /// 1-based round number.
    pub round: usize,
    /// Pseudo-labelled images added to the labelled ones.
    pub pseudo_labels: usize,
    /// Pseudo-labels per class (balanced by construction unless a class ran short).
    pub per_class: Vec<usize>,
    /// Lowest confidence among the pseudo-labels used.
    pub min_confidence: f32,
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

/// Class probabilities (`n × classes`) of `images` under a classifier.
pub fn probabilities(net: &Network, images: &[f32], threads: usize) -> Vec<f32> {
    let n = images.len() / net.input_size();
    let mut logits = net.forward(images, n, threads);
    let classes = net.output_size();
    let mut row = vec![0.0; classes];
    for chunk in logits.chunks_exact_mut(classes) {
        softmax_into(chunk, &mut row);
        chunk.copy_from_slice(&row);
    }
    logits
}

/// Trains `network` on the labelled images, then (if the recipe asks and `pool` is given)
/// self-trains with confident, class-balanced pseudo-labels from `pool`.
#[allow(clippy::too_many_arguments)]
pub fn train_classifier(
    mut network: Network,
    recipe: &FinetuneRecipe,
    images: &[f32],
    labels: &[u8],
    pool: Option<&[f32]>,
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
    let options = |epochs| FitOptions {
        epochs,
        batch_size: recipe.batch_size,
        loss: Loss::SoftmaxCrossEntropy,
        input_noise: recipe.input_noise,
        threads,
        shift: Some(Shift {
            width: shape.0,
            height: shape.1,
            max: recipe.max_shift,
        }),
    };
    let mut phases = Vec::new();
    if recipe.head_epochs > 0 {
        network.freeze_lowest(depth - 1);
        let mut opt = recipe.head_optimizer.build();
        let epochs = fit(
            &mut network,
            &mut opt,
            &labelled,
            None,
            &options(recipe.head_epochs),
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
    let mut opt = recipe.optimizer.build();
    if recipe.epochs > 0 {
        let epochs = fit(
            &mut network,
            &mut opt,
            &labelled,
            None,
            &options(recipe.epochs),
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
    if let Some(pool) = pool.filter(|p| !p.is_empty()) {
        let pool_len = pool.len() / width;
        for round in 1..=recipe.self_training_rounds {
            let probs = probabilities(&network, pool, threads);
            let share =
                recipe.pseudo_label_fraction * round as f64 / recipe.self_training_rounds as f64;
            let per_class_quota = ((pool_len as f64 * share) / classes as f64).round() as usize;
            let mut by_class: Vec<Vec<(f32, usize)>> = vec![Vec::new(); classes];
            for (i, row) in probs.chunks_exact(classes).enumerate() {
                let c = argmax(row);
                by_class[c].push((row[c], i));
            }
            let mut chosen: Vec<(usize, u8)> = Vec::new();
            let mut per_class = Vec::with_capacity(classes);
            let mut min_confidence = 1.0f32;
            for (c, candidates) in by_class.iter_mut().enumerate() {
                // Most confident first; index breaks ties so the order is reproducible.
                candidates.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                let take = per_class_quota.min(candidates.len());
                per_class.push(take);
                for &(conf, i) in &candidates[..take] {
                    min_confidence = min_confidence.min(conf);
                    chosen.push((i, c as u8));
                }
            }
            chosen.sort_unstable();
            let mut inputs = images.to_vec();
            let mut targets = labels.to_vec();
            for &(i, c) in &chosen {
                inputs.extend_from_slice(&pool[i * width..(i + 1) * width]);
                targets.push(c);
            }
            let log = RoundLog {
                round,
                pseudo_labels: chosen.len(),
                per_class,
                min_confidence,
            };
            observer.note(&format!(
                "self-training round {round}: {} pseudo-labels (confidence ≥ {:.3})",
                log.pseudo_labels, log.min_confidence
            ));
            let examples = Examples {
                inputs: &inputs,
                targets: Target::Classes(&targets),
                len: targets.len(),
            };
            if recipe.fresh_student {
                network = initial.clone();
                network.freeze_lowest(recipe.freeze);
                opt = recipe.optimizer.build();
            }
            let name = format!("self-training {round}");
            let epochs = fit(
                &mut network,
                &mut opt,
                &examples,
                None,
                &options(recipe.self_training_epochs),
                rng,
                &name,
                observer,
            );
            phases.push(PhaseHistory {
                name,
                loss: "cross-entropy",
                epochs,
            });
            rounds.push(log);
        }
    }
    TrainedClassifier {
        network,
        phases,
        rounds,
    }
}
