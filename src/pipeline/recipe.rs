//! Training recipes: the reference (`--preset seed`) and aelabel's default semi-supervised one.

use crate::train::Optimizer;
use serde::Serialize;

/// Which recipe a run follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// aelabel's semi-supervised recipe: denoising pretraining, head warm-up, full fine-tuning,
    /// then a student trained on the teacher's soft predictions over the unlabelled pool, with
    /// shifts and mixup.
    Default,
    /// The reference (Hands-On ML 17.3): SGD 1.5, batch 32, joint/tied/greedy pretraining,
    /// frozen first layer, Adam fine-tuning.
    Seed,
}

/// How the autoencoder is pretrained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PretrainMode {
    /// Encoder and decoder trained together with their own weights.
    Joint,
    /// Decoder reuses the encoder's weights transposed.
    Tied,
    /// One shallow autoencoder per layer, outermost first, then stacked.
    Greedy,
}

/// An optimiser as configured (state-free), so recipes can be printed and copied.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum OptimizerSpec {
    /// Plain SGD.
    Sgd {
        /// Learning rate.
        lr: f32,
    },
    /// Adam.
    Adam {
        /// Learning rate.
        lr: f32,
    },
}

impl OptimizerSpec {
    /// A fresh optimiser with this configuration.
    pub fn build(self) -> Optimizer {
        match self {
            OptimizerSpec::Sgd { lr } => Optimizer::sgd(lr),
            OptimizerSpec::Adam { lr } => Optimizer::adam(lr),
        }
    }
}

/// Pretraining settings.
#[derive(Clone, Debug, Serialize)]
pub struct PretrainRecipe {
    /// Joint, tied or greedy.
    pub mode: PretrainMode,
    /// Encoder widths from input to code.
    pub widths: Vec<usize>,
    /// Epochs (per shallow autoencoder when greedy).
    pub epochs: usize,
    /// Optimiser of the outer (pixel) autoencoder.
    pub optimizer: OptimizerSpec,
    /// Optimiser of the inner greedy autoencoders (MSE on codes).
    pub inner_optimizer: OptimizerSpec,
    /// Mini-batch size.
    pub batch_size: usize,
    /// Fraction of input pixels zeroed (denoising); 0 for a plain autoencoder.
    pub input_noise: f32,
    /// Images an epoch visits, drawn afresh each epoch from a larger pool (`None`: all).
    pub epoch_images: Option<usize>,
}

/// Classifier training settings.
#[derive(Clone, Debug, Serialize)]
pub struct FinetuneRecipe {
    /// Lowest encoder layers kept frozen throughout.
    pub freeze: usize,
    /// Epochs training only the softmax head (encoder frozen) before fine-tuning.
    pub head_epochs: usize,
    /// Optimiser for the head warm-up.
    pub head_optimizer: OptimizerSpec,
    /// Epochs of fine-tuning (all layers above `freeze`).
    pub epochs: usize,
    /// Optimiser for fine-tuning.
    pub optimizer: OptimizerSpec,
    /// Mini-batch size.
    pub batch_size: usize,
    /// Self-training rounds over the unlabelled pool (0 = none): each trains a fresh student
    /// from the pretrained encoder on the labels plus the teacher's soft predictions.
    pub self_training_rounds: usize,
    /// Epochs per self-training round.
    pub self_training_epochs: usize,
    /// Optimiser of the students.
    pub self_training_optimizer: OptimizerSpec,
    /// Mini-batch size of the students.
    pub self_training_batch_size: usize,
    /// Largest random translation (pixels) of the student's training images.
    pub self_training_shift: usize,
    /// Mixup strength α for the student (0 = off).
    pub self_training_mixup: f32,
    /// Decay the student's learning rate along a half cosine over its epochs.
    pub self_training_cosine: bool,
    /// Extra visits of each labelled image per student epoch: among tens of thousands of
    /// pool images, a few hundred true labels are otherwise seen once an epoch.
    pub self_training_label_repeats: usize,
    /// Weight of labels spread over the teacher's feature k-NN graph in the student's targets
    /// (0 = teacher probabilities only).
    pub spreading_weight: f32,
    /// Neighbours per image in that graph.
    pub spreading_neighbours: usize,
    /// Pool images a student epoch visits, drawn afresh each epoch from a larger pool, besides
    /// the labelled repeats (`None`: all).
    pub self_training_epoch_images: Option<usize>,
}

/// Fewest autoencoder optimisation steps the default recipe takes, however small the pool
/// (Fashion-MNIST's 55,000 images take 8,600 at 10 epochs).
pub const MIN_PRETRAIN_STEPS: usize = 3_000;

/// Fewest student optimisation steps the default recipe takes, however small the pool.
pub const MIN_STUDENT_STEPS: usize = 2_000;

/// Images an epoch of the default recipe visits on a pool of this size or less (pretraining,
/// students), and cross-validation's pool sample: Fashion-MNIST's 55,000 are passed over whole
/// as before; a larger pool is sampled afresh each epoch ([`epoch_images_for`]).
pub const EPOCH_IMAGES: usize = 60_000;

/// Images an epoch of the default recipe samples from a pool of `pool` images: the whole pool up
/// to [`EPOCH_IMAGES`], then `EPOCH_IMAGES · √(pool / EPOCH_IMAGES)` (about 122,000 at 250,000
/// and 245,000 at a million). Training thus grows with the square root of the pool, not with it:
/// a fixed 60,000 cost 0.55 points at 250,000 images against full passes
/// (docs/training-scale.md), and full passes would make a million images 17 times as slow.
pub fn epoch_images_for(pool: usize) -> usize {
    if pool <= EPOCH_IMAGES {
        return pool;
    }
    (EPOCH_IMAGES as f64 * (pool as f64 / EPOCH_IMAGES as f64).sqrt()).round() as usize
}

/// Weight of spread labels in the students' targets on a pool larger than [`EPOCH_IMAGES`]
/// (0.5 at or below it). On a million-image pool 0.7 gained 0.42 and 0.15 points on seeds 42
/// and 7; on Fashion-MNIST's 55,000 it changed accuracy by −0.03 (1,000 labels) and −0.18
/// (100 labels), so the small-pool weight stays (docs/training-scale.md).
pub const LARGE_POOL_SPREADING_WEIGHT: f32 = 0.7;

/// Below this many labels the default recipe trains a second student round.
pub const FEW_LABELS: usize = 500;

/// Image side the default recipe's student shifts are set for (Fashion-MNIST's 28 pixels).
pub const SHIFT_SIDE: usize = 28;

/// Epochs of a cross-validation fold's student in the default recipe: 6 of the served
/// student's 20 on a full pool (scaled up with it on small pools). 3 cost 9 s less but ranked
/// the held-out images worse, accepting 2 points fewer over four seeds.
pub const CALIBRATION_STUDENT_EPOCHS: usize = 6;

/// Everything a pipeline run trains with.
#[derive(Clone, Debug, Serialize)]
pub struct Recipe {
    /// The named preset this recipe came from.
    pub preset: Preset,
    /// Pretraining.
    pub pretrain: PretrainRecipe,
    /// Fine-tuning of the transferred classifier (also used, minus self-training, for the
    /// from-scratch baseline).
    pub finetune: FinetuneRecipe,
    /// Cross-validation folds over the labelled images that choose the auto-accept threshold.
    pub calibration_folds: usize,
    /// Epochs of each fold's short student (0 = the fold's teacher and spreading predict the
    /// held-out images): closer to the served student than its targets are, so the threshold
    /// taken from its ranking accepts more at the same accuracy (docs/labelling-quality.md).
    pub calibration_student_epochs: usize,
    /// Pool images the folds spread labels over and train their students on: every labelled
    /// image and a fixed sample of the others when the pool is larger (`None`: the whole pool).
    pub calibration_pool: Option<usize>,
    /// Whether [`Recipe::fit_to_data`] sizes the training epochs to the pool
    /// ([`epoch_images_for`]); `false` once [`Recipe::set_epoch_images`] fixed them.
    pub epochs_follow_pool: bool,
}

impl Recipe {
    /// The recipe for `preset` with `labels` labelled images.
    pub fn new(preset: Preset, labels: usize) -> Self {
        match preset {
            Preset::Seed => Recipe {
                preset,
                pretrain: PretrainRecipe {
                    mode: PretrainMode::Joint,
                    widths: vec![784, 100, 30],
                    epochs: 20,
                    optimizer: OptimizerSpec::Sgd { lr: 1.5 },
                    inner_optimizer: OptimizerSpec::Sgd { lr: 0.05 },
                    batch_size: 32,
                    input_noise: 0.0,
                    epoch_images: None,
                },
                finetune: FinetuneRecipe {
                    freeze: 1,
                    head_epochs: 0,
                    head_optimizer: OptimizerSpec::Adam { lr: 1e-3 },
                    epochs: if labels >= 5000 { 30 } else { 100 },
                    optimizer: OptimizerSpec::Adam { lr: 1e-3 },
                    batch_size: 32,
                    self_training_rounds: 0,
                    self_training_epochs: 0,
                    self_training_optimizer: OptimizerSpec::Adam { lr: 1e-3 },
                    self_training_batch_size: 64,
                    self_training_shift: 0,
                    self_training_mixup: 0.0,
                    self_training_cosine: false,
                    self_training_label_repeats: 0,
                    spreading_weight: 0.0,
                    spreading_neighbours: 10,
                    self_training_epoch_images: None,
                },
                calibration_folds: 5,
                calibration_student_epochs: 0,
                calibration_pool: None,
                epochs_follow_pool: false,
            },
            Preset::Default => Recipe {
                preset,
                pretrain: PretrainRecipe {
                    mode: PretrainMode::Joint,
                    widths: vec![784, 256, 128, 30],
                    epochs: 10,
                    optimizer: OptimizerSpec::Adam { lr: 1e-3 },
                    inner_optimizer: OptimizerSpec::Adam { lr: 1e-3 },
                    batch_size: 64,
                    input_noise: 0.3,
                    epoch_images: Some(EPOCH_IMAGES),
                },
                finetune: FinetuneRecipe {
                    freeze: 0,
                    head_epochs: 20,
                    head_optimizer: OptimizerSpec::Adam { lr: 1e-2 },
                    epochs: 40,
                    optimizer: OptimizerSpec::Adam { lr: 2e-4 },
                    batch_size: 32,
                    // A second round (the first student teaching the next) gained 1.5 points
                    // at 100 labels and nothing at 1,000 (docs/labelling-quality.md).
                    self_training_rounds: if labels < FEW_LABELS { 2 } else { 1 },
                    // 20 student epochs in all: one round of 20, or two of 10 with few labels.
                    self_training_epochs: if labels < FEW_LABELS { 10 } else { 20 },
                    self_training_optimizer: OptimizerSpec::Adam { lr: 1e-3 },
                    self_training_batch_size: 64,
                    self_training_shift: 1,
                    self_training_mixup: 0.4,
                    self_training_cosine: true,
                    self_training_label_repeats: 5,
                    spreading_weight: 0.5,
                    spreading_neighbours: 5,
                    self_training_epoch_images: Some(EPOCH_IMAGES),
                },
                calibration_folds: 5,
                calibration_student_epochs: CALIBRATION_STUDENT_EPOCHS,
                calibration_pool: Some(EPOCH_IMAGES),
                epochs_follow_pool: true,
            },
        }
    }

    /// Sizes the recipe to the data: the encoder's first width is the input size; the
    /// student's shifts scale with the image side (1 pixel at Fashion-MNIST's 28, none at 8×8
    /// digits, where one pixel is an eighth of the image and cost 2 points); and on a small pool
    /// the default recipe trains for at least [`MIN_PRETRAIN_STEPS`] pretraining and
    /// [`MIN_STUDENT_STEPS`] student steps instead of a fixed epoch count (1,500 images at 10
    /// epochs would be only 240 steps); a pool larger than [`EPOCH_IMAGES`] is sampled by its
    /// epochs ([`epoch_images_for`]) and its students weigh spread labels
    /// [`LARGE_POOL_SPREADING_WEIGHT`]. The seed preset stays the reference's literal recipe.
    pub fn fit_to_data(&mut self, (width, height): (usize, usize), pool: usize) {
        self.pretrain.widths[0] = width * height;
        if self.preset != Preset::Default {
            return;
        }
        let side = width.min(height) as f64;
        let shift = self.finetune.self_training_shift as f64 * side / SHIFT_SIDE as f64;
        self.finetune.self_training_shift = shift.round() as usize;
        if pool == 0 {
            return;
        }
        if pool > EPOCH_IMAGES {
            self.finetune.spreading_weight = LARGE_POOL_SPREADING_WEIGHT;
        }
        if self.epochs_follow_pool && pool > EPOCH_IMAGES {
            let images = epoch_images_for(pool);
            self.pretrain.epoch_images = Some(images);
            self.finetune.self_training_epoch_images = Some(images);
        }
        let epochs_for = |steps: usize, batch: usize, cap: Option<usize>| {
            let visited = cap.map_or(pool, |cap| pool.min(cap));
            steps.div_ceil(visited.div_ceil(batch.max(1)))
        };
        let p = &mut self.pretrain;
        p.epochs = p
            .epochs
            .max(epochs_for(MIN_PRETRAIN_STEPS, p.batch_size, p.epoch_images));
        let f = &mut self.finetune;
        let full_pool_epochs = f.self_training_epochs;
        f.self_training_epochs = f.self_training_epochs.max(epochs_for(
            MIN_STUDENT_STEPS,
            f.self_training_batch_size,
            f.self_training_epoch_images,
        ));
        // The fold students keep their share of the served student's epochs.
        if self.calibration_student_epochs > 0 && full_pool_epochs > 0 {
            self.calibration_student_epochs = self.calibration_student_epochs.max(
                (self.calibration_student_epochs * f.self_training_epochs)
                    .div_ceil(full_pool_epochs),
            );
        }
    }

    /// Makes every epoch visit at most `images` pool images (pretraining and students) and
    /// cross-validation spread over a pool sample of that size.
    pub fn set_epoch_images(&mut self, images: usize) {
        self.epochs_follow_pool = false;
        self.pretrain.epoch_images = Some(images);
        self.finetune.self_training_epoch_images = Some(images);
        self.calibration_pool = Some(images);
    }

    /// Pretraining epochs of a mode under the reference recipe (joint 20, tied and greedy 10).
    pub fn seed_epochs(mode: PretrainMode) -> usize {
        match mode {
            PretrainMode::Joint => 20,
            PretrainMode::Tied | PretrainMode::Greedy => 10,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fold_students_keep_their_share_of_the_served_students_epochs() {
        let mut full = Recipe::new(Preset::Default, 1000);
        full.fit_to_data((28, 28), 55_000);
        assert_eq!(full.finetune.self_training_epochs, 20);
        assert_eq!(full.calibration_student_epochs, 6);
        // 3,000 images: 47 batches an epoch, so 43 epochs reach 2,000 student steps; the
        // fold student keeps 6/20 of them.
        let mut small = Recipe::new(Preset::Default, 1000);
        small.fit_to_data((28, 28), 3_000);
        assert_eq!(small.finetune.self_training_epochs, 43);
        assert_eq!(small.calibration_student_epochs, 13);
        let mut seed = Recipe::new(Preset::Seed, 1000);
        seed.fit_to_data((28, 28), 3_000);
        assert_eq!(seed.calibration_student_epochs, 0);
    }

    /// The default recipe for 1,000 labels fitted to a 28 × 28 pool of `pool` images, its epochs
    /// fixed at `fixed` images when given.
    fn fitted(pool: usize, fixed: Option<usize>) -> Recipe {
        let mut r = Recipe::new(Preset::Default, 1000);
        if let Some(n) = fixed {
            r.set_epoch_images(n);
        }
        r.fit_to_data((28, 28), pool);
        r
    }

    #[test]
    fn epochs_grow_with_the_square_root_of_a_large_pool_unless_fixed() {
        let epochs = |pool: usize, fixed: Option<usize>| {
            let r = fitted(pool, fixed);
            (
                r.pretrain.epoch_images,
                r.finetune.self_training_epoch_images,
                r.calibration_pool,
            )
        };
        let sixty = Some(EPOCH_IMAGES);
        // Fashion-MNIST's pool is passed over whole (the cap is above it).
        assert_eq!(epochs(55_000, None), (sixty, sixty, sixty));
        assert_eq!(epochs(240_000, None), (Some(120_000), Some(120_000), sixty));
        assert_eq!(epochs(960_000, None), (Some(240_000), Some(240_000), sixty));
        let fixed = Some(100_000);
        assert_eq!(epochs(960_000, fixed), (fixed, fixed, fixed));
        assert_eq!(epoch_images_for(1_000), 1_000);
    }

    #[test]
    fn spread_labels_weigh_more_on_pools_larger_than_an_epoch() {
        let weight = |pool, fixed| fitted(pool, fixed).finetune.spreading_weight;
        assert_eq!(weight(55_000, None), 0.5);
        assert_eq!(weight(EPOCH_IMAGES, None), 0.5);
        assert_eq!(weight(EPOCH_IMAGES + 1, None), LARGE_POOL_SPREADING_WEIGHT);
        assert_eq!(weight(1_000_000, None), LARGE_POOL_SPREADING_WEIGHT);
        // The weight follows the pool, not how many images an epoch visits.
        assert_eq!(weight(1_000_000, Some(60_000)), LARGE_POOL_SPREADING_WEIGHT);
        let mut seed = Recipe::new(Preset::Seed, 1000);
        seed.fit_to_data((28, 28), 1_000_000);
        assert_eq!(seed.finetune.spreading_weight, 0.0);
    }

    #[test]
    fn student_shifts_scale_with_the_image_side() {
        let shift = |w, h| {
            let mut r = Recipe::new(Preset::Default, 100);
            r.fit_to_data((w, h), 1_000);
            (r.finetune.self_training_shift, r.pretrain.widths[0])
        };
        assert_eq!(shift(28, 28), (1, 784));
        assert_eq!(shift(8, 8), (0, 64));
        assert_eq!(shift(14, 14), (1, 196));
        assert_eq!(shift(64, 96), (2, 6144));
    }
}
