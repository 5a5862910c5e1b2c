//! `aelabel bench train`: times joint pretraining epochs of the reference recipe.

use super::{fit, Examples, FitOptions, Optimizer, Silent, Targets};
use crate::model::{autoencoder, Activation, Decoder, Inputs, Loss};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// Result of timing reference-recipe pretraining epochs.
#[derive(Clone, Debug, Serialize)]
pub struct TrainBench {
    /// Threads the matrix products used.
    pub threads: usize,
    /// Images per epoch.
    pub images: usize,
    /// Batch size (the reference's 32).
    pub batch_size: usize,
    /// Wall time of each epoch.
    pub epoch_seconds: Vec<f64>,
    /// Median of `epoch_seconds`.
    pub seconds_per_epoch: f64,
    /// `images / seconds_per_epoch`.
    pub images_per_second: f64,
    /// Training BCE after the last epoch (a sanity check that the work was real).
    pub final_loss: f64,
}

/// Trains the reference 784-100-30-100-784 autoencoder (SGD 1.5, batch 32) for `epochs` epochs
/// on `images` (`n × 784`) and times each epoch.
pub fn bench_train(
    images: Inputs<'_>,
    n: usize,
    widths: &[usize],
    epochs: usize,
    threads: usize,
) -> TrainBench {
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let mut net = autoencoder(widths, Decoder::Separate, Activation::Sigmoid, &mut rng);
    let mut opt = Optimizer::sgd(1.5);
    let options = FitOptions {
        epochs,
        batch_size: 32,
        loss: Loss::BinaryCrossEntropy,
        input_noise: 0.0,
        threads,
        shift: None,
        mixup: 0.0,
        cosine_decay: false,
        epoch_rows: None,
    };
    let train = Examples {
        inputs: images,
        targets: Targets::Inputs,
        len: n,
        again: &[],
    };
    let logs = fit(
        &mut net, &mut opt, &train, None, &options, &mut rng, "bench", &Silent,
    );
    let mut seconds: Vec<f64> = logs.iter().map(|l| l.seconds).collect();
    let epoch_seconds = seconds.clone();
    seconds.sort_by(f64::total_cmp);
    let median = seconds[seconds.len() / 2];
    TrainBench {
        threads,
        images: n,
        batch_size: 32,
        epoch_seconds,
        seconds_per_epoch: median,
        images_per_second: n as f64 / median,
        final_loss: logs.last().map_or(f64::NAN, |l| l.loss),
    }
}
