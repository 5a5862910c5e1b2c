//! From a data set to what training uses: the labelled subset, the unlabelled pool, the
//! validation images for the autoencoder and the test images.

use super::{ClassId, DataError, Dataset, ImageSet, SourceKind};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Labelled images drawn from a fully labelled IDX data set (such as Fashion-MNIST, whose
/// labels stand in for the few a team would have) when `--labels` is not given. A folder's
/// labels are all used: someone labelled them.
pub const DEFAULT_LABELS: usize = 1000;

/// Share of the unlabelled pool set apart to validate the autoencoder when the source has no
/// validation split of its own.
pub const DEFAULT_VALID_FRACTION: f64 = 0.1;

/// Fewest labelled images of each class: cross-validation needs one to train on and one to
/// hold out.
pub const MIN_LABELS_PER_CLASS: usize = 2;

/// How to cut a data set for a run.
#[derive(Clone, Debug, Default)]
pub struct SplitOptions {
    /// Labelled images to keep (stratified); `None` = every labelled image of a folder,
    /// [`DEFAULT_LABELS`] of a fully labelled IDX set.
    pub labels: Option<usize>,
    /// Share of the unlabelled images kept for validation; `None` = the source's own split,
    /// else [`DEFAULT_VALID_FRACTION`].
    pub valid_fraction: Option<f64>,
    /// Use only the first N training images.
    pub train_limit: Option<usize>,
    /// Use only the first N validation and test images.
    pub eval_limit: Option<usize>,
    /// Seed of the labelled subset and the validation draw.
    pub seed: u64,
    /// Cross-validation folds the run will need over the labelled images.
    pub folds: usize,
}

/// A data set cut for training. Labels outside the labelled subset are gone: the pool's
/// other images carry no class, so nothing downstream can read them.
#[derive(Clone, Debug)]
pub struct TrainingData {
    /// Class names in class-index order.
    pub class_names: Vec<String>,
    /// Every image the autoencoder and the student learn from (labelled and unlabelled).
    pub pool: ImageSet,
    /// Rows of `pool` that are labelled, ascending.
    pub labelled_rows: Vec<usize>,
    /// Classes of `labelled_rows`, in the same order.
    pub labels: Vec<ClassId>,
    /// Images that validate the autoencoder (never trained on).
    pub valid: ImageSet,
    /// Labelled test images, if the data set has any.
    pub test: Option<ImageSet>,
}

impl TrainingData {
    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.class_names.len()
    }

    /// The labelled images alone.
    pub fn labelled(&self) -> ImageSet {
        self.pool.select(&self.labelled_rows)
    }
}

/// Cuts `data` for a run: draws the labelled subset, drops every other training label, sets
/// validation images apart and checks that the result is large enough for the recipe.
pub fn split(data: Dataset, options: &SplitOptions) -> Result<TrainingData, DataError> {
    let Dataset {
        kind,
        class_names,
        mut train,
        valid,
        test,
        ..
    } = data;
    if let Some(n) = options.train_limit {
        train = train.head(n);
    }
    let limit = |s: ImageSet| match options.eval_limit {
        Some(n) => s.head(n),
        None => s,
    };
    let classes = class_names.len();
    let candidates: Vec<usize> = (0..train.len())
        .filter(|&i| train.labels[i].is_some())
        .collect();
    let fully = train.fully_labelled();
    let candidate_labels: Vec<ClassId> =
        candidates.iter().filter_map(|&i| train.labels[i]).collect();
    let wanted = match options.labels {
        Some(n) => n,
        None if fully && kind == SourceKind::Idx => DEFAULT_LABELS.min(candidates.len()),
        None => candidates.len(),
    };
    let labelled_rows: Vec<usize> = if wanted == candidates.len() {
        candidates
    } else {
        stratified_subset(&candidate_labels, classes, wanted, options.seed)?
            .into_iter()
            .map(|k| candidates[k])
            .collect()
    };
    let mut keep = vec![false; train.len()];
    labelled_rows.iter().for_each(|&r| keep[r] = true);
    for (label, &kept) in train.labels.iter_mut().zip(&keep) {
        if !kept {
            *label = None;
        }
    }
    let labels: Vec<ClassId> = labelled_rows
        .iter()
        .filter_map(|&r| train.labels[r])
        .collect();
    check_enough_labels(&labels, &class_names, options.folds)?;

    let (pool, labelled_rows, valid) = match (valid, options.valid_fraction) {
        (Some(valid), None) => (train, labelled_rows, limit(valid)),
        (_, fraction) => carve_valid(
            train,
            &keep,
            fraction.unwrap_or(DEFAULT_VALID_FRACTION),
            options.seed,
        ),
    };
    Ok(TrainingData {
        class_names,
        pool,
        labelled_rows,
        labels,
        valid,
        test: test.map(limit),
    })
}

/// Sets `fraction` of the unlabelled rows apart as validation images (at least one). With no
/// unlabelled rows at all, validation images are drawn from the whole pool and stay in it.
fn carve_valid(
    pool: ImageSet,
    labelled: &[bool],
    fraction: f64,
    seed: u64,
) -> (ImageSet, Vec<usize>, ImageSet) {
    // Its own stream ("valid" in ASCII), apart from the labelled subset's.
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x0076_616c_6964);
    let mut unlabelled: Vec<usize> = (0..pool.len()).filter(|&i| !labelled[i]).collect();
    if unlabelled.is_empty() {
        let mut all: Vec<usize> = (0..pool.len()).collect();
        all.shuffle(&mut rng);
        let n = ((pool.len() as f64 * fraction).round() as usize).clamp(1, pool.len());
        all.truncate(n);
        all.sort_unstable();
        let valid = pool.select(&all);
        let rows = (0..pool.len()).filter(|&i| labelled[i]).collect();
        return (pool, rows, valid);
    }
    unlabelled.shuffle(&mut rng);
    let n = ((unlabelled.len() as f64 * fraction).round() as usize).clamp(1, unlabelled.len());
    let mut is_valid = vec![false; pool.len()];
    unlabelled[..n].iter().for_each(|&i| is_valid[i] = true);
    let valid_rows: Vec<usize> = (0..pool.len()).filter(|&i| is_valid[i]).collect();
    let mut valid = pool.select(&valid_rows);
    valid.labels.iter_mut().for_each(|l| *l = None);
    let rows = (0..pool.len())
        .filter(|&r| !is_valid[r])
        .enumerate()
        .filter(|&(_, r)| labelled[r])
        .map(|(k, _)| k)
        .collect();
    let mut kept = pool;
    kept.retain(|i| !is_valid[i]);
    (kept, rows, valid)
}

/// Refuses label sets the recipe cannot learn from, saying what is needed.
fn check_enough_labels(
    labels: &[ClassId],
    class_names: &[String],
    folds: usize,
) -> Result<(), DataError> {
    if class_names.len() < 2 {
        return Err(DataError::TooSmall(format!(
            "the data set has {} class{} ({}); aelabel needs at least two classes with labelled images",
            class_names.len(),
            if class_names.len() == 1 { "" } else { "es" },
            class_names.join(", ")
        )));
    }
    let mut counts = vec![0usize; class_names.len()];
    labels.iter().for_each(|&c| counts[c as usize] += 1);
    if let Some((c, &n)) = counts
        .iter()
        .enumerate()
        .find(|&(_, &n)| n < MIN_LABELS_PER_CLASS)
    {
        return Err(DataError::TooSmall(format!(
            "class `{}` has {n} labelled image{}; every class needs at least {MIN_LABELS_PER_CLASS} (add labelled images of it, or remove the class)",
            class_names[c],
            if n == 1 { "" } else { "s" }
        )));
    }
    if labels.len() < folds {
        return Err(DataError::TooSmall(format!(
            "{} labelled images are fewer than the {folds} cross-validation folds that choose the auto-accept threshold; label at least {folds}",
            labels.len()
        )));
    }
    Ok(())
}

/// Draws `n` indices stratified by class (⌊n/k⌋ per class, the remainder to randomly chosen
/// classes), reproducibly for a given `seed`. Returned indices are sorted.
pub fn stratified_subset(
    labels: &[ClassId],
    classes: usize,
    n: usize,
    seed: u64,
) -> Result<Vec<usize>, DataError> {
    if n < classes {
        return Err(DataError::Subset(format!(
            "--labels {n} is too few: at least one label per class ({classes}) is needed"
        )));
    }
    if n > labels.len() {
        return Err(DataError::Subset(format!(
            "--labels {n} is larger than the {} training images that have labels",
            labels.len()
        )));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for (i, &l) in labels.iter().enumerate() {
        by_class[l as usize].push(i);
    }
    let mut quota = vec![n / classes; classes];
    let mut order: Vec<usize> = (0..classes).collect();
    order.shuffle(&mut rng);
    for &c in order.iter().take(n % classes) {
        quota[c] += 1;
    }
    let mut chosen = Vec::with_capacity(n);
    for (c, pool) in by_class.iter_mut().enumerate() {
        if pool.len() < quota[c] {
            return Err(DataError::Subset(format!(
                "--labels {n} needs {} images of class {c} but the training split has only {}",
                quota[c],
                pool.len()
            )));
        }
        pool.shuffle(&mut rng);
        chosen.extend_from_slice(&pool[..quota[c]]);
    }
    chosen.sort_unstable();
    Ok(chosen)
}
