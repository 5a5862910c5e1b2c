//! Images and labels behind one [`Dataset`] type: IDX files or image folders (class
//! sub-folders or a labels CSV), decoded to 8-bit grayscale at one input size, then cut into
//! labelled subset, unlabelled pool, validation and test images.

mod dataset;
mod decode;
mod folder;
mod gray;
mod idx;
mod images;
mod jpeg;
mod labels_csv;
mod pool;
mod split;

pub use dataset::{read_idx_pair, resize_set, DataOptions, Dataset, SourceKind, IDX_VALID_SIZE};
pub use decode::{decode_cost, decode_to_input, raw_to_input, ImageError, ImageLimits};
pub use folder::{
    is_idx_dir, read_image_folder, FolderData, FolderOptions, DEFAULT_INPUT_SIZE, MAX_FILE_SIDE,
};
pub use idx::{read_idx_images, read_idx_labels, IdxImages};
pub use images::{bytes_to_unit, to_unit, ClassId, ImageSet};
pub use pool::{pool_variant, write_pool};
pub use split::{
    split, stratified_subset, SplitOptions, TrainingData, DEFAULT_LABELS, DEFAULT_VALID_FRACTION,
    MIN_LABELS_PER_CLASS,
};

use std::path::PathBuf;

/// Where the Debian package `dataset-fashion-mnist` installs its files.
pub const DEFAULT_DATA_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Fashion-MNIST's ten class names, in label order.
pub const CLASS_NAMES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Everything that can go wrong while reading a data set; each message names the file.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The data directory does not exist.
    #[error("data directory {0} does not exist: pass --data DIR (an image folder or IDX files), or for Fashion-MNIST install it with `apt-get install -y dataset-fashion-mnist`")]
    MissingDirectory(PathBuf),
    /// A required file is absent (neither gzip nor plain).
    #[error("{path} not found (nor its .gz): an IDX data directory holds train-images/-labels and t10k-images/-labels files")]
    MissingFile {
        /// The plain file name that was looked for.
        path: PathBuf,
    },
    /// Reading failed at the OS level.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a valid IDX file of the expected kind.
    #[error("{path} is not a valid IDX file: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What rule the file broke.
        reason: String,
    },
    /// Image and label files disagree.
    #[error("{images} holds {image_count} images but {labels} holds {label_count} labels: they must come in matching pairs")]
    CountMismatch {
        /// Image file.
        images: PathBuf,
        /// Its count.
        image_count: usize,
        /// Label file.
        labels: PathBuf,
        /// Its count.
        label_count: usize,
    },
    /// A labelled-subset request cannot be met.
    #[error("{0}")]
    Subset(String),
    /// An image folder does not have the layout aelabel reads.
    #[error("{path}: {reason}")]
    Folder {
        /// The folder or file at fault.
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
    /// A row of a labels CSV file is wrong.
    #[error("{path} row {row}: {reason}")]
    LabelsFile {
        /// The CSV file.
        path: PathBuf,
        /// 1-based line number.
        row: usize,
        /// What is wrong with the row and what to do.
        reason: String,
    },
    /// An image file cannot be decoded (an error only under `--strict`; otherwise it is skipped).
    #[error("{path} cannot be decoded: {reason} (remove or fix the file, or drop --strict to skip it with a warning)")]
    Undecodable {
        /// The image file.
        path: PathBuf,
        /// The decoder's complaint.
        reason: String,
    },
    /// The data set is too small for the recipe.
    #[error("{0}")]
    TooSmall(String),
}

/// An image file left out of a data set because it could not be read or decoded; the report
/// counts and names them.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Skipped {
    /// The file.
    pub path: PathBuf,
    /// Why it was left out.
    pub reason: String,
}
