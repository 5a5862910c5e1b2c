//! The hand-written backward pass agrees with candle's autograd on random batches.

use aelabel::model::oracle::autograd_gradients;
use aelabel::model::{
    autoencoder, classifier_from_encoder, Activation, Decoder, Loss, Network, Target, Workspace,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn assert_gradients_match(net: &Network, input: &[f32], target: Target<'_>, loss: Loss, n: usize) {
    let mut ws = Workspace::default();
    let stats = net.compute_gradients(&mut ws, input, target, loss, n, 1);
    let (oracle_loss, oracle) =
        autograd_gradients(net, input, target, loss, n).expect("candle autograd runs");
    let per_example = stats.loss_sum / n as f64;
    assert!(
        (per_example - f64::from(oracle_loss)).abs() < 1e-4 * f64::from(oracle_loss).abs().max(1.0),
        "loss {per_example} vs autograd {oracle_loss}"
    );
    for (i, p) in net.params.iter().enumerate() {
        if p.frozen {
            continue;
        }
        let (ours, theirs) = (&ws.grads[i], &oracle[i]);
        let diff: f64 = ours
            .iter()
            .zip(theirs)
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum::<f64>()
            .sqrt();
        let norm: f64 = theirs
            .iter()
            .map(|b| f64::from(*b).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!(
            norm > 0.0,
            "{}: autograd gradient is zero, the check would be vacuous",
            p.name
        );
        assert!(
            diff / norm <= 1e-4,
            "{}: relative error {:.2e}",
            p.name,
            diff / norm
        );
    }
}

fn random_images(rng: &mut ChaCha8Rng, n: usize, width: usize) -> Vec<f32> {
    (0..n * width).map(|_| rng.random::<f32>()).collect()
}

#[test]
fn joint_autoencoder_bce_gradients_match_autograd() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let net = autoencoder(
        &[64, 20, 6],
        Decoder::Separate,
        Activation::Sigmoid,
        &mut rng,
    );
    let x = random_images(&mut rng, 16, 64);
    assert_gradients_match(&net, &x, Target::Values(&x), Loss::BinaryCrossEntropy, 16);
}

#[test]
fn tied_autoencoder_gradients_sum_both_uses_of_each_weight() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let net = autoencoder(&[64, 20, 6], Decoder::Tied, Activation::Sigmoid, &mut rng);
    let x = random_images(&mut rng, 16, 64);
    assert_gradients_match(&net, &x, Target::Values(&x), Loss::BinaryCrossEntropy, 16);
}

#[test]
fn inner_autoencoder_mse_with_selu_output_matches_autograd() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let net = autoencoder(&[20, 6], Decoder::Separate, Activation::Selu, &mut rng);
    let x: Vec<f32> = (0..12 * 20)
        .map(|_| rng.random::<f32>() * 4.0 - 2.0)
        .collect();
    assert_gradients_match(&net, &x, Target::Values(&x), Loss::MeanSquaredError, 12);
}

#[test]
fn classifier_with_frozen_first_layer_matches_autograd() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let ae = autoencoder(
        &[64, 20, 6],
        Decoder::Separate,
        Activation::Sigmoid,
        &mut rng,
    );
    let mut net = classifier_from_encoder(&ae, 5, &mut rng);
    let x = random_images(&mut rng, 24, 64);
    let y: Vec<u32> = (0..24).map(|i| i % 5).collect();
    assert_gradients_match(&net, &x, Target::Classes(&y), Loss::SoftmaxCrossEntropy, 24);
    net.freeze_lowest(1);
    assert_gradients_match(&net, &x, Target::Classes(&y), Loss::SoftmaxCrossEntropy, 24);
}

#[test]
fn soft_target_cross_entropy_matches_autograd() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let ae = autoencoder(
        &[32, 12, 6],
        Decoder::Separate,
        Activation::Sigmoid,
        &mut rng,
    );
    let net = classifier_from_encoder(&ae, 4, &mut rng);
    let x = random_images(&mut rng, 10, 32);
    let mut q: Vec<f32> = (0..40).map(|_| rng.random::<f32>()).collect();
    for row in q.chunks_exact_mut(4) {
        let sum: f32 = row.iter().sum();
        row.iter_mut().for_each(|v| *v /= sum);
    }
    assert_gradients_match(&net, &x, Target::Values(&q), Loss::SoftmaxCrossEntropy, 10);
}
