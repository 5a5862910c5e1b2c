//! Placeholder until the image-folder reader lands.
use super::{DataError, ImageSet, Skipped};
use std::path::{Path, PathBuf};

/// How to read an image folder.
pub struct FolderOptions {
    /// Input size.
    pub input_size: Option<(usize, usize)>,
    /// Strict.
    pub strict: bool,
    /// Labels file.
    pub labels_file: Option<PathBuf>,
    /// Class names.
    pub class_names: Option<Vec<String>>,
}
/// A folder as read.
pub struct FolderData {
    /// Images.
    pub images: ImageSet,
    /// Names.
    pub class_names: Vec<String>,
    /// Skipped.
    pub skipped: Vec<Skipped>,
    /// Paths.
    pub paths: Vec<PathBuf>,
}
/// Reads a folder.
pub fn read_image_folder(
    dir: &Path,
    _options: &FolderOptions,
    _progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<FolderData, DataError> {
    Err(DataError::Folder {
        path: dir.to_path_buf(),
        reason: "not yet".into(),
    })
}
