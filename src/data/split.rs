//! The reference splits (55,000 train / 5,000 valid / 10,000 test) and labelled subsets.

use super::{read_idx_images, read_idx_labels, DataError, IdxImages, CLASS_NAMES};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};

/// Images kept for validation at the end of the 60,000 training images, as in the reference.
pub const VALID_SIZE: usize = 5_000;

/// A set of images as floats in [0, 1] with their labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Split {
    /// `len × width × height` pixels / 255, row-major.
    pub pixels: Vec<f32>,
    /// One class index per image.
    pub labels: Vec<u8>,
    /// Image width.
    pub width: usize,
    /// Image height.
    pub height: usize,
}

impl Split {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when the split holds no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Pixels per image.
    pub fn image_size(&self) -> usize {
        self.width * self.height
    }

    /// Pixels of image `i`.
    pub fn image(&self, i: usize) -> &[f32] {
        let s = self.image_size();
        &self.pixels[i * s..(i + 1) * s]
    }

    /// The images at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Split {
        let mut pixels = Vec::with_capacity(indices.len() * self.image_size());
        for &i in indices {
            pixels.extend_from_slice(self.image(i));
        }
        Split {
            pixels,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            width: self.width,
            height: self.height,
        }
    }

    /// The first `n` images (all of them if there are fewer).
    pub fn head(&self, n: usize) -> Split {
        let n = n.min(self.len());
        Split {
            pixels: self.pixels[..n * self.image_size()].to_vec(),
            labels: self.labels[..n].to_vec(),
            width: self.width,
            height: self.height,
        }
    }
}

/// Fashion-MNIST split as in the reference: first 55,000 training images, last 5,000, t10k.
#[derive(Clone, Debug)]
pub struct FashionMnist {
    /// First 55,000 of the training file.
    pub train: Split,
    /// Last 5,000 of the training file.
    pub valid: Split,
    /// The 10,000 t10k images.
    pub test: Split,
    /// Class names in label order.
    pub class_names: Vec<String>,
}

/// `dir/name`, or `dir/name.gz` when only the compressed file exists.
fn locate(dir: &Path, name: &str) -> Result<PathBuf, DataError> {
    let gz = dir.join(format!("{name}.gz"));
    if gz.is_file() {
        return Ok(gz);
    }
    let plain = dir.join(name);
    if plain.is_file() {
        return Ok(plain);
    }
    Err(DataError::MissingFile { path: plain })
}

/// Reads an image/label pair and checks that they agree.
pub fn read_pair(images_path: &Path, labels_path: &Path) -> Result<Split, DataError> {
    let (images, labels) = read_raw_pair(images_path, labels_path)?;
    Ok(Split::from_bytes(
        &images.pixels,
        labels,
        images.cols,
        images.rows,
    ))
}

fn read_raw_pair(
    images_path: &Path,
    labels_path: &Path,
) -> Result<(IdxImages, Vec<u8>), DataError> {
    let images = read_idx_images(images_path)?;
    let labels = read_idx_labels(labels_path, CLASS_NAMES.len())?;
    if images.count != labels.len() {
        return Err(DataError::CountMismatch {
            images: images_path.to_path_buf(),
            image_count: images.count,
            labels: labels_path.to_path_buf(),
            label_count: labels.len(),
        });
    }
    Ok((images, labels))
}

impl Split {
    /// Converts 8-bit pixels to floats in [0, 1].
    fn from_bytes(pixels: &[u8], labels: Vec<u8>, width: usize, height: usize) -> Split {
        Split {
            pixels: pixels.iter().map(|&p| f32::from(p) / 255.0).collect(),
            labels,
            width,
            height,
        }
    }
}

impl FashionMnist {
    /// Loads the four IDX files from `dir` and splits them like the reference.
    pub fn load(dir: &Path) -> Result<Self, DataError> {
        if !dir.is_dir() {
            return Err(DataError::MissingDirectory(dir.to_path_buf()));
        }
        let train_images = locate(dir, "train-images-idx3-ubyte")?;
        let train_labels = locate(dir, "train-labels-idx1-ubyte")?;
        let test_images = locate(dir, "t10k-images-idx3-ubyte")?;
        let test_labels = locate(dir, "t10k-labels-idx1-ubyte")?;
        let (full, mut full_labels) = read_raw_pair(&train_images, &train_labels)?;
        let (test, test_labels) = read_raw_pair(&test_images, &test_labels)?;
        if (test.cols, test.rows) != (full.cols, full.rows) {
            return Err(DataError::Invalid {
                path: test_images,
                reason: format!(
                    "images are {}×{} but the training images are {}×{}",
                    test.cols, test.rows, full.cols, full.rows
                ),
            });
        }
        if full.count <= VALID_SIZE {
            return Err(DataError::Invalid {
                path: train_images,
                reason: format!(
                    "holds {} images; at least {} are needed to keep {VALID_SIZE} for validation",
                    full.count,
                    VALID_SIZE + 1
                ),
            });
        }
        // Convert each split straight from bytes: floats for the whole file never coexist
        // with the splits' copies.
        let (w, h) = (full.cols, full.rows);
        let cut = full.count - VALID_SIZE;
        let valid_labels = full_labels.split_off(cut);
        let valid = Split::from_bytes(&full.pixels[cut * w * h..], valid_labels, w, h);
        let train = Split::from_bytes(&full.pixels[..cut * w * h], full_labels, w, h);
        drop(full);
        let test = Split::from_bytes(&test.pixels, test_labels, w, h);
        Ok(Self {
            train,
            valid,
            test,
            class_names: CLASS_NAMES.iter().map(|s| s.to_string()).collect(),
        })
    }
}

/// Draws `n` indices stratified by class (⌊n/k⌋ per class, the remainder to randomly chosen
/// classes), reproducibly for a given `seed`. Returned indices are sorted.
pub fn stratified_subset(
    labels: &[u8],
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
            "--labels {n} is larger than the {} training images available",
            labels.len()
        )));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for (i, &l) in labels.iter().enumerate() {
        by_class[usize::from(l)].push(i);
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
