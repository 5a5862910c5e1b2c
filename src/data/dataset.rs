//! One data set behind one type, whatever it was read from: IDX files (Fashion-MNIST and
//! MNIST-style sets) or a folder of images with class sub-folders or a labels CSV.

use super::idx::{read_idx_images, read_idx_labels};
use super::{is_idx_dir, ClassId, DataError, ImageSet, Skipped, CLASS_NAMES};
use image::GrayImage;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Images kept for validation at the end of Fashion-MNIST's 60,000 training images, as in the
/// reference.
pub const IDX_VALID_SIZE: usize = 5_000;

/// Where a data set came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// IDX image and label files (`*-idx3-ubyte[.gz]`, `*-idx1-ubyte[.gz]`).
    Idx,
    /// A folder of PNG/JPEG files (class sub-folders, `unlabelled/`, or a labels CSV).
    Folder,
}

/// How to read a data set.
#[derive(Clone, Debug, Default)]
pub struct DataOptions {
    /// The data directory (IDX files or an image folder).
    pub dir: PathBuf,
    /// `path,class` CSV labelling a flat image folder.
    pub labels_file: Option<PathBuf>,
    /// Labelled images to measure the classifier on (folder or IDX directory).
    pub test: Option<PathBuf>,
    /// Resize every image to this (width, height); `None` = the data's own size when all
    /// images share it, else 28×28.
    pub input_size: Option<(usize, usize)>,
    /// An undecodable image is an error instead of a skipped file with a warning.
    pub strict: bool,
    /// Pool IDX's validation images with the training images (a `--valid-fraction` is then
    /// drawn from the unlabelled pool instead of the reference's last 5,000).
    pub merge_idx_valid: bool,
}

/// A data set as read: the training pool (labelled and unlabelled images), the validation
/// images a source brings (IDX's last 5,000), the test images and the class names.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// IDX or folder.
    pub kind: SourceKind,
    /// The data directory.
    pub dir: PathBuf,
    /// Class names in class-index order.
    pub class_names: Vec<String>,
    /// Every training image; labelled ones carry their class.
    pub train: ImageSet,
    /// Validation images the source sets apart (labels, if any, are only used for plots).
    pub valid: Option<ImageSet>,
    /// Fully labelled test images, when there are any.
    pub test: Option<ImageSet>,
    /// Files left out because they could not be decoded.
    pub skipped: Vec<Skipped>,
}

impl Dataset {
    /// Reads the data set `options` describe; `progress(done, total)` follows image decoding.
    pub fn open(
        options: &DataOptions,
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Result<Dataset, DataError> {
        let dir = &options.dir;
        if !dir.is_dir() {
            return Err(DataError::MissingDirectory(dir.clone()));
        }
        let mut data = if is_idx_dir(dir) && options.labels_file.is_none() {
            Self::idx(dir, options.merge_idx_valid)?
        } else {
            Self::folder(dir, options, progress)?
        };
        if let Some(size) = options.input_size {
            data.resize(size);
        }
        if let Some(test_dir) = &options.test {
            data.test = Some(read_test(test_dir, &data, options, progress)?);
        }
        Ok(data)
    }

    /// Fashion-MNIST-style IDX files: `train-*` is the pool (its last 5,000 images set apart
    /// for validation unless `merge_valid`), `t10k-*` the test set.
    pub fn idx(dir: &Path, merge_valid: bool) -> Result<Dataset, DataError> {
        if !dir.is_dir() {
            return Err(DataError::MissingDirectory(dir.to_path_buf()));
        }
        let mut train = read_idx_pair(
            &locate(dir, "train-images-idx3-ubyte")?,
            &locate(dir, "train-labels-idx1-ubyte")?,
        )?;
        let test_images = locate(dir, "t10k-images-idx3-ubyte")?;
        let test = read_idx_pair(&test_images, &locate(dir, "t10k-labels-idx1-ubyte")?)?;
        if (test.width, test.height) != (train.width, train.height) {
            return Err(DataError::Invalid {
                path: test_images,
                reason: format!(
                    "images are {}×{} but the training images are {}×{}",
                    test.width, test.height, train.width, train.height
                ),
            });
        }
        let valid = if merge_valid {
            None
        } else {
            if train.len() <= IDX_VALID_SIZE {
                return Err(DataError::TooSmall(format!(
                    "{} holds {} training images; at least {} are needed to keep {IDX_VALID_SIZE} for validation (or pass --valid-fraction)",
                    dir.display(),
                    train.len(),
                    IDX_VALID_SIZE + 1
                )));
            }
            let cut = train.len() - IDX_VALID_SIZE;
            Some(split_off(&mut train, cut))
        };
        let classes = [&train, &test]
            .iter()
            .flat_map(|s| s.labels.iter().flatten())
            .max()
            .map_or(0, |&c| c as usize + 1);
        Ok(Dataset {
            kind: SourceKind::Idx,
            dir: dir.to_path_buf(),
            class_names: idx_class_names(dir, classes)?,
            train,
            valid,
            test: Some(test),
            skipped: Vec::new(),
        })
    }

    /// An image folder; a `classes.txt` in it (one name per line) fixes the class names and
    /// their order, and labels naming any other class are refused.
    fn folder(
        dir: &Path,
        options: &DataOptions,
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Result<Dataset, DataError> {
        let listed = dir.join(CLASSES_FILE);
        let class_names = if listed.is_file() {
            Some(read_class_names(&listed)?)
        } else {
            None
        };
        let read = super::read_image_folder(
            dir,
            &super::FolderOptions {
                input_size: options.input_size,
                strict: options.strict,
                labels_file: options.labels_file.clone(),
                class_names,
            },
            progress,
        )?;
        Ok(Dataset {
            kind: SourceKind::Folder,
            dir: dir.to_path_buf(),
            class_names: read.class_names,
            train: read.images,
            valid: None,
            test: None,
            skipped: read.skipped,
        })
    }

    /// Pixels per image.
    pub fn image_size(&self) -> usize {
        self.train.image_size()
    }

    /// Resizes every image to `(width, height)` (no-op when they already are).
    fn resize(&mut self, (width, height): (usize, usize)) {
        for set in [
            Some(&mut self.train),
            self.valid.as_mut(),
            self.test.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            resize_set(set, width, height);
        }
    }
}

/// The test set named by `--test`: an IDX directory (its `t10k-*` pair, or its only image/label
/// pair) or an image folder whose class names must be among the training classes.
fn read_test(
    dir: &Path,
    train: &Dataset,
    options: &DataOptions,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<ImageSet, DataError> {
    if !dir.is_dir() {
        return Err(DataError::Folder {
            path: dir.to_path_buf(),
            reason: "the --test directory does not exist; pass a folder of class sub-folders or a directory of IDX files".into(),
        });
    }
    let (w, h) = (train.train.width, train.train.height);
    let mut test = if is_idx_dir(dir) {
        let images = locate(dir, "t10k-images-idx3-ubyte")?;
        let labels = locate(dir, "t10k-labels-idx1-ubyte")?;
        let set = read_idx_pair(&images, &labels)?;
        if let Some(c) = set
            .labels
            .iter()
            .flatten()
            .find(|&&c| c as usize >= train.class_names.len())
        {
            return Err(DataError::Invalid {
                path: labels,
                reason: format!(
                    "label {c} is not one of the {} training classes",
                    train.class_names.len()
                ),
            });
        }
        set
    } else {
        let read = super::read_image_folder(
            dir,
            &super::FolderOptions {
                input_size: Some((w, h)),
                strict: options.strict,
                labels_file: None,
                class_names: Some(train.class_names.clone()),
            },
            progress,
        )?;
        read.images
    };
    resize_set(&mut test, w, h);
    let unlabelled = test.len() - test.labelled_count();
    if unlabelled > 0 || test.is_empty() {
        return Err(DataError::Folder {
            path: dir.to_path_buf(),
            reason: format!(
                "a test set must be fully labelled, but {unlabelled} of its {} images have no class; put every test image in a class sub-folder",
                test.len()
            ),
        });
    }
    Ok(test)
}

/// The file naming a data set's classes, one per line, in class-index order.
pub const CLASSES_FILE: &str = "classes.txt";

/// Reads a [`CLASSES_FILE`]: non-empty trimmed lines.
fn read_class_names(path: &Path) -> Result<Vec<String>, DataError> {
    let text = std::fs::read_to_string(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect())
}

/// Class names of an IDX data set: one per line in `classes.txt` beside the files if present,
/// else Fashion-MNIST's when the directory is Fashion-MNIST's, else the class numbers.
fn idx_class_names(dir: &Path, classes: usize) -> Result<Vec<String>, DataError> {
    let listed = dir.join(CLASSES_FILE);
    if listed.is_file() {
        let names = read_class_names(&listed)?;
        if names.len() < classes {
            return Err(DataError::Invalid {
                path: listed,
                reason: format!(
                    "names {} classes but the labels go up to class {}; give one name per line for every class",
                    names.len(),
                    classes - 1
                ),
            });
        }
        return Ok(names);
    }
    let fashion = dir
        .to_string_lossy()
        .to_ascii_lowercase()
        .contains("fashion");
    if fashion && classes <= CLASS_NAMES.len() {
        return Ok(CLASS_NAMES.iter().map(|s| s.to_string()).collect());
    }
    Ok((0..classes.max(2)).map(|c| c.to_string()).collect())
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

/// Reads an IDX image file and its label file into one fully labelled set.
pub fn read_idx_pair(images_path: &Path, labels_path: &Path) -> Result<ImageSet, DataError> {
    let images = read_idx_images(images_path)?;
    let labels = read_idx_labels(labels_path, 256)?;
    if images.count != labels.len() {
        return Err(DataError::CountMismatch {
            images: images_path.to_path_buf(),
            image_count: images.count,
            labels: labels_path.to_path_buf(),
            label_count: labels.len(),
        });
    }
    Ok(ImageSet {
        width: images.cols,
        height: images.rows,
        pixels: images.pixels,
        labels: labels.iter().map(|&l| Some(ClassId::from(l))).collect(),
    })
}

/// Moves images `at..` out of `set` into a new set.
fn split_off(set: &mut ImageSet, at: usize) -> ImageSet {
    ImageSet {
        width: set.width,
        height: set.height,
        pixels: set.pixels.split_off(at * set.image_size()),
        labels: set.labels.split_off(at),
    }
}

/// Resizes every image of `set` to `width × height` (the triangle filter the server uses).
pub fn resize_set(set: &mut ImageSet, width: usize, height: usize) {
    if (set.width, set.height) == (width, height) {
        return;
    }
    let mut out = ImageSet::new(width, height);
    out.pixels.reserve(set.len() * width * height);
    for i in 0..set.len() {
        let image = GrayImage::from_raw(set.width as u32, set.height as u32, set.image(i).to_vec())
            .expect("an ImageSet row holds width × height bytes");
        let resized = super::gray::resize_triangle(&image, (width as u32, height as u32));
        out.push(&resized, set.labels[i]);
    }
    *set = out;
}
