//! Model structure, tied and frozen weights, checkpoints and determinism.

use aelabel::model::{
    autoencoder, classifier_from_encoder, encoder_depth, Activation, Decoder, Inputs, Loss, Model,
    ModelMeta, Network, OutOfFold, Target, Workspace,
};
use aelabel::train::{fit, Examples, FitOptions, Optimizer, Silent, Targets};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tempfile::tempdir;

fn images(seed: u64, n: usize, width: usize) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n * width).map(|_| rng.random::<f32>()).collect()
}

fn options(epochs: usize, loss: Loss) -> FitOptions {
    FitOptions {
        epochs,
        batch_size: 16,
        loss,
        input_noise: 0.0,
        threads: 1,
        shift: None,
        mixup: 0.0,
        cosine_decay: false,
        epoch_rows: None,
    }
}

#[test]
fn autoencoder_mirrors_its_widths() {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let net = autoencoder(
        &[784, 100, 30],
        Decoder::Separate,
        Activation::Sigmoid,
        &mut rng,
    );
    let dims: Vec<_> = (0..net.layers.len()).map(|i| net.layer_dims(i)).collect();
    assert_eq!(dims, vec![(784, 100), (100, 30), (30, 100), (100, 784)]);
    assert_eq!(encoder_depth(&net), 2);
    let x = images(1, 3, 784);
    let codes = net.forward_range(&x, 3, 0..2, 1);
    assert_eq!(codes.len(), 3 * 30);
    let out = net.forward(&x, 3, 1);
    assert_eq!(out.len(), 3 * 784);
    assert!(out.iter().all(|v| (0.0..=1.0).contains(v)));
}

#[test]
fn tied_decoder_shares_encoder_weights_so_a_step_changes_both() {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut net = autoencoder(&[64, 16, 4], Decoder::Tied, Activation::Sigmoid, &mut rng);
    // Four layers, but only two weight matrices: the decoder reads the encoder's.
    assert_eq!(
        net.params
            .iter()
            .filter(|p| p.name.ends_with(".weight"))
            .count(),
        2
    );
    assert_eq!(net.layers[3].weight, net.layers[0].weight);
    assert!(net.layers[3].transposed && net.layers[2].transposed);
    let code = vec![0.5f32; 4];
    let decoded_before = net.forward_range(&code, 1, 2..4, 1);
    let x = images(2, 16, 64);
    let mut ws = Workspace::default();
    net.compute_gradients(
        &mut ws,
        &x,
        Target::Values(&x),
        Loss::BinaryCrossEntropy,
        16,
        1,
    );
    // Step on the encoder weights only: the decoder output must move with them.
    let w = net.layers[0].weight;
    for (v, g) in net.params[w].value.iter_mut().zip(&ws.grads[w]) {
        *v -= 10.0 * g;
    }
    let decoded_after = net.forward_range(&code, 1, 2..4, 1);
    assert_ne!(decoded_before, decoded_after);
}

#[test]
fn frozen_layers_stay_bit_identical_through_training() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let ae = autoencoder(
        &[64, 16, 8],
        Decoder::Separate,
        Activation::Sigmoid,
        &mut rng,
    );
    let mut clf = classifier_from_encoder(&ae, 4, &mut rng);
    clf.freeze_lowest(1);
    let before = clf.clone();
    let x = images(4, 64, 64);
    let y: Vec<u32> = (0..64).map(|i| i % 4).collect();
    let train = Examples {
        inputs: Inputs::Floats(&x),
        targets: Targets::Classes(&y),
        len: 64,
        again: &[],
    };
    fit(
        &mut clf,
        &mut Optimizer::adam(1e-2),
        &train,
        None,
        &options(3, Loss::SoftmaxCrossEntropy),
        &mut rng,
        "t",
        &Silent,
    );
    for (a, b) in before.params.iter().zip(&clf.params) {
        let identical = a
            .value
            .iter()
            .zip(&b.value)
            .all(|(x, y)| x.to_bits() == y.to_bits());
        if a.name.starts_with("classifier.0.") {
            assert!(identical, "{} is frozen but changed", a.name);
        } else {
            assert!(!identical, "{} is trainable but did not change", a.name);
        }
    }
}

fn tiny_model(seed: u64) -> Model {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let ae = autoencoder(
        &[16, 6, 3],
        Decoder::Separate,
        Activation::Sigmoid,
        &mut rng,
    );
    let classifier = classifier_from_encoder(&ae, 3, &mut rng);
    Model {
        meta: ModelMeta {
            version: "test-1".into(),
            widths: vec![16, 6, 3],
            decoder: Decoder::Separate,
            input_width: 4,
            input_height: 4,
            class_names: vec!["a".into(), "b".into(), "c".into()],
            auto_accept_threshold: 0.9,
            training: serde_json::json!({"test_accuracy": 0.5}),
            calibration: Some(OutOfFold {
                confidence: vec![0.9, 0.4, 0.75],
                correct: vec![true, false, true],
            }),
        },
        autoencoder: ae,
        classifier,
    }
}

#[test]
fn checkpoint_round_trip_gives_bit_identical_outputs() {
    let dir = tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    let model = tiny_model(5);
    model.save(&path).unwrap();
    let loaded = Model::load(&path).unwrap();
    assert_eq!(loaded, model);
    let x = images(6, 5, 16);
    let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
    assert_eq!(
        bits(loaded.autoencoder.forward(&x, 5, 1)),
        bits(model.autoencoder.forward(&x, 5, 1))
    );
    assert_eq!(
        bits(loaded.classifier.forward(&x, 5, 1)),
        bits(model.classifier.forward(&x, 5, 1))
    );

    let tied = {
        let mut m = tiny_model(5);
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        m.autoencoder = autoencoder(&[16, 6, 3], Decoder::Tied, Activation::Sigmoid, &mut rng);
        m.meta.decoder = Decoder::Tied;
        m
    };
    tied.save(&path).unwrap();
    assert_eq!(Model::load(&path).unwrap(), tied);
}

#[test]
fn loading_rejects_missing_or_misshapen_tensors_clearly() {
    let dir = tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    let mut model = tiny_model(5);
    model
        .classifier
        .params
        .retain(|p| p.name != "classifier.head.bias");
    model.save(&path).unwrap();
    let err = Model::load(&path).unwrap_err().to_string();
    assert!(err.contains("`classifier.head.bias` is missing"), "{err}");

    let mut model = tiny_model(5);
    model.autoencoder.params[0].shape = [8, 12];
    model.save(&path).unwrap();
    let err = Model::load(&path).unwrap_err().to_string();
    assert!(
        err.contains("`encoder.0.weight` has shape [8, 12], expected [16, 6]"),
        "{err}"
    );

    std::fs::write(&path, b"not a model").unwrap();
    let err = Model::load(&path).unwrap_err().to_string();
    assert!(err.contains("is not an aelabel model"), "{err}");
}

fn train_once(seed: u64, threads: usize) -> Network {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut net = autoencoder(
        &[64, 32, 8],
        Decoder::Separate,
        Activation::Sigmoid,
        &mut rng,
    );
    let x = images(7, 256, 64);
    let train = Examples {
        inputs: Inputs::Floats(&x),
        targets: Targets::Inputs,
        len: 256,
        again: &[],
    };
    let mut opts = options(2, Loss::BinaryCrossEntropy);
    opts.threads = threads;
    opts.input_noise = 0.3;
    fit(
        &mut net,
        &mut Optimizer::sgd(1.5),
        &train,
        None,
        &opts,
        &mut rng,
        "t",
        &Silent,
    );
    net
}

#[test]
fn same_seed_and_threads_give_identical_weights() {
    assert_eq!(train_once(11, 1), train_once(11, 1));
    assert_eq!(train_once(11, 2), train_once(11, 2));
    assert_ne!(train_once(11, 1), train_once(12, 1));
}

/// Counts the steps a phase announces and takes.
#[derive(Default)]
struct StepCount {
    announced: std::sync::atomic::AtomicUsize,
    taken: std::sync::atomic::AtomicUsize,
}

impl aelabel::train::Observer for StepCount {
    fn phase_started(&self, _phase: &str, epochs: usize, steps_per_epoch: usize) {
        self.announced.store(
            epochs * steps_per_epoch,
            std::sync::atomic::Ordering::Relaxed,
        );
    }
    fn step_done(&self) {
        self.taken
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

#[test]
fn repeated_rows_add_steps_and_cosine_decay_changes_training_but_restores_the_rate() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let net = autoencoder(&[16, 4], Decoder::Separate, Activation::Sigmoid, &mut rng);
    let x = images(4, 64, 16);
    let again: Vec<usize> = (0..32).collect();
    let train = |again: &[usize], cosine: bool| {
        let mut net = net.clone();
        let mut opt = Optimizer::adam(1e-2);
        let examples = Examples {
            inputs: Inputs::Floats(&x),
            targets: Targets::Inputs,
            len: 64,
            again,
        };
        let count = StepCount::default();
        let opts = FitOptions {
            cosine_decay: cosine,
            epoch_rows: None,
            ..options(3, Loss::BinaryCrossEntropy)
        };
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        fit(
            &mut net, &mut opt, &examples, None, &opts, &mut rng, "t", &count,
        );
        assert_eq!(opt.learning_rate(), 1e-2, "the rate is restored");
        let taken = count.taken.into_inner();
        assert_eq!(taken, count.announced.into_inner());
        (net, taken)
    };
    // 64 rows in batches of 16: 4 steps an epoch; 32 rows again: 6.
    let (plain, plain_steps) = train(&[], false);
    let (_, again_steps) = train(&again, false);
    assert_eq!((plain_steps, again_steps), (12, 18));
    let (decayed, _) = train(&[], true);
    assert_ne!(plain.params[0].value, decayed.params[0].value);
}

#[test]
fn sampled_epochs_take_their_share_of_steps_and_a_cap_above_the_pool_changes_nothing() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let net = autoencoder(&[16, 4], Decoder::Separate, Activation::Sigmoid, &mut rng);
    let x = images(4, 64, 16);
    let again: Vec<usize> = (0..16).collect();
    let train = |epoch_rows: Option<usize>| {
        let mut net = net.clone();
        let mut opt = Optimizer::adam(1e-2);
        let examples = Examples {
            inputs: Inputs::Floats(&x),
            targets: Targets::Inputs,
            len: 64,
            again: &again,
        };
        let count = StepCount::default();
        let opts = FitOptions {
            epoch_rows,
            ..options(3, Loss::BinaryCrossEntropy)
        };
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        fit(
            &mut net, &mut opt, &examples, None, &opts, &mut rng, "t", &count,
        );
        let taken = count.taken.into_inner();
        assert_eq!(taken, count.announced.into_inner());
        (net, taken)
    };
    // 32 of 64 rows an epoch plus 16 again, in batches of 16: 3 steps an epoch, not 5.
    let (sampled, sampled_steps) = train(Some(32));
    let (full, full_steps) = train(None);
    assert_eq!((sampled_steps, full_steps), (9, 15));
    assert_ne!(sampled.params[0].value, full.params[0].value);
    // A cap at or above the pool is the full pass, bit for bit.
    for cap in [64, 1000] {
        let (capped, steps) = train(Some(cap));
        assert_eq!(steps, 15);
        assert_eq!(capped.params[0].value, full.params[0].value);
    }
}
