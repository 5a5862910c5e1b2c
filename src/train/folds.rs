//! Cross-validation folds over labelled examples.

use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

/// Assigns each labelled example to one of `folds` folds, stratified by class: each class's
/// examples are shuffled and dealt round-robin, continuing the count across classes.
pub fn stratified_folds(labels: &[u32], folds: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let mut by_class: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, &l) in labels.iter().enumerate() {
        by_class.entry(l).or_default().push(i);
    }
    let mut fold = vec![0; labels.len()];
    let mut next = 0;
    for members in by_class.values_mut() {
        members.shuffle(rng);
        for &i in members.iter() {
            fold[i] = next % folds.max(1);
            next += 1;
        }
    }
    fold
}

#[cfg(test)]
mod tests {
    use super::stratified_folds;
    use rand::SeedableRng;

    #[test]
    fn every_fold_gets_its_share_of_every_class() {
        let labels: Vec<u32> = (0..50).map(|i| i % 2).collect();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let folds = stratified_folds(&labels, 5, &mut rng);
        for k in 0..5 {
            for class in 0..2 {
                let n = (0..50)
                    .filter(|&i| folds[i] == k && labels[i] == class)
                    .count();
                assert_eq!(n, 5, "fold {k} class {class}");
            }
        }
    }
}
