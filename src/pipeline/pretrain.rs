//! Pretraining the stacked autoencoder on unlabelled images: joint, tied or greedy.

use super::recipe::{PretrainMode, PretrainRecipe};
use crate::model::{
    autoencoder, forward_rows, stack_autoencoders, Activation, Decoder, Inputs, Loss, Network,
};
use crate::train::{evaluate, fit, EpochLog, Examples, FitOptions, Observer, Targets};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// The learning curve of one trained (sub-)network.
#[derive(Clone, Debug, Serialize)]
pub struct PhaseHistory {
    /// Phase name, e.g. `pretrain` or `greedy layer 2`.
    pub name: String,
    /// Loss the phase minimised.
    pub loss: &'static str,
    /// One entry per epoch.
    pub epochs: Vec<EpochLog>,
}

/// A pretrained autoencoder and how it got there.
#[derive(Clone, Debug)]
pub struct Pretrained {
    /// The full encoder + decoder.
    pub network: Network,
    /// Curves of each phase (one for joint/tied, one per layer for greedy).
    pub phases: Vec<PhaseHistory>,
    /// BCE of the final autoencoder on the validation images.
    pub valid_bce: f64,
    /// Rounded accuracy of the final autoencoder on the validation images.
    pub valid_rounded_accuracy: f64,
}

/// Trains an autoencoder on `images` (`n × widths[0]`) following `recipe`.
pub fn pretrain(
    recipe: &PretrainRecipe,
    images: Inputs<'_>,
    valid: Inputs<'_>,
    rng: &mut ChaCha8Rng,
    threads: usize,
    observer: &dyn Observer,
) -> Pretrained {
    let width = recipe.widths[0];
    let (n, n_valid) = (images.rows(width), valid.rows(width));
    let options = |loss| FitOptions {
        epochs: recipe.epochs,
        batch_size: recipe.batch_size,
        loss,
        input_noise: recipe.input_noise,
        threads,
        shift: None,
        mixup: 0.0,
        cosine_decay: false,
        epoch_rows: recipe.epoch_images,
    };
    let (network, phases) = match recipe.mode {
        PretrainMode::Joint | PretrainMode::Tied => {
            let decoder = if recipe.mode == PretrainMode::Tied {
                Decoder::Tied
            } else {
                Decoder::Separate
            };
            let mut net = autoencoder(&recipe.widths, decoder, Activation::Sigmoid, rng);
            let mut opt = recipe.optimizer.build();
            let train = Examples {
                inputs: images,
                targets: Targets::Inputs,
                len: n,
                again: &[],
            };
            let val = Examples {
                inputs: valid,
                targets: Targets::Inputs,
                len: n_valid,
                again: &[],
            };
            let loss = Loss::BinaryCrossEntropy;
            let epochs = fit(
                &mut net,
                &mut opt,
                &train,
                Some(&val),
                &options(loss),
                rng,
                "pretrain",
                observer,
            );
            (
                net,
                vec![PhaseHistory {
                    name: "pretrain".into(),
                    loss: "bce",
                    epochs,
                }],
            )
        }
        PretrainMode::Greedy => {
            let mut parts = Vec::new();
            let mut phases = Vec::new();
            // The outer layer reads the images; each inner one the codes of the layer below.
            let (mut codes, mut val_codes): (Vec<f32>, Vec<f32>) = (Vec::new(), Vec::new());
            for i in 0..recipe.widths.len() - 1 {
                let outer = i == 0;
                let (output, loss, opt) = if outer {
                    (
                        Activation::Sigmoid,
                        Loss::BinaryCrossEntropy,
                        recipe.optimizer,
                    )
                } else {
                    (
                        Activation::Selu,
                        Loss::MeanSquaredError,
                        recipe.inner_optimizer,
                    )
                };
                let mut part =
                    autoencoder(&recipe.widths[i..i + 2], Decoder::Separate, output, rng);
                let mut opt = opt.build();
                let (inputs, val_inputs) = if outer {
                    (images, valid)
                } else {
                    (Inputs::Floats(&codes), Inputs::Floats(&val_codes))
                };
                let train = Examples {
                    inputs,
                    targets: Targets::Inputs,
                    len: n,
                    again: &[],
                };
                let val = Examples {
                    inputs: val_inputs,
                    targets: Targets::Inputs,
                    len: n_valid,
                    again: &[],
                };
                let mut opts = options(loss);
                if !outer {
                    // Masking noise is meant for pixels; codes are learned clean.
                    opts.input_noise = 0.0;
                }
                let name = format!("pretrain layer {}", i + 1);
                let epochs = fit(
                    &mut part,
                    &mut opt,
                    &train,
                    Some(&val),
                    &opts,
                    rng,
                    &name,
                    observer,
                );
                phases.push(PhaseHistory {
                    name,
                    loss: if outer { "bce" } else { "mse" },
                    epochs,
                });
                let next = forward_rows(&part, inputs, 0..1, threads);
                let next_valid = forward_rows(&part, val_inputs, 0..1, threads);
                (codes, val_codes) = (next, next_valid);
                parts.push(part);
            }
            (stack_autoencoders(&parts), phases)
        }
    };
    let val = Examples {
        inputs: valid,
        targets: Targets::Inputs,
        len: n_valid,
        again: &[],
    };
    let (valid_bce, valid_rounded_accuracy) =
        evaluate(&network, &val, Loss::BinaryCrossEntropy, threads);
    Pretrained {
        network,
        phases,
        valid_bce,
        valid_rounded_accuracy,
    }
}
