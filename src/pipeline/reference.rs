//! `--preset seed`: every pretraining run of the reference reproduced and compared with its
//! published numbers.

use super::pretrain::{pretrain, Pretrained};
use super::recipe::{PretrainMode, Recipe};
use super::report::{reference_for, VariantReport, REFERENCE_TOLERANCE};
use crate::model::Inputs;
use crate::train::Observer;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Seed preset: trains every pretraining run of the reference and compares it with its numbers.
pub fn reproduce_reference(
    recipe: &Recipe,
    main: &Pretrained,
    images: Inputs<'_>,
    valid: Inputs<'_>,
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
