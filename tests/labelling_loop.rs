//! The labelling loop's promises: a first batch that covers the pile, review order that holds
//! the random slice judging the threshold, and (through the real server and CLI) a job that
//! starts from nothing and ends labelled.

mod common;

use aelabel::data::read_idx_pair;
use aelabel::jobs::select::{select, Candidates, Pick, Reason};
use aelabel::pipeline::job_round::{
    selection_inputs, train_round, RoundData, RoundSettings, RoundStart,
};
use aelabel::train::Silent;

/// The first `n` t10k images and their classes (a balanced pile: 10 classes, ~n/10 each).
fn pile(n: usize) -> (Vec<u8>, Vec<u32>) {
    let dir = common::data_dir();
    let set = read_idx_pair(
        &dir.join("t10k-images-idx3-ubyte.gz"),
        &dir.join("t10k-labels-idx1-ubyte.gz"),
    )
    .unwrap();
    let pixels = set.pixels[..n * 784].to_vec();
    let classes = set.labels[..n].iter().map(|l| l.unwrap()).collect();
    (pixels, classes)
}

#[test]
fn first_batch_covers_every_class_more_often_than_random_picks() {
    let (pixels, truth) = pile(3000);
    let names: Vec<String> = (0..10).map(|c| c.to_string()).collect();
    let data = RoundData {
        pixels: &pixels,
        width: 28,
        height: 28,
        class_names: &names,
        training: &[],
        evidence: &[],
    };
    let settings = RoundSettings {
        target_accuracy: 0.95,
        seed: 5,
        threads: 2,
    };
    let pretrained = train_round(&data, RoundStart::Nothing, &settings, &Silent).unwrap();
    assert!(pretrained.pretrained && pretrained.trained.is_none());
    let (features, dim, probabilities) =
        selection_inputs(None, &pretrained.autoencoder, &pixels, 2);
    assert!(probabilities.is_none());
    let candidates = Candidates {
        features: &features,
        dim,
        probabilities: None,
        classes: 10,
    };
    let covered = |picks: Vec<(usize, Reason)>| {
        let mut seen = [false; 10];
        picks
            .iter()
            .for_each(|&(r, _)| seen[truth[r] as usize] = true);
        seen.iter().filter(|&&s| s).count()
    };
    let (mut typical_all, mut random_all, mut typical_sum, mut random_sum) = (0, 0, 0, 0);
    // 15 picks over 10 classes: random picks rarely cover them all (P ≈ 0.05 on a uniform
    // pile), typical points should more often. Here 8 of 20 seeds against 0 of 20.
    for seed in 0..20 {
        let t = covered(select(&candidates, 15, Pick::Loop, 0.0, seed, 2));
        let r = covered(select(&candidates, 15, Pick::Random, 0.0, seed, 2));
        eprintln!("seed {seed}: typical {t} classes, random {r}");
        typical_all += usize::from(t == 10);
        random_all += usize::from(r == 10);
        typical_sum += t;
        random_sum += r;
    }
    assert!(
        typical_all > random_all && typical_sum > random_sum,
        "15 typical picks covered all 10 classes in {typical_all} of 20 seeds ({typical_sum} classes in all), random picks in {random_all} ({random_sum})"
    );
}
