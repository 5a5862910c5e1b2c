//! The pipeline's stages besides pretraining and the classifier's own (in `classifier`): load,
//! baselines, evaluation, calibration of the auto-accept threshold, and saving the model.

use super::classifier::{
    spreading, student, student_steps, teacher, teacher_steps, train_classifier, Labelled,
    TrainedClassifier, Unlabelled,
};
use super::recipe::{FinetuneRecipe, OptimizerSpec, PretrainMode, Recipe};
use super::{PipelineConfig, PipelineError};
use crate::data::{split, DataOptions, Dataset, ImageSet, SplitOptions, TrainingData};
use crate::model::{
    classifier_from_encoder, classifier_from_scratch, probabilities_rows, top_class, Decoder,
    Inputs, Model, ModelMeta, Network, OutOfFold,
};
use crate::train::folds::stratified_folds;
use crate::train::metrics::{
    accuracy, choose_threshold, confusion, coverage_at, predictions, Coverage,
};
use crate::train::{Observer, Prefixed, Silent, StepsOnly};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::path::PathBuf;

/// Load stage: reads the data set (decoding with a progress bar) and cuts it for the run.
pub fn load(
    config: &PipelineConfig,
    folds: usize,
    observer: &dyn Observer,
) -> Result<(TrainingData, LoadSummary), PipelineError> {
    let options = DataOptions {
        merge_idx_valid: config.valid_fraction.is_some(),
        ..config.data.clone()
    };
    let started = std::sync::Mutex::new(false);
    let progress = |done: usize, total: usize| {
        let mut s = started.lock().unwrap_or_else(|e| e.into_inner());
        if !*s {
            observer.phase_started("decode images", 1, total);
            *s = true;
        }
        observer.step_done();
        if done == total {
            observer.phase_done("decode images");
        }
    };
    let dataset = Dataset::open(&options, &progress)?;
    // Each skipped file was already logged as a warning naming it; the report counts them.
    let summary = LoadSummary {
        kind: dataset.kind,
        skipped: dataset.skipped.clone(),
    };
    let data = split(
        dataset,
        &SplitOptions {
            labels: config.labels,
            valid_fraction: config.valid_fraction,
            train_limit: config.train_limit,
            eval_limit: config.eval_limit,
            seed: config.seed,
            folds,
        },
    )?;
    Ok((data, summary))
}

/// What the load stage saw besides the images themselves.
#[derive(Clone, Debug)]
pub struct LoadSummary {
    /// IDX or folder.
    pub kind: crate::data::SourceKind,
    /// Files left out.
    pub skipped: Vec<crate::data::Skipped>,
}

/// The baselines trained on the same labels: the same network from scratch and logistic
/// regression on pixels, neither seeing unlabelled images.
pub struct BaselineModels {
    /// Same widths, random start.
    pub scratch: TrainedClassifier,
    /// Softmax regression on raw pixels.
    pub logreg: TrainedClassifier,
}

/// Baselines stage: same labelled images, same schedule (head epochs folded into the rest),
/// Adam 1e-3, no pretraining, no unlabelled images.
pub fn baselines(
    recipe: &Recipe,
    labelled: Labelled<'_>,
    classes: usize,
    shape: (usize, usize),
    rng: &mut ChaCha8Rng,
    threads: usize,
    observer: &dyn Observer,
) -> BaselineModels {
    let mut baseline_recipe = recipe.finetune.clone();
    baseline_recipe.head_epochs = 0;
    baseline_recipe.freeze = 0;
    baseline_recipe.epochs += recipe.finetune.head_epochs;
    baseline_recipe.optimizer = OptimizerSpec::Adam { lr: 1e-3 };
    let train = |widths: &[usize], name: &str, rng: &mut ChaCha8Rng| {
        let net = classifier_from_scratch(widths, classes, rng);
        train_classifier(
            net,
            &baseline_recipe,
            labelled,
            None,
            shape,
            rng,
            threads,
            &Prefixed {
                prefix: format!("{name} baseline: "),
                inner: observer,
                epoch_lines: true,
            },
        )
    };
    let scratch = train(&recipe.pretrain.widths, "scratch", rng);
    let logreg = train(&recipe.pretrain.widths[..1], "logreg", rng);
    BaselineModels { scratch, logreg }
}

/// A classifier's predictions on the test images: the only place test labels are read.
#[derive(Clone, Debug)]
pub struct TestResult {
    /// Fraction right.
    pub accuracy: f64,
    /// Predicted class per test image.
    pub predicted: Vec<u32>,
    /// Confidence per test image.
    pub confidence: Vec<f32>,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<u64>>,
}

/// Evaluate stage: `network` on the test images.
pub fn evaluate(network: &Network, test: &ImageSet, classes: usize, threads: usize) -> TestResult {
    let truth: Vec<u32> = test.labels.iter().map(|l| l.unwrap_or(u32::MAX)).collect();
    let p = predictions(
        &probabilities_rows(network, Inputs::Bytes(&test.pixels), threads),
        classes,
    );
    let predicted: Vec<u32> = p.iter().map(|x| x.0).collect();
    TestResult {
        accuracy: accuracy(&predicted, &truth),
        confusion: confusion(&predicted, &truth, classes),
        confidence: p.iter().map(|x| x.1).collect(),
        predicted,
    }
}

impl TestResult {
    /// Coverage and accuracy of auto-accepting at `threshold` on the test images.
    pub fn coverage_at(&self, threshold: f32, test: &ImageSet) -> Coverage {
        let ok: Vec<bool> = self
            .predicted
            .iter()
            .zip(&test.labels)
            .map(|(&p, &t)| Some(p) == t)
            .collect();
        coverage_at(threshold, &self.confidence, &ok)
    }
}

/// The auto-accept threshold and the out-of-fold evidence it rests on.
#[derive(Clone, Debug)]
pub struct Calibration {
    /// Folds used.
    pub folds: usize,
    /// What each fold trains to predict its held-out images, for the report.
    pub fold_models: String,
    /// Chosen threshold.
    pub threshold: f32,
    /// Out-of-fold accuracy over the labelled images.
    pub cross_validated_accuracy: f64,
    /// What the threshold accepts out of fold.
    pub coverage: Coverage,
    /// The out-of-fold predictions themselves, saved with the model so that a threshold for
    /// another target accuracy can be chosen later.
    pub evidence: OutOfFold,
}

/// Calibrate stage: the auto-accept threshold of `classifier` for `target` accuracy.
///
/// Out of fold: each labelled image is predicted by a teacher trained on the other folds'
/// labels and its spreading over the pool (the student's targets, where held-out images are
/// unlabelled like the rest of the pool); folds run side by side, one thread each. Retraining
/// the whole student per fold cost 5× the student for a threshold no better (see
/// `docs/labelling-quality.md`). The out-of-fold ranking is then put on `classifier`'s scale:
/// an image ranked in the top fraction q out of fold gets the confidence `classifier` has at
/// the same fraction q of the unlabelled pool, so the threshold is a confidence of the model
/// that serves, whose own scores on labelled images are not out of fold. Only labelled images
/// judge; when `judged` is given, only those marked `true` do (all still train): a sample
/// picked for being hard, such as least-confident reviews, says little about the images the
/// model will label.
#[allow(clippy::too_many_arguments)]
pub fn calibrate(
    pretrained: &Network,
    classifier: &Network,
    recipe: &Recipe,
    data: &TrainingData,
    labelled: &ImageSet,
    target: f64,
    judged: Option<&[bool]>,
    rng: &mut ChaCha8Rng,
    threads: usize,
    observer: &dyn Observer,
) -> Calibration {
    let n = data.labels.len();
    let folds = recipe.calibration_folds.clamp(2, n.max(2));
    let fold_of = stratified_folds(&data.labels, folds, rng);
    let seeds: Vec<u64> = (0..folds).map(|_| rng.random()).collect();
    let train_sizes = (0..folds).map(|k| fold_of.iter().filter(|&&f| f != k).count());
    // A pool larger than the recipe's calibration pool is sampled once for every fold.
    let sampled = recipe
        .calibration_pool
        .filter(|&cap| data.pool.len() > cap)
        .map(|cap| sample_pool(data, cap, rng.random()));
    let (pool, pool_labelled_rows) = match &sampled {
        Some((pool, rows)) => (pool, &rows[..]),
        None => (&data.pool, &data.labelled_rows[..]),
    };
    let fold_data = FoldData {
        pool,
        labelled_rows: pool_labelled_rows,
        labels: &data.labels,
        classes: data.classes(),
        labelled,
    };
    let steps = train_sizes
        .map(|len| fold_steps(recipe, len, pool.len()))
        .sum();
    let what = match fold_student_recipe(recipe) {
        Some(f) => format!(
            "teacher, spreading and a {}-epoch student",
            f.self_training_epochs
        ),
        None => "teacher and spreading".into(),
    };
    observer.note(&format!(
        "cross-validation: {folds} folds of {what}, side by side"
    ));
    observer.phase_started("cross-validation", 1, steps);
    let bar = StepsOnly(observer);
    let out_of_fold: Vec<Vec<(usize, TopClass)>> = (0..folds)
        .into_par_iter()
        .map(|k| fold_predictions(pretrained, recipe, &fold_data, &fold_of, k, seeds[k], &bar))
        .collect();
    observer.phase_done("cross-validation");
    let mut confidence = vec![0.0; n];
    let mut correct = vec![false; n];
    for (i, (class, conf)) in out_of_fold.into_iter().flatten() {
        confidence[i] = conf;
        correct[i] = class == data.labels[i];
    }
    if let Some(judged) = judged {
        let keep = |i: &usize| judged.get(*i).copied().unwrap_or(false);
        confidence = (0..n).filter(keep).map(|i| confidence[i]).collect();
        correct = (0..n).filter(keep).map(|i| correct[i]).collect();
    }
    let pool = unlabelled_confidences(classifier, data, threads);
    let confidence = on_scale_of(&confidence, &pool);
    let threshold = choose_threshold(&confidence, &correct, target);
    Calibration {
        folds,
        fold_models: what,
        threshold,
        cross_validated_accuracy: correct.iter().filter(|&&ok| ok).count() as f64
            / correct.len().max(1) as f64,
        coverage: coverage_at(threshold, &confidence, &correct),
        evidence: OutOfFold {
            confidence,
            correct,
        },
    }
}

/// A predicted class and its confidence.
type TopClass = (u32, f32);

/// What every cross-validation fold reads: the pool it spreads labels over (the whole pool or
/// a sample of it), where the labelled images sit in that pool, and the labelled images.
struct FoldData<'a> {
    pool: &'a ImageSet,
    labelled_rows: &'a [usize],
    labels: &'a [u32],
    classes: usize,
    labelled: &'a ImageSet,
}

/// Every labelled image of `data`'s pool and a random sample of the others, `cap` in all (pool
/// order kept), with the labelled images' rows in the sample: the folds' pool when the whole
/// pool is larger, so cross-validation costs the same on a million images as on `cap`.
fn sample_pool(data: &TrainingData, cap: usize, seed: u64) -> (ImageSet, Vec<usize>) {
    let mut is_labelled = vec![false; data.pool.len()];
    data.labelled_rows
        .iter()
        .for_each(|&r| is_labelled[r] = true);
    let mut others: Vec<usize> = (0..data.pool.len()).filter(|&r| !is_labelled[r]).collect();
    let wanted = cap
        .saturating_sub(data.labelled_rows.len())
        .min(others.len());
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (picked, _) = others.partial_shuffle(&mut rng, wanted);
    picked.iter().for_each(|&r| is_labelled[r] = true);
    // `is_labelled` now marks every row kept.
    let kept: Vec<usize> = (0..data.pool.len()).filter(|&r| is_labelled[r]).collect();
    let rows = data
        .labelled_rows
        .iter()
        .map(|r| kept.binary_search(r).unwrap_or_else(|at| at))
        .collect();
    (data.pool.select(&kept), rows)
}

/// Fold `k`'s out-of-fold predictions: (labelled index, prediction) for its held-out images.
fn fold_predictions(
    pretrained: &Network,
    recipe: &Recipe,
    data: &FoldData<'_>,
    fold_of: &[usize],
    k: usize,
    seed: u64,
    observer: &dyn Observer,
) -> Vec<(usize, TopClass)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let classes = data.classes;
    let (train_idx, held_idx): (Vec<usize>, Vec<usize>) =
        (0..data.labels.len()).partition(|&i| fold_of[i] != k);
    let train = data.labelled.select(&train_idx);
    let train_labels: Vec<u32> = train_idx.iter().map(|&i| data.labels[i]).collect();
    let rows: Vec<usize> = train_idx.iter().map(|&i| data.labelled_rows[i]).collect();
    let net = classifier_from_encoder(pretrained, classes, &mut rng);
    let initial = net.clone();
    let images = Inputs::Bytes(&train.pixels);
    let labelled = Labelled {
        images,
        labels: &train_labels,
    };
    let trained = teacher(net, &recipe.finetune, labelled, &mut rng, 1, observer);
    let pool = Unlabelled {
        images: Inputs::Bytes(&data.pool.pixels),
        labelled_rows: &rows,
        labels: &train_labels,
    };
    let targets = spreading(&trained.network, &pool, &recipe.finetune, 1, &Silent);
    let held = data.labelled.select(&held_idx);
    let probs = match fold_student_recipe(recipe) {
        Some(short) => {
            let (network, _, _) = student(
                &initial,
                &pool,
                &targets,
                &short,
                (data.pool.width, data.pool.height),
                1,
                &mut rng,
                1,
                observer,
            );
            probabilities_rows(&network, Inputs::Bytes(&held.pixels), 1)
        }
        None => held_idx
            .iter()
            .map(|&i| data.labelled_rows[i])
            .flat_map(|r| {
                targets.values[r * classes..(r + 1) * classes]
                    .iter()
                    .copied()
            })
            .collect(),
    };
    held_idx
        .into_iter()
        .zip(probs.chunks_exact(classes))
        .map(|(i, row)| {
            let (class, conf) = top_class(row);
            (i, (class as u32, conf))
        })
        .collect()
}

/// The short student a fold trains on its spreading, when the recipe has students at all.
fn fold_student_recipe(recipe: &Recipe) -> Option<FinetuneRecipe> {
    let f = &recipe.finetune;
    (f.self_training_rounds > 0 && recipe.calibration_student_epochs > 0).then(|| FinetuneRecipe {
        self_training_epochs: recipe.calibration_student_epochs,
        ..f.clone()
    })
}

/// Gradient steps one fold takes: its teacher on `labelled` images, then its short student
/// over `pool` images (labelled ones repeated as the recipe says).
fn fold_steps(recipe: &Recipe, labelled: usize, pool: usize) -> usize {
    let student = fold_student_recipe(recipe).map_or(0, |f| student_steps(&f, pool, labelled));
    teacher_steps(&recipe.finetune, labelled) + student
}

/// `classifier`'s confidence on every unlabelled pool image, highest first.
fn unlabelled_confidences(classifier: &Network, data: &TrainingData, threads: usize) -> Vec<f32> {
    let classes = classifier.output_size();
    let mut is_labelled = vec![false; data.pool.len()];
    data.labelled_rows
        .iter()
        .for_each(|&r| is_labelled[r] = true);
    let probs = probabilities_rows(classifier, Inputs::Bytes(&data.pool.pixels), threads);
    let mut conf: Vec<f32> = probs
        .chunks_exact(classes)
        .zip(&is_labelled)
        .filter(|(_, &l)| !l)
        .map(|(row, _)| top_class(row).1)
        .collect();
    conf.sort_by(|a, b| b.total_cmp(a));
    conf
}

/// Puts out-of-fold confidences on the scale of `pool` (another model's confidences, highest
/// first): a value that r of the n out-of-fold values reach becomes the pool's confidence at
/// rank ⌊r·N/n⌋ of its N, so both accept the same fraction. Order is kept (ties may merge);
/// without a pool the values are returned as they are.
pub fn on_scale_of(out_of_fold: &[f32], pool: &[f32]) -> Vec<f32> {
    let (n, big_n) = (out_of_fold.len(), pool.len());
    if n == 0 || big_n == 0 {
        return out_of_fold.to_vec();
    }
    let mut sorted = out_of_fold.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    out_of_fold
        .iter()
        .map(|&c| {
            // How many out-of-fold values reach c (c itself included).
            let reach = sorted.partition_point(|&v| v >= c);
            pool[(reach * big_n / n).clamp(1, big_n) - 1]
        })
        .collect()
}

/// Save stage: the autoencoder and classifier with everything a server needs (input size,
/// class names, threshold, preprocessing, headline metrics) as `model.safetensors`.
pub fn save(
    out_dir: &std::path::Path,
    recipe: &Recipe,
    pretrained: &Network,
    classifier: &Network,
    data: &TrainingData,
    calibration: &Calibration,
    training: serde_json::Value,
) -> Result<(Model, PathBuf), PipelineError> {
    std::fs::create_dir_all(out_dir).map_err(|source| PipelineError::Io {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let mut model = Model {
        meta: ModelMeta {
            version: String::new(),
            widths: recipe.pretrain.widths.clone(),
            decoder: if recipe.pretrain.mode == PretrainMode::Tied {
                Decoder::Tied
            } else {
                Decoder::Separate
            },
            input_width: data.pool.width,
            input_height: data.pool.height,
            class_names: data.class_names.clone(),
            auto_accept_threshold: calibration.threshold,
            training,
            calibration: Some(calibration.evidence.clone()),
        },
        autoencoder: pretrained.clone(),
        classifier: classifier.clone(),
    };
    for p in &mut model.classifier.params {
        p.frozen = false;
    }
    model.meta.version = format!(
        "{}-{}-{:012x}",
        super::preset_name(recipe.preset),
        data.labels.len(),
        model.weights_hash() & 0xffff_ffff_ffff
    );
    let path = out_dir.join("model.safetensors");
    model.save(&path)?;
    Ok((model, path))
}

#[cfg(test)]
mod tests {
    use super::{on_scale_of, sample_pool};
    use crate::data::{ImageSet, TrainingData};

    #[test]
    fn the_folds_pool_sample_keeps_every_labelled_image_and_finds_it_again() {
        // 100 one-pixel images whose pixel is their row; rows 7, 50 and 93 labelled.
        let mut pool = ImageSet::new(1, 1);
        (0..100u8).for_each(|i| pool.push(&[i], None));
        let data = TrainingData {
            class_names: vec!["a".into(), "b".into()],
            pool,
            labelled_rows: vec![7, 50, 93],
            labels: vec![0, 1, 0],
            valid: ImageSet::new(1, 1),
            test: None,
        };
        let (sample, rows) = sample_pool(&data, 20, 9);
        assert_eq!(sample.len(), 20);
        // Pool order is kept, no image twice.
        assert!(sample.pixels.windows(2).all(|w| w[0] < w[1]));
        // Each labelled image sits at its new row.
        for (&new_row, &old_row) in rows.iter().zip(&data.labelled_rows) {
            assert_eq!(usize::from(sample.pixels[new_row]), old_row);
        }
        // The same seed draws the same sample; another seed another one.
        assert_eq!(sample_pool(&data, 20, 9).0.pixels, sample.pixels);
        assert_ne!(sample_pool(&data, 20, 10).0.pixels, sample.pixels);
    }

    #[test]
    fn out_of_fold_ranks_take_the_pool_confidence_at_the_same_fraction() {
        // Four out-of-fold values; the pool's eight confidences, highest first.
        let pool = [0.99, 0.97, 0.95, 0.9, 0.8, 0.7, 0.6, 0.5];
        let mapped = on_scale_of(&[0.6, 0.9, 0.3, 0.9], &pool);
        // 0.9 is reached by 2 of 4 → rank 4 of 8; 0.6 by 3 → rank 6; 0.3 by 4 → rank 8.
        assert_eq!(mapped, vec![0.7, 0.9, 0.5, 0.9]);
        // A threshold at a mapped value accepts the same fraction of both.
        let accepted = mapped.iter().filter(|&&c| c >= 0.7).count();
        assert_eq!(accepted * pool.len() / mapped.len(), 6);
        assert_eq!(pool.iter().filter(|&&c| c >= 0.7).count(), 6);
        // No pool: the values stay as they are.
        assert_eq!(on_scale_of(&[0.4, 0.8], &[]), vec![0.4, 0.8]);
    }
}
